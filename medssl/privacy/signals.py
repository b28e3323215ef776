"""Per-record membership signals from an SSL method or encoder, for the attacks in
:mod:`medssl.privacy.attacks`.

* :func:`ssl_loss_signal`: the SSL method's own training loss on each record, for Q queries
  (Q draws of the method's augmentations / masks). Feed ``-loss`` to LiRA, ``exp(-loss)`` to RMIA.
* :func:`augmentation_consistency`: mean pairwise cosine similarity of the embeddings of
  augmented views (EncoderMI, Liu et al. 2021: members of a contrastive encoder's training set get
  more consistent embeddings across views). In [-1, 1]; map with (1 + s) / 2 for a (0, 1] signal
  (RMIA, or LiRA with ``transform="logit"``).
* :func:`knn_distance`: mean distance to the k nearest population embeddings (chunked); a
  lower distance = more member-like, so use ``-distance`` as a score.

x is a batch of preprocessed inputs as the methods receive them ((B, n_leads, n_samples) ECG
windows, (B, C, *spatial) images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["augmentation_consistency", "knn_distance", "ssl_loss_signal"]

_QUERY_STRIDE = 100_003  # step = seed * stride + query: distinct (seed, query) -> distinct step


class _EvalMode:
    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc):
        self.module.train(self.was_training)


@torch.no_grad()
def ssl_loss_signal(method: nn.Module, x: Tensor, n_queries: int = 1, seed: int = 0) -> np.ndarray:
    """Per-sample SSL loss (B, Q) float64, query q drawn with ``step = seed * 100003 + q``.

    medssl methods return a batch-*mean* loss from ``forward(x, *, step, rank)``, so each sample is
    passed alone (batch of one), in eval mode (restored afterwards) and without gradients; a method
    with ``per_sample_loss(x, *, step, rank) -> (B,)`` (JEPA, MAE) scores the whole batch in one
    pass with the masks a batch of one would draw, giving the same values. The
    method draws its augmentations/masks from hash((method seed, step, rank)), so query q gets
    the same draw for every sample and for every model sharing the method seed: keep the method
    seed equal across target and reference models so LiRA's per-query Gaussians compare like with
    like. Caveat: batch-contrastive losses (SimCLR's NT-Xent, TS2Vec's instance term) need other
    samples as negatives and degenerate with a batch of one; for those methods use
    :func:`augmentation_consistency` (or :func:`knn_distance`) instead.
    """
    if x.ndim < 3:
        raise ValueError(f"x must be (batch, ...) inputs, got shape {tuple(x.shape)}")
    if not 1 <= n_queries < _QUERY_STRIDE:
        raise ValueError(f"n_queries must be in [1, {_QUERY_STRIDE}), got {n_queries}")
    out = np.empty((x.shape[0], n_queries), dtype=np.float64)
    with _EvalMode(method):
        for q in range(n_queries):
            step = seed * _QUERY_STRIDE + q
            if hasattr(method, "per_sample_loss"):
                out[:, q] = method.per_sample_loss(x, step=step, rank=0).detach().double().cpu().numpy()
                continue
            for i in range(x.shape[0]):
                loss = method(x[i : i + 1], step=step, rank=0)
                out[i, q] = float(loss.detach().reshape(()))
    if not np.isfinite(out).all():
        raise ValueError("the method returned a non-finite loss for some samples")
    return out


@torch.no_grad()
def augmentation_consistency(
    encoder: nn.Module,
    x: Tensor,
    augment: Callable[[Tensor, torch.Generator], Tensor],
    n_views: int = 4,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Mean pairwise cosine similarity (B,) float64 of the embeddings of ``n_views`` augmented views.

    augment: a medssl.ecg.augment callable ``aug(x, generator)`` (e.g. ``Compose`` from
    ``build_augment``); encoder: ``forward(x) -> (B, D)``, run in eval mode without gradients.
    generator: a CPU torch.Generator (default: seeded with 0) so the views are reproducible.
    Score = mean over view pairs i < j of cos(f(v_i), f(v_j)) (EncoderMI's consistency feature).
    """
    if n_views < 2:
        raise ValueError(f"n_views must be at least 2, got {n_views}")
    if x.ndim != 3:
        raise ValueError(f"x must be (batch, leads, samples), got shape {tuple(x.shape)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with _EvalMode(encoder):
        views = [nn.functional.normalize(encoder(augment(x, gen)).float(), dim=-1) for _ in range(n_views)]
    z = torch.stack(views, dim=1)  # (B, V, D), unit rows
    s = z.sum(dim=1)
    # sum_{i != j} <z_i, z_j> = |sum z|^2 - sum |z_i|^2
    pair_sum = (s * s).sum(-1) - (z * z).sum(dim=(1, 2))
    return (pair_sum / (n_views * (n_views - 1))).double().cpu().numpy()


@torch.no_grad()
def knn_distance(embeddings, population_embeddings, k: int = 5, chunk_size: int = 4096) -> np.ndarray:
    """Mean Euclidean distance (B,) float64 from each embedding (B, D) to its k nearest
    population embeddings (Z, D).

    The population is processed in chunks of ``chunk_size`` rows with a running top-k, so memory
    is O(B * (k + chunk_size)) instead of B x Z; results do not depend on chunk_size. Query and
    population sets should be disjoint (an embedding in both is its own neighbour at distance 0).
    """
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    p = torch.as_tensor(np.asarray(population_embeddings), dtype=torch.float64)
    if e.ndim != 2 or p.ndim != 2 or e.shape[1] != p.shape[1]:
        raise ValueError(f"embeddings (B, D) and population (Z, D) must share D, got {tuple(e.shape)} and {tuple(p.shape)}")
    if not 1 <= k <= p.shape[0]:
        raise ValueError(f"k must be in [1, {p.shape[0]}] (population size), got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    best = torch.full((e.shape[0], k), float("inf"), dtype=torch.float64)
    for start in range(0, p.shape[0], chunk_size):
        d = torch.cdist(e, p[start : start + chunk_size], compute_mode="donot_use_mm_for_euclid_dist")
        best = torch.topk(torch.cat([best, d], dim=1), k, dim=1, largest=False).values
    return best.mean(dim=1).numpy()
