"""The benchmark's one metric table (:data:`METRICS`: name, per-column kernel, direction, task
kinds) and its kernels, for vectorised bootstraps.

A kernel maps targets ``Y`` (n, K) and scores or hard predictions ``S`` (n, K) to one value per
column, shape (K,), NaN where the column's metric is undefined on these rows. Benchmarks stack
the columns of every encoder x seed side by side (:func:`medssl.bench.fewshot.two_level_bootstrap`)
so one kernel call scores them all on a bootstrap resample; a macro value is the mean over the
columns a run uses. The kernels agree with :mod:`medssl.bench.metrics` (tested): AUROC is
:func:`medssl.bench.metrics._rank_auroc`; AUPRC equals ``sklearn.metrics.average_precision_score``
(tie groups share one threshold); F1 and balanced accuracy follow
:func:`medssl.bench.metrics.f1_macro` / :func:`~medssl.bench.metrics.balanced_accuracy` on
predictions made by :func:`hard_predictions`.

Metric names (``METRICS``), by task kind:

* classification (binary, multiclass, multilabel): ``auroc_macro``, ``auprc`` (macro average
  precision), ``f1_macro``, ``balanced_accuracy`` (thresholds: 0.5 on probabilities / vote
  fractions; argmax for multiclass);
* regression: ``mae`` (mean absolute error, target units; lower is better), ``pearson_r``;
* segmentation: ``dice``, ``nsd`` (normalised surface Dice at the task's tolerance in mm), ``hd95``
  (mm, lower is better), ``iou`` (Jaccard) -- the default set -- and, on request, the pixel-level
  ``sensitivity``, ``specificity`` and ``auroc`` (of the probabilities; the usual vessel
  segmentation figures), all inside the record's field-of-view mask when it has one: the protocol
  scores each evaluation record once
  (:func:`medssl.bench.segmentation.per_record_scores`), and the kernel is the mean over the
  (resampled) records of that metric's column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medssl.bench.metrics import _rank_auroc

__all__ = [
    "column_auroc", "column_auprc", "column_f1", "column_balanced_accuracy", "column_recall",
    "column_mae", "column_pearson_r", "hard_predictions", "MetricDef", "METRICS",
    "CLASSIFICATION_METRICS", "REGRESSION_METRICS", "SEGMENTATION_METRICS", "SEGMENTATION_DEFAULT_METRICS",
    "metric_def", "column_mean", "metrics_for", "default_metrics", "direction", "CLASSIFICATION_KINDS",
    "SEGMENTATION_SCORES",
]

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def column_auroc(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per column (ties: average ranks); NaN where a column has one label value."""
    return _rank_auroc(np.asarray(Y, dtype=bool), np.asarray(S, dtype=np.float64))


def column_auprc(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Average precision per column: sum over positives of the precision at their score threshold,
    over the number of positives (tied scores share the threshold at the end of their run, as in
    scikit-learn); NaN where a column has no positive."""
    Y = np.asarray(Y, dtype=bool)
    S = np.asarray(S, dtype=np.float64)
    n = S.shape[0]
    n_pos = Y.sum(axis=0)
    out = np.full(Y.shape[1], np.nan)
    if n == 0:
        return out
    order = np.argsort(-S, axis=0, kind="stable")
    ss = np.take_along_axis(S, order, axis=0)
    yy = np.take_along_axis(Y, order, axis=0)
    tp = np.cumsum(yy, axis=0)
    pos = np.arange(n)[:, None]
    last = np.ones(ss.shape, dtype=bool)
    np.not_equal(ss[1:], ss[:-1], out=last[:-1])
    end = np.minimum.accumulate(np.where(last, pos, n)[::-1], axis=0)[::-1]  # last index of the tie run
    precision = np.take_along_axis(tp, end, axis=0) / (end + 1.0)
    ok = n_pos > 0
    out[ok] = (precision * yy).sum(axis=0)[ok] / n_pos[ok]
    return out


def _counts(Y: np.ndarray, P: np.ndarray):
    Y = np.asarray(Y, dtype=bool)
    P = np.asarray(P, dtype=bool)
    tp = (P & Y).sum(axis=0).astype(np.float64)
    fp = (P & ~Y).sum(axis=0).astype(np.float64)
    fn = (~P & Y).sum(axis=0).astype(np.float64)
    tn = (~P & ~Y).sum(axis=0).astype(np.float64)
    return tp, fp, fn, tn


def column_f1(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN) per column of hard predictions P; NaN where a column has no positive."""
    tp, fp, fn, _ = _counts(Y, P)
    out = np.full(tp.shape, np.nan)
    ok = (tp + fn) > 0
    out[ok] = 2 * tp[ok] / (2 * tp[ok] + fp[ok] + fn[ok])
    return out


def column_balanced_accuracy(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """(sensitivity + specificity) / 2 per column; NaN where a column has one label value."""
    tp, fp, fn, tn = _counts(Y, P)
    out = np.full(tp.shape, np.nan)
    ok = ((tp + fn) > 0) & ((tn + fp) > 0)
    out[ok] = (tp[ok] / (tp[ok] + fn[ok]) + tn[ok] / (tn[ok] + fp[ok])) / 2
    return out


def column_recall(Y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Recall per column; NaN without positives. Its macro mean over one-hot columns is the
    multiclass balanced accuracy (mean recall over the classes present)."""
    tp, _, fn, _ = _counts(Y, P)
    out = np.full(tp.shape, np.nan)
    ok = (tp + fn) > 0
    out[ok] = tp[ok] / (tp[ok] + fn[ok])
    return out


def column_mae(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Mean absolute error per column (target units); NaN for zero rows."""
    Y = np.asarray(Y, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    if Y.shape[0] == 0:
        return np.full(Y.shape[1], np.nan)
    return np.abs(Y - S).mean(axis=0)


def column_pearson_r(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Pearson correlation per column; NaN where either side is constant (or fewer than 2 rows)."""
    Y = np.asarray(Y, dtype=np.float64)
    S = np.asarray(S, dtype=np.float64)
    yc = Y - Y.mean(axis=0)
    sc = S - S.mean(axis=0)
    den = np.sqrt((yc ** 2).sum(axis=0) * (sc ** 2).sum(axis=0))
    out = np.full(Y.shape[1], np.nan)
    if Y.shape[0] < 2:
        return out
    ok = (np.ptp(Y, axis=0) > 0) & (np.ptp(S, axis=0) > 0)
    out[ok] = (yc * sc).sum(axis=0)[ok] / den[ok]
    return out


def column_mean(Y: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Mean per column of per-record values S (n, K) (segmentation scores; Y is not read)."""
    S = np.asarray(S, dtype=np.float64)
    return S.mean(axis=0) if S.shape[0] else np.full(S.shape[1], np.nan)


def hard_predictions(S: np.ndarray, kind: str, threshold: float = 0.5) -> np.ndarray:
    """(n, C) bool predictions: one-hot argmax for ``multiclass``, ``S >= threshold`` otherwise."""
    S = np.asarray(S, dtype=np.float64)
    if kind == "multiclass":
        return np.arange(S.shape[1])[None, :] == S.argmax(axis=1)[:, None]
    return S >= threshold


CLASSIFICATION_KINDS = ("binary", "multiclass", "multilabel")
# The columns of the per-record segmentation score table
# (:func:`medssl.bench.segmentation.per_record_scores`; its SCORE_COLUMNS is this tuple).
SEGMENTATION_SCORES = ("dice", "nsd", "hd95", "iou", "sensitivity", "specificity", "auroc")


@dataclass(frozen=True)
class MetricDef:
    """One row of the benchmark's metric table: its name, per-column kernel, direction, the task
    kinds it scores (``default``: scored when a task names no metrics), whether it reads hard
    predictions, which eval columns it is defined on (``needs_negatives``: both label values; else
    positives only; regression and segmentation: always), and for segmentation the column of the
    per-record score table it averages."""

    name: str
    kernel: Kernel
    kinds: tuple[str, ...]
    higher_is_better: bool = True
    default: bool = False
    uses_predictions: bool = False
    needs_negatives: bool = True
    score_column: int | None = None

    def defined(self, Y: np.ndarray, kind: str) -> np.ndarray:
        """(C,) bool: columns of the evaluation targets Y (n, C) on which the metric is defined."""
        if kind in ("regression", "segmentation"):
            return np.ones(Y.shape[1], dtype=bool)
        Y = np.asarray(Y, dtype=bool)
        pos = Y.any(axis=0)
        return pos & ~Y.all(axis=0) if self.needs_negatives else pos

    def columns(self, Y: np.ndarray, S: np.ndarray, kind: str) -> np.ndarray:
        """Per-column values for scores S (hard predictions are made here when needed)."""
        return self.kernel(Y, hard_predictions(S, kind) if self.uses_predictions else S)


_TABLE: tuple[MetricDef, ...] = (
    MetricDef("auroc_macro", column_auroc, CLASSIFICATION_KINDS, default=True),
    MetricDef("auprc", column_auprc, CLASSIFICATION_KINDS, needs_negatives=False),
    MetricDef("f1_macro", column_f1, CLASSIFICATION_KINDS, uses_predictions=True, needs_negatives=False),
    MetricDef("balanced_accuracy", column_balanced_accuracy, CLASSIFICATION_KINDS, uses_predictions=True),
    MetricDef("mae", column_mae, ("regression",), higher_is_better=False, default=True),
    MetricDef("pearson_r", column_pearson_r, ("regression",), default=True),
    *(MetricDef(name, column_mean, ("segmentation",), higher_is_better=name != "hd95",
                default=name in ("dice", "nsd", "hd95", "iou"), score_column=i)
      for i, name in enumerate(SEGMENTATION_SCORES)),
)
METRICS: dict[str, MetricDef] = {m.name: m for m in _TABLE}
# Multiclass balanced accuracy is the mean recall over the classes present
# (as :func:`medssl.bench.metrics.balanced_accuracy`).
_MULTICLASS = {"balanced_accuracy": MetricDef("balanced_accuracy", column_recall, CLASSIFICATION_KINDS,
                                              uses_predictions=True, needs_negatives=False)}


def metrics_for(kind: str) -> tuple[str, ...]:
    """The metric names a task of ``kind`` may ask for, in table order."""
    return tuple(m.name for m in _TABLE if kind in m.kinds)


def default_metrics(kind: str) -> tuple[str, ...]:
    """The metrics of a task of ``kind`` that names none."""
    return tuple(m.name for m in _TABLE if kind in m.kinds and m.default)


def direction(name: str) -> bool:
    """``higher_is_better`` of metric ``name`` (KeyError for a name not in the table)."""
    return METRICS[name].higher_is_better


CLASSIFICATION_METRICS = metrics_for("binary")
REGRESSION_METRICS = metrics_for("regression")
SEGMENTATION_METRICS = metrics_for("segmentation")
SEGMENTATION_DEFAULT_METRICS = default_metrics("segmentation")


def metric_def(name: str, kind: str) -> MetricDef:
    """The definition of metric ``name`` for a task of ``kind``."""
    if kind == "multiclass" and name in _MULTICLASS:
        return _MULTICLASS[name]
    return METRICS[name]
