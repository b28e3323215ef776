"""The FOMO25 fine-tuning tasks (Munk et al.) as manifest rows: one row per subject-session.

Layout of each task's folder:
    <root>/preprocessed/sub_X/ses_1/{flair,adc,dwi_b1000,swi|t2s,t1,t2}.nii.gz
    <root>/labels/sub_X/ses_1/label.txt     task 1: 0/1 infarct; task 3: age in years
    <root>/labels/sub_X/ses_1/seg.nii.gz    task 2: meningioma mask
The `ses_1/` level under `labels/` may be missing (`labels/sub_X/label.txt`); a folder without
`preprocessed/` whose `sub_*` folders sit directly under it is read too. An optional
`participants.tsv` at the root with subject and site columns fills `site`.

| task | name       | inputs (channel order)                | target                     |
|------|------------|---------------------------------------|----------------------------|
| 1    | infarct    | flair, adc, dwi_b1000, swi_or_t2s     | label.txt 0/1 -> labels    |
| 2    | meningioma | flair, dwi_b1000, swi_or_t2s          | seg.nii.gz -> mask_path    |
| 3    | brain_age  | t1, t2                                | label.txt years -> age     |

`swi_or_t2s`: a session holds either SWI or T2* (sites differ); SWI is taken when both are there,
as in the official baseline, and which one was taken is recorded in the `swi_or_t2s` column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from medssl.mri.fomo60k import (
    _SESSION,
    _SUBJECT,
    NIFTI_SUFFIXES,
    _id_key,
    normalise_sequence,
    read_table,
    scan_stem,
)


@dataclass(frozen=True)
class FomoTask:
    number: int
    name: str
    inputs: tuple[str, ...]
    kind: str  # classification | segmentation | regression


TASKS: dict[int, FomoTask] = {
    1: FomoTask(1, "infarct", ("flair", "adc", "dwi_b1000", "swi_or_t2s"), "classification"),
    2: FomoTask(2, "meningioma", ("flair", "dwi_b1000", "swi_or_t2s"), "segmentation"),
    3: FomoTask(3, "brain_age", ("t1", "t2"), "regression"),
}
TASK_SEQUENCES: tuple[str, ...] = ("flair", "adc", "dwi_b1000", "swi", "t2s", "t1", "t2")
_FROM_VOCABULARY = {"flair": "flair", "adc": "adc", "dwi": "dwi_b1000", "swi": "swi", "t2s": "t2s", "t1": "t1",
                    "t2": "t2"}
_SEG_NAMES = ("seg", "mask", "label", "segmentation")


def parse_task(task) -> FomoTask:
    """The task for 1, "1", "task1", "task_2" or a task name ("infarct", "meningioma", "brain_age")."""
    if isinstance(task, FomoTask):
        return task
    text = str(task).strip().lower().replace("-", "_")
    for prefix in ("task_", "task", "fomo"):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            text = text[len(prefix):]
    if text.isdigit() and int(text) in TASKS:
        return TASKS[int(text)]
    for t in TASKS.values():
        if text in (t.name, t.name.replace("_", "")):
            return t
    raise ValueError(f"unknown FOMO task {task!r}; tasks: 1 (infarct), 2 (meningioma), 3 (brain_age)")


def session_sequences(session_dir: Path) -> dict[str, Path]:
    """{name in TASK_SEQUENCES: file} of a session folder. Exact names (`dwi_b1000.nii.gz`) win over
    names recognised by `normalise_sequence` (`DWI.nii.gz`, `t2star.nii.gz`)."""
    exact: dict[str, Path] = {}
    loose: dict[str, Path] = {}
    for p in sorted(session_dir.iterdir()):
        if not (p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)) or p.name.startswith("."):
            continue
        stem = scan_stem(p.name).lower()
        if stem in TASK_SEQUENCES:
            exact.setdefault(stem, p)
            continue
        name = _FROM_VOCABULARY.get(normalise_sequence(stem))
        if name:
            loose.setdefault(name, p)
    return {**loose, **exact}


def _label_file(labels_dir: Path, subject: str, session: str, names: tuple[str, ...],
                suffixes: tuple[str, ...]) -> Path | None:
    for folder in (labels_dir / subject / session, labels_dir / subject):
        if not folder.is_dir():
            continue
        for name in names:
            for suffix in suffixes:
                p = folder / f"{name}{suffix}"
                if p.is_file():
                    return p
    return None


def _truthy(value) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        raise ValueError(f"expected true or false, got {value!r}")
    return bool(value)


def _sites(root: Path, skipped: list) -> dict[str, str]:
    for name in ("participants.tsv", "participants.csv"):
        path = root / name
        if path.is_file():
            try:
                table = read_table(path)
            except ValueError as e:
                skipped.append((str(path), str(e)))
                return {}
            return {_id_key(r["subject"], _SUBJECT): r["site"] for r in table if r.get("subject") and r.get("site")}
    return {}


def index_fomo_task(root: str | Path, task, *, require_labels: bool | str = True
                    ) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows, skipped) of a FOMO25 task folder; one row per subject-session.

    task: 1, 2, 3 or a name (see `parse_task`). require_labels: when false, sessions without a
    label are kept with an empty target (for unlabelled evaluation folders).
    Row columns: record_id (`fomo<task>-<sub>-<ses>`), subject_id (`fomo<task>-<sub>`), path (the
    session folder), split "", labels (task 1: "infarct" or ""), site (from participants.tsv, else
    ""), task, subject, session, seq_<input> per input sequence of the task, swi_or_t2s
    (tasks 1-2: "swi" or "t2s"), infarct ("1"/"0", task 1), mask_path (task 2), age (task 3).
    A session lacking an input sequence or its label (or with a label that does not parse) is
    skipped with the reason.
    """
    spec = parse_task(task)
    require_labels = _truthy(require_labels)
    root = Path(root)
    images_dir = root / "preprocessed"
    if not images_dir.is_dir():
        if any(p.is_dir() and _SUBJECT.match(p.name) for p in root.iterdir()):
            images_dir = root
        else:
            raise ValueError(f"{root}: no preprocessed/ folder (expected <root>/preprocessed/sub_X/ses_1/*.nii.gz)")
    labels_dir = root / "labels"
    skipped: list[tuple[str, str]] = []
    sites = _sites(root, skipped)
    rows: list[dict] = []
    for subject_dir in sorted(p for p in images_dir.iterdir() if p.is_dir() and _SUBJECT.match(p.name)):
        sessions = sorted(p for p in subject_dir.iterdir() if p.is_dir() and _SESSION.match(p.name))
        if not sessions:
            skipped.append((str(subject_dir), "no ses_* folder"))
        for ses in sessions:
            row, reason = _session_row(spec, ses, subject_dir.name, labels_dir, require_labels)
            if row is None:
                skipped.append((str(ses), reason))
                continue
            row["site"] = sites.get(_id_key(subject_dir.name, _SUBJECT), "")
            rows.append(row)
    return rows, skipped


def _session_row(spec: FomoTask, ses: Path, subject: str, labels_dir: Path, require_labels: bool):
    found = session_sequences(ses)
    row: dict = {"record_id": f"fomo{spec.number}-{subject}-{ses.name}", "subject_id": f"fomo{spec.number}-{subject}",
                 "path": str(ses), "split": "", "labels": "", "site": "", "task": str(spec.number),
                 "subject": subject, "session": ses.name}
    missing = []
    for name in spec.inputs:
        if name == "swi_or_t2s":
            which = "swi" if "swi" in found else "t2s" if "t2s" in found else ""
            if not which:
                missing.append("swi or t2s")
                continue
            row["seq_swi_or_t2s"] = str(found[which])
            row["swi_or_t2s"] = which
        elif name in found:
            row[f"seq_{name}"] = str(found[name])
        else:
            missing.append(name)
    empty = [row[k] for k in row if k.startswith("seq_") and Path(row[k]).stat().st_size == 0]
    if missing:
        return None, f"task {spec.number} ({spec.name}) needs {', '.join(missing)}: not in the session folder"
    if empty:
        return None, f"empty file {empty[0]}"

    if spec.kind == "segmentation":
        mask = _label_file(labels_dir, subject, ses.name, _SEG_NAMES, NIFTI_SUFFIXES)
        if mask is None and require_labels:
            return None, f"no seg.nii.gz under {labels_dir / subject}"
        row["mask_path"] = str(mask) if mask else ""
        return row, ""

    label = _label_file(labels_dir, subject, ses.name, ("label",), (".txt",))
    if label is None:
        if require_labels:
            return None, f"no label.txt under {labels_dir / subject}"
        row.update({"infarct": ""} if spec.number == 1 else {"age": ""})
        return row, ""
    text = label.read_text(errors="replace").strip()
    try:
        value = float(text.split()[0]) if text else math.nan
    except ValueError:
        value = math.nan
    if spec.number == 1:
        if value not in (0.0, 1.0):
            return None, f"{label}: holds {text[:20]!r}, expected 0 or 1"
        row["infarct"] = str(int(value))
        row["labels"] = "infarct" if value == 1.0 else ""
    else:
        if not (math.isfinite(value) and 0.0 <= value < 130.0):
            return None, f"{label}: holds {text[:20]!r}, expected an age in years"
        row["age"] = f"{value:g}"
    return row, ""
