"""JEPA: predict, in representation space, the target encoder's features of masked patches from
the context encoder's features of visible ones (Assran et al., I-JEPA, 2023; Kim, ECG-JEPA, 2024).

Composition of parts: a context encoder (any encoder with `embed_patches`/`forward_features` over
time patches), its EMA copy as target encoder, a predictor, a masker and a smooth-L1 loss.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.ema import ema_update
from medssl.nn.tokens import gather_time_patches
from medssl.ssl.random import step_generator


class JEPA(nn.Module):
    """forward(x) -> scalar loss. x: (B, n_leads, num_samples).

    Targets are the target encoder's outputs on the full, unmasked input, layer-normed over the
    feature dimension (no affine), taken at the masked time patches of every lead. Loss: smooth L1
    (beta = 1) averaged over masked tokens and features.
    """

    def __init__(self, encoder: nn.Module, predictor: nn.Module, masker, *, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.predictor = predictor
        self.masker = masker
        self.seed = seed

    def sample_masks(self, batch_size: int, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor]:
        """(keep_time, mask_time), each (B, K) long: a pure function of (seed, step, rank), so a
        resumed run draws the masks the uninterrupted run would have drawn."""
        return self.masker(batch_size, self.encoder.n_time, step_generator(self.seed, step, rank))

    def _elementwise_loss(self, x: Tensor, masks: tuple[Tensor, Tensor] | None, *, step: int, rank: int) -> Tensor:
        keep_time, mask_time = masks if masks is not None else self.sample_masks(x.shape[0], step, rank)
        keep_time, mask_time = keep_time.to(x.device), mask_time.to(x.device)
        with torch.no_grad():
            target = self.target_encoder.forward_features(x)
            target = F.layer_norm(target, target.shape[-1:])
            target = gather_time_patches(target, self.encoder.n_leads, mask_time)
        context = self.encoder.forward_features(x, keep_time=keep_time)
        prediction = self.predictor(context, keep_time, mask_time)
        return F.smooth_l1_loss(prediction.float(), target.float(), reduction="none")

    def forward(self, x: Tensor, masks: tuple[Tensor, Tensor] | None = None, *, step: int = 0, rank: int = 0) -> Tensor:
        return self._elementwise_loss(x, masks, step=step, rank=rank).mean()

    def per_sample_loss(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        """(B,) loss of each sample under the masks a batch of one draws at (step, rank): equal to
        ``forward(x[i:i+1], step=step, rank=rank)`` for every i, in one batched pass."""
        keep_time, mask_time = self.sample_masks(1, step, rank)
        masks = (keep_time.expand(x.shape[0], -1), mask_time.expand(x.shape[0], -1))
        return self._elementwise_loss(x, masks, step=step, rank=rank).flatten(1).mean(1)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        ema_update(self.target_encoder, self.encoder, momentum)
