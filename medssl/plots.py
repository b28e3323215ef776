"""Charts for the HTML reports, drawn with matplotlib and embedded as inline SVG.

Every chart is a ``<figure class="chart" data-chart="KIND">`` holding one ``<svg>`` whose text is
real text (``svg.fonttype: none``: searchable, escaped by matplotlib) and whose element ids are
prefixed per chart, so several charts live on one page without clashing. No pyplot: figures are
:class:`matplotlib.figure.Figure` objects, so the caller's backend and global state are untouched.

* :func:`results_chart`: a metric vs the setting (shots or label fraction), one panel per domain
  with a shared y axis, 95% intervals on every point, the chance level where the metric has one,
  round ticks and the full legend below the panels.
* :func:`domain_gap_chart`: at one setting, bars per encoder x domain with their intervals, and
  the gap (reference domain minus each other) with its interval.
* :func:`roc_chart`: the audit's log-log ROC, large, with the region below the smallest measurable
  FPR (1 / non-members) shaded, the chance band (central 95% of ROC curves of an attack with no
  information, at the audit's sample sizes) and the control's curve beside the target's.
"""

from __future__ import annotations

import html
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["CHANCE", "chance_roc_band", "chart_figure", "domain_gap_chart", "domain_gap_figure", "gap_interval",
           "nice_limits", "results_chart", "results_figure", "roc_chart", "roc_figure"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
DOMAIN_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
# the value an uninformative predictor gets, where the metric has one
CHANCE = {"auroc_macro": 0.5, "auroc": 0.5, "AUROC": 0.5, "balanced_accuracy": 0.5, "pearson_r": 0.0}
_UNIT = {"auroc_macro", "auroc", "AUROC", "auprc", "f1_macro", "balanced_accuracy", "dice", "nsd", "iou",
         "sensitivity", "specificity"}
_counter = itertools.count(1)


def _finite(x) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool) and math.isfinite(x)


def _label(x) -> str:
    """Text for matplotlib: no mathtext (``$``) and no legend-hiding leading underscore."""
    s = str(x).replace("$", r"\$")
    return "\u200b" + s if s.startswith("_") else s


def setting_text(s) -> str:
    """A shots or label-fraction setting as shown: ``all``, ``5``, ``0.0667`` (3 significant digits)."""
    return f"{s:.3g}" if isinstance(s, float) else str(s)


def nice_limits(lo: float, hi: float, metric: str | None = None) -> tuple[float, float]:
    """Axis limits on round values (multiples of 0.05 / 0.1 for metrics in [0, 1]) that hold [lo, hi]."""
    if metric in _UNIT or (metric == "pearson_r"):
        floor_ = -1.0 if metric == "pearson_r" else 0.0
        span = hi - lo
        step = 0.05 if span < 0.3 else 0.1
        a = max(floor_, math.floor((lo - 0.02) / step) * step)
        b = min(1.0, math.ceil((hi + 0.02) / step) * step)
        if b - a < 0.1:
            a, b = max(floor_, a - 0.05), min(1.0, b + 0.05)
        return round(a, 2), round(b, 2)
    span = (hi - lo) or abs(hi) or 1.0
    step = 10 ** math.floor(math.log10(span / 4))
    for m in (1, 2, 2.5, 5, 10):
        if span / (m * step) <= 6:
            step *= m
            break
    return math.floor((lo - 0.05 * span) / step) * step, math.ceil((hi + 0.05 * span) / step) * step


def _svg(fig, prefix: str) -> str:
    import matplotlib as mpl

    buf = io.StringIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "medssl"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    s = buf.getvalue()
    s = s[s.index("<svg"):]
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, flags=re.S)
    s = s.replace(' id="', f' id="{prefix}-')
    s = re.sub(r'(xlink:href="#|href="#|url\(#)', rf"\1{prefix}-", s)
    return s.strip()


def chart_figure(fig, kind: str, caption: str, alt: str) -> str:
    """``<figure class="chart" data-chart=KIND>`` with the figure's inline SVG (ids prefixed) and caption."""
    prefix = f"c{next(_counter)}"
    svg = _svg(fig, prefix).replace("<svg ", f'<svg role="img" aria-label="{html.escape(alt)}" ', 1)
    return (f'<figure class="chart" data-chart="{html.escape(kind)}" id="{prefix}">{svg}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _new_figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    return fig


def _style(ax, metric: str, lo: float, hi: float) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(lo, hi)
    if metric in _UNIT or metric == "pearson_r":  # ticks on the limits' own grid: both ends labelled
        from matplotlib.ticker import MultipleLocator

        tenths = all(abs(v * 10 - round(v * 10)) < 1e-9 for v in (lo, hi))
        ax.yaxis.set_major_locator(MultipleLocator(0.1 if tenths and hi - lo > 0.35 else 0.05))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _chance(ax, metric: str, gid: str) -> bool:
    c = CHANCE.get(metric)
    if c is None:
        return False
    ax.axhline(c, color="#555555", linestyle=(0, (5, 3)), linewidth=1.2, gid=gid, zorder=1)
    return True


def results_chart(rows: Sequence[Mapping], *, domains: Sequence, encoders: Sequence, settings: Sequence,
                  metric: str, setting_label: str, title: str = "") -> str:
    """One panel per domain (shared y axis): ``metric`` mean vs setting per encoder with 95% CIs,
    as a chart ``<figure>`` ("" when no value is finite)."""
    fig = results_figure(rows, domains=domains, encoders=encoders, settings=settings, metric=metric,
                         setting_label=setting_label, title=title)
    if fig is None:
        return ""
    chance = CHANCE.get(metric)
    return chart_figure(fig, "results", f"{title + ': ' if title else ''}{metric} vs {setting_label}, one panel "
                        "per domain on a shared y axis; bars are 95% intervals"
                        + ("; dashed: chance" if chance is not None else ""), f"{metric} vs {setting_label}")


def results_figure(rows: Sequence[Mapping], *, domains: Sequence, encoders: Sequence, settings: Sequence,
                   metric: str, setting_label: str, title: str = ""):
    """The :class:`~matplotlib.figure.Figure` of :func:`results_chart` (None when nothing is finite)."""
    from matplotlib.lines import Line2D

    key = {(r.get("encoder"), r.get("domain"), _setting(r)): r for r in rows}
    vals = [v for r in rows for v in (r.get("mean"), r.get("ci_low"), r.get("ci_high")) if _finite(v)]
    if not vals:
        return None
    chance = CHANCE.get(metric)
    lo, hi = nice_limits(min(vals + ([chance] if chance is not None else [])),
                         max(vals + ([chance] if chance is not None else [])), metric)
    n = len(domains)
    fig = _new_figure(min(4.2 * n, 13.5) + 0.6, 4.0)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    x = np.arange(len(settings), dtype=float)
    width = 0.5 / max(len(encoders), 1)
    for panel, (ax, d) in enumerate(zip(axes, domains)):
        for j, e in enumerate(encoders):
            pts = [(i, key.get((e, d, s))) for i, s in enumerate(settings)]
            pts = [(i, r) for i, r in pts if r is not None and _finite(r.get("mean"))]
            if not pts:
                continue
            xs = np.array([x[i] for i, _ in pts]) + (j - (len(encoders) - 1) / 2) * width
            m = np.array([float(r["mean"]) for _, r in pts])
            lo_e = np.array([m[k] - float(r["ci_low"]) if _finite(r.get("ci_low")) else 0.0
                             for k, (_, r) in enumerate(pts)])
            hi_e = np.array([float(r["ci_high"]) - m[k] if _finite(r.get("ci_high")) else 0.0
                             for k, (_, r) in enumerate(pts)])
            ax.errorbar(xs, m, yerr=[np.maximum(lo_e, 0), np.maximum(hi_e, 0)], color=COLORS[j % len(COLORS)],
                        marker="o", markersize=5, linewidth=2, capsize=4, elinewidth=1.5, zorder=3)
        _chance(ax, metric, f"chance-{panel}")
        ax.set_xticks(x, [setting_text(s) for s in settings])
        ax.set_xlim(-0.6, len(settings) - 0.4)
        ax.set_title(_label(d), fontsize=12)
        ax.set_xlabel(setting_label)
        _style(ax, metric, lo, hi)
        ax.tick_params(labelleft=True)
    axes[0].set_ylabel(f"{metric} (mean, 95% CI)")
    handles = [Line2D([], [], color=COLORS[j % len(COLORS)], marker="o", linewidth=2) for j in range(len(encoders))]
    _legend_and_title(fig, handles, [_label(e) for e in encoders], chance, title, max_columns=3)
    return fig


def _legend_and_title(fig, handles: list, labels: list[str], chance: float | None, title: str | None,
                      max_columns: int) -> None:
    """The figure's legend below the panels (with the dashed chance line when there is one) and
    its title."""
    from matplotlib.lines import Line2D

    if chance is not None:
        handles = [*handles, Line2D([], [], color="#555555", linestyle=(0, (5, 3)))]
        labels = [*labels, f"chance ({chance:g})"]
    # as many columns as fit the figure's width (about 0.08 in per character at 10 pt, plus the marker)
    per_column = 0.08 * max(len(str(lab)) for lab in labels) + 0.7
    columns = max(1, min(len(labels), max_columns, int(fig.get_figwidth() // per_column)))
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, frameon=False, fontsize=10)
    if title:
        fig.suptitle(_label(title), fontsize=12)


def _setting(row: Mapping):
    return row.get("shots") if row.get("shots") is not None else row.get("label_fraction")


def gap_interval(ref: Mapping, other: Mapping) -> tuple[float, float, float] | None:
    """(gap, low, high): ref mean - other mean with a 95% interval combining the two 95% intervals as
    independent (different test subjects in each domain; normal approximation)."""
    if not (_finite(ref.get("mean")) and _finite(other.get("mean"))):
        return None
    gap = float(ref["mean"]) - float(other["mean"])
    if not all(_finite(r.get(k)) for r in (ref, other) for k in ("ci_low", "ci_high")):
        return gap, math.nan, math.nan
    se = math.hypot((ref["ci_high"] - ref["ci_low"]) / 3.92, (other["ci_high"] - other["ci_low"]) / 3.92)
    return gap, gap - 1.96 * se, gap + 1.96 * se


def domain_gap_chart(rows: Sequence[Mapping], *, encoders: Sequence, domains: Sequence, setting, metric: str,
                     gaps: Mapping | None = None, title: str = "") -> str:
    """Left: at ``setting``, a bar per encoder x domain with its 95% CI. Right: the gap
    (``domains[0]`` minus each other domain) per encoder with its 95% CI: from ``gaps``
    ({(encoder, domain): (gap, low, high)}, e.g. the benchmark's paired bootstrap) where given,
    else :func:`gap_interval`. "" when nothing is finite or there is one domain."""
    fig = domain_gap_figure(rows, encoders=encoders, domains=domains, setting=setting, metric=metric, gaps=gaps,
                            title=title)
    if fig is None:
        return ""
    return chart_figure(fig, "domain-gap", f"{title + ': ' if title else ''}{metric} per domain at setting "
                        f"{setting} and the gap {domains[0]} minus each other domain; 95% intervals (gap: "
                        f"{fig.medssl_gap_source})", f"{metric} by domain and in-out gap")


def domain_gap_figure(rows: Sequence[Mapping], *, encoders: Sequence, domains: Sequence, setting, metric: str,
                      gaps: Mapping | None = None, title: str = ""):
    """The :class:`~matplotlib.figure.Figure` of :func:`domain_gap_chart` (None when there is nothing to draw)."""
    from matplotlib.patches import Patch

    key = {(r.get("encoder"), r.get("domain")): r for r in rows if _setting(r) == setting}
    vals = [v for r in key.values() for v in (r.get("mean"), r.get("ci_low"), r.get("ci_high")) if _finite(v)]
    if not vals or len(domains) < 2:
        return None
    chance = CHANCE.get(metric)
    lo, hi = nice_limits(min(vals + [0.0]), max(vals + ([chance] if chance is not None else [])), metric)
    lo = min(lo, 0.0)
    fig = _new_figure(12.0, 4.2)
    ax, gx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    n_e, n_d = len(encoders), len(domains)
    width = 0.8 / n_d
    gap_width = 0.8 / max(n_d - 1, 1)
    gap_vals, source = [], set()
    for i, e in enumerate(encoders):
        for j, d in enumerate(domains):
            r = key.get((e, d))
            if r is None or not _finite(r.get("mean")):
                continue
            xpos = i + (j - (n_d - 1) / 2) * width
            m = float(r["mean"])
            err = None
            if _finite(r.get("ci_low")) and _finite(r.get("ci_high")):
                err = [[max(m - r["ci_low"], 0)], [max(r["ci_high"] - m, 0)]]
            ax.bar(xpos, m, width * 0.92, color=DOMAIN_COLORS[j % len(DOMAIN_COLORS)], yerr=err, capsize=4,
                   ecolor="#222222", error_kw={"elinewidth": 1.5}, zorder=2)
        ref = key.get((e, domains[0]))
        for j, d in enumerate(domains[1:]):
            other = key.get((e, d))
            g = (gaps or {}).get((e, d))
            if g is not None:
                source.add("paired bootstrap over subjects and seeds")
            elif ref is not None and other is not None:
                g = gap_interval(ref, other)
                source.add("the two domains' intervals combined as independent (normal approximation)")
            if g is None or not _finite(g[0]):
                continue
            xpos = i + (j - (n_d - 2) / 2) * gap_width
            err = None
            if _finite(g[1]) and _finite(g[2]):
                err = [[max(g[0] - g[1], 0)], [max(g[2] - g[0], 0)]]
                gap_vals += [g[1], g[2]]
            gap_vals.append(g[0])
            gx.bar(xpos, g[0], gap_width * 0.85, color=DOMAIN_COLORS[(j + 1) % len(DOMAIN_COLORS)], yerr=err,
                   capsize=4, ecolor="#222222", error_kw={"elinewidth": 1.5}, zorder=2)
    _chance(ax, metric, "chance")
    _style(ax, metric, lo, hi)
    names = [_label(e) for e in encoders]
    for a in (ax, gx):
        a.set_xticks(range(n_e), names, rotation=12 if max(len(s) for s in names) > 14 else 0,
                     ha="right" if max(len(s) for s in names) > 14 else "center")
        a.set_xlim(-0.6, n_e - 0.4)
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"{_label(metric)} by domain at {setting}", fontsize=12)
    if gap_vals:
        glo, ghi = nice_limits(min(gap_vals + [0.0]), max(gap_vals + [0.0]))
        _style(gx, "", glo, ghi)
    gx.axhline(0.0, color="#222222", linewidth=1.0, zorder=1)
    gx.set_title(f"gap: {_label(domains[0])} minus other domain", fontsize=12)
    gx.set_ylabel(f"{metric} gap (95% CI)")
    handles = [Patch(color=DOMAIN_COLORS[j % len(DOMAIN_COLORS)]) for j in range(n_d)]
    _legend_and_title(fig, handles, [_label(d) for d in domains], chance, title, max_columns=4)
    fig.medssl_gap_source = "; ".join(sorted(source)) or "none"
    return fig


def chance_roc_band(n_members: int, n_nonmembers: int, *, n_draws: int = 1000, seed: int = 0,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, low, high): the central ``confidence`` band of the TPR at each FPR = k / n_nonmembers
    (k = 0..n) over ROC curves of scores that carry no membership information (labels in random
    order, no ties), at these sample sizes."""
    m, n = int(n_members), int(n_nonmembers)
    if m < 1 or n < 1:
        raise ValueError(f"need members and non-members, got {m} and {n}")
    draws = int(min(n_draws, max(100, 20_000_000 // (m + n))))
    rng = np.random.default_rng(seed)
    tp = np.empty((draws, n + 1))
    for s in range(0, draws, 200):
        b = min(200, draws - s)
        # positions (in score order, highest first) of the non-members: the first n of a random permutation
        neg = np.sort(np.argsort(rng.random((b, m + n)), axis=1)[:, :n], axis=1)
        tp[s:s + b, :n] = neg - np.arange(n)  # members ranked above the (k+1)-th non-member
        tp[s:s + b, n] = m
    tpr = tp / m
    a = (1 - confidence) / 2
    return np.arange(n + 1) / n, np.quantile(tpr, a, axis=0), np.quantile(tpr, 1 - a, axis=0)


def roc_chart(result: Mapping) -> str:
    """The audit's ROC on log-log axes (audit.json dict) as a chart ``<figure>``: target curve, the
    control's curve (where the audit stored it, ``control.roc``), the chance band at the audit's
    sample sizes, the chance diagonal, and FPR < 1 / n_nonmembers shaded as not measurable."""
    fig = roc_figure(result)
    n_non = int(result["n_nonmembers"])
    return chart_figure(fig, "roc", "ROC of the attack on log-log axes, per subject. Shaded: FPRs below "
                        f"1/{n_non} that {n_non} non-members cannot measure; blue band: the central 95% of ROC "
                        "curves of an attack with no information at these sample sizes; a rate of 0 is drawn at "
                        "the axis' edge"
                        + ("; dashed blue: the control model" if fig.medssl_has_control
                           else "; no control curve in this audit"), "ROC, log-log")


def roc_figure(result: Mapping):
    """The :class:`~matplotlib.figure.Figure` of :func:`roc_chart`."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n_non, n_mem = int(result["n_nonmembers"]), int(result["n_members"])
    min_fpr = 1.0 / n_non
    floor = 10.0 ** math.floor(math.log10(0.5 / max(n_non, n_mem)))
    fig = _new_figure(7.5, 7.0)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(floor, 1.0)
    ax.set_aspect("equal")
    ax.axvspan(floor, min_fpr, color="#bbbbbb", alpha=0.45, lw=0, gid="unmeasurable", zorder=0)
    f, lo, hi = chance_roc_band(n_mem, n_non)
    ax.fill_between(np.maximum(f, floor), np.maximum(lo, floor), np.maximum(hi, floor), step="post",
                    color="#9ecae1", alpha=0.55, lw=0, gid="chance-band", zorder=1)
    ax.plot([floor, 1], [floor, 1], color="#555555", linestyle=(0, (5, 3)), linewidth=1.2, gid="chance")
    handles = [Patch(color="#bbbbbb", alpha=0.45), Patch(color="#9ecae1", alpha=0.55),
               Line2D([], [], color="#555555", linestyle=(0, (5, 3)))]
    labels = [f"not measurable (FPR < 1/{n_non})",
              f"chance band: 95% of ROCs with no information ({n_mem} vs {n_non} subjects)", "chance (TPR = FPR)"]
    control = result.get("control") or {}
    croc = control.get("roc") if isinstance(control, Mapping) else None
    if croc and croc.get("fpr"):
        ax.plot(np.maximum(croc["fpr"], floor), np.maximum(croc["tpr"], floor), color="#1f77b4",
                linewidth=2.2, linestyle=(0, (6, 2)), gid="control-roc", zorder=3)
        handles.append(Line2D([], [], color="#1f77b4", linewidth=2.2, linestyle=(0, (6, 2))))
        source = str(control.get("source", "control")).split(" (")[0]  # "reference model 0 (leave-one-out...)"
        labels.append(f"control: {_label(source)} (AUC {control.get('auc', math.nan):.3f})")
    ax.plot(np.maximum(result["roc"]["fpr"], floor), np.maximum(result["roc"]["tpr"], floor),
            color="#c0392b", linewidth=2.6, gid="target-roc", zorder=4)
    handles.append(Line2D([], [], color="#c0392b", linewidth=2.6))
    auc = result.get("auc")
    labels.append(f"target: {_label(result.get('attack', 'attack'))} attack"
                  + (f" (AUC {auc:.3f})" if _finite(auc) else ""))
    ax.axvline(min_fpr, color="#444444", linewidth=1.0)
    ax.set_xlabel("false-positive rate (log)", fontsize=12)
    ax.set_ylabel("true-positive rate (log)", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(which="major", color="#e0e0e0", linewidth=0.8)
    fig.legend(handles, labels, loc="outside lower center", ncol=1, frameon=False, fontsize=10.5)
    fig.medssl_has_control = bool(croc and croc.get("fpr"))
    return fig
