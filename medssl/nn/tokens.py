"""Indexing of lead-major (row, column) token grids."""

from __future__ import annotations

import torch
from torch import Tensor


def gather_time_patches(tokens: Tensor, n_leads: int, time_idx: Tensor) -> Tensor:
    """Select time patches shared across leads.

    tokens: (B, n_leads * n_time, D) lead-major; time_idx: (B, K) long.
    Returns (B, n_leads * K, D), lead-major.
    """
    b, n, d = tokens.shape
    grid = tokens.view(b, n_leads, n // n_leads, d)
    idx = time_idx[:, None, :, None].expand(b, n_leads, time_idx.shape[1], d)
    return torch.gather(grid, 2, idx).reshape(b, -1, d)
