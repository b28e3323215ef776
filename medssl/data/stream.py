"""Streaming shards: the preprocessed arrays of any manifest, sharded for many GPUs and nodes.

`build_stream` writes shards with Lightning's `litdata` (its `optimize` step: parallel worker
processes, several machines with `num_nodes`, a progress bar) into
a local folder or an object-store URL; `stream_dataset` / `StreamPretrainData` read them back with
`litdata.StreamingDataset` + `StreamingDataLoader` from either, by the same code path. Each sample
holds the model-ready array `x` (float32, the encoder's input contract), made by the very loader
of the modality's memory-map cache (its `inputs` hook, run inside `planning_cache()`), and the
record's `record_id`, `window`, `subject_id`, `site`, `split` and `labels` from the manifest (the
manifest's subject IDs are pseudonymous; no paths, names or other identities are written).

Sharding across ranks and dataloader workers, the shuffled order from the seed (and the epoch),
and the position for an exact resume (`StreamingDataLoader.state_dict`, which Lightning saves in
its checkpoint and restores) are all litdata's; medssl adds no distributed code of its own.

Data order on 1, 2 or N processes (`data.stream_options.order`):
- `global` (the default): an epoch is the order litdata gives one process with one worker
  (chunks permuted from (seed, epoch), items shuffled inside each chunk in litdata's blocks of
  256), cut into global batches of ranks x `data.batch_size`; step k's global batch is the same
  samples on any number of processes (1 x 4, 2 x 2, 4 x 1: rank r takes the r-th slice) and
  with any `data.num_workers`, and every epoch holds every sample once (tests/data/test_stream.py,
  and a 2-process gloo run). This is litdata's elastic-resume plan (`litdata.streaming.elastic`:
  a canonical item stream restriped onto the current ranks, workers and batch), given from the
  first batch of each epoch by the dataset's canonical state (`ArrayStream.set_epoch`).
  Not guaranteed: the same samples at a step when ranks x batch differs (then only the epoch's
  order is shared, not the cut); the epoch's last items (litdata keeps a multiple of ranks x
  workers x batch, so with more workers up to one more round of global batches is dropped); after a
  resume on another grid (world size, workers or batch) litdata cuts the rest of the epoch to a
  multiple of the new ranks x workers x batch; model updates (masks are drawn per rank). Costs:
  a chunk's items go to consecutive global batches, hence to several ranks, so on an object
  store a node downloads every chunk that holds one of its ranks' items: with small items (ECG
  windows, hundreds per 64 MB chunk) nearly the whole data set per epoch, not 1/N of it; and each
  worker builds the epoch's item list in Python at the epoch start (O(items) memory; 4.4 s per
  million items on the 2-core VM of benchmarks/RESULTS.md).
- `per_rank`: litdata's own assignment, each rank and worker a run of whole chunks (a node
  downloads ~1/N of the data per epoch, chunks are reused from its cache from the second epoch),
  but the chunks a rank gets depend on the world size, so 1 and 2 processes see other batches;
  for object-store data sets that do not fit every node. Same seed, same world size: same order.

Why litdata, not webdataset or mosaicml-streaming: it is Lightning's own data engine, so the
dataloader state rides in Lightning's checkpoint and is restored on resume with no glue code, and
rank/world size come from the same process group Lightning sets up; it builds the shards itself
from a Python function over any inputs (`optimize`, parallel, multi-node, resumable), which is
exactly our per-record preprocessing; it reads local folders and s3/gs/azure URLs through one
class, with a local chunk cache of bounded size; and items are random-access (`dataset[i]`), which
the equality tests and `medssl embed` need. webdataset is tar streams without random access,
exact-sample resume or a builder (the shuffle is a buffer, the split per rank is left to the
user); mosaicml-streaming has the same features as litdata but its own launcher conventions and
a pinned dependency set, beside a Lightning engine that already brings litdata's.

Layout of an output folder: litdata's `index.json` and `chunk-*.bin`, and `medssl_stream.json`
(format, key, modality, preprocessing settings, item shape, counts, skipped records). The key
hashes the manifest, the size and modification time of its files and the settings, as the
memory-map cache's does: building again with the same key is a no-op, a folder holding another
key is refused. A build writes its records in parts (`records_per_part`, default 1000: one litdata
`optimize` each, into `parts/part-NNNNNN/`, marked complete by `medssl_part.json` when it returns),
then joins them with litdata's `merge_datasets` and deletes them; the same command after an
interruption (Ctrl-C, a killed job) reuses the complete parts, rebuilds the one it was writing
and the rest, and merges. Workers keep the records' order (`keep_data_ordered`), so the shards
hold the same items in the same order as a build that was not interrupted (litdata 0.2.76's own
`use_checkpoint` refuses generator functions, and an ECG record yields several windows). A merge
copies the parts' chunks: the build needs twice the shards' space until the parts are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "medssl-stream/1"
META = "medssl_stream.json"
_BUILDING = "medssl_stream.building.json"
_MERGED = "medssl_stream.merged.json"  # the parts' skipped records, between the merge and the meta
_PARTS = "parts"
_PART_DONE = "medssl_part.json"
ROW_FIELDS = ("record_id", "subject_id", "site", "split", "labels")  # kept with each sample; never paths
ORDERS = ("global", "per_rank")  # data.stream_options.order (medssl.data._stream_dataset.ArrayStream)


def _litdata():
    try:
        import litdata
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("streaming shards need litdata: pip install 'medssl[stream]'") from e
    return litdata


def _is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("local:")


def _read_text(location: str, name: str) -> str | None:
    if not _is_url(location):
        p = Path(location) / name
        return p.read_text() if p.is_file() else None
    try:
        import fsspec

        with fsspec.open(f"{location.rstrip('/')}/{name}", "r") as f:
            return f.read()
    except (ImportError, FileNotFoundError, OSError, ValueError) as e:
        log.warning("cannot read %s/%s (%s); the shards' settings are not checked", location, name, e)
        return None


def _write_text(location: str, name: str, text: str) -> None:
    if not _is_url(location):
        from medssl.io import atomic_write_text

        atomic_write_text(Path(location) / name, text)
        return
    import fsspec  # s3fs / gcsfs / adlfs for the URL's scheme

    with fsspec.open(f"{location.rstrip('/')}/{name}", "w") as f:
        f.write(text)


def read_stream_meta(location: str | Path) -> dict | None:
    text = _read_text(str(location), META)
    return json.loads(text) if text else None


class _RowSamples:
    """JSON of a manifest row -> its samples (one per window); a record the loader cannot use is
    skipped and its reason appended to a per-process file in `skipped_dir`. Picklable."""

    def __init__(self, load, errors: tuple[type[Exception], ...], skipped_dir: str):
        self.load, self.errors, self.skipped_dir = load, errors, skipped_dir

    def __call__(self, row_json: str):
        row = json.loads(row_json)
        try:
            x = np.asarray(self.load(row), dtype=np.float32)
        except self.errors as e:
            with open(os.path.join(self.skipped_dir, f"{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps([row.get("path", row.get("record_id", "?")), str(e).replace("\n", " ")]) + "\n")
            return
        keep = {k: str(row.get(k) or "") for k in ROW_FIELDS}
        for w in range(len(x)):
            yield {"x": np.ascontiguousarray(x[w]), "window": w, **keep}


@dataclass
class StreamInfo:
    location: str
    meta: dict

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [tuple(s) for s in self.meta.get("skipped", [])]


def plan_for(rows: Sequence[dict], spec, data_cfg: Mapping[str, Any] | None = None):
    """The modality's cache plan (loader, settings, key) for `rows` under an encoder spec."""
    from medssl.data.cache import planning_cache
    from medssl.data.modalities import encoder_inputs

    with planning_cache():
        plan = encoder_inputs(rows, spec, dict(data_cfg or {}), (data_cfg or {}).get("cache_dir"))
    if not hasattr(plan, "load"):
        raise ValueError(f"modality {spec.modality!r}: its inputs hook does not build through build_array_cache; "
                         f"it cannot be written as shards")
    return plan


RECORDS_PER_PART = 1000  # records per resumable unit of a build (one litdata `optimize` each)


def _part_name(i: int) -> str:
    return f"{_PARTS}/part-{i:06d}"


def _join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}" if _is_url(location) else str(Path(location) / name)


def _remove(location: str) -> None:
    """Delete a folder (local, or under a URL through fsspec when it is installed)."""
    if not _is_url(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(location)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except (ImportError, OSError, ValueError) as e:
        log.warning("cannot delete %s (%s); delete it by hand", location, e)


def _build_part(litdata, plan, rows: list[str], out: str, *, workers: int | None, chunk_bytes: str,
                num_nodes: int | None, progress: bool) -> list:
    """One part: litdata `optimize` of `rows` (JSON) into `out`; its skipped records, which are
    also written with the part's completion mark."""
    skipped_dir = tempfile.mkdtemp(prefix="medssl-stream-skipped-")
    try:
        litdata.optimize(
            fn=_RowSamples(plan.load, plan.errors, skipped_dir), inputs=rows, output_dir=out,
            chunk_bytes=chunk_bytes, num_workers=max(1, min(workers or os.cpu_count() or 1, len(rows))),
            num_nodes=num_nodes, mode="overwrite", verbose=progress, keep_data_ordered=True,
            start_method="fork" if os.name == "posix" else None,
        )
        skipped = []
        for f in sorted(Path(skipped_dir).glob("*.jsonl")):
            skipped += [json.loads(line) for line in f.read_text().splitlines() if line]
    finally:
        shutil.rmtree(skipped_dir, ignore_errors=True)
    _write_text(out, _PART_DONE, json.dumps({"records": len(rows), "skipped": skipped}))
    return skipped


def build_stream(rows: Sequence[dict], spec, out: str | Path, data_cfg: Mapping[str, Any] | None = None, *,
                 workers: int | None = None, chunk_bytes: str = "64MB", num_nodes: int | None = None,
                 progress: bool = True, records_per_part: int = RECORDS_PER_PART) -> StreamInfo:
    """Write the preprocessed arrays of `rows` for encoder spec `spec` as litdata shards in `out`
    (a folder or an object-store URL); return its info. A no-op when `out` already holds the
    same key; refuses a folder of another key. Records are built in parts of `records_per_part`
    (each a litdata `optimize` into `out/parts/part-NNNNNN`, marked complete when it returns),
    merged by litdata's `merge_datasets` into `out` and then deleted: an interrupted build of the
    same key reuses the complete parts and builds the rest; the shards are the same items in the
    same order as an uninterrupted build's."""
    from medssl.data.manifest import manifest_fingerprint

    litdata = _litdata()
    out = str(out)
    plan = plan_for(rows, spec, data_cfg)
    key = hashlib.sha256(f"{FORMAT}|{plan.modality}|{plan.key}".encode()).hexdigest()[:20]
    meta = read_stream_meta(out)
    if meta is not None:
        if meta.get("key") == key:
            return StreamInfo(out, meta)
        raise ValueError(f"{out} holds shards of other data or settings (key {meta.get('key')}, not {key}); "
                         f"choose another --out")
    if records_per_part < 1:
        raise ValueError(f"records_per_part must be a positive integer, got {records_per_part}")
    inputs = [json.dumps(r, sort_keys=True) for r in plan.rows]
    parts = [inputs[i:i + records_per_part] for i in range(0, len(inputs), records_per_part)] or [[]]
    state = {"key": key, "records_per_part": records_per_part, "parts": len(parts)}
    building = _read_text(out, _BUILDING)
    resume = building is not None and json.loads(building) == state
    if building is not None and not resume:
        raise ValueError(f"{_join(out, _BUILDING)}: an unfinished build of other data or settings is in {out}; "
                         f"choose another --out or delete it")
    if not _is_url(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        if not resume and any(Path(out).iterdir()):
            raise ValueError(f"{out} is not empty and holds no medssl shards; choose another --out")
    _write_text(out, _BUILDING, json.dumps(state))
    skipped: list = []
    common = dict(workers=workers, chunk_bytes=chunk_bytes, num_nodes=num_nodes, progress=progress)
    if len(parts) == 1:  # one part: written in place (merge_datasets joins two or more)
        skipped = _build_part(litdata, plan, parts[0], out, **common)
    else:
        merged = _read_text(out, "index.json") is not None  # litdata writes the merged index last
        done_merge = _read_text(out, _MERGED) if merged else None
        if done_merge is not None:  # interrupted after the merge, before the meta
            skipped = json.loads(done_merge)["skipped"]
        else:
            for i, part in enumerate(parts):
                where = _join(out, _part_name(i))
                done = _read_text(where, _PART_DONE)
                if done is not None and json.loads(done)["records"] == len(part):
                    log.info("shards: part %d/%d complete, reused", i + 1, len(parts))
                    skipped += json.loads(done)["skipped"]
                    continue
                _remove(where)  # an interrupted part starts again
                log.info("shards: building part %d/%d (%d records)", i + 1, len(parts), len(part))
                skipped += _build_part(litdata, plan, part, where, **common)
            if not merged:
                if not _is_url(out):  # chunks of a merge that was interrupted
                    for f in Path(out).glob("chunk-*.bin"):
                        f.unlink()
                litdata.merge_datasets([_join(out, _part_name(i)) for i in range(len(parts))], out)
            _write_text(out, _MERGED, json.dumps({"skipped": skipped}))
        _remove(_join(out, _PARTS))
    ds = litdata.StreamingDataset(out)
    n_items = len(ds)
    if n_items == 0:
        from medssl.data.cache import NoUsableRecordsError

        raise NoUsableRecordsError(f"none of the {len(plan.rows)} records could be used "
                                   f"({'; '.join(f'{p}: {r}' for p, r in skipped[:3])})")
    item_shape = list(np.asarray(ds[0]["x"]).shape)
    used = [r for r in plan.rows if str(r.get("path", r.get("record_id", "?"))) not in {s[0] for s in skipped}]
    meta = {"format": FORMAT, "key": key, "modality": plan.modality, "settings": plan.settings,
            "item_shape": item_shape, "n_items": n_items, "n_records": len(used),
            "n_subjects": len({r.get("subject_id") for r in used}), "manifest_sha256": manifest_fingerprint(used),
            "skipped": sorted(skipped)}
    _write_text(out, META, json.dumps(meta, indent=2))
    if not _is_url(out):
        for name in (_BUILDING, _MERGED, _PART_DONE):
            (Path(out) / name).unlink(missing_ok=True)
    return StreamInfo(out, meta)


def stream_dataset(location: str | Path, *, shuffle: bool = False, seed: int = 0, drop_last: bool | None = None,
                   cache_dir: str | None = None, storage_options: dict | None = None, order: str = "global"):
    """The shards at `location` (a folder or an object-store URL) as a StreamingDataset of float32
    tensors (`medssl.data._stream_dataset.ArrayStream`); split by rank and dataloader worker, in
    the order of (seed, epoch) when `shuffle` (`order`: "global", the same global batches on any
    number of processes, or "per_rank", litdata's chunks per rank; see the module docstring)."""
    _litdata()
    from medssl.data._stream_dataset import ArrayStream

    location = str(location)
    if not _is_url(location):
        location = str(Path(location).resolve())
    return ArrayStream(location, shuffle=shuffle, seed=seed, drop_last=drop_last, cache_dir=cache_dir,
                       storage_options=storage_options or {}, order=order)


def check_stream_for(location: str | Path, spec) -> dict | None:
    """The shards' metadata, after checking they were written for `spec`'s modality; None when it
    cannot be read (an object store without its fsspec package)."""
    meta = read_stream_meta(location)
    if meta is None:
        if not _is_url(str(location)):
            raise FileNotFoundError(f"{location}: no {META}; build the shards with `medssl data cache --format stream`")
        return None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{location}: shards of format {meta.get('format')!r}, this medssl reads {FORMAT}")
    if meta["modality"] != spec.modality:
        raise ValueError(f"{location}: shards of modality {meta['modality']!r}; encoder {spec.name} is {spec.modality}")
    return meta


def _stream_setting(data_cfg: Mapping[str, Any], name: str, default=None):
    return (data_cfg.get("stream_options") or {}).get(name, default)


def stream_pretrain_data(cfg: dict, spec):
    """(LightningDataModule, StreamInfo) for `data.stream` of a recipe: a
    `medssl.data._stream_dataset.StreamPretrainData` (add its `.callback` to the trainer)."""
    data_cfg = cfg["data"]
    location = str(data_cfg["stream"])
    order = _stream_setting(data_cfg, "order", "global")
    if order not in ORDERS:
        raise ValueError(f"data.stream_options.order={order!r}: expected one of {', '.join(ORDERS)}")
    meta = check_stream_for(location, spec) or {}
    _litdata()
    from medssl.data._stream_dataset import StreamPretrainData

    data = StreamPretrainData(location, data_cfg["batch_size"], cfg.get("seed", 0), data_cfg.get("num_workers", 0),
                              cache_dir=_stream_setting(data_cfg, "cache_dir"),
                              storage_options=_stream_setting(data_cfg, "storage_options"), order=order)
    return data, StreamInfo(location, meta)


class ShardArrays:
    """The `x` arrays of shards in their order (or of the positions `index` into it), read on
    demand through litdata's random access: `len`, `shape`, `dtype`, and indexing by an integer, a
    slice or an integer array (a stacked float32 array), as the memory-map cache's `signals`."""

    def __init__(self, ds, item_shape: Sequence[int], index: np.ndarray | None = None):
        self.ds, self.item_shape = ds, tuple(int(s) for s in item_shape)
        self.index = np.arange(len(ds)) if index is None else np.asarray(index, dtype=np.int64)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.item_shape)

    def _one(self, i: int) -> np.ndarray:
        return np.asarray(self.ds.sample(int(self.index[i]))["x"], dtype=np.float32)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._one(int(key) + len(self) if key < 0 else int(key))
        positions = range(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key).ravel()
        items = [self._one(int(i)) for i in positions]
        return np.stack(items) if items else np.zeros((0, *self.item_shape), dtype=np.float32)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


@dataclass
class StreamInputs:
    """Shards read as the memory-map cache is (`medssl.data.cache.ArrayCache`): `signals` (the
    arrays, in shard order), `rows` (one per item: `record_id`, `window`, `subject_id`, `site`,
    `split`, `labels`), `skipped` (records the build could not use), `meta`; `data_id` names the
    data for fingerprints (the shards' key)."""

    location: str
    meta: dict
    signals: ShardArrays
    rows: list[dict]
    skipped: list[tuple[str, str]]

    @property
    def data_id(self) -> str:
        items = hashlib.sha256(json.dumps([[r["record_id"], r["window"]] for r in self.rows]).encode()).hexdigest()
        return f"stream-{self.meta['key']}-{items[:12]}"

    def records(self) -> list[dict]:
        """One row per record (its first item's), in shard order: what a manifest gives."""
        seen: dict[str, dict] = {}
        for r in self.rows:
            seen.setdefault(r["record_id"], {k: v for k, v in r.items() if k != "window"})
        return list(seen.values())

    def subset(self, record_ids) -> StreamInputs:
        """The items of `record_ids` only (in shard order)."""
        keep = set(record_ids)
        at = [i for i, r in enumerate(self.rows) if r["record_id"] in keep]
        index = self.signals.index[at]
        return StreamInputs(self.location, self.meta, ShardArrays(self.signals.ds, self.signals.item_shape, index),
                            [self.rows[i] for i in at], self.skipped)


def open_stream(location: str | Path, *, cache_dir: str | None = None,
                storage_options: dict | None = None) -> StreamInputs:
    """The shards at `location` (a folder or an object-store URL) with their rows (one pass over
    the items), not yet checked against an encoder (see `check_stream_inputs`)."""
    location = str(location)
    meta = read_stream_meta(location)
    where = f"{location.rstrip('/')}/{META}"
    if meta is None:
        raise FileNotFoundError(f"{where}: not found or not readable (for a URL: install the fsspec package of "
                                f"its scheme); build the shards with `medssl data cache --format stream`")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: shards of format {meta.get('format')!r}, this medssl reads {FORMAT}")
    ds = stream_dataset(location, cache_dir=cache_dir, storage_options=storage_options)
    if len(ds) != meta.get("n_items"):
        raise ValueError(f"{where}: {meta.get('n_items')} items, the shards hold {len(ds)}; rebuild them")
    rows = []
    for i in range(len(ds)):
        s = ds.sample(i)
        rows.append({"record_id": s["record_id"], "window": int(s["window"]),
                     **{k: s[k] for k in ROW_FIELDS if k != "record_id"}})
    return StreamInputs(location, meta, ShardArrays(ds, meta["item_shape"]), rows,
                        [tuple(p) for p in meta.get("skipped", [])])


def check_stream_inputs(inputs: StreamInputs, spec, data_cfg: Mapping[str, Any] | None = None) -> StreamInputs:
    """`inputs`, after checking its shards were written for `spec`'s modality, input contract and
    preprocessing under the settings `data_cfg` (what the memory-map cache would hold for them);
    a ValueError naming the shards' `medssl_stream.json` and what differs otherwise."""
    where = f"{inputs.location.rstrip('/')}/{META}"
    meta = inputs.meta
    if meta["modality"] != spec.modality:
        raise ValueError(f"{where}: shards of modality {meta['modality']!r}; encoder {spec.name} is {spec.modality}")
    first = [{k: v for k, v in inputs.rows[0].items() if k != "window"}] if inputs.rows else [{}]
    expected = json.loads(json.dumps(plan_for(first, spec, data_cfg).settings))
    theirs = meta.get("settings") or {}
    if expected != theirs:
        differ = sorted(k for k in set(expected) | set(theirs) if expected.get(k) != theirs.get(k))
        what = "; ".join(f"{k}: {theirs.get(k)!r}, encoder {expected.get(k)!r}" for k in differ)
        raise ValueError(f"{where}: shards preprocessed for another input contract or preprocessing than encoder "
                         f"{spec.name} reads ({what})")
    return inputs


def stream_inputs(location: str | Path, spec, data_cfg: Mapping[str, Any] | None = None, *,
                  cache_dir: str | None = None, storage_options: dict | None = None) -> StreamInputs:
    """The shards at `location` (a folder or an object-store URL) as model inputs of an encoder
    with spec `spec` under the preprocessing settings `data_cfg` (random access, shard order):
    `open_stream` + `check_stream_inputs`."""
    return check_stream_inputs(open_stream(location, cache_dir=cache_dir, storage_options=storage_options),
                               spec, data_cfg)
