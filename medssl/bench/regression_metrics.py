"""Regression metrics (e.g. brain age, FOMO25 task 3: mean absolute error and Pearson r).

Both take ``(y_true, y_pred)`` 1-D arrays of n values (an ``(n, 1)`` column is accepted) and return a
float, so they are valid ``metric_fn(y_true, y_score)`` arguments of
:func:`medssl.bench.metrics.bootstrap_ci` / ``paired_bootstrap_test`` (rows indexed on the first axis).

* :func:`mae`: mean |y_true - y_pred|, in the units of y (lower is better).
* :func:`pearson_r`: Pearson correlation of y_pred with y_true (higher is better). It is undefined
  when either input is constant (zero variance) or n < 2: we return NaN, as ``scipy.stats.pearsonr``
  does (it also warns; we do not). Inside a bootstrap, NaN resamples are dropped by ``bootstrap_ci``;
  in a ranking (:mod:`medssl.bench.ranking`) a NaN ranks last -- a model predicting one constant value
  has no correlation to speak of.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mae", "pearson_r"]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} values but y_pred has {p.shape[0]}")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true / y_pred contain NaN or infinite values")
    return t, p


def mae(y_true, y_pred) -> float:
    """Mean absolute error; NaN for zero rows."""
    t, p = _pair(y_true, y_pred)
    return float(np.abs(t - p).mean()) if t.size else float("nan")


def pearson_r(y_true, y_pred) -> float:
    """Pearson correlation coefficient in [-1, 1]; NaN if n < 2 or either input is constant."""
    t, p = _pair(y_true, y_pred)
    # exact constancy test: mean-centring identical floats can leave ~1e-17 residues
    if t.size < 2 or t.max() == t.min() or p.max() == p.min():
        return float("nan")
    tc, pc = t - t.mean(), p - p.mean()
    r = float(np.dot(tc, pc) / np.sqrt(np.dot(tc, tc) * np.dot(pc, pc)))
    return min(1.0, max(-1.0, r))
