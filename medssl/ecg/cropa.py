"""Cross-Pattern Attention (CroPA) for ECG-JEPA (Kim, "Learning General Representation of
12-Lead Electrocardiogram with a Joint-Embedding Predictive Architecture", 2024).

A token is one (lead, time patch). Under CroPA a token attends only to tokens of the same lead
or of the same time patch, the inductive bias of reading a 12-lead ECG: along one lead, or across
leads at one moment. Tokens are laid out lead-major: token index = lead * n_time + time.

Two exact implementations:
- `cross_pattern_mask`: the bool (N, N) mask for `scaled_dot_product_attention`. It depends only
  on the layout (n_leads, n_time), never on the data or on which time patches a sample kept, so
  it is built once per layout and cached.
- `FactorizedCrossPattern`: scores only for the same-lead (T) and same-time (L) keys of each
  query, one joint softmax over those T + L - 1 keys (the query itself counted once), no N x N
  matrix: O(N (T + L)) instead of O(N^2) memory and FLOPs.

`CrossPatternAttention` picks one of them per call, by what measured faster for the inputs.
`FlexCrossPattern` is the same rule as a FlexAttention block mask, for GPUs under `torch.compile`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from medssl.nn.transformer import attention


def cross_pattern_mask_from_ids(lead_ids: Tensor, time_ids: Tensor) -> Tensor:
    """Bool (N, N) mask, True where token i may attend to token j (same lead or same time)."""
    return (lead_ids[:, None] == lead_ids[None, :]) | (time_ids[:, None] == time_ids[None, :])


def build_cross_pattern_mask(n_leads: int, n_time: int, device: str = "cpu") -> Tensor:
    leads = torch.arange(n_leads).repeat_interleave(n_time)
    times = torch.arange(n_time).repeat(n_leads)
    return cross_pattern_mask_from_ids(leads, times).to(device)


@lru_cache(maxsize=64)
def _cached_mask(n_leads: int, n_time: int, device: str) -> Tensor:
    return build_cross_pattern_mask(n_leads, n_time, device)


def cross_pattern_mask(n_leads: int, n_time: int, device: torch.device | str = "cpu") -> Tensor:
    """The cached CroPA mask of an n_leads x n_time lead-major grid; do not modify it."""
    return _cached_mask(int(n_leads), int(n_time), str(torch.device(device)))


class FactorizedCrossPattern:
    """CroPA attention computed from same-lead and same-time scores with one joint softmax.

    Call with q, k, v: (B, heads, n_leads * n_time, head_dim), lead-major. Returns the same
    shape; equal to dense masked attention with `cross_pattern_mask` (to float rounding).
    """

    def __init__(self, n_leads: int, n_time: int):
        self.n_leads = n_leads
        self.n_time = n_time

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, n, d = q.shape
        L, T = self.n_leads, self.n_time
        q, k, v = (t.reshape(b, h, L, T, d) for t in (q, k, v))
        q = q * d**-0.5
        along_lead = torch.einsum("bhltd,bhlsd->bhlts", q, k)  # (B, H, L, T, T): same lead
        across_leads = torch.einsum("bhltd,bhmtd->bhltm", q, k)  # (B, H, L, T, L): same time
        self_key = torch.eye(L, dtype=torch.bool, device=q.device)[:, None, :]  # (L, 1, L)
        across_leads = across_leads.masked_fill(self_key, float("-inf"))  # self is in along_lead
        weights = torch.softmax(torch.cat([along_lead, across_leads], dim=-1), dim=-1)
        out = torch.einsum("bhlts,bhlsd->bhltd", weights[..., :T], v)
        out = out + torch.einsum("bhltm,bhmtd->bhltd", weights[..., T:], v)
        return out.reshape(b, h, n, d)


def cross_pattern_mask_mod(n_time: int):
    """FlexAttention's ``mask_mod`` for a lead-major grid of ``n_time`` patches per lead: True where
    query and key share a lead (same index // n_time) or a time patch (same index % n_time)."""

    def same_lead_or_time(b, h, q_idx, kv_idx):
        return (q_idx // n_time == kv_idx // n_time) | (q_idx % n_time == kv_idx % n_time)

    return same_lead_or_time


class FlexCrossPattern:
    """CroPA as a block-sparse kernel: PyTorch's FlexAttention with a `BlockMask` built once per
    (grid, device) from the same-lead / same-time rule. No N x N mask is read: the rule is evaluated
    inside the kernel, and key blocks with no allowed pair are skipped (on CroPA's lead-major grid
    few are, since same-time keys fall in every block). Fast only under `torch.compile`
    (``trainer.compile``), where it becomes one fused kernel; eager calls run FlexAttention's
    unfused reference (correct, slow). Meant for GPUs: on a CPU, torch 2.13's inductor fails to build FlexAttention's C++ template for this mask
    (a compile error in generated code), so CPUs use "auto". Not yet timed on a GPU (issue 19:
    `benchmarks/bench_gpu_pretrain.py` has the arm). q, k, v: (B, heads, n_leads * n_time, head_dim).
    """

    def __init__(self, n_leads: int, n_time: int):
        self.n_leads = n_leads
        self.n_time = n_time
        self._block_masks: dict[str, object] = {}

    def block_mask(self, device: torch.device):
        from torch.nn.attention.flex_attention import create_block_mask

        key = str(device)
        if key not in self._block_masks:
            n = self.n_leads * self.n_time
            self._block_masks[key] = create_block_mask(cross_pattern_mask_mod(self.n_time), None, None, n, n,
                                                       device=device)
        return self._block_masks[key]

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, block_mask=self.block_mask(q.device))


@lru_cache(maxsize=64)
def flex_cross_pattern(n_leads: int, n_time: int) -> FlexCrossPattern:
    """The shared FlexCrossPattern of a grid, so its block masks are built once per grid and device."""
    return FlexCrossPattern(n_leads, n_time)


class CrossPatternAttention:
    """CroPA on the kernel measured faster for the inputs (benchmarks/RESULTS.md, "ECG-JEPA on a
    CPU against the public release's step"): the factorized kernel for bf16 on a CPU, where it beat
    the masked dense product at 128 and 384 wide; the cached mask with
    `scaled_dot_product_attention` otherwise (fp32 on a CPU: within +-10 % of the factorized kernel,
    either way by width; GPUs: SDPA's fused kernels). q, k, v: (B, heads, n_leads * n_time, head_dim).
    The mask is looked up when the kernel is made (eagerly), not inside a compiled region.
    """

    def __init__(self, n_leads: int, n_time: int, device: torch.device | str = "cpu"):
        self.factorized = FactorizedCrossPattern(n_leads, n_time)
        self.mask = cross_pattern_mask(n_leads, n_time, device)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            return self.factorized(q, k, v)
        return attention(q, k, v, self.mask)
