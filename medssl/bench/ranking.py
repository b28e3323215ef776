"""FOMO-style ranking of encoders across tasks, its heat map, and Holm's adjustment.

Ranking scheme (as the FOMO25 challenge organisers describe theirs; also the common MICCAI
"rank-then-aggregate" scheme, e.g. SegRap2025, SELMA3D):

1. within each task, rank the encoders on each metric separately: rank 1 = best, the direction of
   each metric from ``higher_is_better`` (default: the benchmark's metric table,
   :data:`medssl.bench.column_metrics.METRICS`), ties get the average of the ranks they span (1, 2.5, 2.5, 4); a NaN value
   ranks last (tied with an infinite loss, e.g. an HD95 of +inf);
2. average an encoder's ranks over the metrics of a task -> task rank;
3. average the task ranks over tasks -> ``mean_rank`` (the score; lower is better), and order the
   encoders by it -> ``position`` (competition ranking: equal scores share the best position).

Every (encoder, task, metric) cell must be present exactly once (a missing result is an error, not a
silent advantage).

Score entries are dicts ``{"encoder", "task", "metric", "value"}`` (the metric on the test set).
The rank stability (how often each encoder lands on each position when the ranking is redone on
every bootstrap replicate) is computed by :func:`medssl.bench.runner.run_benchmark` from the
replicates behind its intervals, with :func:`average_ranks`; :func:`ranking_heatmap_svg` draws it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "average_ranks",
    "holm_adjust",
    "rank_table",
    "ranking_heatmap_svg",
]

_ROUND = 9  # decimals: mean ranks equal up to float rounding are ties


# --------------------------------------------------------------------------- ranks


def average_ranks(values, higher_is_better: bool) -> np.ndarray:
    """Ranks along the last axis (..., E): 1 = best, ties share their average rank, NaN ranks last."""
    v = np.asarray(values, dtype=np.float64)
    loss = -v if higher_is_better else v.copy()
    loss[np.isnan(loss)] = np.inf
    a, b = loss[..., :, None], loss[..., None, :]
    better = (b < a).sum(axis=-1)
    equal = (b == a).sum(axis=-1)
    return 1.0 + better + (equal - 1) / 2.0


def _directions(metrics, higher_is_better: Mapping[str, bool] | None) -> dict[str, bool]:
    from medssl.bench.column_metrics import METRICS

    table = {name: m.higher_is_better for name, m in METRICS.items()}
    if higher_is_better:
        table.update({str(k): bool(v) for k, v in higher_is_better.items()})
    missing = sorted({m for m in metrics if m not in table})
    if missing:
        raise ValueError(f"no direction for metric(s) {missing}: pass higher_is_better={{name: bool}}")
    return {m: table[m] for m in metrics}


def _grid(entries: Sequence[Mapping]) -> tuple[list[str], list[str], dict[str, list[str]], dict]:
    """(encoders, tasks, metrics per task, {(task, metric, encoder): entry}); all in first-seen order."""
    encoders: list[str] = []
    tasks: list[str] = []
    metrics: dict[str, list[str]] = {}
    cells: dict[tuple[str, str, str], Mapping] = {}
    for e in entries:
        try:
            enc, task, metric = str(e["encoder"]), str(e["task"]), str(e["metric"])
        except KeyError as err:
            raise ValueError(f"score entry lacks key {err.args[0]!r}: {sorted(e)}") from None
        if enc not in encoders:
            encoders.append(enc)
        if task not in metrics:
            tasks.append(task)
            metrics[task] = []
        if metric not in metrics[task]:
            metrics[task].append(metric)
        key = (task, metric, enc)
        if key in cells:
            raise ValueError(f"duplicate score for encoder {enc!r}, task {task!r}, metric {metric!r}")
        cells[key] = e
    if not cells:
        raise ValueError("no scores to rank")
    for task in tasks:
        for metric in metrics[task]:
            for enc in encoders:
                if (task, metric, enc) not in cells:
                    raise ValueError(f"missing score for encoder {enc!r}, task {task!r}, metric {metric!r}")
    return encoders, tasks, metrics, cells


def _point_value(entry: Mapping) -> float:
    if "value" not in entry:
        raise ValueError(f"score entry needs 'value': {sorted(entry)}")
    return float(entry["value"])


def _aggregate(rank_cube: dict[str, dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{task: {metric: ranks (..., E)}} -> ({task: task rank (..., E)}, mean rank (..., E))."""
    task_ranks = {t: np.mean(np.stack(list(m.values())), axis=0) for t, m in rank_cube.items()}
    mean_rank = np.round(np.mean(np.stack(list(task_ranks.values())), axis=0), _ROUND)
    return task_ranks, mean_rank


def rank_table(scores: Sequence[Mapping], higher_is_better: Mapping[str, bool] | None = None) -> list[dict]:
    """Rank encoders FOMO-style (module docstring) from score entries; one row per encoder, best first.

    Row: ``{"encoder", "position" (1 = best, ties share), "mean_rank" (average over tasks of the
    average over metrics of the per-metric rank), "task_ranks": {task: rank}, "metric_ranks":
    {task: {metric: rank}}, "values": {task: {metric: value}}}``.
    """
    encoders, tasks, metrics, cells = _grid(scores)
    direction = _directions({m for ms in metrics.values() for m in ms}, higher_is_better)
    values = {t: {m: np.array([_point_value(cells[(t, m, e)]) for e in encoders]) for m in metrics[t]}
              for t in tasks}
    cube = {t: {m: average_ranks(values[t][m], direction[m]) for m in metrics[t]} for t in tasks}
    task_ranks, mean_rank = _aggregate(cube)
    position = 1 + (mean_rank[None, :] < mean_rank[:, None]).sum(axis=1)
    rows = []
    for i, enc in enumerate(encoders):
        rows.append({
            "encoder": enc,
            "position": int(position[i]),
            "mean_rank": float(mean_rank[i]),
            "task_ranks": {t: float(task_ranks[t][i]) for t in tasks},
            "metric_ranks": {t: {m: float(cube[t][m][i]) for m in metrics[t]} for t in tasks},
            "values": {t: {m: float(values[t][m][i]) for m in metrics[t]} for t in tasks},
        })
    order = sorted(range(len(encoders)), key=lambda i: (mean_rank[i], i))
    return [rows[i] for i in order]


# --------------------------------------------------------------------------- SVG


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _blend(f: float) -> str:
    """White (0) -> dark blue (1)."""
    f = min(1.0, max(0.0, f)) if math.isfinite(f) else 0.0
    lo, hi = (255, 255, 255), (8, 48, 107)
    return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(lo, hi))


def ranking_heatmap_svg(rank_frequencies, encoders: Sequence[str], *,
                        title: str = "Final position over bootstrap resamples", cell: int = 46) -> str:
    """Inline SVG heat map of rank frequencies: encoders (rows) x positions 1..R (columns).

    ``rank_frequencies``: (E, R) fractions in [0, 1] (results.json ``position_frequencies``). Colour and the
    number in each cell give the fraction of resamples; every label is HTML-escaped; no scripts or
    external resources.
    """
    f = np.asarray(rank_frequencies, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != len(encoders):
        raise ValueError(f"rank_frequencies shape {f.shape} does not match {len(encoders)} encoders")
    n_enc, n_pos = f.shape
    left = 12 + 7 * max([len(str(e)) for e in encoders] + [6])
    top, pad = 44, 10
    # wide enough for the title too (13 px bold, about 7.5 px a character)
    w, h = max(left + n_pos * cell, left + round(7.5 * len(title))) + pad, top + n_enc * cell + 26
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
              f'aria-label="{_esc(title)}" font-family="sans-serif">'),
             f'<text class="t" x="{left}" y="16" font-size="13" font-weight="600">{_esc(title)}</text>']
    for r in range(n_pos):
        x = left + r * cell + cell / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 8}" font-size="11" text-anchor="middle">{r + 1}</text>')
    for i, enc in enumerate(encoders):
        y = top + i * cell
        parts.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4:.1f}" font-size="11" '
                     f'text-anchor="end">{_esc(enc)}</text>')
        for r in range(n_pos):
            v = float(f[i, r])
            x = left + r * cell
            txt = "#ffffff" if math.isfinite(v) and v > 0.5 else "#222222"
            label = f"{v:.2f}" if math.isfinite(v) else "n/a"
            parts.append(f'<g><title>{_esc(enc)}: position {r + 1} in {label} of resamples</title>'
                         f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{_blend(v)}" '
                         f'stroke="#ffffff"/><text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" '
                         f'font-size="11" text-anchor="middle" fill="{txt}">{label}</text></g>')
    parts.append(f'<text x="{left + n_pos * cell / 2:.1f}" y="{h - 8}" font-size="11" '
                 f'text-anchor="middle">final position (1 = best)</text>')
    parts.append("</svg>")
    return "".join(parts)


def holm_adjust(p_values) -> list[float | None]:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, controlling the
    family-wise error rate: sorted ascending, p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j)).
    None / NaN entries are passed through and do not count in the family size m."""
    ps = [None if p is None or not np.isfinite(p) else float(p) for p in p_values]
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m = len(idx)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out
