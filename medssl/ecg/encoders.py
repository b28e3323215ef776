"""ECG encoders registered with medssl's registry.

ECG-JEPA (Kim, "Learning General Representation of 12-Lead Electrocardiogram with a
Joint-Embedding Predictive Architecture", 2024): 8 leads (I, II, V1-V6) at 250 Hz, 10 s
(2,500 samples), each lead cut into patches of 50 samples (8 x 50 = 400 tokens), a linear patch
embedding shared across leads, fixed 2-D sine-cosine positions over (lead, time patch) added
before every block (as the public release does), and a ViT whose attention is restricted by
Cross-Pattern Attention (see `medssl.ecg.cropa`). As in the release: no bias on the qkv
projection, LayerNorm eps 1e-5, depth-scaled initialisation of residual projections, and the
embedding ("representation") is the mean over tokens of the final LayerNorm's output.
Not implemented: the release's stochastic depth (drop path 0.1 during pretraining).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from medssl.ecg.cropa import CrossPatternAttention, FactorizedCrossPattern, cross_pattern_mask, flex_cross_pattern
from medssl.ecg.encoder_spec import ecg_encoder_spec, resolve_hparams
from medssl.ecg.leads import INDEPENDENT_LEADS, parse_lead_set
from medssl.nn.pos_embed import sincos_1d, sincos_2d
from medssl.nn.tokens import gather_time_patches
from medssl.nn.transformer import (
    Transformer,
    init_vit_weights,
    rescale_residual_projections,
)
from medssl.registry import EncoderSpec, register_encoder

ECG_JEPA_PAPER = (
    "Kim S. Learning General Representation of 12-Lead Electrocardiogram with a "
    "Joint-Embedding Predictive Architecture. arXiv:2410.08559 (2024)"
)
CROPA_IMPLEMENTATIONS = ("auto", "sdpa", "factorized", "flex")


class EcgPatchTransformer(nn.Module):
    """ViT over (lead, time-patch) tokens with optional Cross-Pattern Attention.

    Input x: (B, n_leads, num_samples) float, standardised per lead, leads in `spec.input["leads"]`
    order at `spec.input["sampling_rate"]` Hz. `forward_features` -> (B, n_leads * n_time, D);
    `forward` -> (B, D). cropa_impl: "sdpa" (cached mask + scaled_dot_product_attention),
    "factorized" (`FactorizedCrossPattern`), "flex" (`FlexCrossPattern`: FlexAttention with a block
    mask, for GPUs under torch.compile) or "auto" (`CrossPatternAttention`: the one measured faster
    for the inputs' device and dtype); all compute the same function.
    """

    def __init__(
        self,
        *,
        leads: Sequence[str] = INDEPENDENT_LEADS,
        sampling_rate: float = 250.0,
        num_samples: int = 2500,
        patch_size: int = 50,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
        pos_every_block: bool = True,
        cross_pattern_attention: bool = True,
        cropa_impl: str = "auto",
        spec: EncoderSpec | None = None,
    ):
        super().__init__()
        if num_samples % patch_size:
            raise ValueError(f"num_samples {num_samples} is not a multiple of patch_size {patch_size}")
        if cropa_impl not in CROPA_IMPLEMENTATIONS:
            raise ValueError(f"cropa_impl must be one of {CROPA_IMPLEMENTATIONS}, got {cropa_impl!r}")
        self.leads = parse_lead_set(list(leads))
        self.n_leads = len(self.leads)
        self.n_time = num_samples // patch_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pos_every_block = pos_every_block
        self.cross_pattern_attention = cross_pattern_attention
        self.cropa_impl = cropa_impl
        self.patch_embed = nn.Linear(patch_size, embed_dim)
        # Persistent, so an imported checkpoint's own positions are kept exactly.
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.n_leads, self.n_time))
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        init_vit_weights(self)
        rescale_residual_projections(self.transformer)
        self.spec = spec

    def attention(self, n_time: int, device: torch.device):
        """The CroPA mask or kernel for an n_leads x n_time grid (None without CroPA)."""
        if not self.cross_pattern_attention:
            return None
        if self.cropa_impl == "factorized":
            return FactorizedCrossPattern(self.n_leads, n_time)
        if self.cropa_impl == "auto":
            return CrossPatternAttention(self.n_leads, n_time, device)
        if self.cropa_impl == "flex":
            kernel = flex_cross_pattern(self.n_leads, n_time)
            kernel.block_mask(device)  # built here, eagerly, never inside a compiled transformer
            return kernel
        return cross_pattern_mask(self.n_leads, n_time, device=device)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """(B, n_leads, num_samples) -> (B, n_leads * n_time, D), positions not yet added."""
        b, n_leads, n_samples = x.shape
        if n_leads != self.n_leads or n_samples != self.n_time * self.patch_size:
            raise ValueError(
                f"expected input (batch, {self.n_leads} leads, {self.n_time * self.patch_size} samples), "
                f"got {tuple(x.shape)}"
            )
        return self.patch_embed(x.reshape(b, n_leads * self.n_time, self.patch_size))

    def forward_features(self, x: Tensor, keep_time: Tensor | None = None) -> Tensor:
        """Token features. With keep_time (B, K) only those time patches (of every lead) are encoded."""
        tokens = self.patch_tokens(x)
        pos = self.pos_embed.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        n_time = self.n_time
        if keep_time is not None:
            tokens = gather_time_patches(tokens, self.n_leads, keep_time)
            pos = gather_time_patches(pos, self.n_leads, keep_time)
            n_time = keep_time.shape[1]
        attn = self.attention(n_time, x.device)
        if self.pos_every_block:
            return self.transformer(tokens, attn, pos=pos)
        return self.transformer(tokens + pos, attn)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).mean(dim=1)


class JepaPredictor(nn.Module):
    """ECG-JEPA predictor, as in the release: each lead on its own. From a lead's context tokens,
    predict the target encoder's features at that lead's masked time patches, with 1-D sine-cosine
    time positions added before every block and a final LayerNorm and projection.

    context: (B, n_leads * Kc, D_enc) lead-major, keep_time (B, Kc), mask_time (B, Km).
    Returns (B, n_leads * Km, D_enc) lead-major.
    """

    def __init__(
        self,
        *,
        n_leads: int,
        n_time: int,
        embed_dim: int,
        predictor_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.n_leads = n_leads
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        pos = torch.from_numpy(sincos_1d(predictor_dim, torch.arange(n_time).numpy())).float()
        self.register_buffer("pos_embed", pos, persistent=False)  # (n_time, predictor_dim)
        self.transformer = Transformer(predictor_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        init_vit_weights(self)
        rescale_residual_projections(self.transformer)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, keep_time: Tensor, mask_time: Tensor) -> Tensor:
        b, L = context.shape[0], self.n_leads
        kc, km = keep_time.shape[1], mask_time.shape[1]
        ctx = self.embed(context).reshape(b * L, kc, -1)  # one sequence per lead
        queries = self.mask_token.to(ctx.dtype).expand(b * L, km, -1)
        times = torch.cat([keep_time, mask_time], dim=1).repeat_interleave(L, dim=0)  # (B*L, Kc+Km)
        pos = self.pos_embed.to(ctx.dtype)[times]
        out = self.transformer(torch.cat([ctx, queries], dim=1), None, pos=pos)
        return self.proj(out[:, kc:]).reshape(b, L * km, -1)


_ECG_JEPA_SIZES = {
    # The paper's ViT-B sized encoder.
    "ecg_jepa_base": dict(embed_dim=768, depth=12, num_heads=16),
    # CPU-sized: the same layout (8 leads x 50 patches), narrow and shallow.
    "ecg_jepa_tiny": dict(embed_dim=128, depth=4, num_heads=4),
}


def _ecg_jepa_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(
        leads=list(INDEPENDENT_LEADS), sampling_rate=250.0, num_samples=2500, patch_size=50,
        mlp_ratio=4.0, qkv_bias=False, norm_eps=1e-5, pos_every_block=True, cross_pattern_attention=True,
        cropa_impl="auto", **_ECG_JEPA_SIZES[name],
    )
    hparams = resolve_hparams(name, defaults, overrides)
    return ecg_encoder_spec(name, hparams, hparams["embed_dim"], ECG_JEPA_PAPER, patch_size=int(hparams["patch_size"]))


def _ecg_jepa(name: str, **overrides) -> EcgPatchTransformer:
    spec = _ecg_jepa_spec(name, **overrides)
    return EcgPatchTransformer(**spec.hparams, spec=spec)


@register_encoder(modality="ecg", spec=partial(_ecg_jepa_spec, "ecg_jepa_base"))
def ecg_jepa_base(**overrides) -> EcgPatchTransformer:
    """ECG-JEPA ViT-B (768 wide, 12 deep, 16 heads), 8 leads at 250 Hz, 10 s, CroPA."""
    return _ecg_jepa("ecg_jepa_base", **overrides)


@register_encoder(modality="ecg", spec=partial(_ecg_jepa_spec, "ecg_jepa_tiny"))
def ecg_jepa_tiny(**overrides) -> EcgPatchTransformer:
    """ECG-JEPA layout at CPU size (128 wide, 4 deep, 4 heads), 8 leads at 250 Hz, 10 s, CroPA."""
    return _ecg_jepa("ecg_jepa_tiny", **overrides)
