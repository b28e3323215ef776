"""k-NN and ridge probes, label-fraction draws, and the per-column metric kernels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import average_precision_score, mean_absolute_error

from medssl.bench.column_metrics import (
    column_auprc,
    column_mae,
    column_pearson_r,
    hard_predictions,
    metric_def,
)
from medssl.bench.metrics import auprc, auroc, balanced_accuracy, f1_macro
from medssl.bench.protocols import (
    KNN_TEMPERATURE,
    knn_probe,
    label_fraction_draw,
    ridge_probe,
)


def test_knn_scores_are_similarity_weighted_vote_fractions():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)
    test = np.array([[1.0, 0.05]])
    s = knn_probe(train, y, test, k=3)
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test)
    sim = (a @ b.T)[:, 0]
    nn = np.argsort(-sim)[:3]
    w = np.exp(sim[nn] / KNN_TEMPERATURE)
    expected = (w[:, None] * y[nn]).sum(0) / w.sum()
    assert s.shape == (1, 2) and np.allclose(s[0], expected)
    assert 0 <= s.min() and s.max() <= 1
    # cosine: the scale of a row does not matter; k is capped at the training size
    assert np.allclose(knn_probe(train * 7, y, test * 0.1, k=3), s)
    assert np.allclose(knn_probe(train, y, test, k=50), knn_probe(train, y, test, k=4))
    # binary 1-D labels -> 1-D scores; regression -> weighted mean of the targets
    assert knn_probe(train, y[:, 0], test, k=1).shape == (1,) and knn_probe(train, y[:, 0], test, k=1)[0] == 1.0
    r = knn_probe(train, np.array([1.0, 2.0, 3.0, 4.0]), test, k=2, regression=True)
    assert r.shape == (1,) and 1.0 < r[0] < 2.0
    with pytest.raises(ValueError, match="k must be a positive int"):
        knn_probe(train, y, test, k=0)


def test_knn_separates_clustered_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(2, 16)) * 3
    cls = rng.integers(0, 2, 200)
    x = centers[cls] + rng.normal(size=(200, 16))
    y = np.eye(2, dtype=bool)[cls]
    s = knn_probe(x[:100], y[:100], x[100:], k=10)
    assert auroc(cls[100:], s[:, 1]) > 0.95
    noise = knn_probe(rng.normal(size=(100, 16)), y[:100], rng.normal(size=(100, 16)), k=10)
    assert 0.3 < auroc(cls[100:], noise[:, 1]) < 0.7


def test_ridge_probe_recovers_a_linear_target():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + 3.0
    pred = ridge_probe(x[:80], y[:80], x[80:], groups=np.arange(80) // 2)
    assert np.abs(pred - y[80:]).mean() < 0.2


def _subjects_cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    Y_subj = rng.random((n, 3)) < np.array([0.5, 0.2, 0.08])
    reps = rng.integers(1, 4, n)
    subjects = np.repeat(np.array([f"s{i:03d}" for i in range(n)]), reps)
    return subjects, np.repeat(Y_subj, reps, axis=0)


def test_label_fraction_draw_whole_subjects_stratified_and_deterministic():
    subjects, Y = _subjects_cohort()
    d = label_fraction_draw(subjects, Y, 0.25, seed=3)
    chosen = set(d.subjects.tolist())
    assert set(np.flatnonzero(np.isin(subjects, list(chosen)))) == set(d.indices.tolist())  # subjects whole
    assert np.all(np.diff(d.indices) > 0)
    for (taken, available) in d.per_stratum.values():
        assert taken == max(1, round(0.25 * available))  # every stratum represented
    assert sum(t for t, _ in d.per_stratum.values()) == len(chosen)
    again = label_fraction_draw(subjects, Y, 0.25, seed=3)
    other = label_fraction_draw(subjects, Y, 0.25, seed=4)
    assert np.array_equal(again.indices, d.indices) and not np.array_equal(other.indices, d.indices)
    perm = np.random.default_rng(0).permutation(subjects.size)
    shuffled = label_fraction_draw(subjects[perm], Y[perm], 0.25, seed=3)
    assert set(shuffled.subjects.tolist()) == chosen  # independent of row order
    full = label_fraction_draw(subjects, Y, 1.0, seed=0)
    assert full.indices.size == subjects.size
    with pytest.raises(ValueError, match="fraction must be in"):
        label_fraction_draw(subjects, Y, 0.0, seed=0)


def test_label_fraction_draw_regression_bins():
    subjects = np.arange(100).astype(str)
    y = np.linspace(0, 1, 100)
    d = label_fraction_draw(subjects, y, 0.1, seed=0, regression=True)
    assert len(d.per_stratum) == 5 and d.subjects.size == 10
    drawn = y[d.indices]
    assert drawn.min() < 0.2 and drawn.max() > 0.8  # spread over the target range


def _rand(seed=0, n=80, c=4):
    rng = np.random.default_rng(seed)
    Y = rng.random((n, c)) < 0.35
    S = np.round(rng.random((n, c)) + 0.4 * Y, 1)  # rounded: ties
    return Y, S


def _sk_macro(fn, Y, P, cols):
    return float(np.mean([fn(Y[:, c], P[:, c]) for c in cols]))


def test_column_kernels_match_the_reference_metrics():
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    Y, S = _rand()
    kind = "multilabel"
    vals = {m: np.nanmean(metric_def(m, kind).columns(Y, S, kind)) for m in
            ("auroc_macro", "auprc", "f1_macro", "balanced_accuracy")}
    both, pos = range(Y.shape[1]), range(Y.shape[1])  # every column has both label values here
    assert vals["auroc_macro"] == pytest.approx(_sk_macro(roc_auc_score, Y, S, both))
    assert vals["auprc"] == pytest.approx(_sk_macro(average_precision_score, Y, S, pos))
    assert vals["f1_macro"] == pytest.approx(_sk_macro(f1_score, Y, S >= 0.5, pos))
    assert vals["balanced_accuracy"] == pytest.approx(_sk_macro(balanced_accuracy_score, Y, S >= 0.5, both))
    # the scalar metrics are views of the same table
    assert (auroc(Y, S), auprc(Y, S), f1_macro(Y, S), balanced_accuracy(Y, S)) == pytest.approx(
        (vals["auroc_macro"], vals["auprc"], vals["f1_macro"], vals["balanced_accuracy"]))
    for c in range(Y.shape[1]):
        assert column_auprc(Y, S)[c] == pytest.approx(average_precision_score(Y[:, c], S[:, c]))
    # multiclass: argmax predictions, balanced accuracy = mean recall over classes present
    rng = np.random.default_rng(2)
    cls = rng.integers(0, 3, 90)
    P = rng.random((90, 3)) + 0.5 * np.eye(3)[cls]
    onehot = np.eye(3, dtype=bool)[cls]
    refs = {"balanced_accuracy": balanced_accuracy_score(cls, P.argmax(axis=1)),
            "f1_macro": f1_score(cls, P.argmax(axis=1), average="macro"),
            "auroc_macro": _sk_macro(roc_auc_score, onehot, P, range(3))}
    for m, ref in refs.items():
        got = np.nanmean(metric_def(m, "multiclass").columns(onehot, P, "multiclass"))
        assert got == pytest.approx(ref), m
    assert (balanced_accuracy(cls, P), f1_macro(cls, P), auroc(cls, P)) == pytest.approx(
        (refs["balanced_accuracy"], refs["f1_macro"], refs["auroc_macro"]))
    assert hard_predictions(P, "multiclass").sum(axis=1).tolist() == [1] * 90
    # undefined columns are NaN
    Y[:, 0] = False
    assert np.isnan(column_auprc(Y, S)[0]) and np.isnan(metric_def("auroc_macro", "multilabel").columns(Y, S, "x")[0])


def test_regression_kernels():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 2))
    s = y + rng.normal(size=(50, 2)) * 0.5
    assert column_mae(y, s) == pytest.approx([mean_absolute_error(y[:, i], s[:, i]) for i in range(2)])
    assert column_pearson_r(y, s) == pytest.approx([pearsonr(y[:, i], s[:, i])[0] for i in range(2)])
    const = np.full((50, 1), 3.0)
    assert np.isnan(column_pearson_r(const, s[:, :1])[0]) and column_mae(const, const)[0] == 0
