"""Tests of medssl.nn.ema."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medssl.nn.ema import ema_update


def _pair():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    return target, online


@pytest.mark.parametrize("m", [0.0, 0.5, 0.996, 1.0])
def test_ema_update_math(m):
    target, online = _pair()
    t0 = [p.detach().clone() for p in target.parameters()]
    o0 = [p.detach().clone() for p in online.parameters()]
    ema_update(target, online, m)
    for t_new, t_old, o in zip(target.parameters(), t0, o0):
        torch.testing.assert_close(t_new, m * t_old + (1 - m) * o, atol=1e-6, rtol=1e-6)
    for o_new, o in zip(online.parameters(), o0):
        assert torch.equal(o_new, o)  # the online network is untouched


def test_ema_update_converges_and_builds_no_graph():
    target, online = _pair()
    for _ in range(200):
        ema_update(target, online, 0.9)
    for t, o in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(t, o, atol=1e-6, rtol=0)
        assert t.grad_fn is None
