"""One epoch over a PTB-XL-sized corpus: the preprocessed-array cache against decoding WFDB files.

Writes a synthetic corpus of `--records` 12-lead records of 10 s at 500 Hz (PTB-XL has 21,799
records of 12 x 5000 samples) as WFDB format-16 files into a scratch folder, then measures in
one process:
  rdsamp epoch   `wfdb.rdsamp` of every record, shuffled, as per-record loaders do each epoch;
  rdsamp + prep  the same plus the preprocessing the cache stores (band-pass, standardisation),
                 for a sense of what decoding on the fly really costs;
  cache build    the one-time parallel build of the cache (`medssl.ecg.dataset.ecg_array_cache`;
                 with --scratch pointing at an earlier run's folder, corpus and cache are reused and
                 the build time printed is only the time to find the entry);
  cache epoch    a shuffled pass in batches of 64 through a torch DataLoader over the memory map,
                 twice: the first pass may read from disk, the second from the page cache.
Prints the ratios. Usage: python benchmarks/bench_ecg_cache.py [--records 21799] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import wfdb
from torch.utils.data import DataLoader

from medssl.ecg.dataset import ecg_array_cache
from medssl.ecg.leads import STANDARD_LEADS
from medssl.ecg.preprocess import EcgPreprocess
from medssl.ecg.synthetic import DEFAULT_SITES, generate_signals
from medssl.ecg.wfdb_reader import read_wfdb_record
from medssl.data.array_dataset import ArrayDataset, collate_batch


def write_format16_record(folder: Path, name: str, signal_mv: np.ndarray, fs: float) -> None:
    """A WFDB record as `wfdb.wrsamp` writes it (format 16, 1000 adu/mV), written with numpy for speed."""
    digital = np.clip(np.round(signal_mv * 1000.0), -32768, 32767).astype("<i2")  # (12, T)
    digital.T.tofile(folder / f"{name}.dat")
    lines = [f"{name} {len(digital)} {fs:g} {digital.shape[1]}"]
    for lead, row in zip(STANDARD_LEADS, digital):
        checksum = int(row.astype(np.int64).sum()) & 0xFFFF
        lines.append(f"{name}.dat 16 1000/mV 16 0 {int(row[0])} {checksum} 0 {lead}")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def write_corpus(root: Path, n_records: int, chunk: int = 500) -> list[dict]:
    site = DEFAULT_SITES[0]  # 500 Hz
    rows = []
    rng = np.random.default_rng(0)
    for start in range(0, n_records, chunk):
        n = min(chunk, n_records - start)
        signals, _ = generate_signals(n, site, rng)
        folder = root / f"records500/{start // 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"{start + i + 1:05d}_hr"
            write_format16_record(folder, name, signals[i], site.sampling_rate)
            rows.append({"record_id": name, "subject_id": f"S{start + i:05d}", "path": str(folder / name),
                         "split": "train", "labels": ""})
    return rows


def rdsamp_epoch(rows, prep: EcgPreprocess | None, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(len(rows))
    t = time.perf_counter()
    for i in order:
        if prep is None:
            signal, _ = wfdb.rdsamp(rows[i]["path"])
            torch.from_numpy(signal.astype(np.float32))
        else:
            torch.from_numpy(prep(read_wfdb_record(rows[i]["path"])))
    return time.perf_counter() - t


def cache_epoch(signals: np.ndarray) -> float:
    loader = DataLoader(ArrayDataset(signals), batch_size=64, shuffle=True, num_workers=0, collate_fn=collate_batch)
    t = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.shape[0]
    assert n == len(signals)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=21799)
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--prep-sample", type=int, default=2000,
                    help="records timed for the rdsamp + preprocessing epoch (extrapolated)")
    args = ap.parse_args()

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="medssl-cache-bench-"))
    try:
        t = time.perf_counter()
        corpus = scratch / "corpus"
        if args.scratch and (scratch / "rows.json").is_file():  # reuse a corpus written by an earlier run
            rows = json.loads((scratch / "rows.json").read_text())
        else:
            rows = write_corpus(corpus, args.records)
            (scratch / "rows.json").write_text(json.dumps(rows))
        t_write = time.perf_counter() - t
        prep = EcgPreprocess(sampling_rate=500, num_samples=5000)

        t_rdsamp = rdsamp_epoch(rows, None)
        sample = rows[: args.prep_sample]
        t_prep = rdsamp_epoch(sample, prep) * len(rows) / len(sample)

        t = time.perf_counter()
        cache = ecg_array_cache(rows, prep, scratch / "cache")
        t_build = time.perf_counter() - t
        t_cache_first = cache_epoch(cache.signals)
        t_cache = cache_epoch(cache.signals)  # second pass: warm page cache

        result = {
            "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "records": len(rows), "shape": list(cache.signals.shape[1:]),
            "cache_gib": cache.signals.nbytes / 2**30,
            "write_corpus_s": t_write, "rdsamp_epoch_s": t_rdsamp, "rdsamp_prep_epoch_s_extrapolated": t_prep,
            "cache_build_s": t_build, "cache_first_epoch_s": t_cache_first, "cache_epoch_s": t_cache,
            "speedup_vs_rdsamp": t_rdsamp / t_cache, "speedup_vs_rdsamp_prep": t_prep / t_cache,
        }
        print(f"{len(rows)} records of 12 x 5000 samples ({result['cache_gib']:.2f} GiB as float32), "
              f"{result['cores']} cores")
        print(f"  rdsamp epoch:             {t_rdsamp:8.1f} s")
        print(f"  rdsamp + preprocessing:   {t_prep:8.1f} s (extrapolated from {len(sample)} records)")
        print(f"  cache build (once):       {t_build:8.1f} s")
        print(f"  cache epoch (first pass): {t_cache_first:8.2f} s")
        print(f"  cache epoch (warm):       {t_cache:8.2f} s")
        print(f"  speed-up per epoch: {result['speedup_vs_rdsamp']:.0f}x vs rdsamp, "
              f"{result['speedup_vs_rdsamp_prep']:.0f}x vs rdsamp + preprocessing")
        print(json.dumps(result))
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
