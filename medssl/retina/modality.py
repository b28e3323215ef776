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
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.cache import ArrayCache, build_array_cache
from medssl.data.layouts import register_layout
from medssl.data.modalities import ModalityData, NativeImages, register_modality
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
    key = f"retina-image|{prep.cache_key()}|{_files_stamp(rows, 'mask_path')}"
    return build_array_cache(rows, RetinaImageLoader(prep), settings=prep.to_dict(), settings_key=key,
                             modality="retina", cache_root=data_cfg.get("cache_dir") or cache_root,
                             errors=(ValueError, OSError))


def retina_masks(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
                 cache_root: str | Path | None) -> ArrayCache:
    """(N, 1, H, W) float32 {0, 1} segmentation targets, item for item aligned with
    :func:`retina_inputs` of the same rows."""
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

RETINA = register_modality("retina", ModalityData(
    inputs=retina_inputs, masks=retina_masks, contract_problems=retina_contract_problems,
    write_synthetic=write_synthetic, native=retina_native,
))
