"""A small two-site synthetic ECG cohort with a manifest, shared by the benchmark-runner tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}
CLASSES = ["NORM", "STTC", "HYP"]


@pytest.fixture(scope="session")
def bench_cohort(tmp_path_factory) -> dict:
    """40 subjects (one record each), 20 per site; site A: 14 train / 6 test subjects, site B: test.

    Seed 3 gives site A training pools NORM 7, STTC 2, HYP 3, no finding 3 (so k=3 is too many).
    Returns {"manifest": Path, "rows": list[dict], "cache": Path}.
    """
    from medssl.data.layouts import index_layout
    from medssl.data.manifest import write_manifest
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    root = tmp_path_factory.mktemp("bench-cohort")
    write_wfdb_cohort(generate_cohort(40, records_per_subject=1, seed=3), root / "wfdb")
    rows, skipped = index_layout("synthetic", root / "wfdb")
    assert not skipped
    site_a = sorted({r["subject_id"] for r in rows if r["site"] == "site_a"})
    train = set(site_a[:14])
    for r in rows:
        r["split"] = "train" if r["subject_id"] in train else "test"
    manifest = write_manifest(rows, root / "manifest.csv")
    # Fill the preprocessed-array cache once (every tiny encoder reads the same 8 leads at 250 Hz).
    from medssl.ecg.dataset import ecg_array_cache, preprocess_for_encoder
    from medssl.registry import create_encoder

    ecg_array_cache(rows, preprocess_for_encoder(create_encoder("ecg_jepa_tiny", **TINY).spec.input), root / "cache")
    return {"manifest": Path(manifest), "rows": rows, "cache": root / "cache"}


@pytest.fixture
def bench_config(bench_cohort):
    """A factory of dict configs on `bench_cohort`: two tiny random encoders, one multilabel task;
    keyword arguments replace top-level keys."""
    return lambda **changes: _bench_config(bench_cohort, **changes)


def _bench_config(cohort: dict, **changes) -> dict:
    cfg = {
        "title": "test bench",
        "n_bootstrap": 50,
        "cache_dir": str(cohort["cache"]),
        "encoders": [{"name": "rand0", "ref": "random:ecg_jepa_tiny:0", "overrides": dict(TINY)},
                     {"name": "rand1", "ref": "random:ecg_jepa_tiny:1", "overrides": dict(TINY)}],
        "datasets": {"syn": {"path": str(cohort["manifest"])}},
        "tasks": [{"name": "conditions", "dataset": "syn", "kind": "multilabel", "labels": list(CLASSES),
                   "metrics": ["auroc_macro", "auprc"], "train": {"site": "site_a", "split": "train"},
                   "eval": {"in": {"site": "site_a", "split": "test"}, "out": {"site": "site_b"}}}],
        "protocols": [{"kind": "linear_probe", "shots": [1, 3, "all"], "seeds": 2},
                      {"kind": "knn", "k": 3, "label_fractions": [0.5, 1.0], "seeds": 2}],
    }
    cfg.update(changes)
    return cfg
