"""Brain-MRI training reads: the preprocessed-array cache against decompressing .nii.gz and
preprocessing every volume every epoch.

Writes `--volumes` synthetic brain phantoms of realistic size (a 180 x 220 x 180 mm field of view;
half stored at 1 mm RAS, half at 1.2 x 1.2 x 1.5 mm LAS so that reorientation and resampling run)
as gzipped int16 NIfTI files into a scratch folder, then measures in one process:
  decode epoch       `read_nifti` of every volume (gzip decompression + scaling), shuffled;
  decode + prep      the same plus `MriPreprocess` (RAS, crop to non-zero, 1 mm spacing, z-score,
                     centre crop/pad to `--input-shape`): what an on-the-fly loader does per epoch;
  cache build        the one-time parallel build (`medssl.mri.modality.mri_array_cache`, one
                     worker process per core);
  cache epoch        a shuffled pass in batches of 2 through a torch DataLoader over the memory map,
                     twice (the first may read from disk, the second from the page cache).
Prints volumes/s and the ratios against the decode + prep baseline.
Usage: python benchmarks/bench_mri_cache.py [--volumes 8] [--input-shape 160 192 160] [--scratch DIR]
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
from torch.utils.data import DataLoader

from medssl.data.array_dataset import ArrayDataset, collate_batch
from medssl.imaging.nifti import read_nifti, write_nifti
from medssl.mri.modality import mri_array_cache
from medssl.mri.phantom import DEFAULT_SITES, make_anatomy, render
from medssl.mri.preprocess import MriPreprocess


def write_corpus(root: Path, n: int, fov: tuple[int, int, int], seed: int = 0) -> list[dict]:
    rows = []
    sites = (DEFAULT_SITES[0], DEFAULT_SITES[2])
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        site = sites[i % 2]
        anatomy = make_anatomy(fov, rng, age=float(rng.uniform(20, 85)))
        volume = render(anatomy, "t1", site, rng)
        path = root / f"PT00{i % 2 + 1}_{site.name}" / f"sub_{i}" / "ses_1" / "t1.nii.gz"
        write_nifti(path, np.clip(np.rint(volume.array), -32768, 32767), volume.affine, dtype=np.int16)
        rows.append({"record_id": f"{site.name}-sub_{i}-ses_1-t1", "subject_id": f"{site.name}-sub_{i}",
                     "path": str(path), "split": "", "labels": "", "site": site.name, "sequence": "t1"})
    return rows


def decode_epoch(rows: list[dict], prep: MriPreprocess | None, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(len(rows))
    t = time.perf_counter()
    for i in order:
        volume = read_nifti(rows[i]["path"])
        if prep is None:
            torch.from_numpy(volume.array)
        else:
            torch.from_numpy(prep.apply([volume])[0])
    return time.perf_counter() - t


def cache_epoch(signals: np.ndarray, batch_size: int = 2) -> float:
    loader = DataLoader(ArrayDataset(signals), batch_size=batch_size, shuffle=True, num_workers=0,
                        collate_fn=collate_batch)
    t = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch.shape[0]
        float(batch[:, :, ::16, ::16, ::16].sum())  # touch the batch
    assert n == len(signals)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=8)
    ap.add_argument("--fov", type=int, nargs=3, default=[180, 220, 180], help="phantom field of view, mm")
    ap.add_argument("--input-shape", type=int, nargs=3, default=[160, 192, 160], help="cached (D, H, W) at 1 mm")
    ap.add_argument("--workers", type=int, default=None, help="cache build processes (default: one per core)")
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one core per volume, as in a data-loader worker

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="medssl-mri-bench-"))
    try:
        t = time.perf_counter()
        if args.scratch and (scratch / "rows.json").is_file():
            rows = json.loads((scratch / "rows.json").read_text())
        else:
            rows = write_corpus(scratch / "corpus", args.volumes, tuple(args.fov))
            (scratch / "rows.json").write_text(json.dumps(rows))
        t_write = time.perf_counter() - t
        n = len(rows)
        gz_mib = sum(Path(r["path"]).stat().st_size for r in rows) / 2**20
        prep = MriPreprocess(channels=("any",), shape=tuple(args.input_shape))
        prep.apply([read_nifti(rows[0]["path"])])  # warm-up: imports, allocator

        t_decode = decode_epoch(rows, None)
        t_prep = decode_epoch(rows, prep)
        t = time.perf_counter()
        cache = mri_array_cache(rows, prep, scratch / "cache", workers=args.workers)
        t_build = time.perf_counter() - t
        assert len(cache) == n, cache.skipped
        t_first = cache_epoch(cache.signals)
        t_warm = cache_epoch(cache.signals)

        result = {
            "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "volumes": n, "fov_mm": args.fov,
            "input_shape": list(cache.signals.shape[1:]), "nifti_gz_mib": gz_mib,
            "cache_mib": cache.signals.nbytes / 2**20, "write_corpus_s": t_write,
            "decode_epoch_s": t_decode, "decode_prep_epoch_s": t_prep, "cache_build_s": t_build,
            "cache_first_epoch_s": t_first, "cache_epoch_s": t_warm,
            "vol_per_s": {"decode": n / t_decode, "decode_prep": n / t_prep, "cache_build": n / t_build,
                          "cache_first": n / t_first, "cache_warm": n / t_warm},
            "speedup_cache_vs_decode_prep": t_prep / t_warm, "speedup_cache_first_vs_decode_prep": t_prep / t_first,
            "speedup_cache_vs_decode": t_decode / t_warm, "build_vs_one_decode_prep_epoch": t_build / t_prep,
        }
        v = result["vol_per_s"]
        print(f"{n} phantoms, field of view {'x'.join(map(str, args.fov))} mm, {gz_mib:.0f} MiB of .nii.gz; "
              f"cached as {'x'.join(map(str, result['input_shape']))} float32 ({result['cache_mib']:.0f} MiB); "
              f"{result['cores']} cores")
        print(f"  decode epoch (read_nifti):        {t_decode:7.2f} s  {v['decode']:7.2f} volumes/s")
        print(f"  decode + preprocessing epoch:     {t_prep:7.2f} s  {v['decode_prep']:7.2f} volumes/s  (baseline)")
        print(f"  cache build (once, parallel):     {t_build:7.2f} s  {v['cache_build']:7.2f} volumes/s  "
              f"({result['build_vs_one_decode_prep_epoch']:.2f}x one baseline epoch)")
        print(f"  cache epoch (first pass):         {t_first:7.3f} s  {v['cache_first']:7.1f} volumes/s  "
              f"({result['speedup_cache_first_vs_decode_prep']:.0f}x baseline)")
        print(f"  cache epoch (warm):               {t_warm:7.3f} s  {v['cache_warm']:7.1f} volumes/s  "
              f"({result['speedup_cache_vs_decode_prep']:.0f}x baseline, "
              f"{result['speedup_cache_vs_decode']:.0f}x decode alone)")
        print(json.dumps(result))
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
