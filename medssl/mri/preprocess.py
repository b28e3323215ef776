"""Brain MRI preprocessing: volumes -> one model-ready (C, D, H, W) float32 array, and back.

Steps (MONAI array transforms on a MetaTensor that carries the affine through every step):
  1. NaN/Inf guard: non-finite voxels become 0 (counted in `Geometry.non_finite`).
  2. Channels onto one grid: every sequence is resampled (trilinear, through world coordinates)
     onto the grid of the first channel unless it already shares it (co-registered FOMO data).
  3. `Orientation("RAS")`: axes reordered/flipped to RAS+, no interpolation.
  4. `CropForeground`: the bounding box of voxels non-zero in any channel (skull-stripped data
     has zero background; FOMO's "crop to non-zero").
  5. `Spacing(spacing_mm)`: trilinear resampling to the encoder's voxel size (1 mm isotropic by
     default; skipped when already there).
  6. `NormalizeIntensity(nonzero=True, channel_wise=True)`: z-score of each channel over its
     non-zero ("brain") voxels; the background stays 0.
  7. `ResizeWithPadOrCrop(shape)`: the encoder's input shape, centred: a larger volume loses its
     margins equally on both sides, a smaller one is zero-padded equally. At 1 mm a skull-stripped
     adult brain is about 140 x 175 x 140 voxels, so a 160^3 input holds it whole; smaller inputs
     see its centre. (Resizing instead would change the voxel size the encoder was trained on.)
Every step updates the affine, so the model grid's affine (`Geometry.model_affine`) maps model
voxels to the same world millimetres as the input; `to_original_space` maps a model-space array
(a predicted mask) back onto the input's grid, and `to_model_space` puts a label map (a
ground-truth mask) onto the model grid, both nearest-neighbour through world coordinates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from medssl.imaging.volume import Volume

PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class Geometry:
    """Where the model grid sits in the input's world: enough to map predictions back.

    original_affine / original_shape: the first channel's grid as read (RAS+ mm);
    model_affine / model_shape: the preprocessed array's grid (voxel -> the same world mm).
    """

    original_affine: tuple[tuple[float, ...], ...]
    original_shape: tuple[int, int, int]
    model_affine: tuple[tuple[float, ...], ...]
    model_shape: tuple[int, int, int]
    non_finite: int = 0

    @classmethod
    def from_arrays(cls, original_affine, original_shape, model_affine, model_shape, non_finite: int = 0) -> Geometry:
        def tup(a):
            return tuple(tuple(float(v) for v in r) for r in np.asarray(a, dtype=np.float64))

        return cls(tup(original_affine), tuple(int(s) for s in original_shape), tup(model_affine),
                   tuple(int(s) for s in model_shape), int(non_finite))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls.from_arrays(d["original_affine"], d["original_shape"], d["model_affine"], d["model_shape"],
                               d.get("non_finite", 0))


def resample_to_grid(array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray,
                     target_shape: Sequence[int], order: int = 0, cval: float = 0.0) -> np.ndarray:
    """`array` (X, Y, Z) on the grid `affine` sampled at the voxel centres of the grid
    (`target_affine`, `target_shape`): order 0 nearest neighbour (labels), 1 trilinear."""
    vox = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    if np.allclose(vox, np.eye(4), atol=1e-6) and tuple(array.shape) == tuple(target_shape):
        return np.asarray(array)
    dtype = array.dtype if order == 0 else np.float32
    return ndimage.affine_transform(np.asarray(array, dtype=dtype), vox[:3, :3], offset=vox[:3, 3],
                                    output_shape=tuple(int(s) for s in target_shape), order=order, mode="constant",
                                    cval=cval, prefilter=False)


def to_original_space(model_array: np.ndarray, geometry: Geometry, order: int = 0) -> np.ndarray:
    """A model-space array (D, H, W) or (C, D, H, W), e.g. a predicted mask, on the input's
    original grid (nearest neighbour by default; order=1 for probabilities). Voxels outside the
    model's field of view become 0."""
    model_array = np.asarray(model_array)
    if model_array.shape[-3:] != geometry.model_shape:
        raise ValueError(f"array of spatial shape {model_array.shape[-3:]} is not on the model grid "
                         f"{geometry.model_shape}")
    args = (np.asarray(geometry.model_affine), np.asarray(geometry.original_affine), geometry.original_shape, order)
    if model_array.ndim == 3:
        return resample_to_grid(model_array, *args)
    return np.stack([resample_to_grid(c, *args) for c in model_array])


def to_model_space(volume: Volume, geometry: Geometry, order: int = 0) -> np.ndarray:
    """A label map or image `volume` (on any grid of the same subject) on the model grid, (D, H, W)."""
    return resample_to_grid(volume.array, volume.affine, np.asarray(geometry.model_affine), geometry.model_shape,
                            order)


def _triple(value, name: str) -> tuple:
    if isinstance(value, (int, float)):
        return (value,) * 3
    value = tuple(value)
    if len(value) == 4:  # (C, D, H, W) given: the spatial part
        value = value[1:]
    if len(value) != 3:
        raise ValueError(f"{name} must have 3 spatial values, got {list(value)}")
    return value


def _nonzero(x):
    return x != 0


@dataclass(frozen=True)
class MriPreprocess:
    """The preprocessing for an encoder input contract; picklable, hashable settings.

    channels: sequence names in the encoder's channel order (e.g. ("flair", "adc", "dwi_b1000",
    "swi_or_t2s")) or ("any",) for one channel of whatever sequence a row holds.
    shape: the model input's spatial shape (D, H, W) in voxels; spacing_mm: its voxel size.
    crop_foreground: crop to the non-zero bounding box before resampling (step 4).
    """

    channels: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_foreground: bool = True
    version: int = field(default=PREPROCESS_VERSION)

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "shape", tuple(int(s) for s in _triple(self.shape, "shape")))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in _triple(self.spacing_mm, "spacing_mm")))
        if not self.channels:
            raise ValueError("MriPreprocess needs at least one channel")
        if min(self.shape) < 1 or min(self.spacing_mm) <= 0:
            raise ValueError(f"shape {self.shape} and spacing_mm {self.spacing_mm} must be positive")

    @classmethod
    def for_encoder(cls, spec_input, **overrides) -> MriPreprocess:
        """From an encoder's `spec.input`: channels (names, or a count: that many unnamed channels,
        which read a task row's inputs in the task's order), shape, spacing_mm (default 1 mm)."""
        channels = spec_input.get("channels", 1)
        if isinstance(channels, bool) or (isinstance(channels, int) and channels < 1):
            raise ValueError(f"channels must be sequence names or a positive count, got {channels!r}")
        if isinstance(channels, int):
            channels = ["any"] * channels
        if "shape" not in spec_input:
            raise ValueError("the encoder's input contract has no 'shape'")
        settings = {"channels": tuple(channels), "shape": spec_input["shape"],
                    "spacing_mm": spec_input.get("spacing_mm", 1.0)}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "shape": list(self.shape), "spacing_mm": list(self.spacing_mm),
                "crop_foreground": self.crop_foreground, "version": self.version,
                "steps": "nan_guard, channels_to_first_grid, orientation_RAS, crop_nonzero, spacing, "
                         "zscore_nonzero, centre_crop_or_pad"}

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def apply(self, volumes: Sequence[Volume]) -> tuple[np.ndarray, Geometry]:
        """(C, D, H, W) float32 model input and its Geometry, channels in the order given.
        Raises ValueError for an empty image (no non-zero voxel)."""
        import torch  # MONAI and torch load in seconds: only when preprocessing, not when indexing
        from monai.data import MetaTensor
        from monai.transforms import (
            CropForeground,
            NormalizeIntensity,
            Orientation,
            ResizeWithPadOrCrop,
            Spacing,
        )

        if not volumes:
            raise ValueError("no volumes to preprocess")
        ref = volumes[0]
        non_finite = 0
        channels = []
        for v in volumes:
            a = np.asarray(v.array, dtype=np.float32)
            if a.ndim != 3:
                raise ValueError(f"{v.meta.get('path', 'volume')}: expected a 3-D array, got shape {a.shape}")
            bad = ~np.isfinite(a)
            if bad.any():
                non_finite += int(bad.sum())
                a = np.where(bad, np.float32(0), a)
            if v is not ref:
                a = resample_to_grid(a, v.affine, ref.affine, ref.array.shape, order=1)
            if not np.any(a):
                raise ValueError(f"{v.meta.get('path', 'volume')}: empty image (no non-zero voxel)")
            channels.append(a)
        x = MetaTensor(torch.from_numpy(np.stack(channels)), affine=torch.as_tensor(ref.affine, dtype=torch.float64))
        x = Orientation(axcodes="RAS", labels=None)(x)
        if self.crop_foreground:
            x = CropForeground(select_fn=_nonzero, allow_smaller=True)(x)
        x = Spacing(pixdim=self.spacing_mm, mode="bilinear", padding_mode="zeros", dtype=np.float32)(x)
        x = NormalizeIntensity(nonzero=True, channel_wise=True)(x)
        x = ResizeWithPadOrCrop(self.shape)(x)
        out = np.nan_to_num(x.as_tensor().numpy().astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
        geometry = Geometry.from_arrays(ref.affine, ref.array.shape, x.affine.numpy(), out.shape[1:], non_finite)
        return np.ascontiguousarray(out), geometry
