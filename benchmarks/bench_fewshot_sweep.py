"""A 5-seed x 7-shot x 2-encoder linear-probe sweep: cached embeddings and a batched probe grid
vs the straightforward loop that re-extracts embeddings per draw.

Every arm draws the same subjects (`sample_few_shot`), fits the same probe objective
(`linear_probe`: per class, C chosen by 3-fold grouped CV over a grid of 4, then a final fit) and
scores AUROC on the same in-domain test rows of a synthetic two-site cohort:
  re-extract       the straightforward loop: embed the draw's training rows and the test rows with
                   the frozen encoder for every (encoder, shots, seed); scikit-learn probes, one
                   model per (class, fold, C);
  cached           embed every record once per encoder (what `medssl bench` does), then index;
                   the same scikit-learn probes;
  cached + grid    every (class, fold, C) head of a probe in one batched Newton solve
                   (`medssl.bench.probe_grid`);
  + parallel       the grid probes of all (encoder, shots, seed) run in threads over the cores,
                   torch on one thread each (what `medssl bench` does).
Usage: python benchmarks/bench_fewshot_sweep.py [--subjects-per-site 150] [--skip-reextract]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from medssl.bench.fewshot import linear_probe, sample_few_shot
from medssl.bench.metrics import auroc
from medssl.checkpoint import clone_random_encoder
from medssl.data.layouts import index_layout
from medssl.data.manifest import split_labels
from medssl.ecg.dataset import ecg_array_cache, preprocess_for_encoder
from medssl.ecg.synthetic import CONDITIONS, generate_cohort, write_wfdb_cohort
from medssl.engine.embed import embed_arrays

SHOTS = (1, 2, 5, 10, 25, 50, "all")
SEEDS = range(5)


def label_matrix(rows: list[dict], classes: tuple[str, ...] = CONDITIONS) -> np.ndarray:
    """(N, C) bool multi-hot from the manifest's ";"-joined labels."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), dtype=bool)
    for i, row in enumerate(rows):
        for name in split_labels(row["labels"]):
            if name in index:
                out[i, index[name]] = True
    return out


def sweep(encoders, signals, labels, subjects, train_idx, test_idx, *, cached: bool, grid: bool = False,
          parallel: bool = False) -> tuple[float, list[float]]:
    import torch

    from medssl.bench import fewshot

    t = time.perf_counter()
    features = {name: embed_arrays(enc, signals) for name, enc in encoders.items()} if cached else None
    jobs = [(name, enc, k, seed) for name, enc in encoders.items() for k in SHOTS
            for seed in (SEEDS if k != "all" else [0])]

    def probe(job):
        name, enc, k, seed = job
        draw = train_idx[sample_few_shot(subjects[train_idx], labels[train_idx], k, seed)]
        if cached:
            x_train, x_test = features[name][draw], features[name][test_idx]
        else:
            x_train, x_test = embed_arrays(enc, signals[draw]), embed_arrays(enc, signals[test_idx])
        s = linear_probe(x_train, labels[draw], x_test, seed=seed, groups=subjects[draw])
        return auroc(labels[test_idx], s)

    saved, threads = fewshot.MAX_BATCHED_DIM, torch.get_num_threads()
    fewshot.MAX_BATCHED_DIM = saved if grid else 0
    try:
        if parallel:
            from concurrent.futures import ThreadPoolExecutor

            torch.set_num_threads(1)
            with ThreadPoolExecutor(os.cpu_count()) as pool:
                scores = list(pool.map(probe, jobs))
        else:
            scores = [probe(j) for j in jobs]
    finally:
        fewshot.MAX_BATCHED_DIM = saved
        torch.set_num_threads(threads)
    return time.perf_counter() - t, scores


def main() -> None:
    warnings.simplefilter("ignore")  # short few-shot pools are expected at large k
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects-per-site", type=int, default=150)
    ap.add_argument("--skip-reextract", action="store_true", help="skip the slow baseline arm")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medssl-sweep-") as tmp:
        write_wfdb_cohort(generate_cohort(2 * args.subjects_per_site, records_per_subject=(1, 3), seed=0),
                          Path(tmp) / "data")
        rows, _ = index_layout("synthetic", Path(tmp) / "data")
        encoders = {f"random:{s}": clone_random_encoder("ecg_jepa_tiny", seed=s) for s in (0, 1)}
        cache = ecg_array_cache(rows, preprocess_for_encoder(encoders["random:0"].spec.input), Path(tmp) / "cache")
        labels = label_matrix(cache.rows)
        subjects = np.array([r["subject_id"] for r in cache.rows])
        site = np.array([r["site"] for r in cache.rows])
        split = np.array([r["split"] for r in cache.rows])
        train_idx = np.flatnonzero((site == "site_a") & (split == "train"))
        test_idx = np.flatnonzero((site == "site_a") & (split == "test"))

        args_ = (encoders, cache.signals, labels, subjects, train_idx, test_idx)
        arms = {"cached": sweep(*args_, cached=True), "cached_grid": sweep(*args_, cached=True, grid=True),
                "cached_grid_parallel": sweep(*args_, cached=True, grid=True, parallel=True)}
        if not args.skip_reextract:
            arms["reextract"] = sweep(*args_, cached=False)
    base = "reextract" if "reextract" in arms else "cached"
    ref_scores = arms[base][1]
    for name, (_, scores) in arms.items():  # the grid solves the same objective more exactly than lbfgs
        assert np.allclose(scores, ref_scores, atol=0.02, equal_nan=True), f"{name} disagrees with {base}"
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "records": len(cache.rows), "probes": len(ref_scores), "baseline": base,
              **{f"{k}_s": round(v[0], 2) for k, v in arms.items()},
              **{f"{k}_speedup": round(arms[base][0] / v[0], 2) for k, v in arms.items()}}
    print(f"{len(ref_scores)} probes (2 encoders x 7 shots x 5 seeds, 'all' once), {len(cache.rows)} records, "
          f"{result['cores']} cores; ratios against {base}")
    for name, (secs, _) in arms.items():
        print(f"  {name:22s} {secs:7.1f} s   ({arms[base][0] / secs:.1f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
