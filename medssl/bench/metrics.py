"""Classification metrics on labels/scores layouts, and subject-level bootstrap statistics.

The metrics are scalar views of the benchmark's one metric table
(:data:`medssl.bench.column_metrics.METRICS`, :func:`table_metric`): the same kernels the benchmark
scores every task kind with.

Label/score layouts accepted by every metric here (n = rows, C = classes):

* binary: ``y_true`` (n,) in {0, 1} / bool, ``y_score`` (n,) float (higher = more positive);
* multi-label: ``y_true`` (n, C) multi-hot, ``y_score`` (n, C);
* multi-class: ``y_true`` (n,) integer classes in [0, C), ``y_score`` (n, C) (one-vs-rest).

Convention for macro averages (AUROC, balanced accuracy): a class whose ``y_true`` column holds
only one value (all positive or all negative) has no defined AUROC; it is *excluded* from the
macro mean and reported as NaN by the per-class functions (and listed by :func:`auroc_details`).
If no class is evaluable the macro value is NaN. Precision-based metrics (AUPRC, F1) exclude the
classes with no positive row (undefined without positives).

AUROC is computed from ranks (Mann-Whitney U with average ranks for ties), equal to
``sklearn.metrics.roc_auc_score`` but ~20x faster, which matters inside bootstraps.

Bootstrap (Efron & Tibshirani 1993, ch. 13; percentile interval): rows are resampled *by group*
(subject): each resample draws the G groups with replacement and takes all rows of each drawn
group, so correlated records of one subject never count as independent evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]

__all__ = [
    "auroc",
    "auroc_details",
    "per_class_auroc",
    "balanced_accuracy",
    "f1_macro",
    "auprc",
    "table_metric",
    "group_bootstrap_indices",
    "bootstrap_ci",
    "bootstrap_p_value",
    "paired_bootstrap_test",
]


# --------------------------------------------------------------------------- layouts


def _as_indicators(y_true, y_score) -> tuple[np.ndarray, np.ndarray, bool]:
    """Return (Y (n, C) bool, S (n, C) float64, is_binary_1d)."""
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_score.ndim == 1:
        if y_true.ndim != 1:
            raise ValueError(f"y_score is 1-D but y_true has shape {y_true.shape}")
        Y = _binary_column(y_true)[:, None]
        S = y_score[:, None]
        binary = True
    elif y_score.ndim == 2:
        n_classes = y_score.shape[1]
        if y_true.ndim == 2:
            if y_true.shape != y_score.shape:
                raise ValueError(f"y_true shape {y_true.shape} != y_score shape {y_score.shape}")
            Y = _binary_column(y_true)
        elif y_true.ndim == 1:
            if n_classes == 1:
                Y = _binary_column(y_true)[:, None]
            else:
                yi = y_true.astype(np.int64)
                if not np.array_equal(yi, y_true) or (yi.size and (yi.min() < 0 or yi.max() >= n_classes)):
                    raise ValueError(f"1-D y_true must hold integer classes in [0, {n_classes})")
                Y = yi[:, None] == np.arange(n_classes)[None, :]
        else:
            raise ValueError(f"y_true must be 1-D or 2-D, got shape {y_true.shape}")
        S = y_score
        binary = False
    else:
        raise ValueError(f"y_score must be 1-D or 2-D, got shape {y_score.shape}")
    if Y.shape[0] != S.shape[0]:
        raise ValueError(f"y_true has {Y.shape[0]} rows but y_score has {S.shape[0]}")
    if not np.isfinite(S).all():
        raise ValueError("y_score contains NaN or infinite values")
    return Y, S, binary


def _binary_column(y: np.ndarray) -> np.ndarray:
    if y.dtype == bool:
        return y
    yb = y.astype(bool)
    if not np.array_equal(yb.astype(y.dtype), y):
        raise ValueError("binary labels must be 0/1 or bool")
    return yb


def _macro(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


# --------------------------------------------------------------------------- AUROC


def _rank_auroc(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Per-column Mann-Whitney AUROC, NaN where a column has a single label value. Shapes (n, C)."""
    n = Y.shape[0]
    n_pos = Y.sum(axis=0).astype(np.float64)
    n_neg = n - n_pos
    out = np.full(Y.shape[1], np.nan)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        return out
    cols = np.flatnonzero(ok)
    pos_rank_sum = _positive_rank_sums(Y[:, cols], S[:, cols])
    out[cols] = (pos_rank_sum - n_pos[cols] * (n_pos[cols] + 1) / 2) / (n_pos[cols] * n_neg[cols])
    return out


def _positive_rank_sums(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Per column, the sum of 1-based average ranks (ties share their mean rank) of rows with Y true."""
    n = S.shape[0]
    order = np.argsort(S, axis=0, kind="stable")
    ss = np.take_along_axis(S, order, axis=0)
    yy = np.take_along_axis(Y, order, axis=0)
    pos = np.arange(n)[:, None]
    new = np.ones(ss.shape, dtype=bool)
    np.not_equal(ss[1:], ss[:-1], out=new[1:])
    last = np.ones(ss.shape, dtype=bool)
    last[:-1] = new[1:]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=0)  # first index of the tie run
    end = np.minimum.accumulate(np.where(last, pos, n)[::-1], axis=0)[::-1]  # last index of the run
    avg_rank = (start + end) / 2.0 + 1.0
    return (avg_rank * yy).sum(axis=0)


def per_class_auroc(y_true, y_score) -> np.ndarray:
    """AUROC per class, shape (C,) ((1,) for binary); NaN for a class with one label value."""
    Y, S, _ = _as_indicators(y_true, y_score)
    return _rank_auroc(Y, S)


def auroc(y_true, y_score) -> float:
    """Binary AUROC, or one-vs-rest macro AUROC over evaluable classes (NaN if none)."""
    return table_metric("auroc_macro", y_true, y_score)


def auroc_details(y_true, y_score, class_names: Sequence[str] | None = None) -> dict:
    """Macro AUROC with the classes it excluded.

    Returns ``{"value": float, "per_class": {name: float|nan}, "excluded": [names]}`` where the
    excluded classes are those with a single value in ``y_true``.
    """
    per = per_class_auroc(y_true, y_score)
    names = list(class_names) if class_names is not None else [str(i) for i in range(per.size)]
    if len(names) != per.size:
        raise ValueError(f"{len(names)} class names for {per.size} classes")
    return {
        "value": _macro(per),
        "per_class": {n: float(v) for n, v in zip(names, per)},
        "excluded": [n for n, v in zip(names, per) if np.isnan(v)],
    }


# --------------------------------------------------------------------------- the table's metrics


def table_metric(name: str, y_true, y_score, threshold: float = 0.5) -> float:
    """Metric ``name`` of the benchmark's metric table (:data:`medssl.bench.column_metrics.METRICS`)
    on one layout of this module: its kernel on the indicator columns, macro over the columns it is
    defined on (NaN if none). Multi-class scores (1-D integer ``y_true``, several score columns)
    are scored as a multiclass task (argmax predictions), the others column by column with hard
    predictions at ``threshold``."""
    from medssl.bench.column_metrics import hard_predictions, metric_def

    Y, S, _ = _as_indicators(y_true, y_score)
    kind = "multiclass" if np.asarray(y_true).ndim == 1 and S.shape[1] > 1 else "multilabel"
    m = metric_def(name, kind)
    values = m.kernel(Y, hard_predictions(S, kind, threshold) if m.uses_predictions else S)
    return _macro(np.where(m.defined(Y, kind), values, np.nan))


def balanced_accuracy(y_true, y_score, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity, macro over evaluable classes.

    Binary / multi-label scores are thresholded at ``threshold`` (probabilities expected);
    multi-class scores use the argmax, giving the usual multi-class balanced accuracy
    (mean recall over classes present in ``y_true``). Single-valued classes are excluded.
    """
    return table_metric("balanced_accuracy", y_true, y_score, threshold)


def f1_macro(y_true, y_score, threshold: float = 0.5) -> float:
    """F1 per class averaged over classes with at least one positive row (NaN if none).

    Predictions as in :func:`balanced_accuracy`; a class never predicted gets F1 = 0.
    """
    return table_metric("f1_macro", y_true, y_score, threshold)


def auprc(y_true, y_score) -> float:
    """Average precision (area under precision-recall, step-wise), macro over classes with positives."""
    return table_metric("auprc", y_true, y_score)


# --------------------------------------------------------------------------- bootstrap


def group_bootstrap_indices(
    groups, n_resamples: int, seed: int = 0, max_rows_per_chunk: int = 2_000_000
) -> Iterator[np.ndarray]:
    """Yield ``n_resamples`` row-index arrays, each a subject-level bootstrap resample.

    ``groups`` (n,) holds the subject of each row (``None``: every row its own group). Each resample
    draws the G distinct groups with replacement and concatenates all rows of every drawn group, so
    resample sizes vary when subjects have different numbers of rows. Index building is vectorised
    over chunks of resamples. Deterministic in (groups, n_resamples, seed).
    """
    if groups is None:
        raise ValueError("groups is None; pass np.arange(n) for row-level resampling")
    groups = np.asarray(groups)
    n = groups.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap zero rows")
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_groups = counts.size
    rng = np.random.default_rng(seed)
    one_row_each = bool((counts == 1).all())
    chunk = max(1, max_rows_per_chunk // max(n, 1))
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        draws = rng.integers(0, n_groups, size=(r, n_groups))
        done += r
        if one_row_each:
            yield from order[draws]
            continue
        flat = draws.ravel()
        cnt = counts[flat]
        ends = np.cumsum(cnt)
        pos = np.arange(ends[-1]) - np.repeat(ends - cnt, cnt)
        rows = order[np.repeat(starts[flat], cnt) + pos]
        per_resample = cnt.reshape(r, n_groups).sum(axis=1)
        yield from np.split(rows, np.cumsum(per_resample)[:-1])


def _replicates(stat: Callable[[np.ndarray], float], groups, n_resamples: int, seed: int) -> np.ndarray:
    """``stat(rows)`` on every subject-level resample (:func:`group_bootstrap_indices`), NaNs dropped."""
    out = np.fromiter((stat(idx) for idx in group_bootstrap_indices(groups, n_resamples, seed)), dtype=np.float64,
                      count=n_resamples)
    return out[~np.isnan(out)]


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true,
    y_score,
    groups,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile ``1 - alpha`` interval from a subject-level bootstrap.

    ``metric_fn(y_true, y_score) -> float``; rows are indexed on the first axis. Resamples where the
    metric is NaN (e.g. a resample without positives) are dropped. Returns ``(point, low, high)``;
    ``low``/``high`` are NaN when no resample gave a finite value.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    point = float(metric_fn(y_true, y_score))
    stats = _replicates(lambda idx: metric_fn(y_true[idx], y_score[idx]), groups, n_resamples, seed)
    if stats.size == 0:
        return point, float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return point, float(low), float(high)


def bootstrap_p_value(deltas) -> float:
    """Two-sided p-value for H0: delta = 0 from bootstrap replicates of delta.

    ``p = min(1, 2 * min(#{d <= 0} + 1, #{d >= 0} + 1) / (B + 1))``: twice the smaller tail mass
    at zero, i.e. the smallest alpha at which the percentile ``1 - alpha`` interval excludes 0
    (test by inverting the percentile interval; the +1 keeps p > 0 with finite B).
    Identical models (all deltas 0) give p = 1; with B = 1000 the smallest p is ~0.002.
    """
    d = np.asarray(deltas, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    le = int((d <= 0).sum())
    ge = int((d >= 0).sum())
    return float(min(1.0, 2.0 * (min(le, ge) + 1) / (d.size + 1)))


def paired_bootstrap_test(
    metric_fn: MetricFn,
    y_true,
    score_a,
    score_b,
    groups,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Paired two-sided test of ``metric(a) - metric(b)`` on the same rows.

    Both models are evaluated on the *same* subject-level resamples; the bootstrap distribution of
    ``delta* = metric(a*) - metric(b*)`` gives a percentile interval and the p-value of
    :func:`bootstrap_p_value` (interval inversion). Resamples where either metric is NaN are dropped.
    Returns ``{"delta", "ci_low", "ci_high", "p_value", "n_resamples"}`` (valid resamples).
    """
    y_true, score_a, score_b = np.asarray(y_true), np.asarray(score_a), np.asarray(score_b)
    if score_a.shape != score_b.shape:
        raise ValueError(f"score_a shape {score_a.shape} != score_b shape {score_b.shape}")
    delta = float(metric_fn(y_true, score_a) - metric_fn(y_true, score_b))
    deltas = _replicates(lambda idx: metric_fn(y_true[idx], score_a[idx]) - metric_fn(y_true[idx], score_b[idx]),
                         groups, n_resamples, seed)
    if deltas.size == 0:
        return {"delta": delta, "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "n_resamples": 0}
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return {"delta": delta, "ci_low": float(low), "ci_high": float(high),
            "p_value": bootstrap_p_value(deltas), "n_resamples": int(deltas.size)}
