"""Pre-norm transformer blocks on `scaled_dot_product_attention`, with an optional structured mask.

The mask is passed in, not built here: structured masks (e.g. ECG-JEPA's cross-pattern
attention) are constant for a given token layout, so callers build them once and cache them.
Instead of a mask, a caller may pass an attention kernel: any callable (q, k, v) -> out on
(B, heads, N, head_dim) tensors that computes masked attention without the N x N matrix
(e.g. `medssl.ecg.cropa.FactorizedCrossPattern`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionKernel = Callable[[Tensor, Tensor, Tensor], Tensor]


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """softmax(q k^T / sqrt(head_dim), masked) v on the kernel measured fastest for the inputs.

    q, k, v: (B, heads, N, head_dim); attn_mask: bool, True = may attend, broadcastable to
    (B, heads, N, N). bf16 on a CPU: written-out matmuls and softmax, because torch 2.13's CPU flash
    kernel is 1.2-8x slower in bf16 at ECG-JEPA's shapes (benchmarks/RESULTS.md, "Attention kernels
    on a CPU"); everything else: `scaled_dot_product_attention`.
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return written_out_attention(q, k, v, attn_mask)


def written_out_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """`attention` as separate matrix products and a softmax (the path it takes for bf16 on a CPU)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        scores.masked_fill_(~attn_mask, float("-inf"))  # in place: the product's backward needs q and k, not it
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    """Multi-head self-attention. x: (B, N, D).

    attn_mask: bool (N, N) or (B, 1, N, N), True = may attend; or an `AttentionKernel`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, attn_mask: Tensor | AttentionKernel | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if attn_mask is None or isinstance(attn_mask, Tensor):
            out = attention(q, k, v, attn_mask)
        else:
            out = attn_mask(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x)). Shapes: (B, N, D) -> (B, N, D)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, norm_eps: float = 1e-6
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, attn_mask: Tensor | AttentionKernel | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of `Block`s followed by a LayerNorm.

    forward(x, attn_mask, pos): with `pos` (broadcastable to x), positions are added before every
    block, as the ECG-JEPA release does, rather than once at the input.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, norm_eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(
        self, x: Tensor, attn_mask: Tensor | AttentionKernel | None = None, pos: Tensor | None = None
    ) -> Tensor:
        for blk in self.blocks:
            x = blk(x if pos is None else x + pos, attn_mask)
        return self.norm(x)


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorm: the ViT/I-JEPA init."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def compile_transformers(module: nn.Module) -> None:
    """Replace every `Transformer` inside `module` by its `torch.compile`d version (dynamic shapes:
    masks change the token count from step to step). Parameters stay the same objects."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Transformer):
                setattr(parent, name, torch.compile(child, dynamic=True))


def rescale_residual_projections(transformer: Transformer) -> None:
    """Divide each block's output projections by sqrt(2 * layer): the depth-scaled init of
    I-JEPA and the ECG-JEPA release (`fix_init_weight`)."""
    with torch.no_grad():
        for layer, blk in enumerate(transformer.blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))


def transformer_flops(n_tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of `depth` blocks on one sequence (multiply-add = 2 FLOPs), dense attention."""
    per_block = 2 * n_tokens * dim * (3 * dim + dim + 2 * int(dim * mlp_ratio)) + 2 * 2 * n_tokens * n_tokens * dim
    return float(depth * per_block)


def masked_attention_reference(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """Plain softmax(QK^T/sqrt(d)) V with masked_fill: the naive baseline SDPA is checked against."""
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
