"""Manifests: the table medssl sees, one row per record.

Required columns: record_id, subject_id, path, split, labels (label names joined by ";").
Optional columns used across modalities: site, sampling_rate, and any layout-specific ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from medssl.io import atomic_write_text

REQUIRED_COLUMNS: tuple[str, ...] = ("record_id", "subject_id", "path", "split", "labels")
LABEL_SEPARATOR = ";"


class ManifestError(ValueError):
    """A manifest file is malformed."""


SPLITS: tuple[str, ...] = ("train", "val", "test")


def subject_split(subject_id: str, seed: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> str:
    """Deterministic split of one subject: SHA-256 of "seed:subject_id" mapped to [0, 1).

    The same subject and seed always give the same split, on any machine or Python version.
    Every layout splits by subject with it, never by record, so that no person's records are in
    two splits.
    """
    digest = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, frac in zip(SPLITS, fractions):
        cumulative += frac
        if u < cumulative:
            return name
    return SPLITS[len(fractions) - 1]


def join_labels(labels: Iterable[str]) -> str:
    return LABEL_SEPARATOR.join(sorted(set(labels)))


def split_labels(value: str) -> list[str]:
    return [v for v in (s.strip() for s in (value or "").split(LABEL_SEPARATOR)) if v]


def manifest_to_csv(rows: Sequence[dict]) -> str:
    """Serialise rows; required columns first, then the others in first-seen order."""
    columns = list(REQUIRED_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def write_manifest(rows: Sequence[dict], path: str | Path) -> Path:
    """Write rows to CSV atomically. Every row must have the required columns."""
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED_COLUMNS if c not in row]
        if missing:
            raise ManifestError(f"row {i} ({row.get('record_id', '?')}) lacks {', '.join(missing)}")
    return atomic_write_text(path, manifest_to_csv(rows))


def read_manifest(path: str | Path) -> list[dict]:
    """Read a manifest CSV, checking the required columns are there."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: manifest lacks column(s) {', '.join(missing)}")
        return [dict(row) for row in reader]


def manifest_fingerprint(rows: Sequence[dict]) -> str:
    """SHA-256 of the manifest's canonical CSV: identifies the training data in model cards."""
    return hashlib.sha256(manifest_to_csv(rows).encode()).hexdigest()
