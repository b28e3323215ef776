"""Dataset layouts `medssl data index` understands; each maps a folder to manifest rows.

Modality packages register their layouts here. Each layout returns (rows, skipped), where
skipped lists (path, reason) for records that could not be indexed.
"""

from __future__ import annotations

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


LAYOUTS: dict[str, LayoutIndexer] = {"wfdb": _wfdb, "synthetic": _synthetic}


def index_layout(layout: str, root: Path, *, labels: str | None = None, task: str | None = None):
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known layouts: {', '.join(sorted(LAYOUTS))}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder not found")
    return LAYOUTS[layout](root, labels=labels, task=task)
