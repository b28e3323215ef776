"""The preprocessed-array cache: decode and preprocess each record once, then read a memory map.

A cache entry is a folder `<cache_root>/<modality>/<key>/` holding
  signals.npy   (N, ...) float32, one row per usable record, in manifest order
  index.csv     the manifest rows of those records (same order)
  skipped.csv   records that could not be used, with the reason
  settings.json preprocessing settings and the manifest fingerprint
The key hashes the manifest (paths, labels, subjects), the size and modification time of every
record's header file and the preprocessing settings, so a change to any of them makes a new
entry. Entries are built in a temporary folder and renamed into place: a crash never leaves a
half-written entry, and input folders are never written to.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.manifest import manifest_fingerprint, manifest_to_csv, read_manifest


def default_cache_root() -> Path:
    return Path(os.environ.get("MEDSSL_CACHE", Path.home() / ".cache" / "medssl"))


class NoUsableRecordsError(ValueError):
    """Every record of a manifest failed to load."""


@dataclass
class ArrayCache:
    folder: Path
    signals: np.ndarray  # memory-mapped, read-only
    rows: list[dict]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.rows)


def _files_stamp(rows: Sequence[dict]) -> str:
    h = hashlib.sha256()
    for row in rows:
        for suffix in (".hea", ""):
            p = Path(row["path"] + suffix)
            if p.is_file():
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                break
    return h.hexdigest()


def cache_key(rows: Sequence[dict], settings_key: str) -> str:
    blob = f"{manifest_fingerprint(rows)}|{_files_stamp(rows)}|{settings_key}"
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_cache(folder: Path) -> ArrayCache:
    signals = np.load(folder / "signals.npy", mmap_mode="r")
    rows = read_manifest(folder / "index.csv")
    with (folder / "skipped.csv").open(newline="") as f:
        skipped = [(r["path"], r["reason"]) for r in csv.DictReader(f)]
    return ArrayCache(folder, signals, rows, skipped)


def build_array_cache(
    rows: Sequence[dict],
    load: Callable[[dict], np.ndarray],
    *,
    settings: dict,
    settings_key: str,
    modality: str,
    cache_root: str | Path | None = None,
    errors: tuple[type[Exception], ...] = (ValueError, OSError),
) -> ArrayCache:
    """Return the cache entry for `rows` under `settings`, building it when absent.

    load: maps a manifest row to its preprocessed float32 array (fixed shape); it raises one of
    `errors` for a bad record, which is then skipped and listed, not fatal.
    Raises NoUsableRecordsError when no record could be loaded.
    """
    root = Path(cache_root) if cache_root else default_cache_root()
    folder = root / modality / cache_key(rows, settings_key)
    if (folder / "signals.npy").is_file():
        return load_cache(folder)

    arrays: list[np.ndarray] = []
    kept: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        try:
            x = load(row)
        except errors as e:
            skipped.append((row["path"], str(e).replace("\n", " ")))
            continue
        if arrays and x.shape != arrays[0].shape:
            skipped.append((row["path"], f"preprocessed shape {x.shape} differs from {arrays[0].shape}"))
            continue
        arrays.append(np.asarray(x, dtype=np.float32))
        kept.append(row)
    if not arrays:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise NoUsableRecordsError(f"none of the {len(rows)} records could be used ({reasons})")

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        out = np.lib.format.open_memmap(tmp / "signals.npy", mode="w+", dtype=np.float32,
                                        shape=(len(arrays), *arrays[0].shape))
        for i, x in enumerate(arrays):
            out[i] = x
        out.flush()
        del out
        (tmp / "index.csv").write_text(manifest_to_csv(kept))
        with (tmp / "skipped.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows(skipped)
        (tmp / "settings.json").write_text(json.dumps(
            {"settings": settings, "manifest_sha256": manifest_fingerprint(rows)}, indent=2))
        try:
            tmp.rename(folder)
        except OSError:  # another process built the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_cache(folder)
