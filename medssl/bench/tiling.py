"""2-D segmentation at an image's own resolution: random tiles for training, sliding windows for inference.

An encoder reads images of one size, its *tile* (``spec.input["tile_size"]``, else
``spec.input["shape"]``; e.g. 64 x 64 px for ``retina_vit_tiny``). A fundus photograph is much
larger (DRIVE: 584 x 565 px), and resizing it to the tile would shrink a 1-2 px vessel out of
existence. The benchmark therefore never shrinks an image by more than ``max_downscale`` (2x by
default) without being told to (:func:`plan_resolution`):

* a segmentation task on such images is run at native resolution: the segmenter trains on random
  tiles of the tile size cut from the full images (:func:`sample_tiles`, :func:`train_tiled_segmenter`)
  and predicts by sliding windows with overlap whose probabilities are blended back into a
  full-size map (:func:`sliding_window_probabilities`, MONAI's ``sliding_window_inference`` with
  Gaussian weights by default);
* any other task (embedding whole images for probes or fine-tuning) is refused with a message
  naming the dataset, the image size and the encoder's tile, unless the dataset's
  ``data: {max_downscale: N}`` allows the shrink explicitly.

Dataset ``data`` settings read here (:class:`TilingSettings`)::

    tiling: auto           # auto: tile when resizing would shrink an image more than max_downscale;
                           # always: tile every image; never: resize (refused beyond max_downscale)
    max_downscale: 2.0     # the largest shrink factor (per side) accepted without tiling
    tile_overlap: 0.5      # sliding-window overlap, fraction of the tile, in [0, 1)
    tile_blend: gaussian   # gaussian (weights fall off from the tile centre, sigma 1/8 of the
                           # tile) or constant (plain average of the overlapping windows)

Field of view: where a record has one (a ``fov_path``), training tiles are centred on random
pixels inside it and predictions outside it are set to background; the scores are computed inside
it (:func:`medssl.bench.segmentation.per_record_scores`). Everything here runs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.bench.inputs import ContractError

TILING_MODES = ("auto", "always", "never")
BLEND_MODES = ("gaussian", "constant")
DATA_KEYS = ("tiling", "max_downscale", "tile_overlap", "tile_blend")
MAX_DOWNSCALE = 2.0


class ResolutionError(ContractError):
    """Reading a dataset with an encoder would shrink its images more than allowed."""


@dataclass(frozen=True)
class TilingSettings:
    """How a dataset's large images are read (see the module docstring)."""

    mode: str = "auto"
    max_downscale: float = MAX_DOWNSCALE
    overlap: float = 0.5
    blend: str = "gaussian"

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None, where: str = "data") -> TilingSettings:
        """From a dataset's ``data`` section; a bad value raises ContractError naming ``where.key``."""
        data = dict(data or {})
        mode = str(data.get("tiling", "auto"))
        if mode not in TILING_MODES:
            raise ContractError(f"{where}.tiling: {mode!r} is not one of {', '.join(TILING_MODES)}")
        blend = str(data.get("tile_blend", "gaussian"))
        if blend not in BLEND_MODES:
            raise ContractError(f"{where}.tile_blend: {blend!r} is not one of {', '.join(BLEND_MODES)}")
        try:
            max_down = float(data.get("max_downscale", MAX_DOWNSCALE))
            overlap = float(data.get("tile_overlap", 0.5))
        except (TypeError, ValueError) as e:
            raise ContractError(f"{where}: max_downscale and tile_overlap must be numbers ({e})") from None
        if not max_down >= 1.0:
            raise ContractError(f"{where}.max_downscale: {max_down} must be >= 1")
        if not 0.0 <= overlap < 1.0:
            raise ContractError(f"{where}.tile_overlap: {overlap} must lie in [0, 1)")
        return cls(mode=mode, max_downscale=max_down, overlap=overlap, blend=blend)


def encoder_tile(spec_input: Mapping[str, Any]) -> tuple[int, int] | None:
    """(H, W) px an encoder reads at once: ``tile_size``, else ``shape``; None unless 2-D."""
    if int(spec_input.get("spatial_dims", 0) or 0) != 2:
        return None
    size = spec_input.get("tile_size") or spec_input.get("shape")
    if not size or len(size) != 2:
        return None
    return int(size[0]), int(size[1])


def image_size(row: Mapping[str, str]) -> tuple[int, int]:
    """(H, W) px of a row's image: its ``height`` and ``width`` columns, else the file's header.
    Raises ValueError naming the file when neither gives a size."""
    try:
        return int(row["height"]), int(row["width"])
    except (KeyError, TypeError, ValueError):
        pass
    from PIL import Image, UnidentifiedImageError

    path = row.get("path", "")
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: cannot read the image size ({e})") from None


def downscale_factor(rows: Sequence[Mapping[str, str]], tile: Sequence[int]) -> tuple[float, tuple[int, int], int]:
    """(largest per-side shrink factor max(H / tile_h, W / tile_w) over the rows, the (H, W) of that
    image, the number of rows shrunk more than 2x) when the rows are resized to ``tile``."""
    best, size, over = 0.0, (0, 0), 0
    for row in rows:
        h, w = image_size(row)
        f = max(h / tile[0], w / tile[1])
        over += f > MAX_DOWNSCALE
        if f > best:
            best, size = f, (h, w)
    return best, size, over


def plan_resolution(rows: Sequence[Mapping[str, str]], spec_input: Mapping[str, Any], settings: TilingSettings, *,
                    dataset: str, encoder: str, segmentation: bool, source: str = "") -> str:
    """"tiles" (segment at native resolution in tiles) or "resize" (resize to the encoder's shape)
    for an encoder reading ``rows``; raises :class:`ResolutionError` when resizing would shrink an
    image more than ``settings.max_downscale`` and tiling is not possible (not a segmentation task,
    or ``tiling: never``). Not 2-D encoders: always "resize" (their modality crops or resamples)."""
    tile = encoder_tile(spec_input)
    if tile is None or not rows:
        return "resize"
    factor, (h, w), _ = downscale_factor(rows, tile)
    if segmentation and (settings.mode == "always" or (settings.mode == "auto" and factor > settings.max_downscale)):
        return "tiles"
    if factor > settings.max_downscale:
        n = sum(max(image_size(r)[0] / tile[0], image_size(r)[1] / tile[1]) > settings.max_downscale for r in rows)
        allowed = math.ceil(factor * 10) / 10
        allow = f"allow the shrink explicitly with datasets.{dataset}.data.max_downscale: {allowed:g}"
        how = (f"set datasets.{dataset}.data.tiling: auto to segment at native resolution in tiles, or {allow}"
               if segmentation else
               f"only segmentation tasks are tiled: use an encoder with a larger input, crop the images, or {allow}")
        prefix = f"{source}: " if source else ""
        raise ResolutionError(
            f"{prefix}encoder {encoder!r} reads {tile[0]} x {tile[1]} px and dataset {dataset!r} has images up to "
            f"{h} x {w} px ({n} of {len(rows)} more than {settings.max_downscale:g}x larger): resizing would shrink "
            f"them {factor:.1f}x, which the benchmark does not do silently; {how}")
    return "resize"


def tiles_per_image(shape: Sequence[int], tile: Sequence[int]) -> int:
    """Non-overlapping tiles that cover an image of ``shape`` (H, W): ceil(H / th) * ceil(W / tw)."""
    return math.ceil(shape[0] / tile[0]) * math.ceil(shape[1] / tile[1])


def _pad_to(a: np.ndarray, tile: Sequence[int]) -> np.ndarray:
    """Zero-pad the last two axes of ``a`` at the bottom/right to at least ``tile``."""
    ph, pw = max(0, tile[0] - a.shape[-2]), max(0, tile[1] - a.shape[-1])
    if not ph and not pw:
        return a
    return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)])


def sample_tiles(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], fovs: Sequence[np.ndarray | None] | None,
                 tile: Sequence[int], n: int, rng: np.random.Generator, *, flip: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random training tiles: x (n, C, th, tw) float32 and y (n, 1, th, tw) float32.

    images: per record (C, H, W); masks: per record (1, H, W); fovs: per record (H, W) bool or None.
    Each tile comes from a uniformly drawn record, centred on a uniformly drawn pixel of its field
    of view (any pixel without one), shifted to lie inside the image (images smaller than the tile
    are zero-padded at the bottom/right); with ``flip`` each tile is flipped left-right and
    up-down with probability 1/2 each, the mask with it.
    """
    th, tw = int(tile[0]), int(tile[1])
    x = np.zeros((n, images[0].shape[0], th, tw), np.float32)
    y = np.zeros((n, 1, th, tw), np.float32)
    for k in range(n):
        i = int(rng.integers(len(images)))
        img, msk = images[i], masks[i]
        h, w = img.shape[-2:]
        fov = None if fovs is None else fovs[i]
        if fov is not None:
            flat = np.flatnonzero(fov)
            cy, cx = divmod(int(flat[rng.integers(len(flat))]), w)
        else:
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top = min(max(cy - th // 2, 0), max(h - th, 0))
        left = min(max(cx - tw // 2, 0), max(w - tw, 0))
        xi = _pad_to(img[:, top:top + th, left:left + tw], tile)
        yi = _pad_to(msk[:, top:top + th, left:left + tw], tile)
        if flip and rng.random() < 0.5:
            xi, yi = xi[..., ::-1], yi[..., ::-1]
        if flip and rng.random() < 0.5:
            xi, yi = xi[..., ::-1, :], yi[..., ::-1, :]
        x[k], y[k] = xi, yi
    return x, y


def train_tiled_segmenter(encoder: nn.Module, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                          fovs: Sequence[np.ndarray | None] | None = None, *, tile: Sequence[int],
                          mode: str = "frozen", epochs: int = 20, lr: float = 1e-3, batch_size: int = 8,
                          encoder_lr_scale: float = 0.1, weight_decay: float = 1e-4, seed: int = 0, width: int = 32,
                          decoder: str = "pyramid", min_steps: int = 0, flip: bool = True) -> nn.Module:
    """A segmenter (:func:`medssl.bench.segmentation.build_segmenter`) for (C, th, tw) tiles,
    trained on random tiles of full-resolution images (:func:`sample_tiles`).

    images: per record (C, H, W) float32; masks: per record (1, H, W) in {0, 1}; fovs: per record
    (H, W) bool or None. An epoch is as many tiles as cover every training image once without
    overlap (sum of :func:`tiles_per_image`), in batches of ``batch_size``; ``epochs`` of them or at
    least ``min_steps`` steps. Loss, optimiser and schedule as
    :func:`medssl.bench.segmentation.train_segmenter`; deterministic under ``seed``.
    """
    from medssl.bench.segmentation import build_segmenter, fit_segmenter, segmenter_optimiser

    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"need as many masks as images (got {len(images)} images, {len(masks)} masks)")
    tile = (int(tile[0]), int(tile[1]))
    for i, (img, m) in enumerate(zip(images, masks)):
        if img.shape[-2:] != m.shape[-2:]:
            raise ValueError(f"record {i}: image {img.shape[-2:]} and mask {m.shape[-2:]} differ in size")
    fovs = list(fovs) if fovs is not None else [None] * len(images)
    per_epoch = math.ceil(sum(tiles_per_image(img.shape[-2:], tile) for img in images) / batch_size)
    total = max(epochs * per_epoch, min_steps)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_segmenter(encoder, (images[0].shape[0], *tile), mode=mode, width=width, decoder=decoder)
        opt = segmenter_optimiser(model, mode=mode, lr=lr, encoder_lr_scale=encoder_lr_scale,
                                  weight_decay=weight_decay)
        rng = np.random.default_rng(seed)

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            while True:
                yield sample_tiles(images, masks, fovs, tile, batch_size, rng, flip=flip)

        return fit_segmenter(model, opt, batches(), total)


@torch.no_grad()
def sliding_window_probabilities(model: nn.Module, image: np.ndarray, tile: Sequence[int], *, overlap: float = 0.5,
                                 blend: str = "gaussian", batch_size: int = 16,
                                 fov: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 probabilities of one image (C, H, W) at its own resolution.

    Windows of exactly ``tile`` px (the model never sees another size) slide with a step of
    ``tile * (1 - overlap)``, the last window flush with the border, so every pixel is covered;
    each window's sigmoid probabilities are blended into the full map by MONAI's
    ``sliding_window_inference`` (``blend`` gaussian: weights exp(-d^2 / 2 sigma^2), sigma = tile / 8,
    from the window centre; constant: plain average). Images smaller than the tile are zero-padded
    and cropped back. Pixels outside ``fov`` (H, W) bool are set to 0.
    """
    from monai.inferers import sliding_window_inference

    if blend not in BLEND_MODES:
        raise ValueError(f"blend {blend!r} is not one of {', '.join(BLEND_MODES)}")
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(windows).float())

    prob = sliding_window_inference(x, roi_size=tuple(int(t) for t in tile), sw_batch_size=batch_size,
                                    predictor=predictor, overlap=overlap, mode=blend, padding_mode="constant",
                                    cval=0.0)
    out = torch.as_tensor(prob)[0, 0].float().cpu().numpy()
    if fov is not None:
        out = np.where(fov, out, 0.0).astype(np.float32)
    return out
