"""From a retina image file to model-ready (C, H, W) float32 arrays, as an encoder's contract asks.

Steps for an image (`RetinaPreprocess.image`):
1. read it with Pillow as grey ("L", ITU-R 601 luma for colour files) or RGB; 8-bit values / 255,
   16-bit / 65535, so intensities lie in [0, 1];
2. resize to spec_input["shape"] = [H, W] by bilinear interpolation (Pillow's, which widens
   the kernel when shrinking, so downsampling does not alias);
3. compute the vessel priors asked for (on the resized grey image in [0, 1], before
   normalisation; see `medssl.retina.vessel_prior`);
4. normalise the image channels as spec_input["intensity"] says; priors are left as they are
   (vesselness in [0, 1], skeleton in {0, 1}).

spec_input["intensity"] is matched by keyword, case-insensitively:
  "unit"     (also "[0, 1]", "0-1", "/255"): the values of step 1, in [0, 1]
  "minmax"   (also "min-max"): per image, (x - min) / (max - min) over all image channels
  "zscore"   (also "z-score", "standard"): per image and channel, (x - mean) / std
  "imagenet": (x - mean_c) / std_c with ImageNet's mean (0.485, 0.456, 0.406) and std
             (0.229, 0.224, 0.225); a grey channel uses their averages (0.449, 0.226)
A missing entry means "unit".

spec_input["channels"]: 1 or 3, or a list of names. "grey"/"gray"/"octa"/"oct"/"fa"/"image" give
the grey image; "r"/"g"/"b" (or red/green/blue) the colour planes; prior names ("vesselness",
"skeleton") a prior at that position; other names count as image channels (one: grey, three:
RGB in order). spec_input["priors"] and then the recipe's data["priors"] (lists of prior names)
append priors after those channels (a name already placed is not repeated).

Masks (`RetinaPreprocess.mask`): any non-zero pixel (of any colour plane) is 1; resized by
nearest neighbour to the same shape; (1, H, W) float32 in {0, 1}.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.retina.vessel_prior import PRIOR_NAMES, vessel_priors

INTENSITY_MODES: tuple[str, ...] = ("unit", "minmax", "zscore", "imagenet")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY_NAMES = {"grey", "gray", "octa", "oct", "fa", "image", "intensity", "luminance", "y"}
_RGB_NAMES = {"r": 0, "red": 0, "g": 1, "green": 1, "b": 2, "blue": 2}
# Image types whose vessels are darker than the background (the Frangi filter's black_ridges).
DARK_VESSEL_TYPES = {"fundus", "cfp", "colour_fundus", "color_fundus", "red_free"}


def intensity_mode(description: str | None) -> str:
    """The normalisation a spec's free-text `intensity` names: one of INTENSITY_MODES."""
    if not description:
        return "unit"
    d = str(description).lower().replace(" ", "")
    for mode, keys in (("imagenet", ("imagenet",)), ("zscore", ("zscore", "z-score", "standard")),
                       ("minmax", ("minmax", "min-max")), ("unit", ("unit", "[0,1]", "0-1", "/255"))):
        if any(k in d for k in keys):
            return mode
    raise ValueError(f"intensity {description!r} is not understood; use one of {', '.join(INTENSITY_MODES)}")


def channel_plan(spec_input: Mapping[str, Any], extra_priors: Sequence[str] = ()) -> tuple[str, list[str]]:
    """(colour "grey" or "rgb", one entry per model channel: "img:<k>" or a prior name); priors of
    spec_input["priors"], then `extra_priors` (a recipe's data.priors), follow the channels."""
    channels = spec_input.get("channels", 1)
    names = ["grey"] if channels == 1 else ["r", "g", "b"] if channels == 3 else channels
    if isinstance(names, int) or not isinstance(names, Sequence) or isinstance(names, str):
        raise ValueError(f"channels must be 1, 3 or a list of names, got {channels!r}")
    names = [str(n).lower() for n in names]
    image_names = [n for n in names if n not in PRIOR_NAMES]
    if len(image_names) == 1:
        colour, index = "grey", {image_names[0]: 0}
    elif len(image_names) == 3:
        known = [_RGB_NAMES.get(n) for n in image_names]
        order = known if sorted(k for k in known if k is not None) == [0, 1, 2] else [0, 1, 2]
        colour, index = "rgb", dict(zip(image_names, order))
    else:
        raise ValueError(f"channels {list(channels)}: need 1 (grey) or 3 (RGB) image channels, "
                         f"got {len(image_names)}")
    if colour == "grey" and image_names[0] in _RGB_NAMES:
        raise ValueError(f"channels {list(channels)}: a single colour plane is not supported; use 'grey'")
    plan = [n if n in PRIOR_NAMES else f"img:{index[n]}" for n in names]
    for p in [*(spec_input.get("priors") or []), *(extra_priors or [])]:
        if p not in PRIOR_NAMES:
            raise ValueError(f"unknown prior {p!r}; priors: {', '.join(PRIOR_NAMES)}")
        if p not in plan:
            plan.append(p)
    return colour, plan


def load_image(path: str | Path, colour: str = "grey") -> np.ndarray:
    """(C, H, W) float32 in [0, 1], C = 1 (grey) or 3 (rgb). Raises ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = arr / (65535.0 if arr.max() > 255 else 255.0)
                arr = arr[None] if colour == "grey" else np.repeat(arr[None], 3, 0)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
                arr = arr[None] if colour == "grey" else np.repeat(arr[None], 3, 0)
            else:
                arr = np.asarray(im.convert("L" if colour == "grey" else "RGB"), dtype=np.float64) / 255.0
                arr = arr[None] if colour == "grey" else arr.transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None
    return arr.astype(np.float32)


def load_mask(path: str | Path) -> np.ndarray:
    """(H, W) bool: any non-zero pixel in any plane. Raises ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read mask ({e})") from None
    return arr.any(axis=-1) if arr.ndim == 3 else arr != 0


def resize_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Bilinear resize of (C, H, W) float32 to (C, *shape)."""
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    if image.shape[1:] == (h, w):
        return image.astype(np.float32, copy=False)
    return np.stack([np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
                     for c in image]).astype(np.float32)


def resize_mask(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) bool mask to `shape`."""
    from PIL import Image

    h, w = int(shape[0]), int(shape[1])
    if mask.shape == (h, w):
        return mask.astype(bool)
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127


def normalise(image: np.ndarray, mode: str) -> np.ndarray:
    """Normalise (C, H, W) image channels in [0, 1] (see the module docstring)."""
    x = image.astype(np.float32, copy=True)
    if mode == "unit":
        return x
    if mode == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    if mode == "zscore":
        mean = x.mean(axis=(1, 2), keepdims=True)
        std = x.std(axis=(1, 2), keepdims=True)
        return (x - mean) / np.maximum(std, 1e-6)
    if mode == "imagenet":
        if len(x) == 3:
            mean, std = np.array(_IMAGENET_MEAN), np.array(_IMAGENET_STD)
        else:
            mean, std = np.full(len(x), np.mean(_IMAGENET_MEAN)), np.full(len(x), np.mean(_IMAGENET_STD))
        return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    raise ValueError(f"unknown intensity mode {mode!r}; use one of {', '.join(INTENSITY_MODES)}")


@dataclass(frozen=True)
class PriorSettings:
    """Settings of `vessel_priors`: Frangi scales (px at model resolution), beta, c (None: half
    the largest Hessian norm), black_ridges ("auto": dark vessels for fundus-type rows, i.e.
    rows whose image_type is in DARK_VESSEL_TYPES, bright otherwise), skeleton threshold
    (None: Otsu)."""

    sigmas: tuple[float, ...] = (1.0, 2.0, 3.0)
    beta: float = 0.5
    c: float | None = None
    black_ridges: bool | str = "auto"
    threshold: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PriorSettings:
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown vessel prior setting(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(cls.__dataclass_fields__)}")
        if "sigmas" in values:
            values["sigmas"] = tuple(float(s) for s in values["sigmas"])
        return cls(**values)


@dataclass(frozen=True)
class RetinaPreprocess:
    """What a retina encoder's input contract asks of each image (see the module docstring)."""

    shape: tuple[int, int]
    colour: str = "grey"
    plan: tuple[str, ...] = ("img:0",)
    intensity: str = "unit"
    priors: PriorSettings = field(default_factory=PriorSettings)

    @classmethod
    def for_encoder(cls, spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any] | None = None) -> RetinaPreprocess:
        """From an encoder's `spec.input` and a recipe's `data` section: its optional `priors`
        list adds prior channels, its optional `vessel_prior` mapping overrides
        spec_input["prior_settings"]."""
        if int(spec_input.get("spatial_dims", 2)) != 2:
            raise ValueError(f"retina images are 2-D; the encoder reads spatial_dims={spec_input['spatial_dims']}")
        shape = spec_input.get("shape")
        if not shape or len(shape) != 2:
            raise ValueError(f"spec input needs shape [H, W], got {shape!r}")
        colour, plan = channel_plan(spec_input, (data_cfg or {}).get("priors") or ())
        prior_cfg = {**(spec_input.get("prior_settings") or {}), **((data_cfg or {}).get("vessel_prior") or {})}
        return cls(shape=(int(shape[0]), int(shape[1])), colour=colour, plan=tuple(plan),
                   intensity=intensity_mode(spec_input.get("intensity")),
                   priors=PriorSettings.from_mapping(prior_cfg))

    @property
    def n_channels(self) -> int:
        return len(self.plan)

    def to_dict(self) -> dict:
        return asdict(self)

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def image(self, row: Mapping[str, str]) -> np.ndarray:
        """(n_channels, H, W) float32 of a manifest row's `path`, H, W = the encoder's shape."""
        return self._channels(resize_image(load_image(row["path"], self.colour), self.shape), row)

    def native_image(self, row: Mapping[str, str]) -> np.ndarray:
        """(n_channels, H0, W0) float32 of a row's `path` at the file's own resolution (no resizing;
        priors computed at that resolution, normalisation as for :meth:`image`)."""
        return self._channels(load_image(row["path"], self.colour), row)

    def native_mask(self, row: Mapping[str, str], shape: Sequence[int] | None = None) -> np.ndarray:
        """(1, H0, W0) float32 in {0, 1} of a row's `mask_path` at its own resolution, or nearest-
        neighbour resized to `shape`; a mask whose size differs from the image's (`shape`) is an
        error naming the file."""
        path = row.get("mask_path") or ""
        if not path:
            raise ValueError(f"{row.get('path', '?')}: row has no mask_path")
        m = load_mask(path)
        if shape is not None and tuple(m.shape) != tuple(int(v) for v in shape):
            raise ValueError(f"{path}: mask is {m.shape[0]} x {m.shape[1]} px, its image {row.get('path', '?')} "
                             f"is {shape[0]} x {shape[1]}")
        return m[None].astype(np.float32)

    def fov(self, row: Mapping[str, str], shape: Sequence[int]) -> np.ndarray | None:
        """(H, W) bool field-of-view mask of a row's `fov_path` (non-zero: inside), None without one.
        `shape`: the image's native (H0, W0), which the file must match (an error naming the file
        otherwise)."""
        path = row.get("fov_path") or ""
        if not path:
            return None
        m = load_mask(path)
        if tuple(m.shape) != tuple(int(v) for v in shape):
            raise ValueError(f"{path}: field-of-view mask is {m.shape[0]} x {m.shape[1]} px, its image "
                             f"{row.get('path', '?')} is {shape[0]} x {shape[1]}")
        if not m.any():
            raise ValueError(f"{path}: field-of-view mask is empty")
        return m

    def _channels(self, img: np.ndarray, row: Mapping[str, str]) -> np.ndarray:
        """Image (C, H, W) in [0, 1] -> the plan's channels: priors, then normalisation."""
        img = np.clip(img, 0.0, 1.0)
        priors = {}
        wanted = [p for p in self.plan if p in PRIOR_NAMES]
        if wanted:
            grey = img[0] if self.colour == "grey" else img.T.dot([0.299, 0.587, 0.114]).T.astype(np.float32)
            s = self.priors
            dark = (str(row.get("image_type", "")).lower() in DARK_VESSEL_TYPES) if s.black_ridges == "auto" \
                else bool(s.black_ridges)
            found = vessel_priors(grey, sigmas=s.sigmas, beta=s.beta, c=s.c, black_ridges=dark, threshold=s.threshold)
            priors = {k: v.astype(np.float32) for k, v in found.items()}
        norm = normalise(img, self.intensity)
        out = [norm[int(p[4:])] if p.startswith("img:") else priors[p] for p in self.plan]
        return np.stack(out).astype(np.float32)

    def mask(self, row: Mapping[str, str]) -> np.ndarray:
        """(1, H, W) float32 in {0, 1} of a row's `mask_path`, resized with its image; a mask whose
        size differs from its image's (row `height`/`width`, else the image header) is an error
        naming the file, never stretched to fit."""
        path = row.get("mask_path") or ""
        if not path:
            raise ValueError(f"{row.get('path', '?')}: row has no mask_path")
        m = load_mask(path)
        image_hw = _image_hw(row)
        if image_hw is not None and tuple(m.shape) != image_hw:
            raise ValueError(f"{path}: mask is {m.shape[0]} x {m.shape[1]} px, its image {row.get('path', '?')} "
                             f"is {image_hw[0]} x {image_hw[1]}; not stretched to fit")
        return resize_mask(m, self.shape)[None].astype(np.float32)


def _image_hw(row: Mapping[str, str]) -> tuple[int, int] | None:
    """(height, width) of a row's image: its manifest columns, else the file's header; None if unknown."""
    try:
        return int(row["height"]), int(row["width"])
    except (KeyError, TypeError, ValueError):
        pass
    from PIL import Image

    try:
        with Image.open(row["path"]) as im:  # the header only
            return im.height, im.width
    except (KeyError, OSError, ValueError):
        return None
