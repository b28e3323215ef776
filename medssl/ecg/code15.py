"""Index and read CODE-15% (the `code15` layout): 345,779 12-lead ECG exams in HDF5.

CODE-15% (Ribeiro et al., "Automatic diagnosis of the 12-lead ECG using a deep neural network",
Nat Commun 2020; Zenodo record 4916206, 2021) is a 15 % patient-stratified sample of the CODE
study (Telehealth Network of Minas Gerais, Brazil, 2010-2016). On disk:

- `exams.csv`: exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB, SB, ST, AF,
  patient_id, death, timey, normal_ecg, trace_file (the HDF5 file holding the exam);
- `exams_part{i}.hdf5`: datasets `exam_id` (N,) and `tracings` (N, 4096, 12) float32, leads
  DI, DII, DIII, aVR, aVL, aVF, V1-V6, sampled at 400 Hz. 7 s and 10 s exams are zero-padded
  to 4096 samples on both sides. Each part also holds rows whose exam_id is absent from
  `exams.csv` (filler rows with exam_id 0); they are not indexed.

Units: stored values are read as millivolts. The sources disagree: the authors' model README
says "scale 1e-4V: so if the signal is in V it should be multiplied by 1000", and the Zenodo
record states no unit; the PhysioNet Challenge 2025 conversion script (prepare_code15_data.py)
writes the stored values as mV. medssl follows the Challenge; see data_cards/code15.md.

A record's path is "<absolute HDF5 path>#<row index>"; `read_code15_record` reads it (read
only), and `medssl.ecg.readers.read_ecg_record` dispatches such paths here.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from medssl.data.manifest import join_labels
from medssl.ecg.layouts import LayoutError, integer_text, subject_split
from medssl.ecg.record import EcgRecord
from medssl.ecg.wfdb_reader import EcgReadError

CODE15_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CODE15_RATE = 400.0
EXAMS_CSV = "exams.csv"
# exams.csv column -> medssl label. The six abnormalities of Ribeiro et al. 2020, plus normal_ecg.
CODE15_LABELS: dict[str, str] = {
    "1dAVb": "1dAVb", "RBBB": "RBBB", "LBBB": "LBBB", "SB": "SB", "ST": "ST", "AF": "AF", "normal_ecg": "NORM",
}
_CSV_COLUMNS = ("exam_id", "patient_id", "trace_file", *CODE15_LABELS)
_PATH = re.compile(r"^(?P<file>.+\.(?:hdf5|h5))#(?P<row>\d+)$", re.IGNORECASE)
_TRUE = frozenset({"true", "1", "1.0", "yes"})
_FALSE = frozenset({"false", "0", "0.0", "no"})


def is_code15_path(path: str | Path) -> bool:
    """Whether `path` has the form "<file>.hdf5#<row>" (or .h5)."""
    return _PATH.match(str(path)) is not None


def index_code15(
    root: str | Path,
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of CODE-15% and the (path, reason) pairs skipped.

    Row: record_id (exam_id), subject_id ("P" + patient_id), path ("<h5>#<row>"), split (by
    subject), labels (";"-joined names of CODE15_LABELS that are true), site (""),
    sampling_rate (400), n_samples (4096 stored, padding included), leads (the 12).
    Sorted by exam_id. Age, sex, death and follow-up are not copied.

    Skipped: CSV rows with a bad exam_id/patient_id or label value, rows whose HDF5 file is
    missing or unreadable, and exams absent from their HDF5 file. Raises LayoutError for a
    missing root or CSV, missing columns, or a repeated exam_id.
    """
    import h5py  # lazy

    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: folder not found")
    csv_path = root / EXAMS_CSV
    if not csv_path.is_file():
        raise LayoutError(f"{csv_path}: not found (CODE-15%'s exam table)")

    exams: list[tuple[str, str, str, list[str], str]] = []  # exam_id, subject, file, labels, where
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{csv_path}: lacks column(s) {', '.join(missing)}")
        for line, raw in enumerate(reader, start=2):
            where = f"{csv_path}:{line}"
            exam_id = integer_text(raw.get("exam_id"))
            patient = integer_text(raw.get("patient_id"))
            if exam_id is None or patient is None:
                skipped.append((where, "exam_id or patient_id is not an integer"))
                continue
            if exam_id in seen:
                raise LayoutError(f"{csv_path}: line {line} repeats exam_id {exam_id}")
            seen.add(exam_id)
            labels, bad = [], []
            for column, label in CODE15_LABELS.items():
                value = (raw.get(column) or "").strip().lower()
                if value in _TRUE:
                    labels.append(label)
                elif value not in _FALSE:
                    bad.append(f"{column}={raw.get(column)!r}")
            if bad:
                skipped.append((where, f"exam {exam_id} has non-boolean label value(s) {', '.join(bad)}"))
                continue
            trace_file = (raw.get("trace_file") or "").strip()
            if not trace_file:
                skipped.append((where, f"exam {exam_id} has an empty trace_file"))
                continue
            exams.append((exam_id, f"P{patient}", trace_file, labels, where))

    # trace_file -> (exam_id -> row, stored samples per exam), or why its exams cannot be used
    positions: dict[str, tuple[dict[int, int], int] | str] = {}
    for trace_file in sorted({e[2] for e in exams}):
        path = root / trace_file
        if not path.is_file():
            positions[trace_file] = f"HDF5 file {trace_file} not found"
            continue
        try:
            with h5py.File(path, "r") as h5:
                ids = np.asarray(h5["exam_id"][()]).astype(np.int64).ravel()
                shape = h5["tracings"].shape
        except Exception as exc:
            positions[trace_file] = f"HDF5 file {trace_file} cannot be read ({type(exc).__name__})"
            continue
        if len(shape) != 3 or shape[0] != len(ids) or shape[2] != len(CODE15_LEADS):
            positions[trace_file] = (
                f"HDF5 file {trace_file}: tracings has shape {tuple(shape)}, expected ({len(ids)}, T, 12)"
            )
            continue
        positions[trace_file] = ({int(e): i for i, e in enumerate(ids)}, int(shape[1]))

    rows: list[dict] = []
    for exam_id, subject, trace_file, labels, where in exams:
        found = positions[trace_file]
        if isinstance(found, str):
            skipped.append((where, f"exam {exam_id}: {found}"))
            continue
        row_of, n_samples = found
        row_index = row_of.get(int(exam_id))
        if row_index is None:
            skipped.append((where, f"exam {exam_id} not found in {trace_file}"))
            continue
        rows.append({
            "record_id": exam_id,
            "subject_id": subject,
            "path": f"{root / trace_file}#{row_index}",
            "split": subject_split(subject, split_seed, split_fractions),
            "labels": join_labels(labels),
            "site": "",
            "sampling_rate": CODE15_RATE,
            "n_samples": n_samples,
            "leads": ";".join(CODE15_LEADS),
        })
    rows.sort(key=lambda r: int(r["record_id"]))
    skipped.sort()
    return rows, skipped


def read_code15_record(path: str | Path) -> EcgRecord:
    """One CODE-15% exam, "<file>.hdf5#<row>", as an EcgRecord (12, n) float32 mV at 400 Hz.

    The zero padding is trimmed: leading and trailing samples where all 12 leads are exactly
    0 are removed (metadata["padding"] = (before, after)). metadata["exam_id"] is the HDF5
    exam_id of the row. Stored values are taken as mV (see the module docstring).
    Raises EcgReadError (message starting with the path) for a malformed path, a missing or
    unreadable file, a row out of range, an all-zero tracing, or NaN samples.
    """
    import h5py  # lazy

    m = _PATH.match(str(path))
    if m is None:
        raise EcgReadError(f"{path}: not a CODE-15% path of the form <file>.hdf5#<row>")
    file, row = Path(m["file"]), int(m["row"])
    if not file.is_file():
        raise EcgReadError(f"{path}: HDF5 file {file.name} not found")
    try:
        with h5py.File(file, "r") as h5:
            tracings = h5["tracings"]
            if tracings.ndim != 3 or tracings.shape[2] != len(CODE15_LEADS):
                raise EcgReadError(f"{path}: tracings has shape {tracings.shape}, expected (N, T, 12)")
            if row >= tracings.shape[0]:
                raise EcgReadError(f"{path}: row {row} out of range ({tracings.shape[0]} exams in {file.name})")
            data = np.asarray(tracings[row], dtype=np.float32)  # (T, 12)
            exam_id = int(h5["exam_id"][row]) if "exam_id" in h5 else None
    except EcgReadError:
        raise
    except Exception as exc:
        raise EcgReadError(f"{path}: cannot be read ({type(exc).__name__})") from None
    signal = np.ascontiguousarray(data.T)  # (12, T)
    if np.isnan(signal).any():
        raise EcgReadError(f"{path}: {int(np.isnan(signal).sum())} NaN sample(s) in the tracing")
    active = np.flatnonzero(np.any(signal != 0, axis=0))
    if active.size == 0:
        raise EcgReadError(f"{path}: the tracing is all zeros")
    start, stop = int(active[0]), int(active[-1]) + 1
    return EcgRecord(
        signal=signal[:, start:stop].copy(),
        lead_names=CODE15_LEADS,
        sampling_rate=CODE15_RATE,
        record_id=str(exam_id) if exam_id is not None else f"{file.stem}#{row}",
        path=str(path),
        metadata={"exam_id": exam_id, "padding": (start, signal.shape[1] - stop), "units": "mV",
                  "ignored_channels": [], "n_samples_stored": signal.shape[1]},
    )
