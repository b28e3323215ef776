"""Index a folder of WFDB records into manifest rows (the generic `wfdb` layout).

`index_wfdb_folder(root, labels_csv)` finds every record header under `root`, reads headers
only (fast, no signal), and returns manifest rows plus the records it skipped and why. It
reads and never writes under `root`.

Multi-segment records: the master header is indexed as one record (read later through
wfdb's segment merging); its segment headers and its `_layout` header are parts of it, not
records, and are left out of both the rows and the skipped list.

Labels CSV columns (see CONTRACTS): `record` (path relative to root, without extension),
`labels` (";"-joined, may be empty), optional `subject_id`, `site`, `split`
(train/val/test); other columns are copied into the rows.

Splits are made by subject, never by record, so that no person's ECGs are in two splits
(record-level splits leak subject identity into the test set and inflate scores).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from medssl.data.manifest import SPLITS, join_labels, split_labels, subject_split  # noqa: F401 (re-exported)
from medssl.ecg.leads import canonical_lead_name
_CSV_CORE = ("record", "labels", "subject_id", "site", "split")


class LayoutError(ValueError):
    """A folder or labels CSV cannot be indexed; the message starts with the offending path."""


def index_wfdb_folder(
    root: str | Path,
    labels_csv: str | Path | None = None,
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows for the WFDB records under `root`, and the (path, reason) pairs skipped.

    Each row: record_id (relative path without extension, "/"-separated), subject_id (CSV, else
    record_id), path (absolute, without extension), split, labels (";"-joined), site (CSV, else
    the first folder level, else ""), sampling_rate (Hz), n_samples, leads (";"-joined canonical
    standard leads found in the header), plus any extra CSV columns. Rows are sorted by record_id.

    Skipped: headers that do not parse, records with no standard ECG lead or a missing signal
    file, and, when `labels_csv` is given, CSV records missing on disk and disk records absent
    from the CSV. Splits come from the CSV `split` column when it has a value, else from
    `subject_split(subject_id, split_seed, split_fractions)`.
    Raises LayoutError for a missing root, a malformed CSV, bad split names/fractions, or a
    subject that the CSV puts in two splits.
    """
    from medssl.ecg.wfdb_reader import read_header

    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: folder not found")
    if len(split_fractions) != 3 or any(f < 0 for f in split_fractions) or abs(sum(split_fractions) - 1) > 1e-6:
        raise LayoutError(f"{root}: split_fractions must be 3 non-negative numbers summing to 1, got {split_fractions}")

    table = _read_labels_csv(Path(labels_csv)) if labels_csv is not None else None
    skipped: list[tuple[str, str]] = []

    headers = sorted(root.rglob("*.hea"))
    parsed: dict[str, object] = {}
    parts: set[str] = set()  # record ids that are segments/layouts of a multi-segment record
    from medssl.progress import progress

    for hea in progress(headers, desc=f"index {root.name}", unit="record"):
        record_id = hea.relative_to(root).with_suffix("").as_posix()
        base = hea.with_suffix("")
        try:
            header, _ = read_header(base)  # lenient: record lines as found in the wild are repaired
        except Exception as exc:
            msg = str(exc)
            skipped.append((str(base), msg[len(f"{base}: "):] if msg.startswith(f"{base}: ") else
                            f"header does not parse ({type(exc).__name__})"))
            continue
        parsed[record_id] = header
        seg_names = getattr(header, "seg_name", None)
        if seg_names:
            folder = Path(record_id).parent
            for seg in seg_names:
                if seg and seg != "~":
                    parts.add((folder / seg).as_posix())

    disk: dict[str, dict] = {}
    for record_id, header in parsed.items():
        if record_id in parts:
            continue
        base = root / record_id
        info, reason = _header_info(header, base)
        if reason:
            skipped.append((str(base), reason))
            continue
        disk[record_id] = {"path": str(base), **info}

    rows: list[dict] = []
    if table is None:
        for record_id in sorted(disk):
            rows.append(_row(record_id, disk[record_id], {}, split_seed, split_fractions))
    else:
        csv_path, csv_rows = table
        # A split given for any record of a subject applies to all its records.
        given: dict[str, str] = {}
        for record_id, meta in csv_rows.items():
            subject = (meta.get("subject_id") or "").strip() or record_id
            if (meta.get("split") or "").strip():
                given.setdefault(subject, meta["split"].strip())
        for record_id in sorted(csv_rows):
            if record_id not in disk:
                if record_id in parts or record_id in parsed:
                    continue  # a multi-segment part, or already skipped with its own reason above
                if not any(s[0] == str(root / record_id) for s in skipped):
                    skipped.append((str(root / record_id), f"listed in {csv_path.name} but not found on disk"))
                continue
            rows.append(_row(record_id, disk[record_id], csv_rows[record_id], split_seed, split_fractions, given))
        for record_id in sorted(set(disk) - set(csv_rows)):
            skipped.append((disk[record_id]["path"], f"not listed in {csv_path.name}"))
        _check_subject_splits(rows, csv_path)
    skipped.sort()
    return rows, skipped


def _header_info(header, base: Path) -> tuple[dict, str]:
    names = [str(n) for n in (getattr(header, "sig_name", None) or [])]
    if getattr(header, "seg_name", None) and not names:
        names = _layout_sig_names(header, base)
    leads: list[str] = []
    for n in names:
        c = canonical_lead_name(n)
        if c is not None and c not in leads:
            leads.append(c)
    if not leads:
        return {}, f"no standard ECG lead among {', '.join(names) or 'its channels'}"
    if not getattr(header, "seg_name", None):
        for name in sorted({str(f) for f in (getattr(header, "file_name", None) or []) if f}):
            if not (base.parent / name).is_file():
                return {}, f"signal file {name} not found"
    return {
        "sampling_rate": float(header.fs),
        "n_samples": int(header.sig_len or 0),
        "leads": ";".join(leads),
    }, ""


def _layout_sig_names(header, base: Path) -> list[str]:
    """Channel names of a variable-layout multi-segment record, from its layout segment."""
    import wfdb

    for seg, length in zip(header.seg_name, header.seg_len):
        if seg and seg != "~" and int(length) == 0:
            try:
                return [str(n) for n in (wfdb.rdheader(str(base.parent / seg)).sig_name or [])]
            except Exception:
                return []
    return []


def _row(
    record_id: str, disk: dict, meta: dict, seed: int, fractions: Sequence[float], given: dict | None = None
) -> dict:
    subject = (meta.get("subject_id") or "").strip() or record_id
    site = (meta.get("site") or "").strip()
    if not site:
        site = record_id.split("/", 1)[0] if "/" in record_id else ""
    split = (
        (meta.get("split") or "").strip()
        or (given or {}).get(subject)
        or subject_split(subject, seed, fractions)
    )
    row = {
        "record_id": record_id,
        "subject_id": subject,
        "path": disk["path"],
        "split": split,
        "labels": join_labels(split_labels(meta.get("labels", ""))),
        "site": site,
        "sampling_rate": disk["sampling_rate"],
        "n_samples": disk["n_samples"],
        "leads": disk["leads"],
    }
    for key, value in meta.items():
        if key not in _CSV_CORE and key not in row:
            row[key] = value
    return row


def _read_labels_csv(path: Path) -> tuple[Path, dict[str, dict]]:
    if not path.is_file():
        raise LayoutError(f"{path}: labels CSV not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ("record", "labels") if c not in columns]
        if missing:
            raise LayoutError(f"{path}: labels CSV lacks column(s) {', '.join(missing)}")
        out: dict[str, dict] = {}
        for line, raw in enumerate(reader, start=2):
            record_id = (raw.get("record") or "").strip().replace("\\", "/")
            for ext in (".hea", ".dat", ".mat"):
                if record_id.endswith(ext):
                    record_id = record_id[: -len(ext)]
            record_id = record_id.strip("/")
            if not record_id:
                raise LayoutError(f"{path}: line {line} has an empty `record`")
            if record_id in out:
                raise LayoutError(f"{path}: line {line} repeats record {record_id}")
            split = (raw.get("split") or "").strip()
            if split and split not in SPLITS:
                raise LayoutError(f"{path}: line {line} has split {split!r}; use one of {', '.join(SPLITS)}")
            out[record_id] = {k: ("" if v is None else v) for k, v in raw.items() if k is not None}
    return path, out


def _check_subject_splits(rows: Sequence[dict], csv_path: Path) -> None:
    seen: dict[str, str] = {}
    for row in rows:
        first = seen.setdefault(row["subject_id"], row["split"])
        if first != row["split"]:
            raise LayoutError(
                f"{csv_path}: a subject has records in both {first!r} and {row['split']!r} "
                f"(record {row['record_id']}); all records of a subject must share a split"
            )


def integer_text(value: str | None) -> str | None:
    """An id written as an integer or a float ("15709.0" -> "15709"); None when not an integer."""
    try:
        number = float((value or "").strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return str(int(number))
