"""Index a folder of DICOM files (any depth, read only) into manifest rows: one per series, or
one per labelled nodule with a nodule list (the CT modality's ``dicom`` layout, also used for MRI
series). Headers are read in parallel (``SCAN_CHUNK`` files per task); identities never reach
the rows (UIDs become salted pseudonyms, :mod:`medssl.imaging.dicom`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

SCAN_CHUNK = 256  # files per header-reading task when a folder is indexed in parallel


def _series_folders(series: Mapping[str, Sequence]) -> dict[Path, set[str]]:
    """folder -> the series with files in it or below it."""
    under: dict[Path, set[str]] = {}
    for uid, headers in series.items():
        for parent in {h.path.parent for h in headers}:
            for folder in (parent, *parent.parents):
                under.setdefault(folder, set()).add(uid)
    return under


def _series_path(headers, under: Mapping[Path, set[str]]) -> str:
    """The series' folder, or "folder#<series id>" when other series have files there too."""
    folder = Path(os.path.commonpath([str(h.path.parent) for h in headers]))
    return f"{folder}#{headers[0].series_id}" if len(under.get(folder, ())) > 1 else str(folder)


def _scan(files: list[Path], salt: str | None, workers: int | None):
    """scan_dicom_files, in worker processes for large folders (headers only)."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    from medssl.imaging.dicom import scan_dicom_files

    workers = min(workers or os.cpu_count() or 1, len(files) // SCAN_CHUNK)
    if workers <= 1:
        return scan_dicom_files(files, salt=salt)
    chunks = [files[i:i + SCAN_CHUNK] for i in range(0, len(files), SCAN_CHUNK)]
    series: dict[str, list] = {}
    skipped: list[tuple[str, str]] = []
    with ProcessPoolExecutor(workers) as pool:
        for part, bad in pool.map(partial(scan_dicom_files, salt=salt), chunks):
            for uid, headers in part.items():
                series.setdefault(uid, []).extend(headers)
            skipped += bad
    return series, skipped


def _series_row(headers, plan, path: str) -> dict[str, str]:
    from pydicom.uid import UID

    h = plan.slices[0]
    r = plan.report
    facts = h.facts
    return {
        "record_id": h.series_id, "subject_id": h.subject_id, "path": path, "split": "", "labels": "",
        "modality": h.modality, "series_id": h.series_id, "n_files": str(len(headers)), "n_slices": str(r.n_slices),
        "dim_x": str(h.columns), "dim_y": str(h.rows),
        "spacing_x_mm": f"{r.spacing_mm[0]:.6g}", "spacing_y_mm": f"{r.spacing_mm[1]:.6g}",
        "spacing_z_mm": f"{r.spacing_mm[2]:.6g}",
        "slice_thickness_mm": "" if facts.get("slice_thickness_mm") is None else f"{facts['slice_thickness_mm']:g}",
        "manufacturer": str(facts.get("manufacturer", "")), "kernel": str(facts.get("kernel", "")),
        "body_part": str(facts.get("body_part", "")),
        "transfer_syntax": "; ".join(sorted({UID(x.transfer_syntax).name for x in plan.slices})),
        "subject_id_source": h.subject_source, "series_id_source": h.series_source,
        "dicom_problems": "; ".join(r.problems()),
    }


def index_dicom_folder(
    root: str | Path,
    *,
    salt: str | None = None,
    nodules: str | Path | None = None,
    frame: str = "LPS",
    duplicates: str = "drop",
    missing: str = "error",
    uneven: str = "interpolate",
    workers: int | None = None,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of the DICOM series under `root` and (path, reason) of what was skipped
    (non-DICOM files, DICOM files without images, series refused under the slice policies or
    needing a missing decoder plugin, nodules without a label or series).

    One row per series (record_id = pseudonymous series id; columns: see `_series_row`; coded
    facts only, never free text such as descriptions), or with
    `nodules` (a nodule-list CSV, coordinates in `frame`) one row per labelled nodule with
    record_id "<series id>-n<k>", labels "malignant" or "" and the finding's columns. A series
    spread over several folders or sharing its folder with others gets the path "folder#<series id>".
    Headers of large folders are read in `workers` processes (default: one per core). Files without
    a SeriesInstanceUID (anonymised exports) are grouped by what remains (`medssl.imaging.dicom`),
    with one warning for the whole folder; their rows say so in `series_id_source`.
    """
    from medssl.ct.nodules import malignancy_label, nodule_row_columns, read_nodule_csv
    from medssl.ct.preprocess import is_nifti
    from medssl.imaging.dicom import (
        DicomSeriesError,
        decoder_problem,
        list_files,
        plan_series,
        pseudonym,
        warn_derived_series,
    )

    root = Path(root)
    files = list_files(root)
    skipped = [(str(f), "NIfTI file: layout dicom indexes DICOM series; list NIfTI volumes in a manifest")
               for f in files if is_nifti(f)]
    series, not_dicom = _scan([f for f in files if not is_nifti(f)], salt, workers)
    warn_derived_series(series, str(root))
    skipped += not_dicom
    rows: list[dict] = []
    by_id: dict[str, dict] = {}
    under = _series_folders(series)
    for uid, headers in series.items():
        path = _series_path(headers, under)
        try:
            plan = plan_series(headers, duplicates=duplicates, missing=missing, uneven=uneven)
        except DicomSeriesError as e:
            skipped.append((path, str(e)))
            continue
        first_of = {h.transfer_syntax: h.path for h in reversed(plan.slices)}
        problems = [f"{first_of[ts].name}: {p}" for ts in sorted(first_of) for p in [decoder_problem(ts)] if p]
        if problems:
            skipped.append((path, "; ".join(problems)))
            continue
        row = _series_row(headers, plan, path)
        rows.append(row)
        by_id[uid] = by_id[row["series_id"]] = row
    if nodules is None:
        return rows, skipped
    out = []
    counts: dict[str, int] = {}
    for n in read_nodule_csv(nodules, frame=frame):
        row = by_id.get(n.series_id)
        shown = n.series_id if n.series_id.startswith("ser-") else pseudonym(n.series_id, salt=salt, prefix="ser")
        if row is None:
            skipped.append((str(nodules), f"nodule of series {shown}: no such series under {root} "
                                          f"(or indexed under another salt)"))
            continue
        k = counts.get(row["series_id"], 0)
        counts[row["series_id"]] = k + 1
        label = malignancy_label(n.malignancy, n.diameter_mm)
        if label is None:
            why = ("no malignancy rating" if n.malignancy is None else
                   f"diameter {n.diameter_mm:g} mm under 3 mm" if n.diameter_mm is not None and n.diameter_mm < 3 else
                   f"malignancy {n.malignancy:g} (indeterminate)")
            skipped.append((row["path"], f"nodule {k} of series {shown}: {why}; excluded by the LIDC convention"))
            continue
        out.append({**row, "record_id": f"{row['series_id']}-n{k:02d}", "labels": label, **nodule_row_columns(n)})
    return out, skipped
