"""Multiple comparisons in `medssl bench` reports: Holm-adjusted p-values beside the raw ones, and
verdicts that use the adjusted ones."""

from __future__ import annotations

import numpy as np

from medssl.bench.ranking import holm_adjust
from medssl.bench.report import comparison_verdict, make_report, render_html


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005, None, float("nan")]
    adj = holm_adjust(p)
    # m = 4 finite p-values; sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1, running maximum
    assert np.allclose([adj[3], adj[0], adj[2], adj[1]], [0.02, 0.03, 0.06, 0.06])
    assert adj[4] is None and adj[5] is None
    assert all(a >= r for a, r in zip(adj[:4], p[:4]))


def test_holm_controls_the_family_wise_error_under_the_null():
    rng = np.random.default_rng(0)
    raw_hits = holm_hits = 0
    for _ in range(2000):
        p = rng.uniform(size=20)  # 20 true null comparisons
        raw_hits += bool((p < 0.05).any())
        holm_hits += bool((np.array(holm_adjust(p)) < 0.05).any())
    assert raw_hits / 2000 > 0.5  # uncorrected: most reports would claim a finding
    assert holm_hits / 2000 <= 0.06


def _comparison(p, delta=0.04, shots=1):
    return {"kind": "comparison", "domain": "in", "shots": shots, "metric": "auroc", "encoder_a": "a",
            "encoder_b": "b", "delta": delta, "ci_low": -0.01, "ci_high": 0.09, "p_value": p, "n_seeds": 5,
            "higher_is_better": True, "method": "bootstrap"}


def test_report_carries_adjusted_p_values_and_verdicts_use_them():
    comps = [_comparison(0.04, shots=1)] + [_comparison(0.5, shots=k) for k in (2, 4, 8, 16)]
    report = make_report(comps, title="t")
    first = report["comparisons"][0]
    assert first["p_value"] == 0.04 and np.isclose(first["p_holm"], 0.2)
    assert "Holm" in report["p_adjustment"]
    assert comparison_verdict(first) == "not distinguishable from"  # a 1-shot p = 0.04 is not a finding
    assert comparison_verdict({**first, "p_holm": 0.01}) == "better than"
    assert comparison_verdict({**first, "p_holm": 0.01, "higher_is_better": False}) == "worse than"
    html = render_html(report)
    assert "p (Holm)" in html and "0.200" in html
    from medssl.bench.runner import results_doc

    doc = results_doc(comps, title="t", config={})  # results.json carries the same adjustment
    assert np.isclose(doc["comparisons"][0]["p_holm"], 0.2) and "Holm" in doc["p_adjustment"]


def test_demo_sentences_use_the_adjusted_p_value():
    from medssl.demo import comparison_notes

    rows = [{**_comparison(0.01, shots="all"), "ci_low": 0.01}] + [_comparison(0.5, shots=k) for k in (1, 2, 4, 8)]
    (note,) = comparison_notes(rows, steps=10)
    assert "not distinguishable from" in note and "Holm-adjusted 0.050" in note
