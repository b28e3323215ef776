"""The CT modality's data hooks (see `medssl.data.modalities`) and its dataset layouts.

Layouts (``medssl data index --layout NAME``):
  dicom         a folder of DICOM files (any depth, read only): one row per series, or with
                ``--option nodules=FILE.csv`` one row per nodule (labels under the LIDC convention,
                :mod:`medssl.ct.nodules`). Also used for MRI series.
  organmnist3d  a user-provided OrganMNIST3D .npz (:mod:`medssl.ct.organmnist`).

Inputs for an encoder's contract (`spec.input`): "shape" (3 sizes; or 2 for a 2D encoder, which
gets the axial plane through the centre), "spacing_mm" (one value or one per axis, default 1),
"windows" (names or [lower, upper] HU, one channel each; default: "channels" when it lists window
names, else ["lung"]). Rows with a finding centre (center_x_mm, ...) give the patch around it;
other rows the whole volume resampled and centre-cropped/padded. Arrays (N, C, *shape) float32
in [0, 1], spatial axes along RAS+ (:mod:`medssl.ct.preprocess`). The recipe's ``data`` section
may set the DICOM slice policies (missing, duplicates, uneven), ``salt`` and ``antialias``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.ct.dicom_folder import index_dicom_folder
from medssl.data.cache import ArrayCache, build_array_cache
from medssl.data.layouts import register_layout
from medssl.imaging import volume_folder  # noqa: F401 (registers the shared volume-folder layout)
from medssl.plugins import Modality, register_modality

MAX_UPSAMPLING = 4.0  # contract: voxels at most this many times coarser than the encoder's spacing


# ---------------------------------------------------------------- layout: dicom

def _dicom_layout(root: Path, labels: str | None = None, task: str | None = None, *, salt: str | None = None,
                  nodules: str | None = None, frame: str = "LPS", duplicates: str = "drop", missing: str = "error",
                  uneven: str = "interpolate"):
    """DICOM series (CT or MRI) under `root`; with nodules=CSV one row per labelled nodule."""
    if labels or task:
        raise ValueError("layout dicom has no tasks or --labels; give a nodule list with --option nodules=FILE.csv")
    return index_dicom_folder(root, salt=salt, nodules=nodules, frame=frame, duplicates=duplicates, missing=missing,
                              uneven=uneven)


def _organmnist_layout(root: Path, labels: str | None = None, task: str | None = None, *, file: str | None = None):
    """OrganMNIST3D: a folder holding organmnist3d.npz (or organmnist3d_64.npz; file=NAME picks one)."""
    from medssl.ct.organmnist import index_organmnist3d

    if labels or task:
        raise ValueError("layout organmnist3d takes its labels from the .npz; drop --labels/--task")
    return index_organmnist3d(root, file=file)


register_layout("dicom", _dicom_layout)
register_layout("organmnist3d", _organmnist_layout)


# ---------------------------------------------------------------- inputs and masks

@dataclass(frozen=True)
class CTInputSettings:
    """What an encoder's input contract asks of CT arrays (hashable; no secrets: the salt is not here)."""

    shape: tuple[int, ...]
    spacing_mm: tuple[float, float, float]
    windows: tuple  # window names or (lower, upper) HU
    fill_hu: float = -1000.0
    antialias: bool = True
    duplicates: str = "drop"
    missing: str = "error"
    uneven: str = "interpolate"

    @classmethod
    def from_spec(cls, spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any] | None = None) -> CTInputSettings:
        from medssl.ct.windowing import WINDOWS, window_bounds

        data_cfg = data_cfg or {}
        shape = tuple(int(v) for v in (spec_input.get("shape") or ()))
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"CT input contract: shape {list(shape)} should hold 2 or 3 positive sizes")
        spacing = np.asarray(spec_input.get("spacing_mm", 1.0), dtype=float).ravel()
        if spacing.size == 1:
            spacing = np.repeat(spacing, len(shape))
        if spacing.size != len(shape) or np.any(spacing <= 0):
            raise ValueError(f"CT input contract: spacing_mm {spec_input.get('spacing_mm')} should be one positive "
                             f"value or {len(shape)}")
        spacing3 = tuple(float(v) for v in spacing) + ((0.0,) if len(shape) == 2 else ())
        windows = spec_input.get("windows")
        channels = spec_input.get("channels")
        if not windows:
            if isinstance(channels, (list, tuple)) and channels and all(c in WINDOWS for c in channels):
                windows = list(channels)
            elif channels in (None, 1, [1]):
                windows = ["lung"]
            else:
                raise ValueError(f"CT input contract: channels {channels!r} without windows; give windows "
                                 f"(names among {', '.join(WINDOWS)} or [lower, upper] HU)")
        win = tuple(w if isinstance(w, str) else tuple(window_bounds(w)) for w in windows)
        for w in win:
            window_bounds(w)
        if isinstance(channels, int) and channels != len(win):
            raise ValueError(f"CT input contract: {channels} channels but {len(win)} windows")
        return cls(shape=shape, spacing_mm=spacing3, windows=win,
                   antialias=bool(data_cfg.get("antialias", True)),
                   duplicates=str(data_cfg.get("duplicates", "drop")), missing=str(data_cfg.get("missing", "error")),
                   uneven=str(data_cfg.get("uneven", "interpolate")))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


_VOLUMES: dict[tuple, Any] = {}  # per process: the last few volumes read (rows of one series come together)


def _volume(path: str, settings: CTInputSettings, salt: str | None, smooth: bool):
    from medssl.ct.preprocess import (
        load_ct_volume,
        smooth_for_spacing,
        split_series_path,
    )

    base = split_series_path(path)[0]
    try:
        stamp = os.stat(base).st_mtime_ns
    except OSError:
        stamp = 0
    key = (path, stamp, settings.duplicates, settings.missing, settings.uneven, salt,
           settings.spacing_mm if smooth else None)
    if key not in _VOLUMES:
        if len(_VOLUMES) >= 2:
            _VOLUMES.pop(next(iter(_VOLUMES)))
        vol = load_ct_volume(path, salt=salt, duplicates=settings.duplicates, missing=settings.missing,
                             uneven=settings.uneven)
        _VOLUMES[key] = smooth_for_spacing(vol, settings.spacing_mm) if smooth else vol
    return _VOLUMES[key]


@dataclass(frozen=True)
class CTLoader:
    """load(row) -> (1, C, *shape) images in [0, 1] (kind "image") or (1, 1, *shape) {0, 1} masks
    (kind "mask", from the row's mask_path NIfTI, nearest neighbour, any label > 0); picklable."""

    settings: CTInputSettings
    kind: str = "image"
    salt: str | None = None

    def _grid(self, volume, centre) -> np.ndarray:
        from medssl.ct.preprocess import sample_patch

        s = self.settings
        order, fill = (1, s.fill_hu) if self.kind == "image" else (0, 0.0)
        if len(s.shape) == 3:
            return sample_patch(volume, centre, s.shape, s.spacing_mm, order=order, fill=fill)
        spacing = (s.spacing_mm[0], s.spacing_mm[1], 1.0)
        return sample_patch(volume, centre, (*s.shape, 1), spacing, order=order, fill=fill)[..., 0]

    def __call__(self, row: Mapping[str, str]) -> np.ndarray:
        from medssl.ct.nodules import row_centre
        from medssl.ct.organmnist import load_item, parse_item_path
        from medssl.ct.preprocess import read_nifti_volume, volume_centre
        from medssl.ct.windowing import window_channels

        s = self.settings
        path = row["path"]
        if parse_item_path(path) is not None:
            if self.kind == "mask":
                raise ValueError(f"{path}: OrganMNIST3D has no segmentation masks")
            return self._organmnist(load_item(path))[None]
        if self.kind == "mask":
            mask_path = row.get("mask_path") or ""
            if not mask_path:
                raise ValueError(f"{path}: row has no mask_path")
            centre = row_centre(row)
            if centre is None:
                centre = volume_centre(_volume(path, s, self.salt, smooth=False))
            mask = read_nifti_volume(mask_path)
            return (self._grid(mask, centre) > 0.5).astype(np.float32)[None, None]
        volume = _volume(path, s, self.salt, smooth=s.antialias)
        centre = row_centre(row)
        centre = volume_centre(volume) if centre is None else centre
        return window_channels(self._grid(volume, centre), s.windows)[None]

    def _organmnist(self, image: np.ndarray) -> np.ndarray:
        """(C, *shape): the [0, 1] grey levels (already windowed by MedMNIST) resized to the
        contract's shape (trilinear; 2D: the middle axial plane), repeated over the channels."""
        from scipy.ndimage import zoom

        shape = self.settings.shape
        if len(shape) == 2:
            image = image[:, :, image.shape[2] // 2]
        if image.shape != shape:
            image = zoom(image, [t / n for t, n in zip(shape, image.shape)], order=1, grid_mode=True, mode="nearest")
        return np.repeat(np.clip(image, 0, 1)[None], len(self.settings.windows), axis=0).astype(np.float32)


def _cache(rows, spec_input, data_cfg, cache_root, kind: str) -> ArrayCache:
    settings = CTInputSettings.from_spec(spec_input, data_cfg)
    loader = CTLoader(settings, kind, data_cfg.get("salt"))
    key = json.dumps({"kind": kind, **settings.to_dict()}, sort_keys=True)
    return build_array_cache(rows, loader, settings={"kind": kind, **settings.to_dict()}, settings_key=key,
                             modality="ct" if kind == "image" else "ct-masks",
                             cache_root=data_cfg.get("cache_dir") or cache_root)


def ct_inputs(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
              cache_root: str | Path | None) -> ArrayCache:
    """(N, C, *shape) float32 in [0, 1]: one window per channel, patches around findings or whole
    volumes (module docstring); bad series are skipped and listed in `.skipped`."""
    return _cache(rows, spec_input, data_cfg, cache_root, "image")


def ct_masks(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
             cache_root: str | Path | None) -> ArrayCache:
    """(N, 1, *shape) {0, 1} nodule masks from each row's `mask_path`, sampled on the same grids
    as :func:`ct_inputs` of the same rows (nearest neighbour)."""
    return _cache(rows, spec_input, data_cfg, cache_root, "mask")


def _row_spacing(row: Mapping[str, str]) -> float | None:
    try:
        return max(float(row[f"spacing_{a}_mm"]) for a in "xyz")
    except (KeyError, TypeError, ValueError):
        return None


def ct_contract_problems(spec_input: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    """What `rows` lack for the encoder: a valid CT contract; OrganMNIST3D images (8-bit
    abdominal-window grey levels, not HU) for more than one window channel; voxels more than
    MAX_UPSAMPLING (4) times coarser than the encoder's spacing (from the spacing_*_mm columns)."""
    from medssl.ct.organmnist import parse_item_path

    try:
        settings = CTInputSettings.from_spec(spec_input)
    except ValueError as e:
        return [str(e)]
    problems = []
    npz = sum(1 for r in rows if str(r.get("path", "")).partition("#")[0].lower().endswith(".npz")
              and parse_item_path(r["path"]) is not None)
    if npz and len(settings.windows) > 1:
        problems.append(f"windows: {npz} of {len(rows)} records are OrganMNIST3D grey levels (not HU), which "
                        f"cannot give the encoder's {len(settings.windows)} window channels")
    target = max(settings.spacing_mm)
    spacings = [v for v in (_row_spacing(r) for r in rows) if v is not None]
    coarse = [v for v in spacings if v > MAX_UPSAMPLING * target]
    if coarse:
        problems.append(f"spacing: {len(coarse)} of {len(rows)} series have voxels up to {max(coarse):g} mm, over "
                        f"{MAX_UPSAMPLING:g}x the encoder's {target:g} mm")
    return problems


def write_synthetic_ct(folder: str | Path, *, subjects_per_site: int = 20, seed: int = 0):
    """The two-site synthetic chest CT cohort (:func:`medssl.ct.phantom.write_synthetic`), indexed:
    one row per labelled nodule (task: malignancy from patches)."""
    from medssl.ct.phantom import write_synthetic

    return write_synthetic(folder, subjects_per_site=subjects_per_site, seed=seed)


MODALITY = register_modality(Modality(
    name="ct", inputs=ct_inputs, masks=ct_masks, contract_problems=ct_contract_problems,
    write_synthetic=write_synthetic_ct,
    registers=("medssl.ct.encoders", "medssl.ct.methods", "medssl.ct.importers", "medssl.ct.segmentation"),
))
