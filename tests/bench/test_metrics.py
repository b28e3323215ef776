import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medssl.bench.metrics import (
    auprc,
    auroc,
    auroc_details,
    balanced_accuracy,
    bootstrap_ci,
    bootstrap_p_value,
    f1_macro,
    group_bootstrap_indices,
    paired_bootstrap_test,
    per_class_auroc,
)


def test_rank_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 200))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        s = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.normal(size=n)  # heavy ties on odd trials
        assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_multilabel_macro_matches_sklearn():
    rng = np.random.default_rng(1)
    Y = rng.random((100, 4)) < 0.3
    S = rng.normal(size=(100, 4)) + Y
    assert auroc(Y, S) == pytest.approx(roc_auc_score(Y, S, average="macro"))
    np.testing.assert_allclose(per_class_auroc(Y, S), roc_auc_score(Y, S, average=None))


def test_multiclass_ovr_macro_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    S = rng.random((90, 3)) + np.eye(3)[y]
    S = S / S.sum(1, keepdims=True)
    assert auroc(y, S) == pytest.approx(roc_auc_score(y, S, multi_class="ovr", average="macro"))


def test_perfect_and_inverse_scores():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert auroc(y, s) == 1.0
    assert auroc(y, -s) == 0.0
    assert auroc(y, np.zeros(6)) == 0.5


def test_single_class_column_excluded_and_reported():
    Y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=bool)
    S = np.array([[0.9, 0.1, 0.2], [0.1, 0.5, 0.3], [0.8, 0.2, 0.9], [0.2, 0.3, 0.1]])
    per = per_class_auroc(Y, S)
    assert per[0] == 1.0 and np.isnan(per[1]) and np.isnan(per[2])
    assert auroc(Y, S) == 1.0  # mean over the one evaluable class only
    d = auroc_details(Y, S, ["a", "b", "c"])
    assert d["excluded"] == ["b", "c"] and d["value"] == 1.0


def test_no_evaluable_class_is_nan():
    assert np.isnan(auroc(np.ones(5), np.arange(5.0)))
    assert np.isnan(auroc(np.zeros((4, 2), bool), np.random.default_rng(0).random((4, 2))))
    assert np.isnan(auprc(np.zeros(4), np.arange(4.0)))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        auroc(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        auroc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(ValueError):
        auroc(np.array([0, 5]), np.random.default_rng(0).random((2, 3)))


def test_other_metrics():
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.6, 0.8, 0.9, 0.4, 0.3])
    # predictions 0,1,1,1,0,0 -> TPR 2/3, TNR 2/3
    assert balanced_accuracy(y, s) == pytest.approx(2 / 3)
    assert f1_macro(y, s) == pytest.approx(2 / 3)
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s))
    yc = np.array([0, 1, 2, 2])
    Sc = np.eye(3)[[0, 1, 2, 1]]
    assert balanced_accuracy(yc, Sc) == pytest.approx((1 + 1 + 0.5) / 3)
    Y = np.array([[1, 0], [0, 0], [1, 0]], bool)
    assert np.isfinite(f1_macro(Y, Y.astype(float)))
    assert f1_macro(Y, Y.astype(float)) == 1.0  # class 1 has no positives: excluded


def test_group_indices_keep_subjects_whole():
    groups = np.repeat(np.arange(10), np.arange(1, 11))  # subject g has g+1 rows
    for idx in group_bootstrap_indices(groups, 50, seed=3):
        drawn, counts = np.unique(groups[idx], return_counts=True)
        # each drawn subject appears a multiple of its row count (drawn m times -> m*(g+1) rows)
        assert np.all(counts % (drawn + 1) == 0)
        assert counts.sum() // 1 == idx.size
        assert sum(c // (g + 1) for g, c in zip(drawn, counts)) == 10  # exactly G draws


def test_group_indices_deterministic_and_chunk_invariant():
    groups = np.repeat(np.arange(30), 3)
    a = list(group_bootstrap_indices(groups, 20, seed=5))
    b = list(group_bootstrap_indices(groups, 20, seed=5, max_rows_per_chunk=1))
    c = list(group_bootstrap_indices(groups, 20, seed=6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def _binary_data(n_subjects, rows_per_subject=1, seed=0, effect=1.0):
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, 2, n_subjects)
    y = np.repeat(ys, rows_per_subject)
    s = y * effect + rng.normal(size=y.size)
    groups = np.repeat(np.arange(n_subjects), rows_per_subject)
    return y, s, groups


def test_bootstrap_ci_contains_point_and_narrows():
    y, s, g = _binary_data(60, seed=1)
    p1, lo1, hi1 = bootstrap_ci(auroc, y, s, g, n_resamples=500)
    assert lo1 <= p1 <= hi1
    y, s, g = _binary_data(1000, seed=1)
    p2, lo2, hi2 = bootstrap_ci(auroc, y, s, g, n_resamples=500)
    assert lo2 <= p2 <= hi2
    assert (hi2 - lo2) < 0.5 * (hi1 - lo1)


def test_bootstrap_by_subject_wider_than_by_record():
    # 20 subjects x 30 near-identical records: the evidence is 20 subjects, not 600 records.
    rng = np.random.default_rng(0)
    ys = np.arange(20) % 2
    subj_score = ys * 0.8 + rng.normal(size=20)
    y = np.repeat(ys, 30)
    s = np.repeat(subj_score, 30) + 0.01 * rng.normal(size=600)
    g = np.repeat(np.arange(20), 30)
    _, lo_s, hi_s = bootstrap_ci(auroc, y, s, g, n_resamples=400)
    _, lo_r, hi_r = bootstrap_ci(auroc, y, s, np.arange(600), n_resamples=400)
    assert (hi_s - lo_s) > 3 * (hi_r - lo_r)


def test_bootstrap_drops_nan_resamples():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # one positive: many resamples lack it
    s = np.linspace(1, 0, 8)
    point, lo, hi = bootstrap_ci(auroc, y, s, np.arange(8), n_resamples=200)
    assert point == 1.0 and lo == 1.0 and hi == 1.0
    p, lo, hi = bootstrap_ci(auroc, np.ones(5), np.arange(5.0), np.arange(5), n_resamples=20)
    assert np.isnan(p) and np.isnan(lo) and np.isnan(hi)


def test_bootstrap_is_fast():
    y, s, g = _binary_data(100, rows_per_subject=3, seed=2)
    t = time.perf_counter()
    bootstrap_ci(auroc, y, s, g, n_resamples=1000)
    assert time.perf_counter() - t < 2.0


def test_paired_test_small_p_when_a_better_large_when_identical():
    y, s_good, g = _binary_data(200, seed=3, effect=2.5)
    rng = np.random.default_rng(9)
    s_bad = y * 0.3 + rng.normal(size=y.size)
    r = paired_bootstrap_test(auroc, y, s_good, s_bad, g, n_resamples=500)
    assert r["delta"] > 0.2 and r["ci_low"] > 0 and r["p_value"] < 0.01
    r = paired_bootstrap_test(auroc, y, s_good, s_good.copy(), g, n_resamples=500)
    assert r["delta"] == 0 and r["p_value"] == 1.0
    r = paired_bootstrap_test(auroc, y, s_bad, s_good, g, n_resamples=500)
    assert r["delta"] < 0 and r["ci_high"] < 0 and r["p_value"] < 0.01


def test_paired_test_noise_difference_not_significant():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    base = y * 1.0 + rng.normal(size=300)
    a = base + 0.05 * rng.normal(size=300)
    b = base + 0.05 * rng.normal(size=300)
    r = paired_bootstrap_test(auroc, y, a, b, np.arange(300), n_resamples=500)
    assert r["p_value"] > 0.05 and r["ci_low"] < 0 < r["ci_high"]


def test_bootstrap_p_value_formula():
    assert bootstrap_p_value(np.ones(99)) == pytest.approx(2 / 100)
    assert bootstrap_p_value(np.zeros(99)) == 1.0
    assert bootstrap_p_value(np.r_[np.ones(50), -np.ones(50)]) == 1.0


def test_one_metric_table_for_every_task_kind():
    from medssl.bench.column_metrics import METRICS, default_metrics, direction, metric_def, metrics_for
    from medssl.bench.config import TASK_KINDS
    from medssl.bench.ranking import rank_table
    from medssl.bench.segmentation import SCORE_COLUMNS

    assert set(METRICS) == {n for k in TASK_KINDS for n in metrics_for(k)}
    # segmentation metrics average the per-record score table's columns of the same name
    assert [METRICS[n].score_column for n in SCORE_COLUMNS] == list(range(len(SCORE_COLUMNS)))
    assert default_metrics("multilabel") == ("auroc_macro",)
    assert default_metrics("regression") == ("mae", "pearson_r")
    assert default_metrics("segmentation") == ("dice", "nsd", "hd95", "iou")
    assert [n for n in METRICS if not direction(n)] == ["mae", "hd95"]
    assert metric_def("balanced_accuracy", "multiclass").kernel is not METRICS["balanced_accuracy"].kernel
    # the ranking reads its directions from the same table
    rows = rank_table([{"encoder": e, "task": "t", "metric": "mae", "value": v} for e, v in (("a", 1.0), ("b", 2.0))])
    assert rows[0]["encoder"] == "a"
