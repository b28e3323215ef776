"""FOMO-style ranking of encoders across tasks, its bootstrap stability, and paired permutation tests.

Ranking scheme (as the FOMO25 challenge organisers describe theirs; also the common MICCAI
"rank-then-aggregate" scheme, e.g. SegRap2025, SELMA3D):

1. within each task, rank the encoders on each metric separately: rank 1 = best, the direction of
   each metric from ``higher_is_better`` (``DEFAULT_HIGHER_IS_BETTER`` knows the metric names of
   ``medssl.bench``), ties get the average of the ranks they span (1, 2.5, 2.5, 4); a NaN value
   ranks last (tied with an infinite loss, e.g. an HD95 of +inf);
2. average an encoder's ranks over the metrics of a task -> task rank;
3. average the task ranks over tasks -> ``mean_rank`` (the score; lower is better), and order the
   encoders by it -> ``position`` (competition ranking: equal scores share the best position).

Every (encoder, task, metric) cell must be present exactly once (a missing result is an error, not a
silent advantage).

Score entries are dicts ``{"encoder", "task", "metric", ...}`` with one of

* ``"value"``: the metric on the test set (enough for :func:`rank_table`);
* ``"values"``: per-subject metric values (n,), optionally ``"subjects"`` (n,) unique subject ids
  (default ``0..n-1``). The task-level metric is their **mean** -- right for metrics that are
  averages of per-subject values (Dice, NSD, HD95, per-subject absolute error, per-subject
  accuracy), not for AUROC or Pearson r, which are not means of per-subject terms;
* ``"y_true"``, ``"y_score"``, ``"metric_fn"`` and optionally ``"groups"`` (n rows; the subject of
  each row, default one row per subject): the task-level metric is ``metric_fn(y_true, y_score)``
  (e.g. :func:`medssl.bench.metrics.auroc`, :func:`medssl.bench.regression_metrics.pearson_r`).

:func:`bootstrap_rank_stability` resamples the test *subjects* of each task with replacement
(Efron & Tibshirani 1993), the same draw for every encoder and metric of the task (paired), recomputes
every metric (mean of the drawn per-subject values, counting repeats, or ``metric_fn`` on all rows
of the drawn subjects), re-runs the ranking and reports how often each encoder lands on each final
position. Per-subject values are vectorised (10,000 resamples of 3 encoders x 2 tasks x 200 subjects
take ~0.1 s); ``metric_fn`` entries cost one Python call per resample.
"""

from __future__ import annotations

import html
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_HIGHER_IS_BETTER",
    "RankStability",
    "average_ranks",
    "bootstrap_rank_stability",
    "pairwise_permutation_test",
    "rank_table",
    "ranking_heatmap_svg",
]

DEFAULT_HIGHER_IS_BETTER: dict[str, bool] = {
    "auroc": True,
    "auprc": True,
    "balanced_accuracy": True,
    "f1_macro": True,
    "accuracy": True,
    "dice": True,
    "nsd": True,
    "normalized_surface_dice": True,
    "pearson_r": True,
    "hd95": False,
    "hausdorff95": False,
    "mae": False,
}

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
    table = dict(DEFAULT_HIGHER_IS_BETTER)
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
    if "value" in entry:
        return float(entry["value"])
    if "values" in entry:
        return float(np.mean(_per_subject_values(entry)))
    if "metric_fn" in entry:
        return float(entry["metric_fn"](np.asarray(entry["y_true"]), np.asarray(entry["y_score"])))
    raise ValueError(f"score entry needs 'value', 'values' or 'metric_fn' + 'y_true' + 'y_score': {sorted(entry)}")


def _per_subject_values(entry: Mapping) -> np.ndarray:
    v = np.asarray(entry["values"], dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"'values' must be a non-empty 1-D array, got shape {v.shape} "
                         f"({entry['encoder']}, {entry['task']}, {entry['metric']})")
    if np.isnan(v).any():
        raise ValueError(f"per-subject values contain NaN ({entry['encoder']}, {entry['task']}, {entry['metric']})")
    return v


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


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class RankStability:
    """Distribution of the final position of each encoder over bootstrap resamples.

    encoders: E names (first-seen order of the entries).
    frequencies: (E, E) array; ``[i, r]`` = fraction of resamples in which encoder i took final
        position r + 1. A tie between k encoders splits each one's resample evenly (1/k) over the k
        positions they span, so rows and columns each sum to 1.
    mean_rank: (E,) mean final position (ties: average position); ``ci_low``/``ci_high``: its
        percentile ``1 - alpha`` interval over resamples.
    observed_rank: (E,) final position on the full test sets (ties: average position).
    """

    encoders: list[str]
    frequencies: np.ndarray
    mean_rank: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    observed_rank: np.ndarray
    n_resamples: int
    alpha: float

    def to_rows(self) -> list[dict]:
        """JSON-friendly rows, one per encoder in observed order."""
        order = sorted(range(len(self.encoders)), key=lambda i: (self.observed_rank[i], self.mean_rank[i], i))
        return [{
            "encoder": self.encoders[i],
            "observed_rank": float(self.observed_rank[i]),
            "mean_rank": float(self.mean_rank[i]),
            "ci_low": float(self.ci_low[i]),
            "ci_high": float(self.ci_high[i]),
            "rank_frequencies": [float(f) for f in self.frequencies[i]],
            "n_resamples": self.n_resamples,
        } for i in order]


def _subject_ids(entry: Mapping) -> np.ndarray:
    if "values" in entry:
        n = _per_subject_values(entry).size
        ids = np.asarray(entry["subjects"]) if "subjects" in entry else np.arange(n)
        if ids.shape != (n,):
            raise ValueError(f"'subjects' has shape {ids.shape}, 'values' has {n} entries")
        if np.unique(ids).size != n:
            raise ValueError("'subjects' must be unique: one per-subject value per subject")
        return ids
    if "metric_fn" in entry:
        n = np.asarray(entry["y_true"]).shape[0]
        if np.asarray(entry["y_score"]).shape[0] != n:
            raise ValueError("y_true and y_score disagree on the number of rows")
        groups = np.asarray(entry["groups"]) if entry.get("groups") is not None else np.arange(n)
        if groups.shape != (n,):
            raise ValueError(f"'groups' has shape {groups.shape} for {n} rows")
        return groups
    raise ValueError("bootstrap entries need per-subject 'values' or 'y_true'/'y_score'/'metric_fn' "
                     f"(a single 'value' cannot be resampled): {sorted(entry)}")


class _Resampler:
    """Resamples one score entry given subject draws in the task's subject order."""

    def __init__(self, entry: Mapping, task_subjects: np.ndarray):
        ids = _subject_ids(entry)
        uniq, inverse = np.unique(ids, return_inverse=True)
        if not np.array_equal(uniq, task_subjects):
            raise ValueError(f"entry ({entry['encoder']}, {entry['task']}, {entry['metric']}) covers other "
                             "subjects than the task's first entry; all encoders must be scored on the same subjects")
        self.fn: Callable | None = None
        if "values" in entry:
            v = np.empty(uniq.size)
            v[inverse.ravel()] = _per_subject_values(entry)
            self.finite = np.where(np.isfinite(v), v, 0.0)
            self.pos_inf = np.isposinf(v).astype(np.float64)
            self.neg_inf = np.isneginf(v).astype(np.float64)
            self.any_inf = bool(self.pos_inf.any() or self.neg_inf.any())
        else:
            self.fn = entry["metric_fn"]
            self.y_true, self.y_score = np.asarray(entry["y_true"]), np.asarray(entry["y_score"])
            inverse = inverse.ravel()
            self.order = np.argsort(inverse, kind="stable")
            self.counts = np.bincount(inverse, minlength=uniq.size)
            self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
            self.one_row_each = bool((self.counts == 1).all())

    def stats(self, draws: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """draws (B, S) subject indices, counts (B, S) multiplicities -> metric per resample (B,)."""
        if self.fn is None:
            s = draws.shape[1]
            out = counts @ self.finite / s
            if self.any_inf:
                pos, neg = counts @ self.pos_inf > 0, counts @ self.neg_inf > 0
                out[pos] = np.inf
                out[neg] = -np.inf
                out[pos & neg] = np.nan
            return out
        out = np.empty(draws.shape[0])
        for b, d in enumerate(draws):
            if self.one_row_each:
                rows = self.order[d]
            else:
                cnt = self.counts[d]
                ends = np.cumsum(cnt)
                rows = self.order[np.repeat(self.starts[d], cnt) + np.arange(ends[-1]) - np.repeat(ends - cnt, cnt)]
            out[b] = self.fn(self.y_true[rows], self.y_score[rows])
        return out


def bootstrap_rank_stability(
    per_subject_scores: Sequence[Mapping],
    n_resamples: int = 10_000,
    seed: int = 0,
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    alpha: float = 0.05,
    max_draws_per_chunk: int = 2_000_000,
) -> RankStability:
    """Bootstrap the FOMO ranking over test subjects; see the module docstring for the entries.

    Each task's subjects are resampled with replacement ``n_resamples`` times, the same draws for all
    of its encoders and metrics; tasks are resampled independently, each from a stream seeded by
    ``(seed, crc32(task name))`` so adding a task leaves the other tasks' draws unchanged.
    Deterministic in (entries, n_resamples, seed). Returns a :class:`RankStability`.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    encoders, tasks, metrics, cells = _grid(per_subject_scores)
    direction = _directions({m for ms in metrics.values() for m in ms}, higher_is_better)
    n_enc = len(encoders)

    observed = {t: {m: average_ranks([_point_value(cells[(t, m, e)]) for e in encoders], direction[m])
                    for m in metrics[t]} for t in tasks}
    _, observed_score = _aggregate(observed)
    observed_rank = average_ranks(observed_score, higher_is_better=False)

    cube: dict[str, dict[str, np.ndarray]] = {}
    for t in tasks:
        first = cells[(t, metrics[t][0], encoders[0])]
        subjects = np.unique(_subject_ids(first))
        s = subjects.size
        samplers = {(m, e): _Resampler(cells[(t, m, e)], subjects) for m in metrics[t] for e in encoders}
        stats = {m: np.empty((n_resamples, n_enc)) for m in metrics[t]}
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(t.encode("utf-8"))]))
        chunk = max(1, max_draws_per_chunk // s)
        for lo in range(0, n_resamples, chunk):
            r = min(chunk, n_resamples - lo)
            draws = rng.integers(0, s, size=(r, s))
            counts = np.bincount((draws + s * np.arange(r)[:, None]).ravel(), minlength=r * s)
            counts = counts.reshape(r, s).astype(np.float64)
            for m in metrics[t]:
                for j, e in enumerate(encoders):
                    stats[m][lo:lo + r, j] = samplers[(m, e)].stats(draws, counts)
        cube[t] = {m: average_ranks(stats[m], direction[m]) for m in metrics[t]}
    _, score = _aggregate(cube)  # (B, E)

    better = (score[:, None, :] < score[:, :, None]).sum(axis=2)  # (B, E): encoders strictly ahead
    tied = (score[:, None, :] == score[:, :, None]).sum(axis=2)  # including itself
    position = 1.0 + better + (tied - 1) / 2.0
    freq = np.zeros((n_enc, n_enc))
    enc_idx = np.broadcast_to(np.arange(n_enc), score.shape)
    for k in range(n_enc):
        hit = k < tied
        np.add.at(freq, (enc_idx[hit], (better + k)[hit]), 1.0 / tied[hit])
    freq /= n_resamples
    low, high = np.quantile(position, [alpha / 2, 1 - alpha / 2], axis=0)
    return RankStability(encoders=encoders, frequencies=freq, mean_rank=position.mean(axis=0),
                         ci_low=low, ci_high=high, observed_rank=observed_rank,
                         n_resamples=int(n_resamples), alpha=float(alpha))


# --------------------------------------------------------------------------- permutation test


def pairwise_permutation_test(per_subject_a, per_subject_b, n_permutations: int = 10_000, seed: int = 0,
                              max_draws_per_chunk: int = 2_000_000) -> dict:
    """Paired two-sided sign-flip permutation test of mean(a - b) = 0 over subjects.

    ``per_subject_a``/``per_subject_b``: (n,) finite metric values of two encoders on the same n
    subjects, same order. Under H0 (exchangeability of a and b within a subject) the sign of each
    difference d_i = a_i - b_i is arbitrary; the statistic is T = |mean(d)| and the p-value the
    fraction of sign assignments with T* >= T_obs. When 2^n <= ``n_permutations`` all 2^n sign
    vectors are enumerated (exact p); otherwise ``n_permutations`` random sign vectors give
    ``p = (1 + #{T* >= T_obs}) / (n_permutations + 1)`` (Phipson & Smyth 2010: never 0, valid).
    All-zero differences give p = 1. Infinite values (e.g. HD95 of an empty prediction) are rejected:
    substitute a finite worst value first.

    Returns ``{"delta": mean(a - b), "p_value", "n_subjects", "n_permutations", "exact", "method"}``.
    """
    a = np.asarray(per_subject_a, dtype=np.float64)
    b = np.asarray(per_subject_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"per-subject arrays must be 1-D of the same length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("no subjects to test")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-subject values must be finite (substitute a worst value for inf/NaN first)")
    d = a - b
    n = d.size
    total = d.sum()
    t_obs = abs(total) / n
    tol = 1e-12 * max(np.abs(d).sum() / n, 1e-300)  # flips that reproduce T_obs up to rounding count
    exact = n < 63 and 2 ** n <= n_permutations
    if exact:
        flips = ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float64)
        t = np.abs(total - 2.0 * (flips @ d)) / n
        p = float(np.mean(t >= t_obs - tol))
        used = 2 ** n
    else:
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
        rng = np.random.default_rng(seed)
        hits = 0
        chunk = max(1, max_draws_per_chunk // n)
        for lo in range(0, n_permutations, chunk):
            r = min(chunk, n_permutations - lo)
            flips = (rng.random((r, n)) < 0.5).astype(np.float64)  # 1 = swap a and b for that subject
            t = np.abs(total - 2.0 * (flips @ d)) / n
            hits += int(np.count_nonzero(t >= t_obs - tol))
        p = (1 + hits) / (n_permutations + 1)
        used = int(n_permutations)
    return {"delta": float(total / n), "p_value": float(min(1.0, p)), "n_subjects": int(n),
            "n_permutations": int(used), "exact": bool(exact),
            "method": "paired sign-flip permutation test, two-sided, statistic |mean(a - b)|"}


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

    ``rank_frequencies``: (E, R) fractions in [0, 1] (``RankStability.frequencies``). Colour and the
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
