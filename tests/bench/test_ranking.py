import time

import numpy as np
import pytest
from scipy.stats import rankdata

from medssl.bench.metrics import auroc
from medssl.bench.ranking import (
    average_ranks,
    bootstrap_rank_stability,
    pairwise_permutation_test,
    rank_table,
    ranking_heatmap_svg,
)


def _row(rows, enc):
    return next(r for r in rows if r["encoder"] == enc)


def test_average_ranks_ties_direction_nan():
    assert average_ranks([0.9, 0.5, 0.5, 0.1], True).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([0.9, 0.5, 0.5, 0.1], False).tolist() == [4.0, 2.5, 2.5, 1.0]
    assert average_ranks([np.nan, 0.2, 0.7], True).tolist() == [3.0, 2.0, 1.0]  # NaN ranks last
    assert average_ranks([np.inf, np.nan, 3.0], False).tolist() == [2.5, 2.5, 1.0]  # tied with inf loss
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(50, 7)).astype(float)
    np.testing.assert_allclose(average_ranks(x, True), rankdata(-x, axis=1))


def test_rank_table_fomo_scheme_by_hand():
    scores = [
        # task "seg": A best on dice, B best on hd95 (lower is better) -> A 1.5, B 1.5, C 3
        {"encoder": "A", "task": "seg", "metric": "dice", "value": 0.90},
        {"encoder": "B", "task": "seg", "metric": "dice", "value": 0.80},
        {"encoder": "C", "task": "seg", "metric": "dice", "value": 0.70},
        {"encoder": "A", "task": "seg", "metric": "hd95", "value": 5.0},
        {"encoder": "B", "task": "seg", "metric": "hd95", "value": 2.0},
        {"encoder": "C", "task": "seg", "metric": "hd95", "value": 9.0},
        # task "age": mae lower better; B and C tie -> A 1, B 2.5, C 2.5
        {"encoder": "A", "task": "age", "metric": "mae", "value": 3.0},
        {"encoder": "B", "task": "age", "metric": "mae", "value": 4.0},
        {"encoder": "C", "task": "age", "metric": "mae", "value": 4.0},
    ]
    rows = rank_table(scores)
    assert [r["encoder"] for r in rows] == ["A", "B", "C"]
    a, b, c = (_row(rows, e) for e in "ABC")
    assert a["metric_ranks"]["seg"] == {"dice": 1.0, "hd95": 2.0}
    assert b["metric_ranks"]["seg"] == {"dice": 2.0, "hd95": 1.0}
    assert a["task_ranks"] == {"seg": 1.5, "age": 1.0}
    assert b["task_ranks"] == {"seg": 1.5, "age": 2.5}
    assert c["task_ranks"] == {"seg": 3.0, "age": 2.5}
    assert (a["mean_rank"], b["mean_rank"], c["mean_rank"]) == (1.25, 2.0, 2.75)
    assert (a["position"], b["position"], c["position"]) == (1, 2, 3)
    assert a["values"]["seg"]["hd95"] == 5.0
    # flipping the hd95 direction changes the seg ranks
    rows2 = rank_table(scores, higher_is_better={"hd95": True})
    assert _row(rows2, "C")["metric_ranks"]["seg"]["hd95"] == 1.0


def test_rank_table_tied_final_positions_and_errors():
    scores = [{"encoder": e, "task": t, "metric": "auroc", "value": v}
              for t, vals in (("t1", (0.9, 0.8)), ("t2", (0.7, 0.8))) for e, v in zip("XY", vals)]
    rows = rank_table(scores)
    assert [r["position"] for r in rows] == [1, 1] and rows[0]["mean_rank"] == 1.5
    with pytest.raises(ValueError, match="missing score"):
        rank_table(scores[:-1])
    with pytest.raises(ValueError, match="duplicate"):
        rank_table(scores + scores[:1])
    with pytest.raises(ValueError, match="direction"):
        rank_table([{"encoder": "X", "task": "t", "metric": "weird", "value": 1.0}])


def test_rank_table_accepts_per_subject_values_and_metric_fn():
    y = np.array([0, 0, 1, 1, 0, 1])
    scores = [
        {"encoder": "A", "task": "cls", "metric": "auroc", "y_true": y, "y_score": y + 0.1, "metric_fn": auroc},
        {"encoder": "B", "task": "cls", "metric": "auroc", "y_true": y, "y_score": 1 - y, "metric_fn": auroc},
        {"encoder": "A", "task": "seg", "metric": "dice", "values": [0.5, 0.7]},
        {"encoder": "B", "task": "seg", "metric": "dice", "values": [0.9, 0.9]},
    ]
    rows = rank_table(scores)
    assert _row(rows, "A")["values"] == {"cls": {"auroc": 1.0}, "seg": {"dice": pytest.approx(0.6)}}
    assert _row(rows, "A")["task_ranks"] == {"cls": 1.0, "seg": 2.0}
    assert [r["position"] for r in rows] == [1, 1]


def _per_subject_case(n=200, gaps=(0.10, 0.0, -0.10), seed=0):
    """3 encoders x 2 tasks (dice higher better, mae lower better) on n subjects."""
    rng = np.random.default_rng(seed)
    base_dice, base_err = rng.uniform(0.5, 0.9, n), rng.gamma(2.0, 2.0, n)
    entries = []
    for enc, g in zip(("good", "mid", "bad"), gaps):
        entries.append({"encoder": enc, "task": "seg", "metric": "dice",
                        "values": np.clip(base_dice + g + rng.normal(0, 0.05, n), 0, 1)})
        entries.append({"encoder": enc, "task": "age", "metric": "mae",
                        "values": np.abs(base_err - 10 * g + rng.normal(0, 0.5, n))})
    return entries


def test_bootstrap_clear_winner_and_speed():
    entries = _per_subject_case()
    t0 = time.perf_counter()
    st = bootstrap_rank_stability(entries, n_resamples=10_000, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, elapsed  # vectorised: ~0.1 s on one core
    i = {e: k for k, e in enumerate(st.encoders)}
    assert st.frequencies[i["good"], 0] > 0.99
    assert st.frequencies[i["bad"], 2] > 0.99
    np.testing.assert_allclose(st.frequencies.sum(axis=1), 1.0)
    np.testing.assert_allclose(st.frequencies.sum(axis=0), 1.0)
    assert st.observed_rank.tolist() == [1.0, 2.0, 3.0]
    assert st.mean_rank[i["good"]] == pytest.approx(1.0, abs=0.01)
    assert st.ci_low[i["good"]] == st.ci_high[i["good"]] == 1.0
    rows = st.to_rows()
    assert [r["encoder"] for r in rows] == ["good", "mid", "bad"] and len(rows[0]["rank_frequencies"]) == 3
    # deterministic in the seed
    st2 = bootstrap_rank_stability(entries, n_resamples=10_000, seed=0)
    np.testing.assert_array_equal(st.frequencies, st2.frequencies)


def test_bootstrap_indistinguishable_encoders_split_ranks():
    rng = np.random.default_rng(3)
    n = 60
    entries = [{"encoder": e, "task": "t", "metric": "dice", "values": rng.uniform(0, 1, n)} for e in "ABC"]
    st = bootstrap_rank_stability(entries, n_resamples=2000, seed=1)
    assert (st.frequencies > 0.05).all()  # every encoder lands on every position sometimes
    assert (st.ci_high - st.ci_low >= 1.0).all()


def test_bootstrap_exact_ties_split_evenly():
    v = np.linspace(0, 1, 20)
    entries = [{"encoder": e, "task": "t", "metric": "dice", "values": v} for e in "AB"]
    st = bootstrap_rank_stability(entries, n_resamples=100, seed=0)
    np.testing.assert_allclose(st.frequencies, 0.5)
    np.testing.assert_allclose(st.mean_rank, 1.5)


def test_bootstrap_subject_alignment_and_inf_values():
    n = 30
    rng = np.random.default_rng(0)
    subj = np.arange(n)
    good = rng.uniform(1.0, 10.0, n)
    bad = good + 0.02  # worse on every subject, by a hair: only a correct alignment keeps it last
    bad[0] = np.inf  # one missed lesion: HD95 = inf (mean is inf when subject 0 is drawn, never 0 * inf)
    perm = rng.permutation(n)
    entries = [
        {"encoder": "good", "task": "seg", "metric": "hd95", "values": good[perm], "subjects": subj[perm]},
        {"encoder": "bad", "task": "seg", "metric": "hd95", "values": bad, "subjects": subj},
    ]
    st = bootstrap_rank_stability(entries, n_resamples=500, seed=0)
    assert st.frequencies[0, 0] == 1.0  # good always wins
    entries[1]["subjects"] = subj + 100
    with pytest.raises(ValueError, match="same subjects"):
        bootstrap_rank_stability(entries, n_resamples=10)
    with pytest.raises(ValueError, match="resampled"):
        bootstrap_rank_stability([{"encoder": "A", "task": "t", "metric": "dice", "value": 0.5}], 10)


def test_bootstrap_metric_fn_path_equals_vectorised_path():
    """mae(0, v) is the mean of v, so both entry forms must give identical resampled rankings."""
    from medssl.bench.regression_metrics import mae

    rng = np.random.default_rng(4)
    n = 25
    vals = {e: rng.uniform(0, 1, n) + shift for e, shift in (("A", 0.0), ("B", 0.05), ("C", 0.1))}
    by_values = [{"encoder": e, "task": "t", "metric": "mae", "values": v} for e, v in vals.items()]
    by_fn = [{"encoder": e, "task": "t", "metric": "mae", "y_true": np.zeros(2 * n),
              "y_score": np.repeat(v, 2), "groups": np.repeat(np.arange(n), 2), "metric_fn": mae}
             for e, v in vals.items()]  # two identical rows per subject
    s1 = bootstrap_rank_stability(by_values, n_resamples=400, seed=9)
    s2 = bootstrap_rank_stability(by_fn, n_resamples=400, seed=9)
    np.testing.assert_allclose(s1.frequencies, s2.frequencies)
    np.testing.assert_allclose(s1.mean_rank, s2.mean_rank)
    assert 0.0 < s1.frequencies[0, 0] < 1.0  # genuinely uncertain, so the comparison is informative


def test_bootstrap_with_metric_fn_auroc_grouped_rows():
    rng = np.random.default_rng(5)
    n_sub = 40
    groups = np.repeat(np.arange(n_sub), 2)  # two records per subject
    y = np.repeat(rng.integers(0, 2, n_sub), 2)
    y[:2], y[2:4] = 0, 1
    strong = y + rng.normal(0, 0.3, y.size)
    weak = y + rng.normal(0, 3.0, y.size)
    entries = [
        {"encoder": "strong", "task": "cls", "metric": "auroc", "y_true": y, "y_score": strong,
         "groups": groups, "metric_fn": auroc},
        {"encoder": "weak", "task": "cls", "metric": "auroc", "y_true": y, "y_score": weak,
         "groups": groups, "metric_fn": auroc},
    ]
    st = bootstrap_rank_stability(entries, n_resamples=300, seed=2)
    assert st.observed_rank.tolist() == [1.0, 2.0]
    assert st.frequencies[0, 0] > 0.95


def test_permutation_test_consistent_difference_small_p():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 0.8, 40)
    a = b + 0.05 + rng.normal(0, 0.02, 40)
    res = pairwise_permutation_test(a, b, n_permutations=10_000, seed=0)
    assert res["p_value"] == pytest.approx(1 / 10_001)  # no sign flip reaches the observed mean
    assert res["delta"] == pytest.approx(np.mean(a - b))
    assert not res["exact"] and res["n_subjects"] == 40
    assert pairwise_permutation_test(b, a, 2000, seed=1)["p_value"] < 0.001  # two-sided
    assert pairwise_permutation_test(a, a, 2000)["p_value"] == 1.0


def test_permutation_test_exact_small_n():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 0.0])
    res = pairwise_permutation_test(a, b, n_permutations=10_000)
    assert res["exact"] and res["n_permutations"] == 8
    # |mean| >= 2 only for all-plus and all-minus sign vectors: p = 2/8
    assert res["p_value"] == pytest.approx(0.25)


def test_permutation_test_uniform_under_null():
    rng = np.random.default_rng(11)
    ps = []
    for k in range(200):
        base = rng.normal(0, 1, 25)
        a, b = base + rng.normal(0, 1, 25), base + rng.normal(0, 1, 25)
        ps.append(pairwise_permutation_test(a, b, n_permutations=1000, seed=k)["p_value"])
    ps = np.asarray(ps)
    assert 0.01 <= np.mean(ps < 0.05) <= 0.12
    assert 0.35 <= np.mean(ps < 0.5) <= 0.65


def test_permutation_test_rejects_bad_input():
    with pytest.raises(ValueError):
        pairwise_permutation_test([1.0, np.inf], [1.0, 2.0])
    with pytest.raises(ValueError):
        pairwise_permutation_test([1.0, 2.0], [1.0])


def test_heatmap_svg_escapes_and_shows_numbers():
    freq = np.array([[0.93, 0.07], [0.07, 0.93]])
    svg = ranking_heatmap_svg(freq, ["<script>alert(1)</script>", 'a "b" & c'])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "a &quot;b&quot; &amp; c" in svg
    assert svg.count("<rect") == 4 and svg.count(">0.93<") == 2 and svg.count(">0.07<") == 2
    assert "#ffffff" in svg  # light text on the dark high-frequency cells
    with pytest.raises(ValueError):
        ranking_heatmap_svg(freq, ["only one"])
