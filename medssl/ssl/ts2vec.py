"""TS2Vec (Yue et al., "TS2Vec: Towards Universal Representation of Time Series", AAAI 2022).

Per step, for a batch x (B, n_leads, T), following the paper and its public code:
1. contextual consistency by random cropping: an overlap [a1, b1) of length l >= 2^(u+1) and two
   crops [a2, b1) and [a1, b2) with a2 <= a1 and b2 >= b1, all shifted by a random per-sample
   offset (that keeps both crops inside the record);
2. each crop is encoded with its own binomial timestamp mask (p = 0.5, applied after the input
   projection), and both representations are cut to the overlap;
3. the hierarchical contrastive loss (instance-wise + temporal, max-pooled along time level by
   level) compares the two.
Random draws come from a generator seeded by hash((seed, step, rank)).

The paper encodes with a stochastic-weight-averaged copy of the encoder (torch's
AveragedModel, updated after every step); with `swa=True` this method keeps that copy as
`averaged_encoder`, updated in `update_target` (the momentum argument is ignored: SWA is an
equal-weight running mean of all iterates), and it is the encoder the recipe builder saves.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from medssl.ssl.random import step_generator


def sample_crops(length: int, batch_size: int, generator: torch.Generator, temporal_unit: int = 0) -> dict[str, Tensor | int]:
    """TS2Vec's random cropping for series of `length` timestamps.

    Returns {"overlap": l, "start1": (B,), "len1": L1, "start2": (B,), "len2": L2}: crop 1 is
    x[start1 : start1 + L1] and ends with the overlap (its last l timestamps), crop 2 is
    x[start2 : start2 + L2] and begins with it.
    """
    lo = 2 ** (temporal_unit + 1)
    if length < lo:
        raise ValueError(f"series of {length} timestamps are too short for temporal_unit {temporal_unit}")

    def randint(low: int, high: int, size: tuple[int, ...] = ()) -> Tensor:  # [low, high)
        return torch.randint(low, high, size, generator=generator)

    crop_l = int(randint(lo, length + 1))
    crop_left = int(randint(0, length - crop_l + 1))
    crop_right = crop_left + crop_l
    crop_eleft = int(randint(0, crop_left + 1))
    crop_eright = int(randint(crop_right, length + 1))
    offset = randint(-crop_eleft, length - crop_eright + 1, (batch_size,))
    return {
        "overlap": crop_l,
        "start1": offset + crop_eleft, "len1": crop_right - crop_eleft,
        "start2": offset + crop_left, "len2": crop_eright - crop_left,
    }


def take_windows(x: Tensor, start: Tensor, length: int) -> Tensor:
    """x (B, C, T), start (B,) -> (B, C, length): x[b, :, start[b] : start[b] + length]."""
    idx = start.to(x.device)[:, None] + torch.arange(length, device=x.device)[None]
    return torch.gather(x, 2, idx[:, None, :].expand(-1, x.shape[1], -1))


class TS2Vec(nn.Module):
    """forward(x, *, step, rank) -> scalar hierarchical contrastive loss. x: (B, n_leads, T).

    encoder: a module with forward_features(x, mask) -> (B, T, D) (medssl's TS2VecEncoder).
    loss: a callable (z1, z2) on (B, l, D) tensors, e.g. HierarchicalContrastiveLoss.
    """

    def __init__(
        self,
        encoder: nn.Module,
        loss: nn.Module,
        *,
        mask_p: float = 0.5,
        temporal_unit: int = 0,
        swa: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if not 0.0 <= mask_p <= 1.0:
            raise ValueError(f"mask_p must lie in [0, 1], got {mask_p}")
        self.encoder = encoder
        self.loss = loss
        self.mask_p = mask_p
        self.temporal_unit = temporal_unit
        self.seed = seed
        self.averaged_encoder = copy.deepcopy(encoder).requires_grad_(False) if swa else None
        # As torch's AveragedModel in TS2Vec's code, the initial weights count as the first iterate.
        self.register_buffer("n_averaged", torch.ones((), dtype=torch.long))

    def binomial_mask(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(B, length) bool, True = kept: each timestamp is masked with probability `mask_p`
        (TS2Vec's binomial mask keeps a timestamp with probability 0.5)."""
        return torch.rand((batch_size, length), generator=generator) >= self.mask_p

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        generator = step_generator(self.seed, step, rank)
        b = x.shape[0]
        c = sample_crops(x.shape[2], b, generator, self.temporal_unit)
        crop1 = take_windows(x, c["start1"], c["len1"])
        crop2 = take_windows(x, c["start2"], c["len2"])
        out1 = self.encoder.forward_features(crop1, mask=self.binomial_mask(b, c["len1"], generator))
        out2 = self.encoder.forward_features(crop2, mask=self.binomial_mask(b, c["len2"], generator))
        l = c["overlap"]
        return self.loss(out1[:, -l:], out2[:, :l])

    @torch.no_grad()
    def update_target(self, momentum: float | None = None) -> None:
        """SWA step: averaged <- averaged + (encoder - averaged) / (n + 1) (momentum ignored)."""
        if self.averaged_encoder is None:
            return
        n = int(self.n_averaged)
        for avg, cur in zip(self.averaged_encoder.parameters(), self.encoder.parameters()):
            avg.add_((cur.detach() - avg) / (n + 1))
        for avg, cur in zip(self.averaged_encoder.buffers(), self.encoder.buffers()):
            avg.copy_(cur)
        self.n_averaged += 1
