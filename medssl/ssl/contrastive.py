"""Contrastive losses and heads: NT-Xent (SimCLR) and TS2Vec's hierarchical contrastive loss.

- `NTXentLoss` (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020): normalised-temperature cross entropy over the 2B views of a
  batch; each view's positive is the other view of the same sample, its negatives the other
  2B - 2 views. Called like lightly's `NTXentLoss`: `loss(z1, z2)`.
- `ProjectionHead`: SimCLR's MLP g(h) = W2 ReLU(W1 h), used only during pretraining.
- `hierarchical_contrastive_loss` (Yue et al., "TS2Vec: Towards Universal Representation of
  Time Series", AAAI 2022): instance-wise and temporal contrast of timestamp representations,
  repeated after each max-pooling (kernel 2) along time until one timestamp is left.

Negatives come from the local batch only (no all-gather across ranks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _paired_info_nce(sim: Tensor, n: int) -> Tensor:
    """Mean InfoNCE over the 2n rows of `sim` (..., 2n, 2n): row i's positive is column i + n
    (and row i + n's is column i); every other column except the row's own is a negative."""
    eye = torch.eye(2 * n, dtype=torch.bool, device=sim.device)
    logits = sim.float().masked_fill(eye, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(sim.device)
    logits = logits.reshape(-1, 2 * n)
    return F.cross_entropy(logits, target.repeat(logits.shape[0] // (2 * n)))


class NTXentLoss(nn.Module):
    """NT-Xent loss. z1, z2: (B, D) projections of two views; returns a scalar.

    Projections are L2-normalised, similarities divided by `temperature`; the loss is the mean
    over all 2B anchors, so it is symmetric in (z1, z2).
    """

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(f"expected two (batch, dim) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        return _paired_info_nce(z @ z.T / self.temperature, z1.shape[0])


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: Linear(in, hidden) -> [BatchNorm] -> ReLU -> Linear(hidden, out).

    (B, in_dim) -> (B, out_dim). Mehari & Strodthoff (2022) use no batch norm here.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool = False):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            *([nn.BatchNorm1d(hidden_dim)] if batch_norm else []),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def instance_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """TS2Vec instance-wise contrast. z1, z2: (B, T, D), the same timestamps seen in two views.

    At each timestamp, sample i's two views are positives and the 2B - 2 representations of
    other samples (both views) negatives; raw dot products, no temperature. Zero for B = 1.
    """
    b, t = z1.shape[:2]
    if b == 1:
        return z1.new_zeros(()).float()
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)  # (T, 2B, D)
    return _paired_info_nce(z @ z.transpose(1, 2), b)


def temporal_contrastive_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """TS2Vec temporal contrast. z1, z2: (B, T, D).

    Within each sample, timestamp t of one view is positive with timestamp t of the other and
    negative with the 2T - 2 other timestamps of both views. Zero for T = 1.
    """
    b, t = z1.shape[:2]
    if t == 1:
        return z1.new_zeros(()).float()
    z = torch.cat([z1, z2], dim=1)  # (B, 2T, D)
    return _paired_info_nce(z @ z.transpose(1, 2), t)


def hierarchical_contrastive_loss(z1: Tensor, z2: Tensor, alpha: float = 0.5, temporal_unit: int = 0) -> Tensor:
    """TS2Vec hierarchical contrastive loss. z1, z2: (B, T, D) representations of the overlap of
    two crops, timestamp-aligned.

    At level d = 0, 1, ... : alpha * instance loss + (1 - alpha) * temporal loss (the temporal
    term only from level `temporal_unit` on), then max-pool both along time with kernel 2 (an
    odd last timestamp dropped), until one timestamp is left, which adds a last instance term.
    Returns the sum divided by the number of levels.
    """
    if z1.shape != z2.shape or z1.ndim != 3:
        raise ValueError(f"expected two (batch, time, dim) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    loss = z1.new_zeros(()).float()
    levels = 0
    while z1.shape[1] > 1:
        if alpha != 0:
            loss = loss + alpha * instance_contrastive_loss(z1, z2)
        if levels >= temporal_unit and alpha != 1:
            loss = loss + (1 - alpha) * temporal_contrastive_loss(z1, z2)
        levels += 1
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
    if alpha != 0:
        loss = loss + alpha * instance_contrastive_loss(z1, z2)
    levels += 1
    return loss / levels


class HierarchicalContrastiveLoss(nn.Module):
    """`hierarchical_contrastive_loss` as a module: loss(z1, z2) with (B, T, D) inputs."""

    def __init__(self, alpha: float = 0.5, temporal_unit: int = 0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
        self.alpha = alpha
        self.temporal_unit = temporal_unit

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return hierarchical_contrastive_loss(z1, z2, self.alpha, self.temporal_unit)
