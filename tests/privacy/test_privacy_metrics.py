"""Tests for medssl.privacy.metrics against hand-computed cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy import stats

from medssl.privacy.metrics import (
    auc_score,
    auc_with_ci,
    check_fpr_feasible,
    clopper_pearson,
    roc_curve_points,
    roc_loglog_svg,
    tpr_at_fpr,
)

NONMEMBERS = np.arange(100, dtype=float)  # 0..99
MEMBERS = np.array([95.5, 92.5, 91.5, 89.5, 89.0, 50.5, 40.5, 30.5, 20.5, 10.5])


def _case():
    scores = np.r_[MEMBERS, NONMEMBERS]
    is_member = np.r_[np.ones(10, bool), np.zeros(100, bool)]
    return scores, is_member


def test_tpr_at_10pct_fpr_hand_computed():
    scores, is_member = _case()
    r = tpr_at_fpr(scores, is_member, 0.10)
    # 10 % of 100 non-members = 10 false positives allowed: non-members 90..99 lie above 89,
    # the 11th largest non-member score. Members above 89: 95.5, 92.5, 91.5, 89.5 -> 4/10;
    # the member tied at 89.0 is counted as a non-member (conservative ties).
    assert r["threshold"] == 89.0
    assert r["value"] == pytest.approx(0.4)
    assert r["n_true_positives"] == 4 and r["n_false_positives"] == 10
    assert r["fpr_realised"] == pytest.approx(0.10)
    assert r["n_members"] == 10 and r["n_nonmembers"] == 100 and r["achievable"]
    ci = stats.binomtest(4, 10).proportion_ci(method="exact")
    assert r["ci_low"] == pytest.approx(ci.low, abs=1e-12)
    assert r["ci_high"] == pytest.approx(ci.high, abs=1e-12)


def test_tpr_at_1pct_fpr_and_unachievable_flag():
    scores, is_member = _case()
    r = tpr_at_fpr(scores, is_member, 0.01)  # 1 false positive allowed: threshold = 98
    assert r["threshold"] == 98.0 and r["value"] == 0.0 and r["n_false_positives"] == 1
    low = tpr_at_fpr(scores, is_member, 0.001)  # needs 1000 non-members
    assert not low["achievable"] and low["min_nonmembers"] == 1000
    assert "1000" in low["note"] and "not estimable" in low["note"]
    assert low["threshold"] == 99.0 and low["n_false_positives"] == 0 and low["value"] == 0.0


def test_ties_are_counted_conservatively():
    neg = np.array([5, 5, 5, 4, 3, 2, 1, 0, -1, -2], float)
    pos = np.array([5.0, 6.0, 4.5])
    scores = np.r_[pos, neg]
    is_member = np.r_[np.ones(3, bool), np.zeros(10, bool)]
    r = tpr_at_fpr(scores, is_member, 0.2)
    # flagging the three tied 5s would give FPR 0.3 > 0.2, so the threshold stays at 5 (strict >)
    assert r["threshold"] == 5.0 and r["n_false_positives"] == 0
    assert r["value"] == pytest.approx(1 / 3)  # only 6.0; the member tied at 5 is not flagged
    r_all = tpr_at_fpr(scores, is_member, 1.0)
    assert r_all["value"] == 1.0 and r_all["fpr_realised"] == 1.0


def test_check_fpr_feasible():
    check_fpr_feasible(1000, 0.001)
    check_fpr_feasible(10, 0.1)
    with pytest.raises(ValueError, match="need at least 1000 non-members"):
        check_fpr_feasible(999, 0.001)
    with pytest.raises(ValueError, match="need at least 100 non-members"):
        check_fpr_feasible(50, 0.01)


@pytest.mark.parametrize("k,n", [(0, 10), (4, 10), (10, 10), (3, 1000), (57, 80)])
def test_clopper_pearson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(method="exact", confidence_level=0.9)
    lo, hi = clopper_pearson(k, n, confidence=0.9)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)


def test_roc_points_with_ties():
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    is_member = [1, 1, 0, 0, 1]
    fpr, tpr, thr = roc_curve_points(scores, is_member)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1.0])
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.8, 0.3, 0.1]


def test_auc_matches_pairwise_count_and_trapezoid():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounding creates ties
    is_member = rng.random(60) < 0.4
    pos, neg = scores[is_member], scores[~is_member]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert auc_score(scores, is_member) == pytest.approx(brute)
    fpr, tpr, _ = roc_curve_points(scores, is_member)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # np.trapezoid needs numpy >= 2
    assert trapezoid == pytest.approx(brute)


def test_auc_bootstrap_ci():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.normal(1.0, 1, 200), rng.normal(0.0, 1, 300)
    scores = np.r_[members, nonmembers]
    is_member = np.r_[np.ones(200, bool), np.zeros(300, bool)]
    r = auc_with_ci(scores, is_member, n_bootstrap=400, seed=3)
    assert r["ci_low"] < r["auc"] < r["ci_high"]
    assert 0.68 < r["auc"] < 0.8  # Phi(1/sqrt(2)) = 0.76
    assert 0.03 < r["ci_high"] - r["ci_low"] < 0.15
    assert r == auc_with_ci(scores, is_member, n_bootstrap=400, seed=3)
    small = auc_with_ci(scores[::10], is_member[::10], n_bootstrap=400, seed=3)
    assert small["ci_high"] - small["ci_low"] > r["ci_high"] - r["ci_low"]


def test_input_validation():
    with pytest.raises(ValueError, match="both members and non-members"):
        tpr_at_fpr([1.0, 2.0], [1, 1], 0.1)
    with pytest.raises(ValueError, match="differ in length"):
        auc_score([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="non-finite"):
        auc_score([np.nan, 2.0], [1, 0])


def test_roc_loglog_svg_is_valid_svg_with_diagonal():
    scores, is_member = _case()
    fpr, tpr, _ = roc_curve_points(scores, is_member)
    svg = roc_loglog_svg(fpr, tpr, label="loss <attack>")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    diag = [e for e in root.iter(f"{ns}line") if e.get("class") == "diagonal"]
    assert len(diag) == 1
    d = diag[0]
    # the diagonal runs from the bottom-left to the top-right corner of the plot area
    assert float(d.get("x1")) < float(d.get("x2")) and float(d.get("y1")) > float(d.get("y2"))
    poly = next(e for e in root.iter(f"{ns}polyline"))
    pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
    assert len(pts) == fpr.size
    # (0,0) is clipped onto the lower-left corner = diagonal start; (1,1) = diagonal end
    assert pts[0] == pytest.approx((float(d.get("x1")), float(d.get("y1"))))
    assert pts[-1] == pytest.approx((float(d.get("x2")), float(d.get("y2"))))
    assert "1e-03" in svg or "0.001" in svg


# ---------------------------------------------------------------- simulations of known answer

def _gauss(rng, d, n_pos, n_neg):
    s = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
    return s, np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]


def test_tpr_table_nulls_unestimable_fprs_and_adds_the_smallest_measurable():
    from medssl.privacy.metrics import tpr_table

    s, m = _gauss(np.random.default_rng(0), 1.0, 30, 59)
    t = tpr_table(s, m, (0.001, 0.01, 0.1), n_bootstrap=200)
    for k in ("0.001", "0.01"):  # 59 non-members: one false positive is an FPR of 0.017
        assert t[k]["value"] is None and t[k]["ci_low"] is None and t[k]["cp_ci_high"] is None
        assert not t[k]["achievable"] and "needs >= " in t[k]["reason"] and "59" in t[k]["reason"]
    e = t["0.1"]
    assert e["achievable"] and e["reason"] is None and e["ci_low"] <= e["value"] <= e["ci_high"]
    assert e["value"] == tpr_at_fpr(s, m, 0.1)["value"] and e["fpr_realised"] <= 0.1
    low = t["min_measurable"]
    assert low["fpr"] == pytest.approx(1 / 59) and low["n_false_positives"] <= 1
    assert low["value"] == tpr_at_fpr(s, m, 1 / 59)["value"]


@pytest.mark.parametrize("fpr", [0.1, 0.2])
def test_tpr_bootstrap_ci_covers_the_true_tpr_where_clopper_pearson_does_not(fpr):
    """Members N(1, 1), non-members N(0, 1), 30 vs 59: the true TPR at FPR f is
    1 - Phi(Phi^-1(1 - f) - 1). The bootstrap that re-estimates the threshold keeps near-nominal
    coverage; Clopper-Pearson (threshold held fixed) falls short of it."""
    from medssl.privacy.metrics import tpr_bootstrap_ci

    rng = np.random.default_rng(1)
    true = 1 - stats.norm.cdf(stats.norm.ppf(1 - fpr) - 1.0)
    n_sim = 200
    boot = cp = 0
    for i in range(n_sim):
        s, m = _gauss(rng, 1.0, 30, 59)
        lo, hi = tpr_bootstrap_ci(s, m, fpr, n_bootstrap=300, seed=i)
        r = tpr_at_fpr(s, m, fpr)
        boot += lo <= true <= hi
        cp += r["ci_low"] <= true <= r["ci_high"]
    assert boot / n_sim >= 0.88, boot / n_sim
    assert cp / n_sim < boot / n_sim, (cp / n_sim, boot / n_sim)


def test_auc_permutation_test_has_its_level_and_power():
    from medssl.privacy.metrics import auc_permutation_test

    rng = np.random.default_rng(2)
    p_null = []
    for i in range(200):  # no signal, 29 vs 30 subjects
        s, m = _gauss(rng, 0.0, 29, 30)
        r = auc_permutation_test(s, m, n_permutations=400, seed=i)
        p_null.append(r["p_value"])
    p_null = np.array(p_null)
    assert (p_null <= 0.05).mean() <= 0.09  # the level holds
    assert stats.kstest(p_null, "uniform").pvalue > 0.01  # p-values ~ uniform under the null
    assert r["null_low"] < 0.4 and r["null_high"] > 0.6 and abs(r["null_mean"] - 0.5) < 0.02  # ~[0.35, 0.65]
    power = np.mean([auc_permutation_test(*_gauss(rng, 1.0, 29, 30), n_permutations=400, seed=i)["p_value"] <= 0.05
                     for i in range(50)])
    assert power > 0.8  # d = 1 with 29 vs 30 is detected nearly always
    exact = auc_permutation_test([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0], n_permutations=3000)
    assert exact["auc"] == 1.0 and exact["p_value"] == pytest.approx(1 / 6, abs=0.03)  # 1 of C(4,2) orders


def test_auc_difference_ci_is_paired_and_detects_a_real_difference():
    from medssl.privacy.metrics import auc_difference_ci

    rng = np.random.default_rng(3)
    s, m = _gauss(rng, 1.0, 40, 40)
    same = auc_difference_ci(s, s, m, n_bootstrap=300)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0
    control = rng.normal(0, 1, 80)  # a control model: scores unrelated to membership
    d = auc_difference_ci(s, control, m, n_bootstrap=500)
    assert d["difference"] == pytest.approx(d["auc_a"] - d["auc_b"]) and d["ci_low"] > 0
    # coverage of the true difference (target AUC Phi(1/sqrt 2) - control AUC 0.5)
    true = stats.norm.cdf(1 / np.sqrt(2)) - 0.5
    hits = 0
    for i in range(100):
        s, m = _gauss(rng, 1.0, 30, 30)
        r = auc_difference_ci(s, rng.normal(0, 1, 60), m, n_bootstrap=300, seed=i)
        hits += r["ci_low"] <= true <= r["ci_high"]
    assert hits >= 85
