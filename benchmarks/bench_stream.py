"""Samples/s of one reader process: litdata shards vs the memory-map cache vs per-file decoding.

Two kinds of pretraining item, each from a synthetic cohort on local disk, one process, no
dataloader workers, shuffled order in all three arms (ratios are what matter on a shared machine;
each is against the memory-map arm measured in the same process):
  ecg  ECG windows (8 x 2500 float32, 80 kB) of a synthetic WFDB cohort (recipe ecg_jepa, cpu)
  mri  MRI volumes (1 x 1 x 96^3 float32, 3.5 MB) of synthetic brain phantoms (FOMO60K replica,
       recipe amaes_mri with data.shape 96^3) and the random 64^3 crop pretraining draws from each
Arms:
  per-file   read + preprocess each record (WFDB decode + filters + windows; NIfTI read +
             reorient + resample + crop/pad + z-score) -- no cache at all
  memmap     medssl's memory-map cache, one random row at a time
  shards     litdata StreamingDataset over the shards of `medssl data cache --format stream`,
             iterated shuffled (chunk order + in-chunk order from the seed), the pretraining path
Usage: .venv/bin/python benchmarks/bench_stream.py [--modality ecg mri] [--subjects 100]
       [--mri-subjects-per-site 10] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MRI_SHAPE = [96, 96, 96]
MRI_CROP = (64, 64, 64)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _cohort(modality: str, args, tmp: Path):
    """(rows, recipe config, encoder spec, what an item is) of a synthetic cohort."""
    from medssl.engine.config import resolve_recipe
    from medssl.registry import encoder_spec

    if modality == "ecg":
        from medssl.data.layouts import index_layout
        from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

        write_wfdb_cohort(generate_cohort(args.subjects, records_per_subject=2, seed=0), tmp / "cohort")
        rows, _ = index_layout("synthetic", tmp / "cohort")
        cfg = resolve_recipe("ecg_jepa", ["variant=cpu"])
        what = f"ECG windows, synthetic WFDB cohort ({args.subjects} subjects)"
    else:
        from medssl.mri.modality import write_synthetic_mri

        rows, _ = write_synthetic_mri(tmp / "cohort", subjects_per_site=args.mri_subjects_per_site, seed=0)
        cfg = resolve_recipe("amaes_mri", ["variant=cpu", f"data.shape={json.dumps(MRI_SHAPE)}"])
        what = f"MRI volumes + random {MRI_CROP} crop, synthetic FOMO60K replica"
    spec = encoder_spec(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    return rows, cfg, spec, what


def _take(x: np.ndarray, modality: str, rng) -> float:
    """What a training step reads of an item: an ECG window whole, a random crop of an MRI volume."""
    x = np.asarray(x, dtype=np.float32)
    if modality == "mri":  # (1, C, D, H, W) or (C, D, H, W): a crop as the AMAES transform draws
        v = x.reshape(-1, *x.shape[-3:])
        o = [int(rng.integers(0, s - c + 1)) for s, c in zip(v.shape[1:], MRI_CROP)]
        x = np.ascontiguousarray(v[:, o[0]:o[0] + MRI_CROP[0], o[1]:o[1] + MRI_CROP[1], o[2]:o[2] + MRI_CROP[2]])
    return float(x.reshape(-1)[0])


def measure(modality: str, args) -> dict:
    from medssl.data.modalities import encoder_inputs
    from medssl.data.stream import build_stream, plan_for, stream_dataset

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-stream-{modality}-"))
    rows, cfg, spec, what = _cohort(modality, args, tmp)
    rng = np.random.default_rng(0)

    t = time.perf_counter()
    cache = encoder_inputs(rows, spec, {**cfg["data"], "cache_dir": None}, tmp / "cache")
    build_memmap = time.perf_counter() - t
    t = time.perf_counter()
    info = build_stream(rows, spec, tmp / "shards", cfg["data"], workers=2, progress=False)
    build_shards = time.perf_counter() - t
    n = len(cache.rows)

    load = plan_for(rows, spec, cfg["data"]).load  # the loader both caches are built with
    order = rng.permutation(len(rows))[: min(len(rows), args.per_file_records)]
    acc, got = 0.0, 0
    t = time.perf_counter()
    for i in order:
        for x in load(dict(rows[i])):
            acc += _take(x, modality, rng)
            got += 1
    per_file = _rate(got, time.perf_counter() - t)

    idx = rng.permutation(n)
    t = time.perf_counter()
    for i in idx:
        acc += _take(cache.signals[i], modality, rng)
    memmap = _rate(n, time.perf_counter() - t)

    ds = stream_dataset(tmp / "shards", shuffle=True, seed=0)
    t = time.perf_counter()
    m = 0
    for x in ds:
        acc += _take(x.numpy(), modality, rng)
        m += 1
    shards = _rate(m, time.perf_counter() - t)

    shard_bytes = sum(p.stat().st_size for p in (tmp / "shards").glob("chunk-*.bin"))
    return {
        "items": what, "n_records": len(rows), "n_items": n, "item_shape": info.meta["item_shape"],
        "item_bytes": int(np.prod(info.meta["item_shape"])) * 4, "shard_bytes": shard_bytes,
        "memmap_bytes": (cache.folder / "signals.npy").stat().st_size,
        "build_s": {"memmap": round(build_memmap, 2), "shards_2_workers": round(build_shards, 2)},
        "samples_per_s_one_process": {"per_file": round(per_file, 1), "memmap": round(memmap, 1),
                                      "shards": round(shards, 1)},
        "ratio_vs_memmap": {"per_file": round(per_file / memmap, 4), "shards": round(shards / memmap, 3)},
        "ratio_shards_vs_per_file": round(shards / per_file, 2), "per_file_items": got,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modality", nargs="+", choices=["ecg", "mri"], default=["ecg", "mri"])
    ap.add_argument("--subjects", type=int, default=100, help="ECG subjects (2 records each)")
    ap.add_argument("--mri-subjects-per-site", type=int, default=10, help="MRI phantom subjects per site")
    ap.add_argument("--per-file-records", type=int, default=100, help="records decoded in the per-file arm")
    ap.add_argument("--out")
    args = ap.parse_args()
    result = {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}
    for modality in args.modality:
        result[modality] = measure(modality, args)
        print(json.dumps({modality: result[modality]}, indent=2), flush=True)
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps({k: result[k] for k in ("cpus", "loadavg_before", "loadavg_after")}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
