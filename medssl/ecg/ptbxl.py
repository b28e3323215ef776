"""Index PTB-XL (the `ptbxl` layout) with the six benchmark tasks of Strodthoff et al. 2021.

PTB-XL (Wagner et al., Sci Data 2020) is 21,799 ten-second 12-lead ECGs of 18,869 patients,
stored twice as WFDB records: 100 Hz (`records100/00000/00001_lr`) and 500 Hz
(`records500/00000/00001_hr`). `ptbxl_database.csv` has one row per ECG; its `scp_codes` column
is a Python dict literal of SCP-ECG statement -> likelihood (`{'NORM': 100.0, 'SR': 0.0}`), and
`scp_statements.csv` (index = statement code) says which statements are diagnostic, form or
rhythm statements and maps diagnostic ones to a subclass and a superclass.

The tasks are those of "Deep Learning for ECG Analysis: Benchmarks and Insights from PTB-XL"
(Strodthoff, Wagner, Schaeffter, Samek; IEEE JBHI 2021), built as its public code does:

- every key of `scp_codes` counts, whatever its likelihood (0.0 included);
- all: every statement of the record (71 in the release);
- diagnostic: statements with `diagnostic == 1` (44);
- subdiagnostic / superdiagnostic: those statements mapped to `diagnostic_subclass` (23) /
  `diagnostic_class` (5: NORM, MI, STTC, CD, HYP), empty mappings left out;
- form: statements with `form == 1` (19); rhythm: statements with `rhythm == 1` (12);
- a record left with no label for the task is dropped (listed as skipped, "no <task> label").

Splits follow the recommended folds: `strat_fold` 1-8 train, 9 val, 10 test. The folds keep
each patient's records together; this is checked, and a patient in two splits raises.
"""

from __future__ import annotations

import ast
import csv
from collections.abc import Iterable
from pathlib import Path

from medssl.data.manifest import join_labels
from medssl.ecg.layouts import LayoutError, integer_text
from medssl.ecg.leads import canonical_lead_name
from medssl.ecg.physionet2021 import signal_file_problem

PTBXL_TASKS: tuple[str, ...] = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
PTBXL_RATES: tuple[int, ...] = (100, 500)
DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"

_DB_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
_STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")


def fold_split(fold: int) -> str:
    """The benchmark's split of a `strat_fold`: 1-8 train, 9 val, 10 test."""
    if not 1 <= fold <= 10:
        raise ValueError(f"strat_fold must be 1..10, got {fold}")
    return "test" if fold == 10 else "val" if fold == 9 else "train"


def read_scp_statements(path: str | Path) -> dict[str, dict[str, str]]:
    """`scp_statements.csv` as statement code -> its columns (strings, "" for empty)."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: not found (PTB-XL's statement table)")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise LayoutError(f"{path}: empty file")
        missing = [c for c in _STATEMENT_COLUMNS if c not in header]
        if missing:
            raise LayoutError(f"{path}: lacks column(s) {', '.join(missing)}")
        out: dict[str, dict[str, str]] = {}
        for line, raw in enumerate(reader, start=2):
            if not raw or not raw[0].strip():
                raise LayoutError(f"{path}: line {line} has no statement code in its first column")
            out[raw[0].strip()] = {k: (v or "").strip() for k, v in zip(header[1:], raw[1:])}
    return out


def task_labels(scp_codes: Iterable[str], statements: dict[str, dict[str, str]], task: str) -> list[str]:
    """Labels of one record for a benchmark task, from the keys of its `scp_codes`, sorted."""
    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; use one of {', '.join(PTBXL_TASKS)}")
    codes = set(scp_codes)
    if task == "all":
        return sorted(codes)
    flag = {"form": "form", "rhythm": "rhythm"}.get(task, "diagnostic")
    selected = [c for c in codes if c in statements and _is_one(statements[c].get(flag, ""))]
    if task in ("subdiagnostic", "superdiagnostic"):
        column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
        selected = [statements[c].get(column, "") for c in selected]
        selected = [s for s in selected if s and s.lower() != "nan"]
    return sorted(set(selected))


def index_ptbxl(
    root: str | Path, task: str = "superdiagnostic", rate: int = 100
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of PTB-XL for one benchmark task and sampling rate, and the records skipped.

    Row: record_id (ecg_id), subject_id ("P" + patient_id), path (root/filename without
    extension), split (from strat_fold), labels (";"-joined), site (PTB-XL `site` column, else
    ""), sampling_rate, n_samples, leads, strat_fold, task. Sorted by ecg_id. Age, sex and the
    other database columns are not copied.

    Skipped, each with its reason: a row with an unparsable `scp_codes`, ecg_id or strat_fold;
    a record with no label for the task; a missing header or signal file; a header that does not
    parse, whose rate is not `rate`, or whose signal file size disagrees with its length.
    Raises LayoutError for a missing root or CSV, missing columns, a repeated ecg_id, or a
    patient whose records the folds put in two splits; ValueError for a bad task or rate.
    """
    import wfdb  # lazy: heavy import

    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; use one of {', '.join(PTBXL_TASKS)}")
    if int(rate) not in PTBXL_RATES:
        raise ValueError(f"PTB-XL is stored at 100 or 500 Hz, got rate {rate!r}")
    rate = int(rate)
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: folder not found")
    statements = read_scp_statements(root / STATEMENTS_CSV)
    db_path = root / DATABASE_CSV
    if not db_path.is_file():
        raise LayoutError(f"{db_path}: not found (PTB-XL's record table)")
    file_column = "filename_lr" if rate == 100 else "filename_hr"

    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    patient_split: dict[str, tuple[str, str]] = {}
    with db_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _DB_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{db_path}: lacks column(s) {', '.join(missing)}")
        for line, raw in enumerate(reader, start=2):
            where = f"{db_path}:{line}"
            ecg_id = integer_text(raw.get("ecg_id"))
            if ecg_id is None:
                skipped.append((where, f"ecg_id {raw.get('ecg_id')!r} is not an integer"))
                continue
            if ecg_id in seen_ids:
                raise LayoutError(f"{db_path}: line {line} repeats ecg_id {ecg_id}")
            seen_ids.add(ecg_id)
            patient = integer_text(raw.get("patient_id"))
            if patient is None:
                skipped.append((where, f"record {ecg_id} has no usable patient_id"))
                continue
            fold = integer_text(raw.get("strat_fold"))
            if fold is None or not 1 <= int(fold) <= 10:
                skipped.append((where, f"record {ecg_id} has strat_fold {raw.get('strat_fold')!r}, not 1..10"))
                continue
            split = fold_split(int(fold))
            subject = f"P{patient}"
            first = patient_split.setdefault(subject, (split, ecg_id))
            if first[0] != split:
                raise LayoutError(
                    f"{db_path}: records {first[1]} and {ecg_id} of one patient are in splits "
                    f"{first[0]!r} and {split!r}; the folds must keep a patient's records together"
                )
            try:
                scp = ast.literal_eval((raw.get("scp_codes") or "").strip() or "{}")
            except (ValueError, SyntaxError):
                skipped.append((where, f"record {ecg_id} has an unparsable scp_codes"))
                continue
            if not isinstance(scp, dict):
                skipped.append((where, f"record {ecg_id}: scp_codes is not a dict"))
                continue
            labels = task_labels((str(k) for k in scp), statements, task)
            rel = (raw.get(file_column) or "").strip()
            base = root / rel if rel else root / f"<no {file_column}>"
            if not labels:
                skipped.append((str(base), f"no {task} label"))
                continue
            if not rel:
                skipped.append((where, f"record {ecg_id} has an empty {file_column}"))
                continue
            info, reason = _header_info(wfdb, base, rate)
            if reason:
                skipped.append((str(base), reason))
                continue
            rows.append({
                "record_id": ecg_id,
                "subject_id": subject,
                "path": str(base),
                "split": split,
                "labels": join_labels(labels),
                "site": integer_text(raw.get("site")) or (raw.get("site") or "").strip(),
                "sampling_rate": info["sampling_rate"],
                "n_samples": info["n_samples"],
                "leads": info["leads"],
                "strat_fold": int(fold),
                "task": task,
            })
    rows.sort(key=lambda r: int(r["record_id"]))
    skipped.sort()
    return rows, skipped


def _header_info(wfdb, base: Path, rate: int) -> tuple[dict, str]:
    if not base.with_name(base.name + ".hea").is_file():
        return {}, f"header file {base.name}.hea not found"
    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:
        return {}, f"header does not parse ({type(exc).__name__})"
    if abs(float(header.fs) - rate) > 1e-6:
        return {}, f"header says {float(header.fs):g} Hz but the {rate} Hz records were asked for"
    problem = signal_file_problem(header, base)
    if problem:
        return {}, problem
    leads: list[str] = []
    for name in header.sig_name or []:
        lead = canonical_lead_name(str(name))
        if lead is not None and lead not in leads:
            leads.append(lead)
    if not leads:
        return {}, f"no standard ECG lead among {', '.join(map(str, header.sig_name or []))}"
    return {"sampling_rate": float(header.fs), "n_samples": int(header.sig_len or 0), "leads": ";".join(leads)}, ""


def _is_one(value: str) -> bool:
    try:
        return float(value) == 1.0
    except (TypeError, ValueError):
        return False
