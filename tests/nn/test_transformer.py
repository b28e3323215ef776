"""Tests of medssl.nn.transformer: SDPA attention with structured masks equals the naive reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.ecg.cropa import cross_pattern_mask
from medssl.nn.transformer import (
    Attention, Block, Transformer, attention, init_vit_weights, masked_attention_reference, transformer_flops,
)


def _random_mask(n: int, g: torch.Generator) -> torch.Tensor:
    allowed = torch.rand(n, n, generator=g) < 0.3
    allowed |= torch.eye(n, dtype=torch.bool)  # every query attends to at least itself
    return allowed


def test_sdpa_with_bool_mask_equals_reference():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 24, 8, generator=g) for _ in range(3))
    for allowed in (_random_mask(24, g), cross_pattern_mask(4, 6)):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        ref = masked_attention_reference(q, k, v, allowed)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        # The mask matters: the unmasked result is different.
        assert not torch.allclose(F.scaled_dot_product_attention(q, k, v), ref, atol=1e-3)


def _attention_reference(attn: Attention, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Attention.forward written out head by head with the naive reference."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in attn.qkv(x).split(d, dim=-1))
    if allowed is None:
        allowed = torch.ones(n, n, dtype=torch.bool)
    out = masked_attention_reference(q, k, v, allowed)
    return attn.proj(out.transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_sample"])
def test_attention_module_equals_reference(mask_kind):
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, 16, generator=g)
    if mask_kind == "none":
        mask = ref_mask = None
    elif mask_kind == "shared":
        mask = ref_mask = cross_pattern_mask(3, 4)
    else:
        mask = torch.stack([_random_mask(12, g) for _ in range(3)])[:, None]  # (B, 1, N, N)
        ref_mask = mask
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), _attention_reference(attn, x, ref_mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_kind", ["none", "shared", "per_sample"])
def test_bf16_attention_on_a_cpu_equals_the_fp32_reference(mask_kind):
    """bf16 on a CPU takes the written-out path (not SDPA's CPU flash kernel): same function, bf16 rounding."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 12, 8, generator=g) for _ in range(3))
    mask = {"none": None, "shared": cross_pattern_mask(3, 4),
            "per_sample": torch.stack([_random_mask(12, g) for _ in range(2)])[:, None]}[mask_kind]
    ref = masked_attention_reference(q, k, v, torch.ones(12, 12, dtype=torch.bool) if mask is None else mask)
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(attention(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)  # fp32: SDPA


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=4)


def test_block_residual_and_transformer_shapes():
    torch.manual_seed(0)
    blk = Block(16, 2)
    x = torch.randn(2, 5, 16)
    # Zeroed output projections make the block the identity (pre-norm residuals).
    with torch.no_grad():
        for lin in (blk.attn.proj, blk.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    torch.testing.assert_close(blk(x), x)
    tr = Transformer(16, depth=3, num_heads=2)
    assert len(tr.blocks) == 3
    y = tr(x)
    assert y.shape == x.shape
    # Final LayerNorm: zero mean, unit variance per token.
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


def test_masked_tokens_do_not_influence_outputs():
    torch.manual_seed(0)
    tr = Transformer(16, depth=2, num_heads=2).eval()
    n = 6
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:3, :3] = True
    allowed[3:, 3:] = True  # two independent groups
    x = torch.randn(1, n, 16)
    x2 = x.clone()
    x2[0, 4] += 5.0
    with torch.no_grad():
        y, y2 = tr(x, allowed), tr(x2, allowed)
    torch.testing.assert_close(y[0, :3], y2[0, :3], atol=1e-6, rtol=0)
    assert not torch.allclose(y[0, 3:], y2[0, 3:])


def test_init_vit_weights():
    torch.manual_seed(0)
    tr = Transformer(64, depth=2, num_heads=2)
    with torch.no_grad():
        for p in tr.parameters():
            p.fill_(3.0)
    init_vit_weights(tr)
    w = tr.blocks[0].mlp.fc1.weight
    # std 0.02 (truncation at +-2 absolute, as in timm/I-JEPA, barely bites).
    assert 0.018 < w.std().item() < 0.022 and abs(w.mean().item()) < 0.002
    assert w.abs().max() <= 2.0
    assert torch.all(tr.blocks[0].mlp.fc1.bias == 0)
    assert torch.all(tr.norm.weight == 1) and torch.all(tr.norm.bias == 0)


def test_transformer_flops_scaling():
    base = transformer_flops(100, 64, 1)
    assert transformer_flops(100, 64, 3) == pytest.approx(3 * base)
    # Linear layers: 2 * N * D * (3D + D + 2 * 4D) = 24 N D^2; attention: 4 N^2 D.
    assert base == pytest.approx(24 * 100 * 64**2 + 4 * 100**2 * 64)
