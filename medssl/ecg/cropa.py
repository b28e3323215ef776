"""Cross-Pattern Attention (CroPA) masks for ECG-JEPA (Kim, "Learning General Representation of
12-Lead Electrocardiogram with a Joint-Embedding Predictive Architecture", 2024).

A token is one (lead, time patch). Under CroPA a token attends only to tokens of the same lead
or of the same time patch, the inductive bias of reading a 12-lead ECG: along one lead, or across
leads at one moment. Tokens are laid out lead-major: token index = lead * n_time + time.

The mask depends only on the token layout, never on the data or on which time patches a
sample kept, so it is built once per layout and cached.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def cross_pattern_mask_from_ids(lead_ids: Tensor, time_ids: Tensor) -> Tensor:
    """Bool (N, N) mask, True where token i may attend to token j (same lead or same time)."""
    return (lead_ids[:, None] == lead_ids[None, :]) | (time_ids[:, None] == time_ids[None, :])


def _grid_ids(n_leads: int, n_time: int, time_offset: int = 0) -> tuple[Tensor, Tensor]:
    leads = torch.arange(n_leads).repeat_interleave(n_time)
    times = torch.arange(n_time).repeat(n_leads) + time_offset
    return leads, times


@lru_cache(maxsize=64)
def _cached_mask(n_leads: int, n_time_groups: tuple[int, ...], device: str) -> Tensor:
    lead_parts, time_parts, offset = [], [], 0
    for n_time in n_time_groups:
        leads, times = _grid_ids(n_leads, n_time, offset)
        lead_parts.append(leads)
        time_parts.append(times)
        offset += n_time
    mask = cross_pattern_mask_from_ids(torch.cat(lead_parts), torch.cat(time_parts))
    return mask.to(device)


def cross_pattern_mask(n_leads: int, *n_time_groups: int, device: torch.device | str = "cpu") -> Tensor:
    """The CroPA mask for one or more lead-major token groups laid side by side.

    `cross_pattern_mask(8, 50)`: the full 8 x 50 grid (400 tokens).
    `cross_pattern_mask(8, kc, km)`: the predictor's sequence, kc context time patches of every
    lead followed by km masked ones; groups hold disjoint time patches.
    Returns a cached bool tensor (N, N) with N = n_leads * sum(n_time_groups); do not modify it.
    """
    return _cached_mask(n_leads, tuple(int(n) for n in n_time_groups), str(torch.device(device)))
