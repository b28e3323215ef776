"""Tests of medssl.nn.tokens."""

from __future__ import annotations

import torch

from medssl.nn.tokens import gather_time_patches


def test_gather_time_patches_picks_lead_major_tokens():
    b, n_leads, n_time = 3, 4, 7
    lead = torch.arange(n_leads).repeat_interleave(n_time)
    time = torch.arange(n_time).repeat(n_leads)
    # Token features encode (lead, time, sample): tokens[s, lead * n_time + time] = (lead, time, s).
    tokens = torch.stack(
        [torch.stack([lead, time, torch.full_like(lead, s)], dim=-1) for s in range(b)]
    ).float()
    time_idx = torch.tensor([[0, 3, 6], [1, 2, 5], [6, 4, 0]])
    out = gather_time_patches(tokens, n_leads, time_idx)
    assert out.shape == (b, n_leads * 3, 3)
    for s in range(b):
        for l in range(n_leads):
            for k in range(3):
                assert out[s, l * 3 + k].tolist() == [l, time_idx[s, k].item(), s]


def test_gather_time_patches_gradients_flow_to_selected_tokens():
    tokens = torch.randn(1, 2 * 5, 4, requires_grad=True)
    gather_time_patches(tokens, 2, torch.tensor([[1, 3]])).sum().backward()
    touched = tokens.grad[0].abs().sum(-1) > 0
    assert touched.tolist() == [False, True, False, True, False] * 2
