"""ECG encoders registered with medssl's registry.

ECG-JEPA (Kim, "Learning General Representation of 12-Lead Electrocardiogram with a
Joint-Embedding Predictive Architecture", 2024): 8 leads (I, II, V1-V6) at 250 Hz, 10 s
(2,500 samples), each lead cut into patches of 50 samples (8 x 50 = 400 tokens), a linear patch
embedding shared across leads, fixed 2-D sine-cosine positions over (lead, time patch), and a ViT
whose attention is restricted by Cross-Pattern Attention (see `medssl.ecg.cropa`).

Choice left open by the paper and made here: the pooled embedding is the mean of the final
(layer-normed) token features over all tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medssl.ecg.cropa import cross_pattern_mask
from medssl.ecg.leads import INDEPENDENT_LEADS, parse_lead_set
from medssl.nn.pos_embed import sincos_2d
from medssl.nn.tokens import gather_time_patches
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.registry import EncoderSpec, register_encoder

ECG_JEPA_PAPER = (
    "Kim S. Learning General Representation of 12-Lead Electrocardiogram with a "
    "Joint-Embedding Predictive Architecture. arXiv:2410.08559 (2024)"
)


class EcgPatchTransformer(nn.Module):
    """ViT over (lead, time-patch) tokens with optional Cross-Pattern Attention.

    Input x: (B, n_leads, num_samples) float, standardised per lead, leads in `spec.input["leads"]`
    order at `spec.input["sampling_rate"]` Hz. `forward_features` -> (B, n_leads * n_time, D);
    `forward` -> (B, D).
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
        cross_pattern_attention: bool = True,
        spec: EncoderSpec | None = None,
    ):
        super().__init__()
        if num_samples % patch_size:
            raise ValueError(f"num_samples {num_samples} is not a multiple of patch_size {patch_size}")
        self.leads = parse_lead_set(list(leads))
        self.n_leads = len(self.leads)
        self.n_time = num_samples // patch_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.cross_pattern_attention = cross_pattern_attention
        self.patch_embed = nn.Linear(patch_size, embed_dim)
        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.n_leads, self.n_time), persistent=False)
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio)
        init_vit_weights(self)
        self.spec = spec

    def attention_mask(self, n_time: int, device: torch.device) -> Tensor | None:
        return cross_pattern_mask(self.n_leads, n_time, device=device) if self.cross_pattern_attention else None

    def embed_patches(self, x: Tensor) -> Tensor:
        """(B, n_leads, num_samples) -> (B, n_leads * n_time, D) with positions added."""
        b, n_leads, n_samples = x.shape
        if n_leads != self.n_leads or n_samples != self.n_time * self.patch_size:
            raise ValueError(
                f"expected input (batch, {self.n_leads} leads, {self.n_time * self.patch_size} samples), "
                f"got {tuple(x.shape)}"
            )
        patches = x.reshape(b, n_leads * self.n_time, self.patch_size)
        return self.patch_embed(patches) + self.pos_embed.to(x.dtype)

    def forward_features(self, x: Tensor, keep_time: Tensor | None = None) -> Tensor:
        """Token features. With keep_time (B, K) only those time patches (of every lead) are encoded."""
        tokens = self.embed_patches(x)
        n_time = self.n_time
        if keep_time is not None:
            tokens = gather_time_patches(tokens, self.n_leads, keep_time)
            n_time = keep_time.shape[1]
        return self.transformer(tokens, self.attention_mask(n_time, x.device))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).mean(dim=1)


class JepaPredictor(nn.Module):
    """ECG-JEPA predictor: from context tokens, predict the target encoder's features at the masked
    time patches of every lead.

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
        cross_pattern_attention: bool = True,
    ):
        super().__init__()
        self.n_leads = n_leads
        self.cross_pattern_attention = cross_pattern_attention
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.register_buffer("pos_embed", sincos_2d(predictor_dim, n_leads, n_time)[None], persistent=False)
        self.transformer = Transformer(predictor_dim, depth, num_heads, mlp_ratio)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        init_vit_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: Tensor, keep_time: Tensor, mask_time: Tensor) -> Tensor:
        b = context.shape[0]
        pos = self.pos_embed.expand(b, -1, -1).to(context.dtype)
        ctx = self.embed(context) + gather_time_patches(pos, self.n_leads, keep_time)
        queries = self.mask_token.to(context.dtype) + gather_time_patches(pos, self.n_leads, mask_time)
        kc, km = keep_time.shape[1], mask_time.shape[1]
        mask = (
            cross_pattern_mask(self.n_leads, kc, km, device=context.device)
            if self.cross_pattern_attention else None
        )
        out = self.transformer(torch.cat([ctx, queries], dim=1), mask)
        return self.proj(out[:, self.n_leads * kc:])


_ECG_JEPA_SIZES = {
    # The paper's ViT-B sized encoder.
    "ecg_jepa_base": dict(embed_dim=768, depth=12, num_heads=16),
    # CPU-sized: the same layout (8 leads x 50 patches), narrow and shallow.
    "ecg_jepa_tiny": dict(embed_dim=128, depth=4, num_heads=4),
}


def _ecg_jepa(name: str, **overrides) -> EcgPatchTransformer:
    hparams = dict(
        leads=list(INDEPENDENT_LEADS), sampling_rate=250.0, num_samples=2500, patch_size=50,
        mlp_ratio=4.0, cross_pattern_attention=True, **_ECG_JEPA_SIZES[name],
    )
    unknown = set(overrides) - set(hparams)
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}; known: {', '.join(hparams)}")
    hparams.update(overrides)
    hparams["leads"] = list(parse_lead_set(hparams["leads"]))
    spec = EncoderSpec(
        name=name,
        modality="ecg",
        input={
            "leads": hparams["leads"],
            "sampling_rate": float(hparams["sampling_rate"]),
            "num_samples": int(hparams["num_samples"]),
            "units": "mV",
            "normalisation": "per-lead zero mean, unit variance after 0.67-40 Hz band-pass",
            "patch_size": int(hparams["patch_size"]),
        },
        embed_dim=int(hparams["embed_dim"]),
        hparams=hparams,
        paper=ECG_JEPA_PAPER,
    )
    return EcgPatchTransformer(**hparams, spec=spec)


@register_encoder(modality="ecg")
def ecg_jepa_base(**overrides) -> EcgPatchTransformer:
    """ECG-JEPA ViT-B (768 wide, 12 deep, 16 heads), 8 leads at 250 Hz, 10 s, CroPA."""
    return _ecg_jepa("ecg_jepa_base", **overrides)


@register_encoder(modality="ecg")
def ecg_jepa_tiny(**overrides) -> EcgPatchTransformer:
    """ECG-JEPA layout at CPU size (128 wide, 4 deep, 4 heads), 8 leads at 250 Hz, 10 s, CroPA."""
    return _ecg_jepa("ecg_jepa_tiny", **overrides)
