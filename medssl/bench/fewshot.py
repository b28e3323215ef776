"""Few-shot draws, the linear probe and the two-level bootstrap of the benchmark
(:func:`medssl.bench.runner.run_benchmark`, which runs them for encoders x eval domains x shots x
seeds):

1. ``sample_few_shot`` draws k labelled *subjects* per class from the training rows (never a
   subset of a subject's records). The draw depends only on (subject ids, labels, k, seed), never on
   the embeddings, so every encoder is trained on exactly the same rows: comparisons are paired.
2. ``linear_probe`` fits a standardised L2 logistic regression per class (one-vs-rest) on the
   frozen embeddings of the drawn rows and scores the evaluation rows.
3. Each run's metric, aggregated over seeds with :func:`two_level_bootstrap` (test subjects and
   seeds), and paired encoder comparisons.

Multi-label sampling choice: for multi-hot labels (and binary labels) the "no finding" subjects
(no positive record in any class) form one extra pool, drawn like a class, so the probe always sees
negatives; with C classes a k-shot draw therefore holds about k * (C + 1) subjects. Pools are drawn
rarest first (ties by class index), each from subjects not drawn yet; a subject drawn for one class
that is also positive for another still counts as a positive there, so in multi-label data a class
can have more than k positive subjects, never fewer than min(k, its pool size).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medssl.bench.metrics import _rank_auroc, group_bootstrap_indices
from medssl.bench.probe_grid import MAX_BATCHED_DIM, fit_logistic_heads

__all__ = [
    "FewShotWarning",
    "FewShotDraw",
    "few_shot_draw",
    "sample_few_shot",
    "linear_probe",
    "two_level_bootstrap",
    "percentile_interval",
    "NO_FINDING",
]

NO_FINDING = "<no finding>"
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


class FewShotWarning(UserWarning):
    """A class had fewer than k subjects available for a few-shot draw."""


@dataclass(frozen=True)
class FewShotDraw:
    """One few-shot draw.

    indices: sorted row indices (all records of the chosen subjects).
    subjects: chosen subject ids (sorted).
    drawn_for: pool name -> number of subjects drawn for that pool (k unless the pool was short).
    positive_subjects: class name -> number of chosen subjects positive for it.
    warnings: one line per pool with fewer than k subjects.
    """

    indices: np.ndarray
    subjects: np.ndarray
    drawn_for: dict[str, int]
    positive_subjects: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def _subject_pools(subject_ids, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Return (unique subjects, row -> subject index, pools (S, P) bool, pool names, class names)."""
    subject_ids = np.asarray(subject_ids)
    labels = np.asarray(labels)
    if subject_ids.ndim != 1 or labels.shape[0] != subject_ids.shape[0]:
        raise ValueError(f"subject_ids {subject_ids.shape} and labels {labels.shape} disagree on rows")
    subjects, inverse = np.unique(subject_ids, return_inverse=True)
    inverse = inverse.ravel()
    if labels.ndim == 1 and labels.dtype == bool:
        labels = labels[:, None]
    if labels.ndim == 2:
        if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
            raise ValueError("2-D labels must be multi-hot 0/1 or bool")
        Y = labels.astype(bool)
        class_names = [str(c) for c in range(Y.shape[1])]
        with_negatives = True
    elif labels.ndim == 1:
        values = np.unique(labels)
        Y = labels[:, None] == values[None, :]
        class_names = [str(v) for v in values]
        with_negatives = False
    else:
        raise ValueError(f"labels must be 1-D or 2-D, got shape {labels.shape}")
    pos = np.zeros((subjects.size, Y.shape[1]), dtype=bool)
    np.logical_or.at(pos, inverse, Y)
    pools, names = pos, list(class_names)
    if with_negatives:
        pools = np.column_stack([pos, ~pos.any(axis=1)])
        names.append(NO_FINDING)
    return subjects, inverse, pools, names, class_names


def few_shot_draw(subject_ids, labels, k: int | str | None, seed: int) -> FewShotDraw:
    """Draw k subjects per class (plus the no-finding pool for multi-hot labels); see module doc.

    subject_ids: (n,) subject of each row. labels: (n, C) multi-hot bool/0-1, (n,) bool (binary,
    same as C = 1) or (n,) integer classes. k: positive int, or "all"/None for every row.
    Deterministic in (subject_ids, labels, k, seed) and independent of row order.
    """
    subjects, inverse, pools, names, class_names = _subject_pools(subject_ids, labels)
    n_cls = len(class_names)
    if k is None or k == "all":
        chosen = np.ones(subjects.size, dtype=bool)
        drawn_for = {nm: int(pools[:, i].sum()) for i, nm in enumerate(names)}
        messages: list[str] = []
    else:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, 'all' or None, got {k!r}")
        rng = np.random.default_rng(seed)
        chosen = np.zeros(subjects.size, dtype=bool)
        drawn_for, messages = {}, []
        sizes = pools.sum(axis=0)
        for p in sorted(range(len(names)), key=lambda i: (sizes[i], i)):
            candidates = np.flatnonzero(pools[:, p] & ~chosen)
            take = min(int(k), candidates.size)
            if sizes[p] < k:
                messages.append(f"class {names[p]!r}: only {int(sizes[p])} subject(s) for k={k}; took all")
            if take:
                chosen[rng.choice(candidates, size=take, replace=False)] = True
            drawn_for[names[p]] = take
    indices = np.flatnonzero(chosen[inverse])
    positive = {nm: int((pools[:, i] & chosen).sum()) for i, nm in enumerate(class_names[:n_cls])}
    for m in messages:
        warnings.warn(m, FewShotWarning, stacklevel=3)
    return FewShotDraw(indices, subjects[chosen], drawn_for, positive, messages)


def sample_few_shot(subject_ids, labels, k: int | str | None, seed: int) -> np.ndarray:
    """Row indices (sorted) of a k-subjects-per-class draw; see :func:`few_shot_draw`."""
    return few_shot_draw(subject_ids, labels, k, seed).indices


# --------------------------------------------------------------------------- linear probe


def _fit_binary(x: np.ndarray, y: np.ndarray, C: float, seed: int, max_iter: int) -> LogisticRegression:
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)
    return model.fit(x, y)


def _choose_C(x, y, groups, c_grid, n_folds, seed, max_iter) -> float:
    """Inner-CV choice of C by mean fold AUROC, or 1.0 when a class has < n_folds groups per side."""
    g = np.arange(y.size) if groups is None else groups
    if len(c_grid) < 2 or min(np.unique(g[y]).size, np.unique(g[~y]).size) < n_folds:
        return 1.0
    if groups is None:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y)
    else:
        splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups)
    scores = np.zeros((len(c_grid), n_folds))
    for f, (tr, va) in enumerate(splits):
        if y[tr].all() or not y[tr].any():
            scores[:, f] = np.nan
            continue
        scaler = StandardScaler().fit(x[tr])
        xt, xv = scaler.transform(x[tr]), scaler.transform(x[va])
        for i, C in enumerate(c_grid):
            s = _fit_binary(xt, y[tr], C, seed, max_iter).decision_function(xv)
            scores[i, f] = _rank_auroc(y[va][:, None], s[:, None])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(scores, axis=1)
    if np.isnan(mean).all():
        return 1.0
    return float(c_grid[int(np.nanargmax(mean))])  # first maximum: the strongest regularisation


def linear_probe(
    train_x,
    train_y,
    test_x,
    *,
    seed: int,
    groups=None,
    n_classes: int | None = None,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    n_folds: int = 3,
    max_iter: int = 1000,
    blas_threads: int | None = 1,
) -> np.ndarray:
    """Standardised L2 logistic-regression probe; returns scores (probabilities) for ``test_x``.

    train_x (n, D), test_x (m, D) float features (standardised with train mean/std).
    train_y: (n, C) multi-hot -> scores (m, C), one independent binary model per class
    (one-vs-rest); (n,) binary 0/1/bool -> scores (m,); (n,) integer classes with labels > 1 or
    ``n_classes`` given -> one-hot, scores (m, n_classes) one-vs-rest.
    C (inverse L2 strength) per class from ``c_grid`` by ``n_folds``-fold inner CV on mean AUROC
    (folds grouped by ``groups``, e.g. subject ids, when given; stratified by row otherwise), only
    when the class has at least ``n_folds`` distinct groups on each side; else C = 1.0.
    A class with a single value in ``train_y`` cannot be fitted: its column is the constant 0.5
    (AUROC 0.5 if it is scored; :func:`medssl.bench.runner.run_benchmark` excludes such classes instead).
    ``blas_threads``: BLAS and torch threads during fitting (1 by default: lbfgs and the batched
    grid on few-shot-sized problems are many times slower with contended multi-threaded kernels
    (measured: 698 s vs 71 s for a 62-probe sweep on a loaded 2-core machine); None leaves the
    library defaults).
    Features up to ``probe_grid.MAX_BATCHED_DIM`` wide are fitted as one batched grid (every class x
    fold x C head of the inner CV in one Newton solve, :mod:`medssl.bench.probe_grid`); wider ones
    one scikit-learn model at a time. Both minimise the same objective on the same folds.
    """
    if blas_threads is None:
        return _linear_probe(train_x, train_y, test_x, seed, groups, n_classes, c_grid, n_folds, max_iter)
    import torch

    torch_threads = torch.get_num_threads()  # the batched grid's small torch ops, likewise
    torch.set_num_threads(blas_threads)
    try:
        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return _linear_probe(train_x, train_y, test_x, seed, groups, n_classes, c_grid, n_folds, max_iter)
    finally:
        torch.set_num_threads(torch_threads)


def _linear_probe(train_x, train_y, test_x, seed, groups, n_classes, c_grid, n_folds, max_iter) -> np.ndarray:
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    y = np.asarray(train_y)
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"feature shapes disagree: train {train_x.shape}, test {test_x.shape}")
    if y.shape[0] != train_x.shape[0]:
        raise ValueError(f"train_y has {y.shape[0]} rows, train_x {train_x.shape[0]}")
    squeeze = False
    if y.ndim == 1:
        yi = y.astype(np.int64)
        if n_classes is None and np.isin(yi, (0, 1)).all():
            Y, squeeze = yi.astype(bool)[:, None], True
        else:
            n_cls = int(yi.max()) + 1 if n_classes is None else int(n_classes)
            Y = yi[:, None] == np.arange(n_cls)[None, :]
    else:
        Y = y.astype(bool)
    if groups is not None:
        groups = np.asarray(groups)
    if train_x.shape[1] <= MAX_BATCHED_DIM:
        out = _batched_probe(train_x, Y, test_x, seed, groups, tuple(c_grid), n_folds)
        return out[:, 0] if squeeze else out
    scaler = StandardScaler().fit(train_x)
    xt, xs = scaler.transform(train_x), scaler.transform(test_x)
    out = np.full((test_x.shape[0], Y.shape[1]), 0.5)
    for c in range(Y.shape[1]):
        yc = Y[:, c]
        if yc.all() or not yc.any():
            continue
        C = _choose_C(train_x, yc, groups, tuple(c_grid), n_folds, seed, max_iter)
        out[:, c] = _fit_binary(xt, yc, C, seed, max_iter).predict_proba(xs)[:, 1]
    return out[:, 0] if squeeze else out


def _cv_folds(x, y, groups, c_grid, n_folds, seed) -> list | None:
    """The inner-CV (train, validation) splits of :func:`_choose_C`, or None when C = 1.0 is used."""
    g = np.arange(y.size) if groups is None else groups
    if len(c_grid) < 2 or min(np.unique(g[y]).size, np.unique(g[~y]).size) < n_folds:
        return None
    if groups is None:
        return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y))
    return list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups))


def _batched_probe(train_x, Y, test_x, seed, groups, c_grid, n_folds) -> np.ndarray:
    """:func:`linear_probe`'s per-class C choice and final fits with every (class, fold, C) head of
    the inner CV fitted in one batched solve, then every class's final head in another
    (:mod:`medssl.bench.probe_grid`); same folds, standardisation and selection rule as the
    one-model-at-a-time path."""
    n, K = Y.shape
    fit = [c for c in range(K) if Y[:, c].any() and not Y[:, c].all()]
    heads, folds_of = [], {}
    for c in fit:
        folds = _cv_folds(train_x, Y[:, c], groups, c_grid, n_folds, seed)
        folds_of[c] = folds
        for f, (tr, va) in enumerate(folds or []):
            if Y[tr, c].all() or not Y[tr, c].any():
                continue
            xf = StandardScaler().fit(train_x[tr]).transform(train_x)
            w = np.zeros(n)
            w[tr] = 1.0
            heads += [(c, f, i, xf, w, va) for i in range(len(c_grid))]
    chosen = {c: 1.0 for c in fit}
    if heads:
        coef, b = fit_logistic_heads(np.stack([h[3] for h in heads]), np.stack([Y[:, h[0]] for h in heads]),
                                     np.stack([h[4] for h in heads]), np.array([c_grid[h[2]] for h in heads]))
        scores = {c: np.full((len(c_grid), n_folds), np.nan) for c in fit}
        for j, (c, f, i, xf, _, va) in enumerate(heads):
            s = xf[va] @ coef[j] + b[j]
            scores[c][i, f] = _rank_auroc(Y[va, c][:, None], s[:, None])[0]
        for c in fit:
            if folds_of[c] is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(scores[c], axis=1)
            if not np.isnan(mean).all():
                chosen[c] = float(c_grid[int(np.nanargmax(mean))])  # first maximum: strongest regularisation
    out = np.full((test_x.shape[0], K), 0.5)
    if fit:
        scaler = StandardScaler().fit(train_x)
        coef, b = fit_logistic_heads(scaler.transform(train_x), Y[:, fit].T, np.ones((len(fit), n)),
                                     np.array([chosen[c] for c in fit]))
        logits = scaler.transform(test_x) @ coef.T + b[None, :]
        out[:, fit] = 1.0 / (1.0 + np.exp(-logits))
    return out


# --------------------------------------------------------------------------- evaluation


def two_level_bootstrap(Y, scores, cols, groups, n_boot, seed, column_stat=None) -> np.ndarray:
    """stat[e, b]: mean over resampled seeds of a macro metric on resampled subjects.

    Y: (n, C) targets of the evaluation rows. scores[e][s]: (n, C) scores (or hard predictions,
    for threshold metrics) of encoder e, seed s; cols[s]: class columns used for seed s.
    column_stat(Y (m, K), S (m, K)) -> (K,) per-column metric, NaN where undefined (default:
    Mann-Whitney AUROC); all encoders and seeds are scored in one call per replicate.
    Subjects resampled with :func:`group_bootstrap_indices` (same seed -> same resamples as
    :func:`paired_bootstrap_test`); seeds resampled with replacement from an independent stream,
    the same for every domain with the same number of seeds.
    """
    column_stat = _rank_auroc if column_stat is None else column_stat
    n_enc, n_seed, n_cls = len(scores), len(scores[0]), Y.shape[1]
    S_all = np.concatenate([scores[e][s] for e in range(n_enc) for s in range(n_seed)], axis=1)
    Y_all = np.tile(Y, (1, n_enc * n_seed))
    use = np.zeros((n_enc, n_seed, n_cls), dtype=bool)
    for s in range(n_seed):
        use[:, s, cols[s]] = True
    A = np.full((n_enc, n_seed, n_boot), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b, idx in enumerate(group_bootstrap_indices(groups, n_boot, seed)):
            per = column_stat(Y_all[idx], S_all[idx]).reshape(n_enc, n_seed, n_cls)
            per = np.where(use, per, np.nan)  # all-NaN rows -> NaN mean (warning silenced)
            A[:, :, b] = np.nanmean(per, axis=2)
    if n_seed == 1:
        return A[:, 0, :]
    pick = np.random.default_rng([seed, 1]).integers(0, n_seed, size=(n_boot, n_seed))
    picked = A[:, pick, np.arange(n_boot)[:, None]]  # (E, B, S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(picked, axis=2)



def percentile_interval(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile ``1 - alpha`` interval of bootstrap replicates, NaNs dropped (NaN, NaN if none)."""
    stats = stats[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)



def _std(values: np.ndarray) -> float:
    if values.size == 0:
        return float("nan")
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _shots_key(s) -> str | int:
    if s is None or s == "all":
        return "all"
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
        raise ValueError(f"shots entries must be positive ints or 'all', got {s!r}")
    return int(s)
