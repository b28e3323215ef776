"""Masked autoencoding with a 3-D ViT (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022), in 3-D as Chen et al., "Masked Image Modeling Advances 3D Medical Image
Analysis", WACV 2023, apply it.

Per step, for cached volumes x (B, C, *S), all draws from the (seed, step, rank) generator:
1. a random patch per sample (plain crop unless the recipe asks for AMAES's spatial augmentation;
   MAE's only augmentation is random cropping);
2. the patch is cut into p^3 tokens and a fixed fraction (0.75, MAE's default) hidden, positions
   independent per sample, the same count in every sample (medssl.ssl.masking.RandomPatchMasker);
3. the ViT encodes the visible tokens only; a light decoder (`MAEDecoder3d`) puts them back on the
   full grid with a learned mask token and fixed 3-D sin-cos positions and predicts every token's
   voxels;
4. loss: mean squared error over the hidden tokens (medssl.ssl.mae.masked_patch_loss), against
   per-token normalised targets when `norm_target` (MAE's norm_pix_loss).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.mri.augment3d import RandomPatch3d
from medssl.mri.vit3d import ViT3d, patchify_3d, sincos_3d
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.ssl.mae import masked_patch_loss
from medssl.ssl.masking import RandomPatchMasker
from medssl.ssl.random import step_generator


class MAEDecoder3d(nn.Module):
    """(B, K, embed_dim) encoded visible tokens, keep_idx (B, K), grid (d, h, w) ->
    (B, d * h * w, p^3 * C) predicted voxels of every token (the `patchify_3d` layout)."""

    def __init__(self, embed_dim: int, patch_size: int, in_channels: int, *, decoder_dim: int = 384, depth: int = 4,
                 num_heads: int = 12, mlp_ratio: float = 4.0):
        super().__init__()
        self.decoder_dim = decoder_dim
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.transformer = Transformer(decoder_dim, depth, num_heads, mlp_ratio)
        self.head = nn.Linear(decoder_dim, patch_size**3 * in_channels)
        init_vit_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)
        self._pos_cache: dict[tuple[int, int, int], Tensor] = {}

    def forward(self, tokens: Tensor, keep_idx: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, k, _ = tokens.shape
        n = grid[0] * grid[1] * grid[2]
        z = self.embed(tokens)
        full = self.mask_token.to(z.dtype).expand(b, n, self.decoder_dim)
        full = full.scatter(1, keep_idx.to(z.device)[..., None].expand(-1, -1, self.decoder_dim), z)
        if grid not in self._pos_cache:
            self._pos_cache[grid] = sincos_3d(self.decoder_dim, grid)
        full = full + self._pos_cache[grid].to(device=z.device, dtype=z.dtype)
        return self.head(self.transformer(full))


class MaskedAutoencoder3d(nn.Module):
    """forward(x, *, step, rank) -> scalar loss. x: (B, C, *S) cached volumes."""

    def __init__(self, encoder: ViT3d, decoder: MAEDecoder3d, masker: RandomPatchMasker, patch: RandomPatch3d, *,
                 norm_target: bool = True, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.masker = masker
        self.patch = patch
        self.norm_target = norm_target
        self.seed = seed

    def draw(self, x: Tensor, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(patches (B, C, *patch), keep_idx (B, K), mask_idx (B, N - K)) for this (step, rank)."""
        g = step_generator(self.seed, step, rank)
        with torch.autocast(device_type=x.device.type, enabled=False):
            patches = self.patch(x.float(), g)
        grid = self.encoder.grid(patches)
        keep, masked = self.masker(x.shape[0], grid[0] * grid[1] * grid[2], g)
        return patches, keep.to(x.device), masked.to(x.device)

    def loss(self, patches: Tensor, keep_idx: Tensor, mask_idx: Tensor) -> Tensor:
        grid = self.encoder.grid(patches)
        pred = self.decoder(self.encoder.encode(patches, keep_idx), keep_idx, grid)
        target = patchify_3d(patches, self.encoder.patch_size)
        hidden = torch.zeros(target.shape[:2], dtype=torch.bool, device=target.device)
        hidden.scatter_(1, mask_idx, True)
        return masked_patch_loss(pred.float()[:, None], target.float()[:, None], hidden[:, None],
                                 norm_target=self.norm_target)

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        return self.loss(*self.draw(x, step, rank))
