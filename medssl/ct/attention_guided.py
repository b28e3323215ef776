"""Attention-guided masking for Swin: a semantic attention module, a masker, and head diversity.

DAGMaN (Jiang, Rangnekar, Veeraraghavan, MIDL 2025) masks the patches a teacher finds important
rather than random ones, since neighbouring CT patches look alike and random masks leak. Attention-
guided masking (AttMask, Kakogeorgiou et al., ECCV 2022) reads importance off a ViT's [CLS]
attention; a Swin transformer has no [CLS] token, so DAGMaN adds a semantic attention module.

- `SemanticAttention`: a class-attention block in the manner of CaiT (Touvron et al., ICCV 2021):
  a learned query token attends, head by head, over a stage's tokens (queries from the class token
  only, keys and values from the patch tokens), then an MLP. Returns the global semantic token
  (B, D), the [CLS] Swin lacks, and the attention of each head over the tokens (B, H, N), which
  sums to 1 over N. The paper does not give the module's layout: this one-block class attention
  is our choice.
- `AttentionGuidedMasker`: exactly round(ratio * P) of P mask cells hidden per sample, drawn
  without replacement with probability proportional to importance^(1/temperature) (Gumbel top-k
  on log importance / temperature). Temperature -> 0 is AttMask-High (the most attended patches,
  deterministic); temperature -> inf is random masking. The paper says the masking keeps some
  randomness without a formula: this sampling rule is our choice.
- `head_diversity`: the mean Jensen-Shannon divergence between every pair of heads' attention
  distributions, in bits (0 when all heads attend alike, at most 1), averaged over the batch:
  the quantity DAGMaN's noisy teacher is meant to keep high.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.transformer import Mlp


class SemanticAttention(nn.Module):
    """Class attention of a learned query over tokens (B, N, dim) -> ((B, dim), (B, heads, N))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.query, std=0.02)
        for m in (self.q, self.kv, self.proj, self.mlp.fc1, self.mlp.fc2):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = tokens.shape
        hd = d // self.num_heads
        cls = self.query.expand(b, -1, -1).to(tokens.dtype)
        z = self.norm1(torch.cat([cls, tokens], dim=1))
        q = self.q(z[:, :1]).reshape(b, 1, self.num_heads, hd).transpose(1, 2)          # (B, H, 1, hd)
        k, v = self.kv(z[:, 1:]).reshape(b, n, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)  # (B, H, N, hd)
        attn = torch.softmax((q @ k.transpose(-2, -1)).float() * hd**-0.5, dim=-1)     # (B, H, 1, N)
        out = (attn.to(v.dtype) @ v).transpose(1, 2).reshape(b, 1, d)
        cls = cls + self.proj(out)
        cls = cls + self.mlp(self.norm2(cls))
        return self.norm(cls[:, 0]), attn[:, :, 0]


class AttentionGuidedMasker:
    """Hide round(ratio * P) of P cells per sample, preferring high importance; see the module docstring."""

    def __init__(self, ratio: float = 0.6, temperature: float = 0.5):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.ratio = float(ratio)
        self.temperature = float(temperature)

    def n_masked(self, n_cells: int) -> int:
        return min(max(int(round(self.ratio * n_cells)), 1), n_cells - 1)

    def __call__(self, importance: Tensor, generator: torch.Generator) -> Tensor:
        """importance (B, P) >= 0 -> bool mask (B, P), True = hidden, exactly n_masked(P) per row.
        The Gumbel noise comes from `generator` (CPU), so (seed, step, rank) fixes the mask."""
        b, p = importance.shape
        u = torch.rand(b, p, generator=generator).clamp_(1e-12, 1 - 1e-7).to(importance.device)
        gumbel = -torch.log(-torch.log(u))
        scores = torch.log(importance.detach().float().clamp_min(1e-12)) / self.temperature + gumbel
        idx = scores.topk(self.n_masked(p), dim=1).indices
        return torch.zeros(b, p, dtype=torch.bool, device=importance.device).scatter_(1, idx, True)


def head_diversity(attn: Tensor) -> Tensor:
    """Mean pairwise Jensen-Shannon divergence (bits) between heads. attn: (B, H, N), rows sum to 1.
    Returns a scalar in [0, 1]; 0 for a single head or identical heads."""
    b, h, n = attn.shape
    if h < 2:
        return attn.new_zeros(())
    p = attn.float().clamp_min(1e-12)
    pi, pj = p[:, :, None], p[:, None]                                   # (B, H, 1, N), (B, 1, H, N)
    m = 0.5 * (pi + pj)
    js = 0.5 * (pi * (pi / m).log()).sum(-1) + 0.5 * (pj * (pj / m).log()).sum(-1)   # (B, H, H)
    off = ~torch.eye(h, dtype=torch.bool, device=attn.device)
    return (js[:, off].mean() / torch.log(torch.tensor(2.0))).clamp(0.0, 1.0)


def upsample_cells(mask: Tensor, grid: tuple[int, int, int], factor: int) -> Tensor:
    """(B, P) cells on a (gd, gh, gw) grid, row-major -> (B, gd*f, gh*f, gw*f), each cell a f^3 block."""
    m = mask.reshape(mask.shape[0], *grid)
    for dim in (1, 2, 3):
        m = m.repeat_interleave(factor, dim=dim)
    return m


def mean_head_importance(attn: Tensor) -> Tensor:
    """Per-sample importance (B, N) from class attention (B, H, N): the mean over heads, sums to 1."""
    return F.normalize(attn.float().mean(dim=1), p=1, dim=1)
