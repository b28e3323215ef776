"""The retina modality's data hooks and layouts (see `medssl.data.modalities`, `medssl.data.layouts`).

Layouts: `octa500` (medssl.retina.octa500) and `image-folder` (medssl.retina.image_folder).

inputs(rows, spec_input, data_cfg, cache_root) -> ArrayCache of (N, C, H, W) float32, H, W =
spec_input["shape"], preprocessed as `medssl.retina.preprocess` describes. Channel layout:

    [image channels (and any priors) in the order of spec_input["channels"]]
    + [spec_input["priors"]] + [data_cfg["priors"]]        (a prior is never repeated)

so a one-channel OCTA encoder under a recipe with `data: {priors: [vesselness, skeleton]}` gets
x[:, 0] = the normalised OCTA image, x[:, 1] = Frangi vesselness in [0, 1], x[:, 2] = skeleton in
{0, 1}. A method that needs the priors only for masking (VAMAE) splits them off:
`image, priors = x[:, :n_image], x[:, n_image:]` with n_image = C - number of priors, and feeds
the encoder the image alone. Without priors in either place, x holds the image channels only. The priors are computed once, when the cache entry is
built (in the worker processes), at model resolution, and stored with the images; the recipe's
`data: {vessel_prior: {sigmas, beta, c, black_ridges, threshold}}` (or spec_input["prior_settings"])
changes how, and is part of the cache key.

native(rows, spec_input, data_cfg, shape=None) -> NativeImages: the same images, masks and the
field-of-view masks (`fov_path`) at each image's own resolution, for segmentation in tiles
(`medssl.bench.tiling`), or all resized to `shape`.

Tiles at native resolution (pretraining on large images): with `data_cfg["tiles"]` (a mapping,
`{stride: px, min_fov: fraction}`, both optional: stride = half the tile, min_fov 0.5), each image
is read at its own resolution, preprocessed whole (priors and per-image normalisation over the
full image, as `native` does), and cut into tiles of spec_input["shape"] on a grid of `stride` px
(the last row and column flush with the border); tiles with less than `min_fov` of their pixels
inside the row's field of view (`fov_path`; every tile when there is none) are dropped. inputs()
then holds (n_tiles, C, h, w) per image, the image's manifest row repeated per tile (as ECG
windows), so a fundus photograph (DRIVE: 584 x 565 px) trains a 64 x 64 px encoder on its real
vessels instead of a 9x shrunk picture. An image smaller than the tile is skipped, named.

masks(...) -> ArrayCache of (N, 1, H, W) float32 in {0, 1} from each row's `mask_path`, nearest-
neighbour resized to the same shape. Alignment: a row that has a `mask_path` is kept by BOTH hooks
only if its image and its mask both load, so inputs and masks of the same rows hold the same
items in the same order.

contract_problems(spec_input, rows): 2-D contract, channels, priors and intensity understood,
image types (when the spec names them), and scale (the field of view per model pixel, when rows
carry fov_mm or pixel_size_mm and the spec pixel_size_mm).

write_synthetic = medssl.retina.synthetic.write_synthetic (an OCTA-500 replica, indexed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.cache import ArrayCache, build_array_cache
from medssl.data.layouts import register_layout
from medssl.data.modalities import NativeImages
from medssl.plugins import Modality, register_modality
from medssl.retina.preprocess import RetinaPreprocess
from medssl.retina.synthetic import write_synthetic

SCALE_TOLERANCE = 1.5  # field of view per model pixel may differ from the encoder's by this factor


class RetinaImageLoader:
    """Row -> (1, C, H, W) float32 model input; picklable for the cache's worker processes. A row
    with a mask_path must also have a readable mask (so inputs and masks stay aligned)."""

    def __init__(self, prep: RetinaPreprocess):
        self.prep = prep

    def __call__(self, row: dict) -> np.ndarray:
        if row.get("mask_path"):
            self.prep.mask(row)
        return self.prep.image(row)[None]


class RetinaMaskLoader:
    """Row -> (1, 1, H, W) float32 mask in {0, 1}; the row's image must load too."""

    def __init__(self, prep: RetinaPreprocess):
        self.prep = prep

    def __call__(self, row: dict) -> np.ndarray:
        from medssl.retina.preprocess import load_image

        load_image(row["path"], self.prep.colour)
        return self.prep.mask(row)[None]


@dataclass(frozen=True)
class TileGrid:
    """Where pretraining tiles are cut from a native-resolution image (module docstring)."""

    tile: tuple[int, int]
    stride: tuple[int, int]
    min_fov: float = 0.5

    @classmethod
    def from_data(cls, tiles: Mapping[str, Any] | bool, tile: Sequence[int]) -> TileGrid:
        """From a recipe's `data.tiles` (True or a mapping with `stride`, `min_fov`); bad values raise
        ValueError naming the key."""
        cfg = {} if tiles is True else dict(tiles)
        unknown = set(cfg) - {"stride", "min_fov"}
        if unknown:
            raise ValueError(f"data.tiles: unknown key(s) {', '.join(sorted(unknown))}; known: stride, min_fov")
        th, tw = int(tile[0]), int(tile[1])
        stride = cfg.get("stride") or (max(1, th // 2), max(1, tw // 2))
        stride = (int(stride), int(stride)) if isinstance(stride, (int, float)) else tuple(int(v) for v in stride)
        min_fov = float(cfg.get("min_fov", 0.5))
        if len(stride) != 2 or min(stride) < 1:
            raise ValueError(f"data.tiles.stride: {cfg.get('stride')!r} must be a positive number of pixels")
        if not 0.0 <= min_fov <= 1.0:
            raise ValueError(f"data.tiles.min_fov: {min_fov} must lie in [0, 1]")
        return cls((th, tw), stride, min_fov)

    def origins(self, size: Sequence[int]) -> list[tuple[int, int]]:
        """(top, left) of every tile on the grid of an image of (H, W) >= the tile."""
        def starts(n: int, t: int, s: int) -> list[int]:
            out = list(range(0, n - t + 1, s))
            return out if out[-1] == n - t else [*out, n - t]
        return [(y, x) for y in starts(size[0], self.tile[0], self.stride[0])
                for x in starts(size[1], self.tile[1], self.stride[1])]


class RetinaTileLoader:
    """Row -> (n_tiles, C, h, w) float32 tiles of the image at its own resolution (module
    docstring); picklable for the cache's worker processes."""

    def __init__(self, prep: RetinaPreprocess, grid: TileGrid):
        self.prep, self.grid = prep, grid

    def __call__(self, row: dict) -> np.ndarray:
        image = self.prep.native_image(row)
        h, w = image.shape[1:]
        th, tw = self.grid.tile
        if h < th or w < tw:
            raise ValueError(f"{row.get('path', '?')}: image is {h} x {w} px, smaller than the {th} x {tw} px tile")
        fov = self.prep.fov(row, (h, w))
        tiles = [image[:, y:y + th, x:x + tw] for y, x in self.grid.origins((h, w))
                 if fov is None or fov[y:y + th, x:x + tw].mean() >= self.grid.min_fov]
        if not tiles:
            raise ValueError(f"{row.get('path', '?')}: no {th} x {tw} px tile has {self.grid.min_fov:.0%} of its "
                             f"pixels inside the field of view {row.get('fov_path')}")
        return np.stack(tiles).astype(np.float32)


def _files_stamp(rows: Sequence[dict], column: str) -> str:
    h = hashlib.sha256()
    for row in rows:
        p = Path(row.get(column) or "")
        if row.get(column) and p.is_file():
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def retina_inputs(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
                  cache_root: str | Path | None) -> ArrayCache:
    """(N, C, H, W) float32 model inputs of `rows` (see the module docstring); unreadable images
    (and, for rows with one, unreadable masks) are skipped and listed."""
    prep = RetinaPreprocess.for_encoder(spec_input, data_cfg)
    if data_cfg.get("tiles"):
        grid = TileGrid.from_data(data_cfg["tiles"], prep.shape)
        key = f"retina-tiles|{prep.cache_key()}|{grid}|{_files_stamp(rows, 'fov_path')}"
        return build_array_cache(rows, RetinaTileLoader(prep, grid), settings={**prep.to_dict(), "tiles": asdict(grid)},
                                 settings_key=key, modality="retina", cache_root=data_cfg.get("cache_dir") or cache_root,
                                 errors=(ValueError, OSError))
    key = f"retina-image|{prep.cache_key()}|{_files_stamp(rows, 'mask_path')}"
    return build_array_cache(rows, RetinaImageLoader(prep), settings=prep.to_dict(), settings_key=key,
                             modality="retina", cache_root=data_cfg.get("cache_dir") or cache_root,
                             errors=(ValueError, OSError))


def retina_masks(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
                 cache_root: str | Path | None) -> ArrayCache:
    """(N, 1, H, W) float32 {0, 1} segmentation targets, item for item aligned with
    :func:`retina_inputs` of the same rows."""
    if data_cfg.get("tiles"):
        raise ValueError("data.tiles cuts images into pretraining tiles; segmentation targets are read at native "
                         "resolution by the benchmark's tiling (medssl.bench.tiling), not from tiles")
    prep = RetinaPreprocess.for_encoder(spec_input, data_cfg)
    key = f"retina-mask|sized|{prep.shape}|{prep.colour}|{_files_stamp(rows, 'mask_path')}"  # sized: never stretched
    return build_array_cache(rows, RetinaMaskLoader(prep), settings={"shape": list(prep.shape), "masks": True},
                             settings_key=key, modality="retina", cache_root=data_cfg.get("cache_dir") or cache_root,
                             errors=(ValueError, OSError))


def retina_native(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
                  shape: Sequence[int] | None = None) -> NativeImages:
    """Rows with a mask at their own resolution (or resized to `shape`): images (C, H, W) float32
    preprocessed as :func:`retina_inputs` without the resize, masks (1, H, W) in {0, 1}, field-of-
    view masks (H, W) bool or None. A mask or field-of-view file whose size differs from its
    image's, an empty field of view, or an unreadable file skips the row (reason naming the file)."""
    from medssl.retina.preprocess import load_image, resize_image, resize_mask

    prep = RetinaPreprocess.for_encoder(spec_input, data_cfg)
    out = NativeImages([], [], [], [], [])
    for row in rows:
        if not row.get("mask_path"):
            out.skipped.append((row.get("path", "?"), "no mask_path"))
            continue
        try:
            raw = load_image(row["path"], prep.colour)
            size = raw.shape[1:]
            mask = prep.native_mask(row, size)
            fov = prep.fov(row, size)
            if shape is not None:
                raw = resize_image(raw, shape)
                mask = resize_mask(mask[0] > 0.5, shape)[None].astype(np.float32)
                fov = None if fov is None else resize_mask(fov, shape)
            image = prep._channels(raw, row)
        except (ValueError, OSError) as e:
            out.skipped.append((row.get("path", "?"), str(e)))
            continue
        out.images.append(image)
        out.masks.append(mask)
        out.fovs.append(fov)
        out.rows.append(dict(row))
    return out


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _row_fov_mm(row: Mapping[str, str]) -> float | None:
    fov = _float(row.get("fov_mm"))
    if fov is None:
        px, width = _float(row.get("pixel_size_mm")), _float(row.get("width"))
        fov = px * width if px and width else None
    return fov


def retina_contract_problems(spec_input: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    """What `rows` lack for a retina encoder, each problem one short phrase (empty: it can read them);
    rows that are not 2-D image files (an ECG or volume manifest) first of all."""
    from medssl.retina.image_folder import IMAGE_SUFFIXES

    problems: list[str] = []
    try:
        prep = RetinaPreprocess.for_encoder(spec_input)
    except ValueError as e:
        return [str(e)]
    foreign = [r for r in rows if not str(r.get("path", "")).lower().endswith(IMAGE_SUFFIXES)]
    if foreign:
        return [f"records: {len(foreign)} of {len(rows)} rows are not 2-D image files (e.g. "
                f"{Path(str(foreign[0].get('path', ''))).name or '?'})"]
    want_types = spec_input.get("image_type")
    if want_types:
        want = {want_types.lower()} if isinstance(want_types, str) else {t.lower() for t in want_types}
        have = [str(r.get("image_type", "")).lower() for r in rows if r.get("image_type")]
        other = sorted({t for t in have if t not in want})
        if other:
            n = sum(t not in want for t in have)
            problems.append(f"image type: {n} of {len(rows)} rows are {', '.join(other)}; "
                            f"encoder reads {', '.join(sorted(want))}")
    px_spec = _float(spec_input.get("pixel_size_mm"))
    if px_spec:
        fovs = [f for f in (_row_fov_mm(r) for r in rows) if f]
        scales = np.asarray(fovs) / prep.shape[1]
        off = (scales > px_spec * SCALE_TOLERANCE) | (scales < px_spec / SCALE_TOLERANCE)
        if off.any():
            problems.append(f"scale: {int(off.sum())} of {len(rows)} rows give {np.median(scales[off]):.4g} mm per "
                            f"model pixel at {prep.shape[1]} px, the encoder expects {px_spec:.4g} mm")
    return problems


def _octa500(root: Path, labels: str | None = None, task: str | None = None, fov: str = "3mm",
             projection: str = "OCTA(FULL)", splits: str = "official"):
    """OCTA-500 projection maps of one field of view (3mm or 6mm) for a task (disease, vessel,
    capillary, artery, vein, faz, cavf; none: every map)."""
    from medssl.retina.octa500 import index_octa500

    return index_octa500(root, labels=labels, task=task, fov=fov, projection=projection, splits=splits)


def _image_folder(root: Path, labels: str | None = None, task: str | None = None, split_seed: int = 0,
                  images: str | None = None, masks: str | None = None, fov: str | None = None,
                  subject: str = "stem"):
    """Images (and masks) listed in a CSV: image, [mask], [fov], [subject_id], [labels], [split], [site];
    without a CSV, images/ + 1st_manual/ + mask/ folders as DRIVE ships them (options images=, masks=,
    fov= name other folders; subject=number takes the first number of the file name)."""
    from medssl.retina.image_folder import index_image_folder

    return index_image_folder(root, labels=labels, task=task, split_seed=int(split_seed), images=images,
                              masks=masks, fov=fov, subject=subject)


register_layout("octa500", _octa500)
register_layout("image-folder", _image_folder)

MODALITY = register_modality(Modality(
    name="retina", inputs=retina_inputs, masks=retina_masks, contract_problems=retina_contract_problems,
    write_synthetic=write_synthetic, native=retina_native,
    registers=("medssl.retina.encoders", "medssl.retina.unet", "medssl.retina.methods", "medssl.retina.importers",
               "medssl.retina.mask_decoder"),
))
