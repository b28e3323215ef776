"""Report charts (medssl.plots): what each chart draws, and that the HTML pages embed every chart
they should. The browser check is tests/test_report_screenshot.py."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medssl.bench.report import make_report, render_html
from medssl.plots import chance_roc_band, domain_gap_figure, nice_limits, results_figure, roc_figure

LONG = "ecg_jepa (pretrained on site A, 50 epochs, the full name)"


def bench_rows(metrics=("auroc_macro",), domains=("in", "out"), tasks=(None,)):
    """Aggregate rows for two encoders x domains x shots (1, 5, all) per task and metric."""
    rows = []
    for task in tasks:
        for metric in metrics:
            for e, base in ((LONG, 0.8), ("<script>alert(1)</script>", 0.6)):
                for k, d in enumerate(domains):
                    for s in (1, 5, "all"):
                        m = base - 0.1 * k + (0.05 if s == "all" else 0.01 * s)
                        row = {"kind": "aggregate", "encoder": e, "domain": d, "shots": s, "metric": metric,
                               "mean": m, "std": 0.01, "ci_low": m - 0.03, "ci_high": m + 0.04, "n_seeds": 3}
                        if task is not None:
                            row.update(task=task, protocol="linear")
                        rows.append(row)
    return rows


def audit_result(n_members=12, n_nonmembers=24, control=True) -> dict:
    """An audit.json-shaped dict (the fields render_html reads), scores from a leaky attack."""
    from medssl.privacy.metrics import roc_curve_points

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(n_members, bool), np.zeros(n_nonmembers, bool)]
    fpr, tpr, _ = roc_curve_points(rng.normal(size=labels.size) + 1.5 * labels, labels)
    cfpr, ctpr, _ = roc_curve_points(rng.normal(size=labels.size), labels)
    tpr_entry = {"value": 0.5, "ci_low": 0.2, "ci_high": 0.8, "cp_ci_low": 0.25, "cp_ci_high": 0.75,
                 "achievable": True, "reason": None}
    band = {"auc": 0.85, "auc_ci": [0.7, 0.95], "null_band": [0.3, 0.7], "p_value": 0.001, "n_permutations": 2000}
    res = {
        "encoder": "ecg_mae_vit_tiny", "method": "mae_ecg", "threat": "score", "attack": "loss", "mode": None,
        "n_reference_models": 0, "aggregate": "mean", "n_members": n_members, "n_nonmembers": n_nonmembers,
        "n_member_windows": n_members, "n_nonmember_windows": n_nonmembers, "membership_verified": True,
        **band, "conclusion": "leakage detected", "tpr_at_fpr": {"0.1": tpr_entry},
        "tpr_at_min_fpr": {"fpr": 1 / n_nonmembers, **tpr_entry}, "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "control": None, "null_check": {"what": "split halves", "n_members": 12, "n_nonmembers": 12, **band},
        "source_check": None, "dp_check": None, "scores_file": "subject_scores.csv", "warnings": [],
    }
    if control:
        res["control"] = {"source": "control checkpoint", "n_members": n_members, "n_nonmembers": n_nonmembers,
                          "auc": 0.52, "auc_ci": [0.3, 0.7], "null_band": [0.3, 0.7], "p_value": 0.4,
                          "difference": {"value": 0.33, "ci_low": 0.1, "ci_high": 0.5},
                          "roc": {"fpr": cfpr.tolist(), "tpr": ctpr.tolist()}}
    return res


def _charts(page: str) -> list[tuple[str, str]]:
    return re.findall(r'<figure class="chart" data-chart="([^"]+)"[^>]*>(.*?)</figure>', page, flags=re.S)


def _svg_text(svg: str) -> str:
    return " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


def test_bench_page_embeds_a_results_and_a_gap_chart_per_section():
    rows = bench_rows(metrics=("auroc_macro", "dice"), tasks=("t1", "t2"))
    page = render_html(make_report(rows, title="t"))
    charts = _charts(page)
    assert [k for k, _ in charts] == ["results", "domain-gap"] * 4  # 2 tasks x 2 metrics
    for kind, body in charts:
        assert body.count("<svg") == 1 and "<script>" not in body
        text = _svg_text(body)
        if kind == "results":  # full legend names, escaped
            assert LONG in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # the chance line where the metric has one (AUROC), not for Dice
    auroc = [b for k, b in charts if k == "results" and "auroc_macro" in _svg_text(b)]
    dice = [b for k, b in charts if k == "results" and "dice" in _svg_text(b)]
    assert len(auroc) == 2 and len(dice) == 2
    assert all("-chance" in b and "chance (0.5)" in _svg_text(b) for b in auroc)
    assert not any("-chance" in b for b in dice)
    # element ids are unique across the page (each chart's ids are prefixed)
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_one_domain_has_no_gap_chart_and_no_results_no_chart():
    page = render_html(make_report(bench_rows(domains=("in",)), title="t"))
    assert [k for k, _ in _charts(page)] == ["results"]
    rows = [dict(r, mean=float("nan"), ci_low=None, ci_high=None) for r in bench_rows()]
    page = render_html(make_report(rows, title="t"))
    assert _charts(page) == [] and "No finite results to chart" in page


def test_results_figure_shares_the_y_axis_with_round_ticks_and_intervals():
    fig = results_figure(bench_rows(domains=("in", "out", "far")), domains=["in", "out", "far"],
                         encoders=[LONG, "b"], settings=[1, 5, "all"], metric="auroc_macro",
                         setting_label="shots")
    axes = fig.axes
    assert len(axes) == 3
    assert len({a.get_ylim() for a in axes}) == 1  # one y range for every domain
    lo, hi = axes[0].get_ylim()
    assert lo <= 0.5 and round(lo * 20, 6).is_integer() and round(hi * 20, 6).is_integer()
    ticks = [t for t in axes[0].get_yticks() if lo - 1e-9 <= t <= hi + 1e-9]
    assert all(round(t * 20, 6).is_integer() for t in ticks)
    # one error bar per point: the first encoder has 3 points per panel with both caps
    assert sum(len(c.get_segments()) for c in axes[0].collections) == 3  # encoder b has no rows -> LONG only
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [LONG, "b", "chance (0.5)"]


def test_gap_figure_draws_an_interval_on_every_gap():
    rows = bench_rows()
    fig = domain_gap_figure(rows, encoders=[LONG, "<script>alert(1)</script>"], domains=["in", "out"],
                            setting="all", metric="auroc_macro")
    bars, gaps = fig.axes
    assert len(bars.patches) == 4 and len(gaps.patches) == 2
    # every gap bar carries an error bar (one vertical segment each), from the combined intervals
    segs = [s for c in gaps.collections for s in c.get_segments()]
    assert len(segs) == 2
    (x0, y0), (x1, y1) = segs[0]
    se = np.hypot(0.07 / 3.92, 0.07 / 3.92)
    assert y1 - y0 == pytest.approx(2 * 1.96 * se)
    assert "independent" in fig.medssl_gap_source
    # the benchmark's own (paired bootstrap) gap intervals win when given
    fig = domain_gap_figure(rows, encoders=[LONG], domains=["in", "out"], setting="all", metric="auroc_macro",
                            gaps={(LONG, "out"): (0.1, 0.02, 0.3)})
    (_, y0), (_, y1) = [s for c in fig.axes[1].collections for s in c.get_segments()][0]
    assert (y0, y1) == pytest.approx((0.02, 0.3)) and "paired bootstrap" in fig.medssl_gap_source


def test_bench_gap_rows_reach_the_table():
    rows = bench_rows() + [{"kind": "gap", "encoder": LONG, "domain": "out", "domain_ref": "in", "shots": 5,
                            "metric": "auroc_macro", "gap": 0.1, "ci_low": 0.011, "ci_high": 0.222}]
    report = make_report(rows, title="t")
    assert len(report["gaps"]) == 1
    assert "0.100 <span class=ci>[0.011, 0.222]</span>" in render_html(report)


def test_roc_figure_is_large_shades_the_unmeasurable_region_and_draws_band_and_control():
    res = audit_result(n_members=12, n_nonmembers=24)
    fig = roc_figure(res)
    ax = fig.axes[0]
    assert fig.get_size_inches()[0] * fig.dpi >= 700  # not a 320 px thumbnail
    left = ax.get_xlim()[0]
    assert left < 1 / 24 and ax.get_xscale() == "log" and ax.get_yscale() == "log"
    gids = {a.get_gid() for a in ax.get_children() if a.get_gid()}
    assert {"unmeasurable", "chance-band", "chance", "target-roc", "control-roc"} <= gids
    shade = next(a for a in ax.get_children() if a.get_gid() == "unmeasurable")
    xs = shade.get_patch_transform().transform(shade.get_path().vertices)[:, 0]
    assert min(xs) == pytest.approx(left) and max(xs) == pytest.approx(1 / 24)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(s.startswith("control: control checkpoint") for s in labels) and any("target" in s for s in labels)
    assert "control-roc" not in {a.get_gid() for a in roc_figure(audit_result(control=False)).axes[0].get_children()}


def test_chance_band_holds_random_curves_and_not_a_perfect_attack():
    f, lo, hi = chance_roc_band(20, 40, seed=1)
    assert f[0] == 0 and f[-1] == 1 and lo[-1] == hi[-1] == 1
    assert np.all(lo <= hi) and np.all(np.diff(lo) >= 0)
    # an independent random curve stays inside the band at most FPRs; a perfect attack leaves it
    from medssl.privacy.metrics import roc_curve_points

    rng = np.random.default_rng(7)
    labels = np.r_[np.ones(20, bool), np.zeros(40, bool)]
    inside = []
    for _ in range(50):
        fr, tr, _ = roc_curve_points(rng.normal(size=60), labels)
        t_at = np.array([tr[fr <= x + 1e-12].max() for x in f])
        inside.append(np.mean((t_at >= lo - 1e-12) & (t_at <= hi + 1e-12)))
    assert np.mean(inside) > 0.9
    assert hi[0] < 1.0  # TPR 1 at FPR 0 (a perfect attack) is outside


def test_audit_page_embeds_the_roc_chart():
    from medssl.privacy.audit import render_html as audit_html

    charts = _charts(audit_html(audit_result()))
    assert [k for k, _ in charts] == ["roc"]
    assert "-control-roc" in charts[0][1] and "-target-roc" in charts[0][1] and "-unmeasurable" in charts[0][1]


def test_nice_limits_are_round():
    assert nice_limits(0.43, 0.87, "auroc_macro") == (0.4, 0.9)
    assert nice_limits(0.51, 0.56, "dice") == (0.45, 0.6)
    a, b = nice_limits(3.2, 17.9)
    assert a <= 3.2 and b >= 17.9 and float(a).is_integer() and float(b).is_integer()
