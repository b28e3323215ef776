"""Evaluation protocols on frozen embeddings: linear probe, cosine k-NN, and label-fraction draws.

* :func:`linear_probe` (from :mod:`medssl.bench.fewshot`): standardised L2 logistic regression per
  class; :func:`ridge_probe` is its regression counterpart.
* :func:`knn_probe`: cosine k-nearest neighbours with similarity-weighted votes (the k-NN monitor
  of Wu et al. 2018 / DINO, Caron et al. 2021): weights ``exp(cos / temperature)``,
  ``temperature = 0.07``. Classification scores are the weighted vote fractions per class (in
  [0, 1]; multilabel: per class, the weighted fraction of neighbours positive for it); regression
  predictions are the weighted mean of the neighbours' targets.
* :func:`label_fraction_draw`: a fraction of the training *subjects* (all their records), stratified
  by a per-subject stratum where possible; it depends only on (subject ids, labels, fraction,
  seed), never on embeddings, so every encoder gets the same draw (paired comparisons).
* Few-shot draws (k subjects per class) are :func:`medssl.bench.fewshot.few_shot_draw`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold
from sklearn.preprocessing import StandardScaler

from medssl.bench.fewshot import linear_probe

__all__ = ["linear_probe", "knn_probe", "ridge_probe", "LabelFractionDraw", "label_fraction_draw",
           "DEFAULT_ALPHA_GRID", "KNN_TEMPERATURE"]

KNN_TEMPERATURE = 0.07
DEFAULT_ALPHA_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def knn_probe(train_x, train_y, test_x, k: int, *, temperature: float = KNN_TEMPERATURE,
              regression: bool = False, batch_size: int = 4096) -> np.ndarray:
    """Cosine k-NN scores for ``test_x`` (m, D) from ``train_x`` (n, D) with targets ``train_y``.

    train_y: (n, C) multi-hot / one-hot -> (m, C) weighted vote fractions; (n,) binary 0/1/bool ->
    (m,) fractions; with ``regression``, (n,) or (n, T) float targets -> weighted means of the same
    trailing shape. ``k`` is capped at n. Neighbour j of a test row gets weight
    ``exp(cos_j / temperature)``; ties in similarity are broken by training-row order.
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    y = np.asarray(train_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"feature shapes disagree: train {train_x.shape}, test {test_x.shape}")
    if y.shape[0] != train_x.shape[0] or train_x.shape[0] == 0:
        raise ValueError(f"train_y has {y.shape[0]} rows, train_x {train_x.shape[0]} (need >= 1)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    squeeze = y.ndim == 1
    Y = (y.astype(np.float64) if regression else y.astype(bool).astype(np.float64)).reshape(y.shape[0], -1)
    k = min(int(k), train_x.shape[0])
    a, b = _l2_normalise(train_x), _l2_normalise(test_x)
    out = np.empty((test_x.shape[0], Y.shape[1]))
    for start in range(0, b.shape[0], batch_size):
        sim = b[start:start + batch_size] @ a.T  # (m', n)
        nn = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(sim, nn, axis=1)
        w = np.exp((s - s[:, :1]) / temperature)  # shifted by the row max: same ratios, no overflow
        out[start:start + batch_size] = np.einsum("mk,mkc->mc", w, Y[nn]) / w.sum(axis=1, keepdims=True)
    return out[:, 0] if squeeze else out


def ridge_probe(train_x, train_y, test_x, *, groups=None, alpha_grid: Sequence[float] = DEFAULT_ALPHA_GRID,
                n_folds: int = 3) -> np.ndarray:
    """Standardised ridge regression (the regression linear probe); returns predictions for test_x.

    train_y (n,) or (n, T) float targets. The L2 strength is chosen from ``alpha_grid`` by
    ``n_folds``-fold inner CV on mean absolute error (folds grouped by ``groups``, e.g. subjects,
    when given) if there are at least ``n_folds`` groups; else alpha = 1.0.
    """
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    y = np.asarray(train_y, dtype=np.float64)
    if y.shape[0] != train_x.shape[0] or train_x.shape[0] == 0:
        raise ValueError(f"train_y has {y.shape[0]} rows, train_x {train_x.shape[0]} (need >= 1)")
    g = np.arange(y.shape[0]) if groups is None else np.asarray(groups)
    alpha = 1.0
    if len(alpha_grid) > 1 and np.unique(g).size >= n_folds:
        splitter = KFold(n_folds) if groups is None else GroupKFold(n_folds)
        err = np.zeros(len(alpha_grid))
        for tr, va in splitter.split(train_x, y, g):
            sc = StandardScaler().fit(train_x[tr])
            for i, a in enumerate(alpha_grid):
                pred = Ridge(alpha=a).fit(sc.transform(train_x[tr]), y[tr]).predict(sc.transform(train_x[va]))
                err[i] += np.abs(pred - y[va]).mean()
        alpha = float(alpha_grid[int(np.argmin(err))])
    sc = StandardScaler().fit(train_x)
    return Ridge(alpha=alpha).fit(sc.transform(train_x), y).predict(sc.transform(test_x))


@dataclass(frozen=True)
class LabelFractionDraw:
    """indices: sorted row indices (all records of the drawn subjects); subjects: drawn ids (sorted);
    per_stratum: stratum name -> (drawn, available) subjects; warnings: short strata."""

    indices: np.ndarray
    subjects: np.ndarray
    per_stratum: dict[str, tuple[int, int]]
    warnings: list[str] = field(default_factory=list)


def _subject_strata(subjects: np.ndarray, inverse: np.ndarray, labels: np.ndarray, regression: bool,
                    n_bins: int) -> list[str]:
    """One stratum name per subject (see :func:`label_fraction_draw`)."""
    labels = np.asarray(labels)
    if regression:
        y = labels.astype(np.float64).reshape(labels.shape[0], -1)[:, 0]
        mean = np.bincount(inverse, weights=y, minlength=subjects.size) / np.bincount(inverse, minlength=subjects.size)
        if np.unique(mean).size < 2:
            return ["all"] * subjects.size
        edges = np.quantile(mean, np.linspace(0, 1, n_bins + 1)[1:-1])
        return [f"bin{int(b)}" for b in np.searchsorted(edges, mean, side="right")]
    Y = labels.reshape(labels.shape[0], -1)
    if Y.dtype != bool and not np.isin(Y, (0, 1)).all():
        raise ValueError("classification labels must be (n,) or (n, C) 0/1 or bool (one-hot for multiclass)")
    pos = np.zeros((subjects.size, Y.shape[1]), dtype=bool)
    np.logical_or.at(pos, inverse, Y.astype(bool))
    prevalence = pos.sum(axis=0)
    out = []
    for row in pos:
        cols = np.flatnonzero(row)
        out.append("none" if cols.size == 0 else f"class {int(cols[np.argmin(prevalence[cols])])}")
    return out


def label_fraction_draw(subject_ids, labels, fraction: float, seed: int, *, regression: bool = False,
                        n_bins: int = 5) -> LabelFractionDraw:
    """Draw ``fraction`` of the training subjects, stratified, deterministic in (subjects, labels, seed).

    labels: (n,) / (n, C) 0/1 or bool (multi-hot; one-hot for multiclass), or float targets with
    ``regression``. Strata (one per subject): the subject's rarest positive class (its class, for
    one-hot labels), or "none"; regression -> quintile bin (``n_bins``) of the
    subject's mean target. Each stratum of size s gives ``max(1, round(fraction * s))`` subjects
    (so every stratum is represented; with tiny fractions the total can exceed fraction x subjects).
    ``fraction`` 1.0 takes every subject. Independent of row order.
    """
    if isinstance(fraction, bool) or not 0 < float(fraction) <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    subject_ids = np.asarray(subject_ids)
    subjects, inverse = np.unique(subject_ids, return_inverse=True)
    inverse = inverse.ravel()
    if np.asarray(labels).shape[0] != subject_ids.shape[0]:
        raise ValueError(f"labels have {np.asarray(labels).shape[0]} rows, subject_ids {subject_ids.shape[0]}")
    strata = np.asarray(_subject_strata(subjects, inverse, np.asarray(labels), regression, n_bins))
    chosen = np.zeros(subjects.size, dtype=bool)
    per: dict[str, tuple[int, int]] = {}
    messages: list[str] = []
    rng = np.random.default_rng(seed)
    for name in sorted(set(strata.tolist())):
        members = np.flatnonzero(strata == name)
        take = members.size if fraction >= 1 else max(1, round(fraction * members.size))
        take = min(take, members.size)
        if fraction < 1 and fraction * members.size < 0.5:
            messages.append(f"stratum {name!r}: {members.size} subject(s); fraction {fraction:g} rounds to 0, took 1")
        chosen[rng.choice(members, size=take, replace=False)] = True
        per[name] = (int(take), int(members.size))
    return LabelFractionDraw(np.flatnonzero(chosen[inverse]), subjects[chosen], per, messages)
