"""Dataset layouts `medssl data index` understands; each maps a folder to manifest rows.

Modality packages register their layouts here. Each layout returns (rows, skipped), where
skipped lists (path, reason) for records that could not be indexed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

LayoutIndexer = Callable[..., tuple[list[dict], list[tuple[str, str]]]]


def _wfdb(root: Path, labels: str | None = None, task: str | None = None):
    from medssl.ecg.layouts import index_wfdb_folder

    if task:
        raise ValueError("layout wfdb has no tasks: its labels come from --labels")
    return index_wfdb_folder(root, labels)


def _synthetic(root: Path, labels: str | None = None, task: str | None = None):
    """A folder written by `medssl data synth` (WFDB records + labels.csv with subject and site)."""
    labels_csv = Path(labels) if labels else root / "labels.csv"
    if not labels_csv.is_file():
        raise ValueError(f"{labels_csv}: not found; write a synthetic cohort with `medssl data synth --out {root}`")
    return _wfdb(root, str(labels_csv), task)


def _ptbxl(root: Path, labels: str | None = None, task: str | None = None, rate: int | None = None):
    """PTB-XL with one of the six benchmark tasks (default superdiagnostic) at 100 or 500 Hz."""
    from medssl.ecg.ptbxl import index_ptbxl

    if labels:
        raise ValueError("layout ptbxl takes its labels from ptbxl_database.csv; drop --labels")
    return index_ptbxl(root, task=task or "superdiagnostic", rate=100 if rate is None else rate)


def _physionet2021(root: Path, labels: str | None = None, task: str | None = None):
    """PhysioNet/CinC Challenge 2020/2021 WFDB records, labels from their #Dx SNOMED-CT codes."""
    from medssl.ecg.physionet2021 import index_physionet2021

    if labels or task:
        raise ValueError("layout physionet2021 has no tasks and takes its labels from the #Dx header lines")
    return index_physionet2021(root)


def _code15(root: Path, labels: str | None = None, task: str | None = None):
    """CODE-15%: exams.csv + exams_part{i}.hdf5."""
    from medssl.ecg.code15 import index_code15

    if labels or task:
        raise ValueError("layout code15 has no tasks and takes its labels from exams.csv")
    return index_code15(root)


def _volume_folder(root: Path, labels: str | None = None, task: str | None = None, *, csv: str | None = None,
                   modality: str = "mri", id_column: str | None = None, pattern: str | None = None,
                   sequence: str | None = None, split_seed: int | str = 0):
    """NIfTI volumes / DICOM series (MRI or CT) listed in a CSV with an `image` column, or matched by name
    to a participants table's ID column (`medssl.imaging.volume_folder`)."""
    from medssl.imaging.volume_folder import index_volume_folder

    try:
        seed = int(split_seed)
    except (TypeError, ValueError):
        raise ValueError(f"layout volume-folder: split_seed={split_seed!r} is not an integer") from None
    return index_volume_folder(root, labels, task, csv_name=csv, modality=modality, id_column=id_column,
                               pattern=pattern, sequence=sequence, split_seed=seed)


LAYOUTS: dict[str, LayoutIndexer] = {
    "wfdb": _wfdb, "synthetic": _synthetic, "ptbxl": _ptbxl, "physionet2021": _physionet2021, "code15": _code15,
    "volume-folder": _volume_folder,
}
# Image modalities register their layouts when their `modality` module is imported.
_LAYOUT_MODULES = ("medssl.mri.modality", "medssl.retina.modality", "medssl.ct.modality")


def register_layout(name: str, indexer: LayoutIndexer) -> LayoutIndexer:
    """Add a layout: `indexer(root, labels=None, task=None, **options) -> (rows, skipped)`; options
    are the keyword arguments it declares (e.g. `fov`), given on the command line as `--option K=V`."""
    LAYOUTS[name] = indexer
    return indexer


def known_layouts() -> list[str]:
    from medssl.registry import import_optional_modules

    import_optional_modules(_LAYOUT_MODULES)
    return sorted(LAYOUTS)


def index_layout(
    layout: str, root: Path, *, labels: str | None = None, task: str | None = None, rate: int | None = None,
    **options,
):
    """(rows, skipped) of the dataset at `root` read as `layout`; options the layout does not take
    are refused by name."""
    if layout not in LAYOUTS and layout not in known_layouts():  # image layouts load on first use
        raise ValueError(f"unknown layout {layout!r}; known layouts: {', '.join(known_layouts())}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder not found")
    indexer = LAYOUTS[layout]
    accepted = inspect.signature(indexer).parameters
    kwargs: dict = {"labels": labels, "task": task}
    if rate is not None:
        if "rate" not in accepted:
            raise ValueError(f"layout {layout} has no --rate: it is stored at one sampling rate")
        kwargs["rate"] = rate
    for key, value in options.items():
        if key not in accepted:
            known = [k for k in accepted if k not in ("root", "labels", "task")]
            raise ValueError(f"layout {layout} has no option {key!r}; its options: {', '.join(known) or 'none'}")
        kwargs[key] = value
    return indexer(root, **kwargs)
