import numpy as np
import pytest

from medssl.bench.fewshot import (
    NO_FINDING,
    FewShotWarning,
    few_shot_draw,
    linear_probe,
    sample_few_shot,
)
from medssl.bench.metrics import auroc, paired_bootstrap_test


def _multiclass_cohort(n_subjects=60, n_classes=3, rows=2, seed=0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, n_classes, n_subjects)
    subjects = np.repeat([f"s{i:03d}" for i in range(n_subjects)], rows)
    labels = np.repeat(cls, rows)
    perm = rng.permutation(subjects.size)
    return subjects[perm], labels[perm]


def test_k_subjects_per_class_and_subjects_whole():
    subjects, labels = _multiclass_cohort()
    for k in (1, 3, 5):
        idx = sample_few_shot(subjects, labels, k, seed=1)
        chosen = np.unique(subjects[idx])
        for c in range(3):
            assert np.unique(subjects[idx][labels[idx] == c]).size == k
        # every record of every chosen subject is in the draw
        assert set(np.flatnonzero(np.isin(subjects, chosen))) == set(idx)
        assert np.all(np.diff(idx) > 0)


def test_deterministic_and_order_independent():
    subjects, labels = _multiclass_cohort()
    a = sample_few_shot(subjects, labels, 4, seed=7)
    b = sample_few_shot(subjects, labels, 4, seed=7)
    c = sample_few_shot(subjects, labels, 4, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    perm = np.random.default_rng(0).permutation(subjects.size)
    d = sample_few_shot(subjects[perm], labels[perm], 4, seed=7)
    assert set(subjects[perm][d]) == set(subjects[a])


def test_multilabel_draw_includes_no_finding_pool():
    rng = np.random.default_rng(3)
    n = 80
    subjects = np.arange(n)
    Y = rng.random((n, 2)) < 0.3
    draw = few_shot_draw(subjects, Y, 5, seed=0)
    assert draw.drawn_for == {"0": 5, "1": 5, NO_FINDING: 5}
    assert draw.subjects.size == 15
    chosen = Y[draw.indices]
    assert (~chosen.any(axis=1)).sum() >= 5
    assert all(v >= 5 for v in draw.positive_subjects.values())


def test_short_class_takes_all_and_warns():
    subjects = np.arange(20)
    labels = np.r_[np.zeros(18, int), np.ones(2, int)]
    with pytest.warns(FewShotWarning, match="only 2"):
        draw = few_shot_draw(subjects, labels, 5, seed=0)
    assert draw.positive_subjects["1"] == 2 and draw.positive_subjects["0"] == 5
    assert len(draw.warnings) == 1


def test_all_and_bad_k():
    subjects, labels = _multiclass_cohort(10)
    assert np.array_equal(sample_few_shot(subjects, labels, "all", 0), np.arange(subjects.size))
    assert np.array_equal(sample_few_shot(subjects, labels, None, 0), np.arange(subjects.size))
    with pytest.raises(ValueError):
        sample_few_shot(subjects, labels, 0, 0)


def _gaussian(n, d, sep, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(bool)
    x = rng.normal(size=(n, d))
    x[:, 0] += sep * y
    return x, y


def test_linear_probe_separable_and_noise():
    xtr, ytr = _gaussian(120, 16, 4.0, 0)
    xte, yte = _gaussian(400, 16, 4.0, 1)
    s = linear_probe(xtr, ytr, xte, seed=0)
    assert s.shape == (400,) and auroc(yte, s) > 0.9
    xtr, ytr = _gaussian(120, 16, 0.0, 2)
    xte, yte = _gaussian(2000, 16, 0.0, 3)
    assert 0.43 < auroc(yte, linear_probe(xtr, ytr, xte, seed=0)) < 0.57


def test_linear_probe_multilabel_and_absent_class():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 8))
    Y = np.column_stack([x[:, 0] > 0, np.zeros(60, bool)])
    s = linear_probe(x, Y, x[:10], seed=0, groups=np.arange(60) // 2)
    assert s.shape == (10, 2)
    assert np.all(s[:, 1] == 0.5)
    assert auroc(Y[:, 0], linear_probe(x, Y, x, seed=0)[:, 0]) > 0.95


def _eval_cohort(seed=0, n_subj=120, rows=2, d=12):
    rng = np.random.default_rng(seed)
    n = n_subj * rows
    subjects = np.repeat(np.arange(n_subj), rows)
    Ysub = rng.random((n_subj, 2)) < 0.35
    Y = np.repeat(Ysub, rows, axis=0)
    good = rng.normal(size=(n, d))
    good[:, :2] += 3.0 * Y
    noise = rng.normal(size=(n, d))
    site = np.repeat(rng.integers(0, 3, n_subj), rows)
    return {"good": good, "noise": noise}, Y, subjects, site


def _bench_on_embeddings(tmp_path, monkeypatch, emb, Y, subjects, site, *, domains=("in", "out"), shots=(2, "all"),
                         seeds=3, n_bootstrap=200):
    """`run_benchmark` with the encoders' embeddings given (``emb``: encoder name -> (N, D) rows of
    the manifest written here): site 0 trains, site 1 is "in", site 2 is "out"; classes af, mi."""
    from medssl.bench import runner
    from medssl.data.manifest import write_manifest

    names = np.array(["af", "mi"])
    rows = [{"record_id": f"r{i:04d}", "subject_id": f"s{subjects[i]:03d}", "path": f"r{i:04d}", "split": "test",
             "labels": ";".join(names[Y[i]]), "site": str(site[i])} for i in range(len(subjects))]
    manifest = write_manifest(rows, tmp_path / "manifest.csv")

    def given(cfg, e, model, ckpt, ds, rows, out, progress, notes, skipped_out=None):
        order = {r["record_id"]: i for i, r in enumerate(rows)}
        pick = np.array([int(r["record_id"][1:]) for r in rows])
        assert list(order) == [f"r{i:04d}" for i in pick]
        return {"embeddings": emb[e.name][pick], "record_id": np.array(list(order)),
                "subject_id": np.array([r["subject_id"] for r in rows])}

    monkeypatch.setattr(runner, "embed_dataset", given)
    monkeypatch.setattr(runner, "check_contract", lambda spec_input, rows, **kw: (rows, []))
    tiny = {"depth": 1, "embed_dim": 32, "num_heads": 2}
    config = {
        "n_bootstrap": n_bootstrap,
        "encoders": [{"name": e, "ref": f"random:ecg_jepa_tiny:{i}", "overrides": tiny} for i, e in enumerate(emb)],
        "datasets": {"d": {"path": str(manifest)}},
        "tasks": [{"name": "t", "dataset": "d", "kind": "multilabel", "labels": list(names),
                   "metrics": ["auroc_macro"], "train": {"site": "0"},
                   "eval": {d: {"site": str(j + 1)} for j, d in enumerate(("in", "out")) if d in domains}}],
        "protocols": [{"kind": "linear_probe", "shots": list(shots), "seeds": seeds}],
    }
    return runner.run_benchmark(config, tmp_path / "bench", progress=False)


def test_benchmark_rows_and_pairing_on_given_embeddings(tmp_path, monkeypatch):
    doc = _bench_on_embeddings(tmp_path, monkeypatch, *_eval_cohort())
    runs, aggs, comps = doc["records"], doc["aggregates"], doc["comparisons"]
    assert len(runs) == 2 * 2 * (3 + 1)
    assert len(aggs) == 2 * 2 * 2 and len(comps) == 2 * 2
    # the same draw for both encoders
    for r in runs:
        twin = [q for q in runs if q["encoder"] != r["encoder"] and q["domain"] == r["domain"]
                and q["shots"] == r["shots"] and q["seed"] == r["seed"]]
        assert twin[0]["n_train_records"] == r["n_train_records"] and twin[0]["draw"] == r["draw"]
    assert all(r["n_train_subjects"] <= 6 for r in runs if r["shots"] == 2)
    for a in aggs:
        assert a["ci_low"] <= a["mean"] <= a["ci_high"]
        assert a["n_seeds"] == (1 if a["shots"] == "all" else 3)
        if a["encoder"] == "good":
            assert a["mean"] > 0.8  # one setting scored 0.849 with scikit-learn 1.3 (the floor)
        else:
            assert 0.3 < a["mean"] < 0.7
    for c in comps:
        assert c["encoder_a"] == "good" and c["delta"] > 0.2 and c["p_value"] < 0.05


def test_single_seed_comparison_equals_paired_bootstrap_test(tmp_path, monkeypatch):
    emb, Y, subjects, site = _eval_cohort(seed=1)
    doc = _bench_on_embeddings(tmp_path, monkeypatch, emb, Y, subjects, site, domains=("in",), shots=("all",),
                               seeds=1, n_bootstrap=150)
    comp = doc["comparisons"][0]
    rtr, rin = np.flatnonzero(site == 0), np.flatnonzero(site == 1)
    sa = linear_probe(emb["good"][rtr], Y[rtr], emb["good"][rin], seed=0, groups=subjects[rtr])
    sb = linear_probe(emb["noise"][rtr], Y[rtr], emb["noise"][rin], seed=0, groups=subjects[rtr])
    ref = paired_bootstrap_test(auroc, Y[rin], sa, sb, subjects[rin], n_resamples=150, seed=0)
    assert comp["delta"] == pytest.approx(ref["delta"])
    assert comp["p_value"] == pytest.approx(ref["p_value"])
    assert comp["ci_low"] == pytest.approx(ref["ci_low"]) and comp["ci_high"] == pytest.approx(ref["ci_high"])


def test_subject_leak_between_train_and_eval_raises(tmp_path, monkeypatch):
    from medssl.bench.config import BenchConfigError

    emb, Y, subjects, site = _eval_cohort()
    site = site.copy()
    site[np.flatnonzero(site == 0)[0]] = 1  # one record of a training subject evaluated in-domain
    with pytest.raises(BenchConfigError, match="also in the training rows"):
        _bench_on_embeddings(tmp_path, monkeypatch, emb, Y, subjects, site, shots=(1,), seeds=1, n_bootstrap=10)
