"""The FOMO60K pretraining corpus (Munk et al., FOMO25) as manifest rows: one row per scan.

Layout (one folder per source dataset; OpenNeuro-style sources may nest one more level):
    <root>/PT001_<SOURCE>/sub_<id>/ses_<n>/<sequence>[_k].nii.gz
    <root>/PT001_<SOURCE>/participants.tsv     per source (or one at <root> with a dataset column)
    <root>/PT001_<SOURCE>/mri_info.tsv
`sub-`/`ses-` spellings and `.nii` files are accepted too. Indexing reads folder names and the
two tables, never an image (unless `headers=True`, which reads each file's NIfTI header).

IDs: the release numbers subjects per source (`sub_1` exists in many sources), and the official
baseline names preprocessed scans `<sub>_<ses>_<scan>`, so scans of different sources collide.
Here subject_id = `<source>-<sub>` and record_id = `<source>-<sub>-<ses>-<scan>`, unique across
the whole corpus. The release's IDs are already pseudonymous; no other identity is copied.

Sequences are normalised to SEQUENCES (`sequence`), the file's own name kept in `sequence_raw`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path

from medssl.imaging.sequences import NIFTI_SUFFIXES, SEQUENCES, normalise_sequence, scan_stem  # noqa: F401

_SUBJECT = re.compile(r"^sub[-_]?(.+)$", re.IGNORECASE)
_SESSION = re.compile(r"^ses[-_]?(.+)$", re.IGNORECASE)

# Table columns (lower-cased, non-alphanumerics removed) -> meaning, first match wins.
_COLUMNS = {
    "dataset": ("dataset", "source", "study"),
    "subject": ("participantid", "participant", "subjectid", "subject", "sub", "subid"),
    "session": ("sessionid", "session", "ses", "sesid"),
    "file": ("filename", "file", "scan", "scanname", "path", "newfilename"),
    "age": ("age", "ageyears", "ageatscan", "ageatmri", "participantage"),
    "sex": ("sex", "gender", "participantsex"),
    "field_strength": ("magneticfieldstrength", "fieldstrength", "fieldstrengtht", "tesla", "b0"),
    "vendor": ("manufacturer", "vendor", "scannervendor", "scannermanufacturer"),
    "site": ("site", "center", "centre", "hospital", "sitename", "scannersite"),
}
_VENDORS = (("siemens", "Siemens"), ("philips", "Philips"), ("general electric", "GE"), ("ge medical", "GE"),
            ("toshiba", "Toshiba"), ("canon", "Canon"), ("hitachi", "Hitachi"), ("bruker", "Bruker"),
            ("brucker", "Bruker"))


def _id_key(value: str, pattern: re.Pattern) -> str:
    """`sub-01`, `sub_1` and `1` -> "1": the comparable part of a subject or session label."""
    v = str(value).strip()
    m = pattern.match(v)
    v = (m.group(1) if m else v).strip().lower()
    return (v.lstrip("0") or "0") if v.isdigit() else v


def _canon(column: str) -> str:
    return re.sub(r"[^a-z0-9]", "", column.lower())


def read_table(path: Path) -> list[dict]:
    """Rows of a TSV (or CSV) with columns renamed to the meanings of _COLUMNS where recognised;
    other columns are dropped. Raises ValueError naming the file if it cannot be parsed."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    fields = reader.fieldnames or []
    mapping: dict[str, str] = {}
    for meaning, names in _COLUMNS.items():
        for name in names:
            hit = next((f for f in fields if f and _canon(f) == name), None)
            if hit is not None:
                mapping[meaning] = hit
                break
    if "subject" not in mapping and "file" not in mapping:
        raise ValueError(f"{path}: no participant or file column (columns: {', '.join(fields) or 'none'})")
    try:
        return [{m: (r.get(col) or "").strip() for m, col in mapping.items()} for r in reader]
    except csv.Error as e:
        raise ValueError(f"{path}: malformed table ({e})") from e


def _field_strength(value: str) -> str:
    v = value.strip().upper().rstrip("T").strip()
    try:
        f = float(v)
    except ValueError:
        return ""
    if f > 100:  # stored in gauss or without the decimal point (15000 -> 1.5)
        f = f / 10000.0
    if not 0.0 < f < 20.0:
        return ""
    for std in (0.5, 1.0, 1.5, 3.0, 7.0):
        if abs(f - std) < 0.1 * std:
            f = std
    return f"{f:g}"


def _vendor(value: str) -> str:
    v = value.strip().lower()
    if not v or v in ("nan", "n/a", "na", "unknown"):
        return ""
    for key, name in _VENDORS:
        if key in v:
            return name
    if v in ("ge", "ge healthcare") or v.startswith("ge "):
        return "GE"
    return value.strip()


def _age(value: str) -> str:
    v = value.strip().lower().rstrip("y").strip()
    if "-" in v[1:]:  # a range "40-45": its middle
        parts = v.split("-")
        try:
            return f"{sum(float(p) for p in parts) / len(parts):g}"
        except ValueError:
            return ""
    try:
        a = float(v)
    except ValueError:
        return ""
    return f"{a:g}" if 0.0 <= a < 130.0 else ""


def _sex(value: str) -> str:
    v = value.strip().lower()
    return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(v, "")


class _Metadata:
    """Subject, session and scan facts of one corpus, looked up by (source, subject, session, scan)."""

    def __init__(self):
        self.subjects: dict[tuple, dict] = {}
        self.scans: dict[tuple, dict] = {}

    def add(self, table: list[dict], source: str | None, kind: str) -> None:
        for r in table:
            src = source if source is not None else r.get("dataset", "")
            subject = _id_key(r.get("subject", ""), _SUBJECT) if r.get("subject") else ""
            session = _id_key(r.get("session", ""), _SESSION) if r.get("session") else ""
            if not subject and r.get("file"):  # "sub_1/ses_1/t1.nii.gz": take them from the path
                parts = r["file"].replace("\\", "/").split("/")
                subject = next((_id_key(p, _SUBJECT) for p in parts if _SUBJECT.match(p)), "")
                session = next((_id_key(p, _SESSION) for p in parts if _SESSION.match(p)), session)
            facts = {"age": _age(r.get("age", "")), "sex": _sex(r.get("sex", "")),
                     "field_strength": _field_strength(r.get("field_strength", "")),
                     "vendor": _vendor(r.get("vendor", ""))}
            scan = scan_stem(r["file"]).lower() if r.get("file") else ""
            target = self.scans if kind == "mri_info" else self.subjects
            for key in {(src, subject, session, scan), (src, subject, session, ""), (src, subject, "", "")}:
                slot = target.setdefault(key, {})
                for k, v in facts.items():
                    if v and not slot.get(k):
                        slot[k] = v

    def lookup(self, source: str, subject: str, session: str, scan: str) -> dict:
        out = {"age": "", "sex": "", "field_strength": "", "vendor": ""}
        keys = [(source, subject, session, scan), (source, subject, session, ""), (source, subject, "", "")]
        for table in (self.scans, self.subjects):
            for key in keys:
                for k, v in table.get(key, {}).items():
                    if v and not out[k]:
                        out[k] = v
        return out


def _is_subject_dir(p: Path) -> bool:
    return p.is_dir() and bool(_SUBJECT.match(p.name))


def find_sources(root: Path) -> list[tuple[str, Path]]:
    """(source name, folder) of every source: a folder of `sub_*` folders directly under `root`,
    or one level deeper (`PT030_OpenNeuro/ds000001` for OpenNeuro-style collections)."""
    sources = []
    for top in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        children = [p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if any(_is_subject_dir(c) for c in children):
            sources.append((top.name, top))
            continue
        for child in sorted(children):
            if any(_is_subject_dir(c) for c in child.iterdir()):
                sources.append((f"{top.name}/{child.name}", child))
    return sources


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)
                  and not p.name.startswith("."))


def _sessions(subject_dir: Path) -> Iterable[tuple[str, Path]]:
    """(session name, folder); files directly in the subject folder form a session named ""."""
    if any(p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES) for p in subject_dir.iterdir()):
        yield "", subject_dir
    for p in sorted(subject_dir.iterdir()):
        if _SESSION.match(p.name) and (p.is_dir() or p.suffix.lower() == ".zip"):
            yield p.name, p


def _header_columns(path: Path) -> dict:
    from medssl.imaging.nifti import NiftiReadError, _affine, _load

    try:
        img, _ = _load(path)
        affine, _src = _affine(img, path)
    except NiftiReadError:
        raise
    except Exception as e:  # noqa: BLE001 - any header failure makes the scan unusable
        raise NiftiReadError(f"{path}: unreadable NIfTI header ({type(e).__name__}: {e})") from e
    import numpy as np

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return {"shape": "x".join(str(int(s)) for s in img.shape[:3]),
            "spacing_mm": "x".join(f"{float(s):.3g}" for s in spacing)}


def index_fomo60k(root: str | Path, *, headers: bool = False) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows, skipped) for a FOMO60K folder; one row per scan.

    Row columns: record_id, subject_id, path (the NIfTI file), split "" (pretraining data has no
    split), labels "", site (= source; nested sources as `PT030_OpenNeuro/ds000001`), source
    (the top folder), subject and session (folder names), sequence (one of SEQUENCES),
    sequence_raw (the file's stem), age, sex, field_strength (tesla), vendor (normalised
    manufacturer) where the tables give them, else "". headers=True also reads every header for
    `shape` ("XxYxZ") and `spacing_mm` ("1x1x3") and skips files whose header is unreadable.

    Skipped, with the reason: zipped sessions, sessions without NIfTI files, empty files,
    duplicate scans (`t1.nii` beside `t1.nii.gz`), tables that cannot be parsed (indexing goes on
    without their facts) and root tables with no dataset column (they cannot tell sources apart).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: dataset folder not found")
    sources = find_sources(root)
    if not sources:
        raise ValueError(f"{root}: no FOMO60K sources found (expected <root>/<source>/sub_<id>/ses_<n>/*.nii.gz)")
    skipped: list[tuple[str, str]] = []
    meta = _Metadata()
    for kind in ("participants", "mri_info"):
        for name in (f"{kind}.tsv", f"{kind}.csv"):
            table_path = root / name
            if not table_path.is_file():
                continue
            try:
                table = read_table(table_path)
            except ValueError as e:
                skipped.append((str(table_path), str(e)))
                continue
            if not any(r.get("dataset") for r in table):
                skipped.append((str(table_path), "no dataset column: cannot tell which source a row belongs to"))
                continue
            meta.add(table, None, kind)

    rows: list[dict] = []
    seen: set[str] = set()
    for source, folder in sources:
        for kind in ("participants", "mri_info"):
            for name in (f"{kind}.tsv", f"{kind}.csv"):
                if (folder / name).is_file():
                    try:
                        meta.add(read_table(folder / name), source, kind)
                    except ValueError as e:
                        skipped.append((str(folder / name), str(e)))
        source_id = source.replace("/", "-")
        for subject_dir in sorted(p for p in folder.iterdir() if _is_subject_dir(p)):
            subject_id = f"{source_id}-{subject_dir.name}"
            subject_key = _id_key(subject_dir.name, _SUBJECT)
            sessions = list(_sessions(subject_dir))
            if not sessions:
                skipped.append((str(subject_dir), "no session folders or NIfTI files"))
            for session, ses_path in sessions:
                if ses_path.is_file():
                    skipped.append((str(ses_path), "zipped session: extract it first"))
                    continue
                files = ([p for p in ses_path.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)]
                         if session == "" else _nifti_files(ses_path))
                if not files:
                    skipped.append((str(ses_path), "no NIfTI files"))
                    continue
                session_key = _id_key(session, _SESSION) if session else ""
                for path in sorted(files):
                    stem = scan_stem(path.name)
                    record_id = "-".join(x for x in (subject_id, session, stem) if x)
                    if path.stat().st_size == 0:
                        skipped.append((str(path), "empty file"))
                        continue
                    if record_id in seen:
                        skipped.append((str(path), f"duplicate scan {record_id} (another file has the same name)"))
                        continue
                    facts = meta.lookup(source, subject_key, session_key, stem.lower())
                    if not any(facts.values()):  # root tables may name nested sources by their top folder
                        facts = meta.lookup(source.split("/")[0], subject_key, session_key, stem.lower())
                    row = {"record_id": record_id, "subject_id": subject_id, "path": str(path), "split": "",
                           "labels": "", "site": source, "source": source.split("/")[0],
                           "subject": subject_dir.name, "session": session,
                           "sequence": normalise_sequence(stem), "sequence_raw": stem, **facts}
                    if headers:
                        try:
                            row.update(_header_columns(path))
                        except ValueError as e:
                            skipped.append((str(path), str(e)))
                            continue
                    seen.add(record_id)
                    rows.append(row)
    return rows, skipped
