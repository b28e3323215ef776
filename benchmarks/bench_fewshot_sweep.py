"""A 5-seed x 7-shot x 2-encoder linear-probe sweep: cached embeddings vs re-extraction per draw.

Both arms draw the same subjects (`sample_few_shot`), fit the same probe (`linear_probe`) and
score the same AUROC on the same in-domain test rows of a synthetic two-site cohort; they differ
only in where the features come from:
  re-extract  the straightforward loop: embed the draw's training rows and the test rows with the
              frozen encoder for every (encoder, shots, seed);
  cached      embed every record once per encoder (what `medssl bench` does), then index.
Usage: python benchmarks/bench_fewshot_sweep.py [--subjects-per-site 150]
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
from medssl.demo import label_matrix
from medssl.ecg.dataset import ecg_array_cache, preprocess_for_encoder
from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort
from medssl.engine.embed import embed_arrays

SHOTS = (1, 2, 5, 10, 25, 50, "all")
SEEDS = range(5)


def sweep(encoders, signals, labels, subjects, train_idx, test_idx, *, cached: bool) -> tuple[float, list[float]]:
    t = time.perf_counter()
    scores = []
    features = {name: embed_arrays(enc, signals) for name, enc in encoders.items()} if cached else None
    for name, enc in encoders.items():
        for k in SHOTS:
            for seed in SEEDS if k != "all" else [0]:
                draw = train_idx[sample_few_shot(subjects[train_idx], labels[train_idx], k, seed)]
                if cached:
                    x_train, x_test = features[name][draw], features[name][test_idx]
                else:
                    x_train, x_test = embed_arrays(enc, signals[draw]), embed_arrays(enc, signals[test_idx])
                s = linear_probe(x_train, labels[draw], x_test, seed=seed, groups=subjects[draw])
                scores.append(auroc(labels[test_idx], s))
    return time.perf_counter() - t, scores


def main() -> None:
    warnings.simplefilter("ignore")  # short few-shot pools are expected at large k
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects-per-site", type=int, default=150)
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

        t_cached, s_cached = sweep(encoders, cache.signals, labels, subjects, train_idx, test_idx, cached=True)
        t_loop, s_loop = sweep(encoders, cache.signals, labels, subjects, train_idx, test_idx, cached=False)
    assert np.allclose(s_cached, s_loop, equal_nan=True), "both arms must give the same scores"
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "records": len(cache.rows), "probes": len(s_cached), "reextract_s": t_loop, "cached_s": t_cached,
              "speedup": t_loop / t_cached}
    print(f"{len(s_cached)} probes (2 encoders x 7 shots x 5 seeds, 'all' once), {len(cache.rows)} records, "
          f"{result['cores']} cores")
    print(f"  re-extract per draw: {t_loop:7.1f} s")
    print(f"  cached embeddings:   {t_cached:7.1f} s   ({result['speedup']:.1f}x)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
