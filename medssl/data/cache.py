"""The preprocessed-array cache: decode and preprocess each record once, then read a memory map.

A cache entry is a folder `<cache_root>/<modality>/<key>/` holding
  signals.npy   (N_windows, ...) float32, every window of every usable record, in manifest order
  index.csv     one row per window: the record's manifest row plus `window` (0, 1, ...)
  skipped.csv   records that could not be used, with the reason
  settings.json preprocessing settings and the manifest fingerprint
The key hashes the manifest (paths, labels, subjects), the size and modification time of every
record's file and the preprocessing settings, so a change to any of them makes a new entry.
Records are decoded in parallel worker processes, each writing shards that are then joined into
the one array. Entries are built in a temporary folder and renamed into place: a crash never
leaves a half-written entry, and input folders are never written to.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.manifest import manifest_fingerprint, manifest_to_csv, read_manifest
from medssl.io import make_temp_dir

# load(row) -> (n_windows, *item_shape) float32; must be picklable to run in worker processes.
WindowLoader = Callable[[dict], np.ndarray]


def default_cache_root() -> Path:
    return Path(os.environ.get("MEDSSL_CACHE", Path.home() / ".cache" / "medssl"))


class NoUsableRecordsError(ValueError):
    """Every record of a manifest failed to load."""


@dataclass
class ArrayCache:
    folder: Path
    signals: np.ndarray  # memory-mapped, read-only, (N_windows, ...)
    rows: list[dict]  # one per window
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.rows)


def _data_file(path: str) -> Path | None:
    base = path.split("#", 1)[0]  # "<file>.hdf5#<row>", "<series folder>#<series>": part of a container
    for candidate in (base + ".hea", base):
        p = Path(candidate)
        if p.is_file() or p.is_dir():
            return p
    return None


def _stamp_paths(row: dict) -> list[str]:
    """The row's data files: `path`, `mask_path` and per-sequence `seq_*` columns."""
    return [v for k, v in row.items() if v and (k in ("path", "mask_path") or k.startswith("seq_"))]


def _files_stamp(rows: Sequence[dict]) -> str:
    """Size and modification time of every data file the rows name (every file of a folder, e.g. a
    DICOM series), so that a file changed in place makes a new cache entry."""
    h = hashlib.sha256()
    folders: dict[Path, str] = {}
    for row in rows:
        for value in _stamp_paths(row):
            p = _data_file(str(value))
            if p is None:
                continue
            if p.is_dir():
                if p not in folders:
                    files = sorted(q for q in p.iterdir() if q.is_file())
                    folders[p] = "".join(f"{q.name}|{q.stat().st_size}|{q.stat().st_mtime_ns}\n" for q in files)
                h.update(f"{p}/\n{folders[p]}".encode())
            else:
                st = p.stat()
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
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


@dataclass
class _Shard:
    path: Path | None
    windows: list[int]  # per row of the chunk: windows kept (0 = skipped)
    skipped: list[tuple[str, str]]
    item_shape: tuple[int, ...] | None


def _build_shard(load: WindowLoader, rows: Sequence[dict], path: Path, errors: tuple[type[Exception], ...]) -> _Shard:
    arrays, counts, skipped, shape = [], [], [], None
    for row in rows:
        try:
            x = np.asarray(load(row), dtype=np.float32)
        except errors as e:
            skipped.append((row["path"], str(e).replace("\n", " ")))
            counts.append(0)
            continue
        if shape is None:
            shape = x.shape[1:]
        if x.shape[1:] != shape or len(x) == 0:
            skipped.append((row["path"], f"preprocessed window shape {x.shape[1:]} differs from {shape}"))
            counts.append(0)
            continue
        arrays.append(x)
        counts.append(len(x))
    if not arrays:
        return _Shard(None, counts, skipped, None)
    np.save(path, np.concatenate(arrays))
    return _Shard(path, counts, skipped, shape)


@dataclass(frozen=True)
class CachePlan:
    """What `build_array_cache` would build, returned instead of building inside `planning_cache()`:
    the rows, the picklable per-row loader and the settings, and the key of the entry. Lets another
    writer (the streaming shards of `medssl.data.stream`) use exactly the modality's preprocessing."""

    rows: list[dict]
    load: WindowLoader
    settings: dict
    settings_key: str
    modality: str
    errors: tuple[type[Exception], ...]
    key: str


_PLANNING: ContextVar[bool] = ContextVar("medssl_cache_planning", default=False)


@contextmanager
def planning_cache() -> Iterator[None]:
    """Within it, `build_array_cache` (and so every modality's `inputs` hook, which returns its
    result) returns a :class:`CachePlan` and neither reads records nor writes anything."""
    token = _PLANNING.set(True)
    try:
        yield
    finally:
        _PLANNING.reset(token)


def build_array_cache(
    rows: Sequence[dict],
    load: WindowLoader,
    *,
    settings: dict,
    settings_key: str,
    modality: str,
    cache_root: str | Path | None = None,
    errors: tuple[type[Exception], ...] = (ValueError, OSError),
    workers: int | None = None,
    chunk_size: int = 64,
) -> ArrayCache:
    """Return the cache entry for `rows` under `settings`, building it when absent.

    load: maps a manifest row to its preprocessed windows, (n_windows, *item_shape) float32; it
    raises one of `errors` for a bad record, which is then skipped and listed, not fatal.
    workers: processes decoding records (default: one per core, fewer for small manifests).
    Raises NoUsableRecordsError when no record could be loaded.
    """
    if _PLANNING.get():
        return CachePlan([dict(r) for r in rows], load, dict(settings), settings_key, modality, tuple(errors),
                         cache_key(rows, settings_key))
    root = Path(cache_root) if cache_root else default_cache_root()
    folder = root / modality / cache_key(rows, settings_key)
    if (folder / "signals.npy").is_file():
        return load_cache(folder)

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(folder)
    try:
        chunks = [list(rows[i:i + chunk_size]) for i in range(0, len(rows), chunk_size)]
        paths = [tmp / f"shard_{i:06d}.npy" for i in range(len(chunks))]
        workers = min(workers or os.cpu_count() or 1, len(chunks)) or 1
        from medssl.progress import progress

        desc = f"cache {modality}: {len(rows)} records"
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                shards = list(progress(pool.map(_build_shard, [load] * len(chunks), chunks, paths,
                                                [errors] * len(chunks)), desc=desc, total=len(chunks), unit="shard"))
        else:
            shards = [_build_shard(load, c, p, errors)
                      for c, p in progress(list(zip(chunks, paths)), desc=desc, unit="shard")]
        _join_shards(rows, chunks, shards, tmp, settings)
        try:
            tmp.rename(folder)
        except OSError:  # another process built the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_cache(folder)


def _join_shards(rows, chunks, shards: list[_Shard], tmp: Path, settings: dict) -> None:
    skipped = [s for shard in shards for s in shard.skipped]
    shape = next((s.item_shape for s in shards if s.item_shape is not None), None)
    if shape is None:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise NoUsableRecordsError(f"none of the {len(rows)} records could be used ({reasons})")
    index: list[dict] = []
    parts: list[Path] = []
    for chunk, shard in zip(chunks, shards):
        if shard.item_shape is None:
            continue
        if shard.item_shape != shape:
            skipped += [(r["path"], f"preprocessed window shape {shard.item_shape} differs from {shape}")
                        for r, n in zip(chunk, shard.windows) if n]
            continue
        parts.append(shard.path)
        index += [{**r, "window": w} for r, n in zip(chunk, shard.windows) for w in range(n)]
    out = np.lib.format.open_memmap(tmp / "signals.npy", mode="w+", dtype=np.float32, shape=(len(index), *shape))
    start = 0
    for part in parts:
        block = np.load(part, mmap_mode="r")
        out[start:start + len(block)] = block
        start += len(block)
        del block
        part.unlink()
    out.flush()
    del out
    for leftover in tmp.glob("shard_*.npy"):
        leftover.unlink()
    (tmp / "index.csv").write_text(manifest_to_csv(index))
    with (tmp / "skipped.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "reason"])
        w.writerows(sorted(skipped))
    (tmp / "settings.json").write_text(json.dumps(
        {"settings": settings, "manifest_sha256": manifest_fingerprint(rows)}, indent=2))
