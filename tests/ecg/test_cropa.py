"""Tests of medssl.ecg.cropa: Cross-Pattern Attention masks, and their effect inside the encoder."""

from __future__ import annotations

import itertools

import pytest
import torch

from medssl.ecg.cropa import FactorizedCrossPattern, cross_pattern_mask, cross_pattern_mask_from_ids
from medssl.nn.transformer import masked_attention_reference as reference_attention
from medssl.registry import create_encoder


def _brute_force(n_leads: int, n_time: int) -> torch.Tensor:
    tokens = [(lead, t) for lead in range(n_leads) for t in range(n_time)]
    n = len(tokens)
    out = torch.zeros(n, n, dtype=torch.bool)
    for i, j in itertools.product(range(n), range(n)):
        out[i, j] = tokens[i][0] == tokens[j][0] or tokens[i][1] == tokens[j][1]
    return out


@pytest.mark.parametrize("n_leads,n_time", [(1, 1), (2, 3), (3, 5), (4, 2)])
def test_full_grid_matches_brute_force(n_leads, n_time):
    mask = cross_pattern_mask(n_leads, n_time)
    assert mask.dtype == torch.bool and mask.shape == (n_leads * n_time,) * 2
    assert torch.equal(mask, _brute_force(n_leads, n_time))


def test_paper_layout_8_by_50():
    mask = cross_pattern_mask(8, 50)
    assert mask.shape == (400, 400)
    idx = lambda lead, t: lead * 50 + t  # noqa: E731
    for (la, ta), (lb, tb) in [((0, 0), (0, 49)), ((3, 7), (5, 7)), ((2, 10), (6, 11)), ((7, 49), (0, 0))]:
        assert mask[idx(la, ta), idx(lb, tb)].item() == (la == lb or ta == tb)
    # Each token sees its lead (50) + its time column (8) - itself counted twice.
    assert torch.all(mask.sum(1) == 50 + 8 - 1)
    assert torch.equal(mask, mask.T)


def test_from_ids():
    lead = torch.tensor([0, 0, 1, 1])
    time = torch.tensor([0, 1, 0, 1])
    m = cross_pattern_mask_from_ids(lead, time)
    assert m.tolist() == [[1, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1]]


def test_mask_is_cached():
    a = cross_pattern_mask(8, 50)
    assert cross_pattern_mask(8, 50) is a
    assert cross_pattern_mask(8, 50, device="cpu") is a
    assert cross_pattern_mask(8, 50, device=torch.device("cpu")) is a
    assert cross_pattern_mask(8, 20) is cross_pattern_mask(8, 20)
    assert cross_pattern_mask(8, 20) is not a


@pytest.mark.parametrize("n_leads,n_time", [(1, 4), (3, 5), (8, 50)])
def test_factorized_attention_equals_dense_masked_attention(n_leads, n_time):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n_leads * n_time, 16, generator=g, dtype=torch.float64) for _ in range(3))
    dense = reference_attention(q, k, v, cross_pattern_mask(n_leads, n_time))
    factorized = FactorizedCrossPattern(n_leads, n_time)(q, k, v)
    torch.testing.assert_close(factorized, dense, rtol=0, atol=1e-5)
    q32, k32, v32 = q.float(), k.float(), v.float()
    dense32 = torch.nn.functional.scaled_dot_product_attention(
        q32, k32, v32, attn_mask=cross_pattern_mask(n_leads, n_time))
    torch.testing.assert_close(FactorizedCrossPattern(n_leads, n_time)(q32, k32, v32), dense32, rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["factorized", "auto", "flex"])
def test_encoder_gives_the_same_output_with_every_cropa_implementation(impl):
    torch.manual_seed(0)
    a = create_encoder("ecg_jepa_tiny", depth=2, embed_dim=32, num_heads=2, cropa_impl="sdpa").eval()
    b = create_encoder("ecg_jepa_tiny", depth=2, embed_dim=32, num_heads=2, cropa_impl=impl).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 2500)
    keep = torch.tensor([[0, 3, 4, 10, 20], [1, 2, 30, 40, 49]])
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(b.forward_features(x, keep), a.forward_features(x, keep), rtol=0, atol=1e-5)
        with torch.autocast("cpu", torch.bfloat16):  # "auto" takes the factorized kernel here
            torch.testing.assert_close(b.forward_features(x, keep).float(), a.forward_features(x, keep).float(),
                                       rtol=0, atol=5e-2)


def test_auto_cropa_dispatches_by_device_and_dtype(monkeypatch):
    from medssl.ecg import cropa

    calls = []
    monkeypatch.setattr(cropa.FactorizedCrossPattern, "__call__", lambda self, q, k, v: calls.append("factorized") or q)
    kernel = cropa.CrossPatternAttention(2, 3)
    q = torch.randn(1, 1, 6, 4)
    kernel(q, q, q)
    assert calls == []
    kernel(q.bfloat16(), q.bfloat16(), q.bfloat16())
    assert calls == ["factorized"]


def _token_influence(cropa: bool, lead: int, t: int) -> torch.Tensor:
    """(n_leads, n_time) bool: which layer-1 output tokens change when token (lead, t)'s input changes."""
    torch.manual_seed(0)
    enc = create_encoder(
        "ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=400, cross_pattern_attention=cropa
    ).eval()
    ps = enc.patch_size
    x = torch.randn(1, enc.n_leads, enc.n_time * ps, generator=torch.Generator().manual_seed(1))
    x2 = x.clone()
    x2[0, lead, t * ps:(t + 1) * ps] += torch.randn(ps, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y, y2 = enc.forward_features(x), enc.forward_features(x2)
    diff = (y - y2).abs().amax(-1)[0].view(enc.n_leads, enc.n_time)
    return diff > 1e-6


@pytest.mark.parametrize("lead,t", [(2, 3), (0, 0), (7, 7)])
def test_cropa_limits_influence_to_same_lead_or_time(lead, t):
    changed = _token_influence(True, lead, t)
    n_leads, n_time = changed.shape
    expected = torch.zeros(n_leads, n_time, dtype=torch.bool)
    expected[lead, :] = True
    expected[:, t] = True
    assert torch.equal(changed, expected)


def test_without_cropa_every_token_is_influenced():
    changed = _token_influence(False, 2, 3)
    assert changed.all()


@pytest.mark.parametrize("n_leads,n_time", [(2, 3), (3, 5), (8, 7)])
def test_flex_block_mask_is_the_cropa_rule(n_leads, n_time):
    from torch.nn.attention.flex_attention import create_mask

    from medssl.ecg.cropa import cross_pattern_mask_mod

    n = n_leads * n_time
    mask = create_mask(cross_pattern_mask_mod(n_time), None, None, n, n, device="cpu")
    assert torch.equal(mask[0, 0], cross_pattern_mask(n_leads, n_time))


def test_flex_kernel_equals_dense_masked_attention():
    from medssl.ecg.cropa import FlexCrossPattern

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 3 * 5, 8, generator=g) for _ in range(3))
    out = FlexCrossPattern(3, 5)(q, k, v)  # eager: FlexAttention's reference path
    torch.testing.assert_close(out, reference_attention(q, k, v, cross_pattern_mask(3, 5)), rtol=1e-4, atol=1e-5)
