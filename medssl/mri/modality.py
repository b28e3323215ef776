"""The brain-MRI modality's data hooks (see `medssl.data.modalities`) and its layouts.

Layouts: `fomo60k` (pretraining scans, one row each; `--option headers=true` reads NIfTI headers
for shape and spacing) and `fomo-task` (FOMO25 tasks 1-3, one row per subject-session;
`--task 1|2|3`, `--option require_labels=false` keeps unlabelled sessions).

Which file feeds which channel (`channel_paths`): a fomo-task row holds `seq_<name>` columns and
the encoder's `spec.input["channels"]` names them in order (`dwi` reads `seq_dwi_b1000`; `swi` or
`t2s` read `seq_swi_or_t2s` only when the session holds that one). A fomo60k row is one scan,
so it feeds one channel: "any" (or an unnamed count of 1) reads whatever sequence it is, a named
channel (`t1`) only a scan of that sequence. Unnamed counts above one read a task row's inputs in
the task's order.

Arrays: `inputs` gives (N, C, D, H, W) float32 from the cache (`medssl.data.cache`), D, H, W from
`data.shape` of the recipe when set (a whole-brain volume that training crops patches from), else
the encoder's `spec.input["shape"]`. Each cached item's geometry (input affine and shape, model
affine and shape) is written to `<cache>/mri/geometry/...json`, named in the row's
`geometry_path`, so predictions can be mapped back (`medssl.mri.preprocess.to_original_space`).
`masks` puts each row's `mask_path` onto that same model grid, nearest neighbour.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.cache import (
    ArrayCache,
    build_array_cache,
    cache_key,
    default_cache_root,
)
from medssl.data.layouts import register_layout
from medssl.plugins import Modality, register_modality
from medssl.imaging.nifti import NiftiReadError, read_nifti
from medssl.imaging import volume_folder  # noqa: F401 (registers the shared volume-folder layout)
from medssl.imaging.volume import Volume
from medssl.io import atomic_write_json
from medssl.mri.fomo_task import TASKS, parse_task
from medssl.mri.preprocess import Geometry, MriPreprocess, to_model_space

WILDCARDS = ("any", "mri", "image")
_CHANNEL_ALIASES = {"dwi": "dwi_b1000", "b1000": "dwi_b1000", "t2star": "t2s", "t2flair": "flair",
                    "susceptibility": "swi_or_t2s"}
_SCAN_FAMILY = {"dwi_b1000": "dwi", "swi_or_t2s": ("swi", "t2s")}


class MissingChannelError(ValueError):
    """A row lacks a sequence the encoder reads."""


def _is_task_row(row: Mapping) -> bool:
    return any(k.startswith("seq_") and row.get(k) for k in row)


def channel_paths(row: Mapping, channels: Sequence[str]) -> list[str]:
    """The file of each channel for `row`, in channel order; raises MissingChannelError with what
    is missing."""
    channels = [str(c).lower() for c in channels]
    if _is_task_row(row):
        if all(c in WILDCARDS for c in channels):
            inputs = TASKS[parse_task(row["task"]).number].inputs if row.get("task") else ()
            names = [n for n in inputs if row.get(f"seq_{n}")]
            if len(names) != len(channels):
                raise MissingChannelError(f"encoder reads {len(channels)} unnamed channel(s); the record holds "
                                          f"{len(names)} ({', '.join(names)}): name the channels")
            return [row[f"seq_{n}"] for n in names]
        paths, missing = [], []
        for c in channels:
            name = _CHANNEL_ALIASES.get(c, c)
            if name in ("swi", "t2s"):
                path = row.get("seq_swi_or_t2s") if row.get("swi_or_t2s") == name else row.get(f"seq_{name}")
            else:
                path = row.get(f"seq_{name}")
            (paths if path else missing).append(path or c)
        if missing:
            raise MissingChannelError(f"no {', '.join(missing)} sequence in the record")
        return paths
    if not row.get("path"):
        raise MissingChannelError("record has no path")
    if len(channels) != 1:
        raise MissingChannelError(f"record is one {row.get('sequence') or 'scan'}; the encoder reads "
                                  f"{len(channels)} channels ({', '.join(channels)})")
    want = _CHANNEL_ALIASES.get(channels[0], channels[0])
    if want not in WILDCARDS:
        have = row.get("sequence", "")
        family = _SCAN_FAMILY.get(want, want)
        if have not in (family if isinstance(family, tuple) else (family,)):
            raise MissingChannelError(f"record is {have or 'of unknown sequence'}, the encoder reads {want}")
    return [row["path"]]


def read_volume(path: str | Path) -> Volume:
    """One MRI volume: `.nii` / `.nii.gz` files through `read_nifti`, DICOM series (a folder or a
    `.dcm` / `.ima` file) through `medssl.imaging.dicom.read_dicom_series`."""
    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")) and (p.is_dir() or p.suffix.lower() in (".dcm", ".ima")):
        from medssl.imaging.dicom import read_dicom_series

        return read_dicom_series(p)
    return read_nifti(p)


def _limit_threads_in_worker() -> None:
    """One torch thread per worker process: the cache runs one process per core."""
    if multiprocessing.parent_process() is not None:
        import torch

        torch.set_num_threads(1)


def preprocess_row(row: Mapping, preprocess: MriPreprocess) -> tuple[np.ndarray, Geometry]:
    """(C, D, H, W) float32 model input and its Geometry of one record (its channels read by
    `channel_paths`). The one code path of the training caches and of `medssl fomo predict`, so a
    model sees at inference exactly the preprocessing it was trained on."""
    return preprocess.apply([read_volume(p) for p in channel_paths(row, preprocess.channels)])


class MriLoader:
    """Manifest row -> (1, C, D, H, W) float32; writes the item's Geometry to row["geometry_path"].
    A row with a `mask_path` is refused when the mask cannot be read, so that inputs and masks of
    the same rows stay aligned. Picklable, for the cache's worker processes."""

    def __init__(self, preprocess: MriPreprocess):
        self.preprocess = preprocess

    def __call__(self, row: dict) -> np.ndarray:
        _limit_threads_in_worker()
        array, geometry = preprocess_row(row, self.preprocess)
        if row.get("mask_path"):
            read_volume(row["mask_path"])
        if row.get("geometry_path"):
            atomic_write_json(row["geometry_path"], geometry.to_dict())
        return array[None]


class MriMaskLoader:
    """Manifest row (with `mask_path` and `geometry_path`) -> (1, 1, D, H, W) float32 in {0, 1}
    on the model grid of the row's inputs. A missing geometry file is recomputed from the images."""

    def __init__(self, preprocess: MriPreprocess):
        self.preprocess = preprocess

    def __call__(self, row: dict) -> np.ndarray:
        _limit_threads_in_worker()
        geometry_file = Path(row.get("geometry_path") or "")
        if geometry_file.is_file():
            geometry = Geometry.from_dict(json.loads(geometry_file.read_text()))
        else:
            _, geometry = self.preprocess.apply([read_volume(p) for p in channel_paths(row, self.preprocess.channels)])
        mask = read_volume(row["mask_path"])
        model = to_model_space(mask, geometry, order=0)
        return (model > 0.5).astype(np.float32)[None, None]


def _stamp(rows: Sequence[dict], preprocess: MriPreprocess, extra: str = "") -> str:
    """Hash of the size and modification time of every file the rows' items read (the cache's own
    stamp sees only `path`, a folder for task rows)."""
    h = hashlib.sha256(f"{preprocess.cache_key()}|{extra}".encode())
    for row in rows:
        try:
            paths = channel_paths(row, preprocess.channels)
        except ValueError:
            paths = []
        for p in [*paths, row.get("mask_path") or ""]:
            if p and Path(p).is_file():
                st = Path(p).stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _geometry_path(root: Path, preprocess: MriPreprocess, row: dict) -> str:
    key = hashlib.sha256(json.dumps([row.get("record_id"), row.get("path")]).encode()).hexdigest()[:24]
    return str(root / "mri" / "geometry" / preprocess.cache_key() / f"{key}.json")


def _chunk_size(n_rows: int, workers: int | None) -> int:
    """Rows per worker task: volumes take about a second each, so small manifests are split into
    at least two tasks per worker to keep every core busy; at most 8 rows (~160 MB of shards)."""
    import os

    n_workers = workers or os.cpu_count() or 1
    return max(1, min(8, n_rows // (2 * n_workers)))


_ERRORS = (NiftiReadError, MissingChannelError, ValueError, OSError, RuntimeError)


def mri_array_cache(rows: Sequence[dict], preprocess: MriPreprocess, cache_root: str | Path | None = None, *,
                    workers: int | None = None) -> ArrayCache:
    """(N, C, D, H, W) float32 model inputs of the usable rows (one item per row); `.rows` carry
    `geometry_path`; unreadable files, missing sequences and empty images are in `.skipped`."""
    root = Path(cache_root) if cache_root else default_cache_root()
    rows = [{**r, "geometry_path": _geometry_path(root, preprocess, r)} for r in rows]
    settings_key = _stamp(rows, preprocess)
    if not (root / "mri" / cache_key(rows, settings_key) / "signals.npy").is_file():
        import monai.transforms  # noqa: F401  - imported once here, inherited by forked workers
    return build_array_cache(rows, MriLoader(preprocess), settings=preprocess.to_dict(), settings_key=settings_key,
                             modality="mri", cache_root=root, errors=_ERRORS, workers=workers,
                             chunk_size=_chunk_size(len(rows), workers))


def mri_mask_cache(rows: Sequence[dict], preprocess: MriPreprocess, cache_root: str | Path | None = None, *,
                   workers: int | None = None) -> ArrayCache:
    """(N, 1, D, H, W) masks in {0, 1}, item for item aligned with `mri_array_cache` of the same
    rows. Raises ValueError when a row has no mask_path or a mask fails where its images did not."""
    lacking = [r.get("record_id", "?") for r in rows if not r.get("mask_path")]
    if lacking:
        raise ValueError(f"{len(lacking)} of {len(rows)} records have no mask_path (e.g. {lacking[0]}); masks come "
                         f"from the fomo-task layout, task 2")
    inputs = mri_array_cache(rows, preprocess, cache_root, workers=workers)
    settings = {**preprocess.to_dict(), "target": "mask_path, nearest neighbour onto the inputs' model grid"}
    masks = build_array_cache(inputs.rows, MriMaskLoader(preprocess), settings=settings,
                              settings_key=_stamp(inputs.rows, preprocess, f"masks|{inputs.folder.name}"),
                              modality="mri-masks", cache_root=cache_root or default_cache_root(), errors=_ERRORS,
                              workers=workers, chunk_size=_chunk_size(len(inputs.rows), workers))
    if [r["record_id"] for r in masks.rows] != [r["record_id"] for r in inputs.rows]:
        bad = "; ".join(f"{p}: {r}" for p, r in masks.skipped[:3])
        raise ValueError(f"masks of {len(inputs.rows) - len(masks.rows)} record(s) could not be read although their "
                         f"images could ({bad}); drop them from the manifest")
    return masks


def preprocess_for(spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> MriPreprocess:
    """The preprocessing of an encoder contract, with the recipe's `data.shape`, `data.spacing_mm`
    and `data.crop_foreground` taking precedence where set."""
    spec = dict(spec_input)
    if data_cfg.get("shape"):
        spec["shape"] = data_cfg["shape"]
    if data_cfg.get("spacing_mm"):
        spec["spacing_mm"] = data_cfg["spacing_mm"]
    return MriPreprocess.for_encoder(spec, crop_foreground=data_cfg.get("crop_foreground"))


def mri_inputs(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
               cache_root: str | Path | None) -> ArrayCache:
    """(N, C, D, H, W) float32 inputs for a brain-MRI encoder contract."""
    return mri_array_cache(rows, preprocess_for(spec_input, data_cfg), data_cfg.get("cache_dir") or cache_root,
                           workers=data_cfg.get("workers"))


def mri_masks(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
              cache_root: str | Path | None) -> ArrayCache:
    """(N, 1, D, H, W) segmentation targets aligned with `mri_inputs` of the same rows."""
    return mri_mask_cache(rows, preprocess_for(spec_input, data_cfg), data_cfg.get("cache_dir") or cache_root,
                          workers=data_cfg.get("workers"))


def _spacing(value: str) -> list[float]:
    try:
        return [float(v) for v in str(value).split("x")]
    except ValueError:
        return []


def mri_contract_problems(spec_input: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    """What `rows` lack for the encoder: channels (sequences) it reads that records do not hold,
    rows that are not MRI records, and (where a `spacing_mm` column was indexed) voxels more than
    3x coarser than the encoder's spacing."""
    try:
        prep = MriPreprocess.for_encoder(spec_input)
    except ValueError as e:
        return [f"contract: {e}"]
    problems = []
    is_mri = [_is_task_row(r) or bool(r.get("sequence")) for r in rows]
    if not all(is_mri):
        problems.append(f"records: {is_mri.count(False)} of {len(rows)} rows are not MRI records (no sequence or "
                        f"seq_* columns)")
    reasons: dict[str, int] = {}
    for r, mri in zip(rows, is_mri):
        if not mri:
            continue
        try:
            channel_paths(r, prep.channels)
        except MissingChannelError as e:
            reasons[str(e)] = reasons.get(str(e), 0) + 1
    if reasons:
        common, _ = max(reasons.items(), key=lambda kv: kv[1])
        problems.append(f"channels: {sum(reasons.values())} of {len(rows)} records cannot fill the encoder's "
                        f"channels {', '.join(prep.channels)} (e.g. {common})")
    coarse = [max(s) for s in (_spacing(r.get("spacing_mm", "")) for r in rows) if s]
    limit = 3.0 * max(prep.spacing_mm)
    n_coarse = sum(1 for s in coarse if s > limit)
    if n_coarse:
        problems.append(f"spacing: {n_coarse} of {len(rows)} records have voxels up to {max(coarse):g} mm, more than "
                        f"3x the encoder's {max(prep.spacing_mm):g} mm")
    return problems


def write_synthetic_mri(folder: str | Path, *, task: str | int = "fomo60k", subjects_per_site: int = 4,
                        seed: int = 0, shape: Sequence[int] = (64, 64, 64)) -> tuple[list[dict], list]:
    """Synthetic brain phantoms (`medssl.mri.phantom`) written to `folder` as a FOMO60K replica
    (task "fomo60k") or a FOMO25 task folder (task 1, 2 or 3), then indexed. An existing folder
    written with the same settings is reused; one with other settings or other content is refused."""
    from medssl.io import make_temp_dir
    from medssl.mri.fomo60k import index_fomo60k
    from medssl.mri.fomo_task import index_fomo_task
    from medssl.mri.phantom import write_fomo60k_replica, write_fomo_task_replica

    folder = Path(folder)
    pretrain = str(task).lower() in ("fomo60k", "pretrain", "pretraining")
    task_spec = None if pretrain else parse_task(task)
    settings = {"task": "fomo60k" if pretrain else task_spec.number, "subjects_per_site": int(subjects_per_site),
                "seed": int(seed), "shape": [int(s) for s in shape]}
    stamp = folder / ".medssl-synthetic-mri.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != settings:
            raise ValueError(f"{folder}: holds synthetic MRI data made with other settings "
                             f"({stamp.read_text().strip()}); choose another folder")
    else:
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"{folder}: not empty and not written by medssl's MRI phantoms; choose another folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(folder)
        try:
            if pretrain:
                write_fomo60k_replica(tmp, subjects_per_site=subjects_per_site, seed=seed, shape=tuple(shape))
            else:
                write_fomo_task_replica(tmp, task_spec.number, subjects_per_site=subjects_per_site, seed=seed,
                                        shape=tuple(shape))
            atomic_write_json(tmp / stamp.name, settings)
            if folder.exists():
                folder.rmdir()
            tmp.rename(folder)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if pretrain:
        return index_fomo60k(folder)
    return index_fomo_task(folder, task_spec.number)


def _fomo60k_layout(root: Path, labels: str | None = None, task: str | None = None, headers: str | bool = False):
    """FOMO60K pretraining scans, one row per scan."""
    from medssl.mri.fomo60k import index_fomo60k
    from medssl.mri.fomo_task import _truthy

    if labels or task:
        raise ValueError("layout fomo60k has no labels or tasks: it is unlabelled pretraining data")
    return index_fomo60k(root, headers=_truthy(headers))


def _fomo_task_layout(root: Path, labels: str | None = None, task: str | None = None,
                      require_labels: str | bool = True):
    """A FOMO25 task folder (preprocessed/ + labels/); --task 1 (infarct), 2 (meningioma), 3 (brain age)."""
    from medssl.mri.fomo_task import index_fomo_task

    if labels:
        raise ValueError("layout fomo-task reads its labels from <root>/labels; drop --labels")
    if not task:
        raise ValueError("layout fomo-task needs --task 1 (infarct), 2 (meningioma) or 3 (brain_age)")
    return index_fomo_task(root, task, require_labels=require_labels)


register_layout("fomo60k", _fomo60k_layout)
register_layout("fomo-task", _fomo_task_layout)
def fit_mri_encoder(encoder, rows: Sequence[dict]):
    """An encoder fitted to FOMO task rows (their `task` column): its input layer adapted to the
    task's sequences with :func:`medssl.mri.encoders.adapt_input_channels` (explicitly, with a
    note); rows of several tasks or of no task leave it as it is (the contract check then says
    what is missing)."""
    from medssl.mri.encoders import adapt_input_channels

    tasks = {str(r.get("task") or "") for r in rows}
    if len(tasks) != 1 or not next(iter(tasks)):
        return encoder, None
    channels = list(TASKS[parse_task(next(iter(tasks))).number].inputs)
    before = encoder.spec.input.get("channels")
    if before == channels or not hasattr(encoder, "input_conv"):
        return encoder, None
    adapt_input_channels(encoder, channels)
    return encoder, f"input layer adapted from channels {before} to {channels}: " + \
        encoder.spec.provenance.rsplit("; ", 1)[-1]


def add_fomo_commands(subparsers) -> None:
    """`medssl fomo ...`: the FOMO25 task commands (medssl.mri.fomo_cli)."""
    from medssl.mri.fomo_cli import add_fomo_parser

    add_fomo_parser(subparsers)


MODALITY = register_modality(Modality(
    name="mri", inputs=mri_inputs, masks=mri_masks, contract_problems=mri_contract_problems,
    write_synthetic=write_synthetic_mri, fit_encoder=fit_mri_encoder,
    registers=("medssl.mri.encoders", "medssl.mri.methods"), add_cli=add_fomo_commands,
))
