"""Random draws of SSL methods as a pure function of (seed, step, rank)."""

from __future__ import annotations

import torch


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator seeded from (seed, step, rank): a resumed run redraws the masks and
    augmentations the uninterrupted run drew, and each DDP rank draws its own."""
    return torch.Generator().manual_seed(hash((seed, step, rank)) & 0x7FFF_FFFF_FFFF)
