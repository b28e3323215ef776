"""A grid of L2 logistic-regression probes fitted in one batched solve over cached features.

In the spirit of dinov2's linear evaluation (many linear heads, one per learning rate, trained
together in one pass over the features), every (class, fold, C) head of a probe's inner
cross-validation is solved at once, and then every class's final head: stacked damped Newton iterations with
batched Cholesky solves (torch, float64), each head with its own step halving, instead of one
scikit-learn ``lbfgs`` fit per head.

Each head minimises scikit-learn's ``LogisticRegression(penalty="l2", C=C)`` objective, over the
rows in its training set (row weights 0/1):

    C * sum_i w_i * log(1 + exp(-s_i (x_i . beta + b))) + 0.5 * ||beta||^2,  s_i = +-1,

the intercept unpenalised, so the solutions agree with scikit-learn's to solver tolerance (tested).
Newton costs O(n D^2 + D^3) per head and iteration: it is used while D <= ``MAX_BATCHED_DIM``;
wider features fall back to scikit-learn per head.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_BATCHED_DIM = 256
_MAX_CHUNK_BYTES = 64 * 2**20


def _logits(X: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    return torch.bmm(X, theta[..., None])[..., 0]


def _objective(X: torch.Tensor, s: torch.Tensor, w: torch.Tensor, C: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    z = _logits(X, theta)
    loss = torch.nn.functional.softplus(-s * z)
    return C * (w * loss).sum(1) + 0.5 * (theta[:, :-1] ** 2).sum(1)


def _newton(X, s, w, C, max_iter: int, tol: float) -> torch.Tensor:
    """Heads h with features X (H, n, D+1) (a ones column last; may be an expanded view), s (H, n)
    +-1, w (H, n) row weights, C (H,). Returns theta (H, D+1), the intercept last."""
    H, n, d1 = X.shape
    theta = X.new_zeros(H, d1)
    reg = torch.ones(d1, dtype=X.dtype)
    reg[-1] = 1e-10  # the intercept is not penalised; a tiny ridge keeps the system definite
    f = _objective(X, s, w, C, theta)
    active = torch.ones(H, dtype=torch.bool)
    for _ in range(max_iter):
        p = torch.sigmoid(s * _logits(X, theta))  # probability of the observed side
        g = C[:, None] * torch.bmm((w * (p - 1) * s)[:, None, :], X)[:, 0] + reg * theta * (reg > 1e-9)
        curv = C[:, None] * w * p * (1 - p)
        Hm = torch.bmm(X.transpose(1, 2) * curv[:, None, :], X) + torch.diag_embed(reg.expand(H, d1))
        step = torch.cholesky_solve(g[..., None], torch.linalg.cholesky(Hm))[..., 0]
        t = torch.ones(H, dtype=X.dtype)
        new = theta - t[:, None] * step
        f_new = _objective(X, s, w, C, new)
        for _ in range(30):  # step halving, per head, until the objective does not increase
            bad = f_new > f + 1e-12 * f.abs()
            if not bad.any():
                break
            t = torch.where(bad, t / 2, t)
            new = theta - t[:, None] * step
            f_new = _objective(X, s, w, C, new)
        decrement = (g * step).sum(1)
        theta = torch.where(active[:, None], new, theta)
        f = torch.where(active, f_new, f)
        active = active & (decrement.abs() > tol * (1 + f.abs()))
        if not active.any():
            break
    return theta


def fit_logistic_heads(X: np.ndarray, y: np.ndarray, weights: np.ndarray, Cs: np.ndarray, *,
                       max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Fit H heads at once; returns (coef (H, D), intercept (H,)).

    X: (n, D) features shared by every head, or (H, n, D), one standardisation per head (e.g. per
    cross-validation fold); y: (H, n) bool targets; weights: (H, n) 0/1, the rows each head trains
    on; Cs: (H,) inverse L2 strengths. Heads are solved in chunks that keep the Hessians under
    64 MiB.
    """
    X = np.asarray(X, dtype=np.float64)
    H = len(Cs)
    n, d = X.shape[-2:]
    Xt = torch.from_numpy(np.concatenate([X, np.ones((*X.shape[:-1], 1))], axis=-1))
    Xt = Xt.expand(H, n, d + 1) if Xt.ndim == 2 else Xt
    s = torch.from_numpy(np.where(np.asarray(y, bool), 1.0, -1.0))
    w = torch.from_numpy(np.asarray(weights, dtype=np.float64))
    C = torch.from_numpy(np.asarray(Cs, dtype=np.float64))
    chunk = max(1, _MAX_CHUNK_BYTES // (8 * (d + 1) * (d + 1 + n)))
    theta = torch.cat([_newton(Xt[i:i + chunk], s[i:i + chunk], w[i:i + chunk], C[i:i + chunk], max_iter, tol)
                       for i in range(0, len(C), chunk)]).numpy()
    return theta[:, :-1], theta[:, -1]
