"""SimCLR (Chen et al., ICML 2020) for 12-lead ECG as in Mehari & Strodthoff (2022).

Composition of parts: an encoder (any module mapping (B, n_leads, T) to a pooled (B, C)
embedding), a projection head, an augmentation pipeline (medssl.ecg.augment) and a contrastive
loss (medssl.ssl.contrastive.NTXentLoss). Two views of every sample are drawn from a generator
seeded by hash((seed, step, rank)), so a resumed run repeats them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.ssl.random import step_generator


class SimCLR(nn.Module):
    """forward(x, *, step, rank) -> scalar NT-Xent loss. x: (B, n_leads, T).

    Both views go through the encoder in one batch when their shapes agree (shared batch-norm
    statistics), then through the projector; `loss(z1, z2)` compares the projections.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, augment, loss: nn.Module, *, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.augment = augment
        self.loss = loss
        self.seed = seed

    def views(self, x: Tensor, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor]:
        """The two augmented views of x for this (step, rank)."""
        generator = step_generator(self.seed, step, rank)
        return self.augment(x, generator), self.augment(x, generator)

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        v1, v2 = self.views(x, step, rank)
        if v1.shape == v2.shape:
            z1, z2 = self.projector(self.encoder(torch.cat([v1, v2]))).chunk(2)
        else:
            z1, z2 = self.projector(self.encoder(v1)), self.projector(self.encoder(v2))
        return self.loss(z1, z2)
