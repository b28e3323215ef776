"""Samples/s of one reader process: litdata shards vs the memory-map cache vs per-file decoding.

ECG windows (8 x 2500 float32, 80 kB) from a synthetic WFDB cohort on local disk, one process, no
dataloader workers, shuffled order in all three arms (ratios are what matter on a shared machine):
  per-file   read + preprocess each record (WFDB decode, filters, windows) -- no cache at all
  memmap     medssl's memory-map cache, one random row at a time
  shards     litdata StreamingDataset over the shards of `medssl data cache --format stream`,
             iterated shuffled (chunk order + in-chunk order from the seed), the pretraining path
Usage: .venv/bin/python benchmarks/bench_stream.py [--subjects 100] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args()

    from medssl.data.layouts import index_layout
    from medssl.data.modalities import encoder_inputs
    from medssl.data.stream import build_stream, stream_dataset
    from medssl.ecg.dataset import EcgWindowLoader, preprocess_for_encoder
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort
    from medssl.engine.config import resolve_recipe
    from medssl.registry import encoder_spec

    tmp = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    write_wfdb_cohort(generate_cohort(args.subjects, records_per_subject=2, seed=0), tmp / "cohort")
    rows, _ = index_layout("synthetic", tmp / "cohort")
    cfg = resolve_recipe("ecg_jepa", ["variant=cpu"])
    spec = encoder_spec(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    rng = np.random.default_rng(0)

    t = time.perf_counter()
    cache = encoder_inputs(rows, spec, cfg["data"], tmp / "cache")
    build_memmap = time.perf_counter() - t
    t = time.perf_counter()
    info = build_stream(rows, spec, tmp / "shards", cfg["data"], workers=2, progress=False)
    build_shards = time.perf_counter() - t
    n = len(cache.rows)

    load = EcgWindowLoader(preprocess_for_encoder(dict(spec.input)))
    order = rng.permutation(len(rows))[: min(len(rows), 100)]
    t = time.perf_counter()
    got = sum(len(load(rows[i])) for i in order)
    per_file = _rate(got, time.perf_counter() - t)

    idx = rng.permutation(n)
    t = time.perf_counter()
    acc = 0.0
    for i in idx:
        acc += float(np.asarray(cache.signals[i], dtype=np.float32)[0, 0])
    memmap = _rate(n, time.perf_counter() - t)

    ds = stream_dataset(tmp / "shards", shuffle=True, seed=0)
    t = time.perf_counter()
    m = 0
    for x in ds:
        acc += float(x[0, 0])
        m += 1
    shards = _rate(m, time.perf_counter() - t)

    shard_bytes = sum(p.stat().st_size for p in (tmp / "shards").glob("chunk-*.bin"))
    result = {
        "items": n, "item_shape": info.meta["item_shape"], "item_bytes": int(np.prod(info.meta["item_shape"])) * 4,
        "shard_bytes": shard_bytes, "memmap_bytes": (cache.folder / "signals.npy").stat().st_size,
        "build_s": {"memmap": round(build_memmap, 2), "shards_2_workers": round(build_shards, 2)},
        "samples_per_s_one_process": {"per_file": round(per_file, 1), "memmap": round(memmap, 1),
                                      "shards": round(shards, 1)},
        "ratio_shards_vs_memmap": round(shards / memmap, 3), "ratio_shards_vs_per_file": round(shards / per_file, 2),
        "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
