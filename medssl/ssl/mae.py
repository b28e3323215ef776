"""Masked autoencoding over (lead, time-patch) token grids (He et al., MAE, CVPR 2022), in the
form ST-MEM gives it for 12-lead ECG (Na et al., ICLR 2024).

Parts, each usable alone:

- `PatchMask` / `RandomLeadPatchMasker`: which tokens the encoder sees. ST-MEM masks 75 % of
  the time patches of every lead, positions drawn independently per lead, the same count in
  every lead (int(n_time * 0.25) = 7 of 30 patches kept), so batches stay dense.
- `PatchDecoder`: a light transformer that puts the encoded visible tokens back on the full grid,
  fills the holes with a learned mask token, adds fixed sine-cosine time positions and predicts
  every patch's samples. `lead_wise=True` is ST-MEM's decoder (each lead decoded on its own,
  [SEP, patches, SEP], weights shared across leads); `lead_wise=False` decodes all leads in one
  sequence with learned decoder lead embeddings, which a method needs when whole leads are
  masked. Optional conditioning tokens (e.g. a global representation) are prepended.
- `masked_patch_loss` (`medssl.ssl.masked_loss`, the contract every masked-reconstruction method
  shares): mean squared error over the masked patches only, optionally against per-patch
  normalised targets (MAE's `norm_pix_loss`; ST-MEM's pretraining config sets it).
- `MaskedAutoencoder`: the method; masks come from a generator seeded by (seed, step, rank).

The encoder interface used here (see `medssl.ecg.vit.EcgLeadViT`): `n_leads`, `n_time`,
`patchify(x) -> (B, L, T, P)`, `encode(x, keep_leads, keep_time) -> (B, Lv, K + 2, D)` hidden
states with a SEP token at each end of every visible lead, and `norm(h)`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.pos_embed import sincos_1d
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.ssl.masked_loss import masked_patch_loss
from medssl.ssl.random import step_generator


class PatchMask(NamedTuple):
    """A visible/masked split of a (B, L, T) token grid.

    keep_leads: (B, Lv) long, the leads with visible tokens, sorted.
    keep_time: (B, Lv, K) long, the visible time patches of each of those leads, sorted.
    masked: (B, L, T) bool, True where the token is hidden (the reconstruction targets).
    """

    keep_leads: Tensor
    keep_time: Tensor
    masked: Tensor

    def to(self, device: torch.device | str) -> PatchMask:
        return PatchMask(*(t.to(device) for t in self))


class RandomLeadPatchMasker:
    """ST-MEM's random masking: in every lead, `ratio` of the time patches hidden, positions
    drawn independently per lead and sample; int(n_time * (1 - ratio)) patches kept per lead."""

    def __init__(self, ratio: float = 0.75):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        self.ratio = float(ratio)

    def __call__(self, batch_size: int, n_leads: int, n_time: int, generator: torch.Generator) -> PatchMask:
        n_keep = min(max(int(n_time * (1 - self.ratio)), 1), n_time - 1)
        order = torch.argsort(torch.rand(batch_size, n_leads, n_time, generator=generator), dim=2)
        keep_time = torch.sort(order[:, :, :n_keep], dim=2).values
        masked = torch.ones(batch_size, n_leads, n_time, dtype=torch.bool)
        masked.scatter_(2, keep_time, False)
        keep_leads = torch.arange(n_leads).expand(batch_size, -1).clone()
        return PatchMask(keep_leads, keep_time, masked)


class PatchDecoder(nn.Module):
    """Predict the samples of every patch from the encoded visible tokens.

    forward(tokens (B, Lv, K + 2, D_enc) layer-normed encoder output [SEP, K patches, SEP] per
    visible lead, keep_leads (B, Lv), keep_time (B, Lv, K), cond (B, C, cond_dim) or None)
    -> (B, n_leads, n_time, patch_size). Hidden tokens (and the SEP slots of hidden leads) are
    the learned mask token; positions are fixed sin-cos over time, zero at the SEP slots.
    """

    def __init__(
        self,
        *,
        n_leads: int,
        n_time: int,
        patch_size: int,
        embed_dim: int,
        decoder_dim: int = 256,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        lead_wise: bool = True,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.n_leads, self.n_time = n_leads, n_time
        self.lead_wise = lead_wise
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        pos = torch.from_numpy(sincos_1d(decoder_dim, np.arange(n_time))).float()
        self.register_buffer("pos_embed", F.pad(pos, (0, 0, 1, 1)), persistent=False)  # (T + 2, Dd)
        self.lead_embed = None if lead_wise else nn.Parameter(torch.zeros(n_leads, decoder_dim))
        self.cond_embed = nn.Linear(cond_dim, decoder_dim) if cond_dim else None
        self.transformer = Transformer(decoder_dim, depth, num_heads, mlp_ratio)
        self.head = nn.Linear(decoder_dim, patch_size)
        init_vit_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.lead_embed is not None:
            nn.init.normal_(self.lead_embed, std=0.02)

    def forward(self, tokens: Tensor, keep_leads: Tensor, keep_time: Tensor, cond: Tensor | None = None) -> Tensor:
        b, lv, k2, _ = tokens.shape
        n_leads, n_slots = self.n_leads, self.n_time + 2
        z = self.embed(tokens)
        dd = z.shape[-1]
        slots = torch.cat([
            torch.zeros_like(keep_time[:, :, :1]), keep_time + 1, torch.full_like(keep_time[:, :, :1], n_slots - 1)
        ], dim=2)
        idx = (keep_leads[:, :, None] * n_slots + slots).reshape(b, lv * k2, 1).expand(-1, -1, dd)
        grid = self.mask_token.to(z.dtype).expand(b, n_leads * n_slots, dd)
        grid = grid.scatter(1, idx, z.reshape(b, lv * k2, dd)).reshape(b, n_leads, n_slots, dd)
        grid = grid + self.pos_embed.to(z.dtype)
        if self.lead_embed is not None:
            grid = grid + self.lead_embed.to(z.dtype)[None, :, None, :]
        if self.lead_wise:
            seq = grid.reshape(b * n_leads, n_slots, dd)
        else:
            seq = grid.reshape(b, n_leads * n_slots, dd)
        n_cond = 0
        if cond is not None:
            if self.cond_embed is None:
                raise ValueError("this decoder was built without cond_dim; it takes no conditioning tokens")
            c = self.cond_embed(cond)
            if self.lead_wise:
                c = c.repeat_interleave(n_leads, dim=0)
            n_cond = c.shape[1]
            seq = torch.cat([c, seq], dim=1)
        out = self.transformer(seq)[:, n_cond:]
        out = out.reshape(b, n_leads, n_slots, dd)[:, :, 1:-1]
        return self.head(out)


class MaskedAutoencoder(nn.Module):
    """forward(x) -> scalar loss. x: (B, n_leads, num_samples).

    Encode the visible tokens, decode all patches, mean squared error on the hidden ones.
    """

    def __init__(self, encoder: nn.Module, decoder: PatchDecoder, masker, *, norm_target: bool = True, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.masker = masker
        self.norm_target = norm_target
        self.seed = seed

    def sample_mask(self, batch_size: int, step: int = 0, rank: int = 0) -> PatchMask:
        return self.masker(batch_size, self.encoder.n_leads, self.encoder.n_time, step_generator(self.seed, step, rank))

    def predict(self, x: Tensor, mask: PatchMask) -> Tensor:
        """(B, L, T, patch_size) predictions of every patch from the visible ones."""
        mask = mask.to(x.device)
        h = self.encoder.encode(x, mask.keep_leads, mask.keep_time)
        return self.decoder(self.encoder.norm(h), mask.keep_leads, mask.keep_time)

    def forward(self, x: Tensor, mask: PatchMask | None = None, *, step: int = 0, rank: int = 0) -> Tensor:
        mask = (mask if mask is not None else self.sample_mask(x.shape[0], step, rank)).to(x.device)
        pred = self.predict(x, mask)
        target = self.encoder.patchify(x)
        return masked_patch_loss(pred.float(), target.float(), mask.masked, norm_target=self.norm_target)

    def per_sample_loss(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        """(B,) loss of each sample under the mask a batch of one draws at (step, rank): equal to
        ``forward(x[i:i+1], step=step, rank=rank)`` for every i, in one batched pass."""
        one = self.sample_mask(1, step, rank)
        mask = PatchMask(*(t.expand(x.shape[0], *t.shape[1:]) for t in one)).to(x.device)
        pred = self.predict(x, mask)
        return masked_patch_loss(pred.float(), self.encoder.patchify(x).float(), mask.masked,
                                 norm_target=self.norm_target, per_sample=True)
