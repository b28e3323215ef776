"""A ViT over per-lead ECG patches with lead embeddings and SEP tokens (ST-MEM's encoder).

Na et al., "Guiding Masked Representation Learning to Capture Spatio-Temporal Relationship of
Electrocardiogram", ICLR 2024 (ST-MEM; code github.com/bakqui/ST-MEM). Layout as in the paper
and its code:

- 12 leads at 250 Hz, 2,250 samples (9 s), each lead cut into 30 patches of 75 samples;
- patch embedding LayerNorm(75) -> Linear(75, D) -> LayerNorm(D), shared across leads;
- fixed 1-D sine-cosine temporal positions (the same for every lead);
- per lead, a learned SEP token before and after its patches (position encoding zero), and a
  learned lead embedding added to every token of that lead (SEP tokens included);
- all (lead, patch) tokens of all leads in one sequence through pre-norm transformer blocks
  (medssl.nn.transformer, SDPA), then a LayerNorm.

`encode(x, keep_leads, keep_time)` encodes only a visible subset, as masked-modelling methods
need. `forward_features` returns the layer-normed patch tokens (SEP tokens removed), the
features ST-MEM's decoder sees; `forward` pools like ST-MEM's downstream encoder: the mean over
all leads' patch tokens (SEP removed) of the last block's output, then the final LayerNorm.

Differences from the official code: weights are initialised with the ViT truncated normal
(std 0.02) of `init_vit_weights` rather than Xavier-uniform; ST-MEM standardises each record over
all leads jointly and crops at random, while medssl's cache standardises per lead and crops at
the centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from medssl.ecg.encoder_spec import ecg_encoder_spec, resolve_hparams
from medssl.ecg.leads import STANDARD_LEADS, parse_lead_set
from medssl.nn.pos_embed import sincos_1d
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.registry import EncoderSpec, register_encoder

ST_MEM_PAPER = (
    "Na Y, Park M, Tae Y, Joo S. Guiding Masked Representation Learning to Capture "
    "Spatio-Temporal Relationship of Electrocardiogram. ICLR 2024 (ST-MEM)"
)


def sep_sincos(dim: int, n_time: int) -> Tensor:
    """(n_time + 2, dim): zeros for the two SEP positions, sin-cos of 0..n_time-1 between them
    (ST-MEM's `get_1d_sincos_pos_embed(..., sep_embed=True)`)."""
    pos = torch.from_numpy(sincos_1d(dim, np.arange(n_time))).float()
    zero = torch.zeros(1, dim)
    return torch.cat([zero, pos, zero])


class EcgLeadViT(nn.Module):
    """ViT over (lead, time-patch) tokens with SEP tokens and lead embeddings (ST-MEM).

    Input x: (B, n_leads, num_samples), leads in `spec.input["leads"]` order.
    `encode` -> (B, Lv, K + 2, D) hidden states (before the final LayerNorm) of the visible
    leads, each [SEP, K patches, SEP]; `forward_features` -> (B, n_leads * n_time, D);
    `forward` -> (B, D).
    """

    def __init__(
        self,
        *,
        leads: Sequence[str] = STANDARD_LEADS,
        sampling_rate: float = 250.0,
        num_samples: int = 2250,
        patch_size: int = 75,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
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
        self.patch_embed = nn.Sequential(
            nn.LayerNorm(patch_size), nn.Linear(patch_size, embed_dim), nn.LayerNorm(embed_dim)
        )
        self.register_buffer("pos_embed", sep_sincos(embed_dim, self.n_time), persistent=False)
        self.sep_embed = nn.Parameter(torch.zeros(embed_dim))
        self.lead_embed = nn.Parameter(torch.zeros(self.n_leads, embed_dim))
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio)
        init_vit_weights(self)
        nn.init.normal_(self.sep_embed, std=0.02)
        nn.init.normal_(self.lead_embed, std=0.02)
        self.spec = spec

    def patchify(self, x: Tensor) -> Tensor:
        """(B, n_leads, num_samples) -> (B, n_leads, n_time, patch_size)."""
        b, n_leads, n_samples = x.shape
        if n_leads != self.n_leads or n_samples != self.n_time * self.patch_size:
            raise ValueError(
                f"expected input (batch, {self.n_leads} leads, {self.n_time * self.patch_size} samples), "
                f"got {tuple(x.shape)}"
            )
        return x.reshape(b, n_leads, self.n_time, self.patch_size)

    def encode(self, x: Tensor, keep_leads: Tensor | None = None, keep_time: Tensor | None = None) -> Tensor:
        """Hidden states of the visible tokens, before the final LayerNorm.

        keep_leads: (B, Lv) long, the visible leads (default: all); keep_time: (B, Lv, K) long,
        the visible time patches of each visible lead (default: all). Returns (B, Lv, K + 2, D),
        per visible lead [SEP, its K patch tokens, SEP].
        """
        tokens = self.patch_embed(self.patchify(x)) + self.pos_embed[1:-1].to(x.dtype)  # (B, L, T, D)
        b, _, _, d = tokens.shape
        if keep_leads is None:
            keep_leads = torch.arange(self.n_leads, device=x.device).expand(b, -1)
        if keep_time is None:
            keep_time = torch.arange(self.n_time, device=x.device).expand(b, keep_leads.shape[1], -1)
        lv, k = keep_time.shape[1:]
        flat = (keep_leads[:, :, None] * self.n_time + keep_time).reshape(b, lv * k)
        visible = torch.gather(tokens.reshape(b, -1, d), 1, flat[..., None].expand(-1, -1, d)).reshape(b, lv, k, d)
        sep = self.sep_embed.to(x.dtype).expand(b, lv, 1, d)
        pos = self.pos_embed.to(x.dtype)
        seq = torch.cat([sep + pos[0], visible, sep + pos[-1]], dim=2)
        seq = seq + self.lead_embed.to(x.dtype)[keep_leads][:, :, None, :]
        h = seq.reshape(b, lv * (k + 2), d)
        for blk in self.transformer.blocks:
            h = blk(h)
        return h.reshape(b, lv, k + 2, d)

    def norm(self, h: Tensor) -> Tensor:
        """The encoder's final LayerNorm."""
        return self.transformer.norm(h)

    def pool(self, h: Tensor) -> Tensor:
        """(B, Lv, K + 2, D) hidden states -> (B, D): mean over patch tokens, then LayerNorm."""
        return self.norm(h[:, :, 1:-1].mean(dim=(1, 2)))

    def forward_features(self, x: Tensor) -> Tensor:
        h = self.norm(self.encode(x))
        return h[:, :, 1:-1].reshape(x.shape[0], -1, self.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.encode(x))


_SIZES = {
    # ST-MEM's ViT-B/75: 768 wide, 12 deep, 12 heads.
    "ecg_mae_vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    # CPU size: the same 12 x 30 patch layout, narrow and shallow.
    "ecg_mae_vit_tiny": dict(embed_dim=128, depth=4, num_heads=4),
}


def _ecg_lead_vit_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(
        leads=list(STANDARD_LEADS), sampling_rate=250.0, num_samples=2250, patch_size=75,
        mlp_ratio=4.0, **_SIZES[name],
    )
    hparams = resolve_hparams(name, defaults, overrides)
    return ecg_encoder_spec(name, hparams, hparams["embed_dim"], ST_MEM_PAPER, patch_size=int(hparams["patch_size"]))


def _ecg_lead_vit(name: str, **overrides) -> EcgLeadViT:
    spec = _ecg_lead_vit_spec(name, **overrides)
    return EcgLeadViT(**spec.hparams, spec=spec)


@register_encoder(modality="ecg", spec=partial(_ecg_lead_vit_spec, "ecg_mae_vit_base"))
def ecg_mae_vit_base(**overrides) -> EcgLeadViT:
    """ST-MEM ViT-B/75 (768 wide, 12 deep, 12 heads), 12 leads at 250 Hz, 9 s, SEP + lead embeddings."""
    return _ecg_lead_vit("ecg_mae_vit_base", **overrides)


@register_encoder(modality="ecg", spec=partial(_ecg_lead_vit_spec, "ecg_mae_vit_tiny"))
def ecg_mae_vit_tiny(**overrides) -> EcgLeadViT:
    """ST-MEM layout at CPU size (128 wide, 4 deep, 4 heads), 12 leads at 250 Hz, 9 s."""
    return _ecg_lead_vit("ecg_mae_vit_tiny", **overrides)
