"""Masked autoencoding of 2-D images (He et al., "Masked Autoencoders Are Scalable Vision
Learners", CVPR 2022): the parts VAMAE and the plain-MAE baseline share.

- `patchify` / `unpatchify`: (B, C, H, W) <-> (B, N, C, p * p), patches row-major, as the
  encoder's Conv2d patch embedding orders its tokens.
- `MaskSplit`: visible and masked patch indices of a batch (the same count in every sample, so
  batches stay dense).
- `UniformPatchMasker`: MAE's random masking, every patch equally likely; MAE keeps
  int(N * (1 - ratio)) patches.
- `MaskedImageDecoder`: MAE's light decoder: a linear map to the decoder width, the learned
  mask token in every hidden slot, fixed 2-D sin-cos positions, transformer blocks, LayerNorm
  and a linear head predicting `n_targets * p * p` values per patch.
- `masked_mse` / `masked_bce`: per-patch losses averaged over the masked patches only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.pos_embed import sincos_pos_embed
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.ssl.masked_loss import masked_mean, masked_patch_loss


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C, p * p), N = (H / p) * (W / p), row-major."""
    b, c, h, w = x.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not a multiple of the patch size {p}")
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c, p * p)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch_size: int) -> Tensor:
    """(B, N, C, p * p) -> (B, C, H, W); the inverse of `patchify`."""
    b, n, c, _ = patches.shape
    gh, gw = grid
    p = patch_size
    x = patches.reshape(b, gh, gw, c, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, gh * p, gw * p)


class MaskSplit(NamedTuple):
    """keep_idx (B, K) and mask_idx (B, M) long, sorted, disjoint, K + M = N; masked (B, N) bool."""

    keep_idx: Tensor
    mask_idx: Tensor
    masked: Tensor

    def to(self, device: torch.device | str) -> MaskSplit:
        return MaskSplit(*(t.to(device) for t in self))


def n_masked(n_patches: int, ratio: float) -> int:
    """MAE's count: keep int(N * (1 - ratio)) patches (at least one), mask the rest (at least one)."""
    n_keep = min(max(int(n_patches * (1 - ratio)), 1), n_patches - 1)
    return n_patches - n_keep


def split_from_scores(scores: Tensor, n_mask: int) -> MaskSplit:
    """The `n_mask` highest-scoring patches of each row are masked. scores: (B, N)."""
    order = torch.argsort(scores, dim=1, descending=True)
    mask_idx = torch.sort(order[:, :n_mask], dim=1).values
    keep_idx = torch.sort(order[:, n_mask:], dim=1).values
    masked = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, mask_idx, True)
    return MaskSplit(keep_idx, mask_idx, masked)


class UniformPatchMasker:
    """MAE's random masking: `ratio` of the patches hidden, uniformly at random per sample.

    __call__(batch_size, n_patches, generator, priors=None) -> MaskSplit (priors ignored).
    """

    def __init__(self, ratio: float = 0.75):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        self.ratio = float(ratio)

    def __call__(self, batch_size: int, n_patches: int, generator: torch.Generator,
                 priors: Mapping[str, Tensor] | None = None) -> MaskSplit:
        scores = torch.rand(batch_size, n_patches, generator=generator)
        return split_from_scores(scores, n_masked(n_patches, self.ratio))


def masked_mse(pred: Tensor, target: Tensor, masked: Tensor, *, norm_target: bool = False) -> Tensor:
    """Mean squared error over masked patches. pred, target: (B, N, ...); masked: (B, N) bool.

    With `norm_target`, each target patch is standardised by its own mean and unbiased variance
    over all its values (MAE's norm_pix_loss, eps 1e-6).
    """
    return masked_patch_loss(pred.flatten(2), target.flatten(2), masked, norm_target=norm_target)


def masked_bce(logits: Tensor, target: Tensor, masked: Tensor) -> Tensor:
    """Binary cross-entropy (logits vs targets in [0, 1]) averaged over masked patches."""
    per_patch = F.binary_cross_entropy_with_logits(logits.flatten(2), target.flatten(2), reduction="none").mean(-1)
    return masked_mean(per_patch, masked)


class MaskedImageDecoder(nn.Module):
    """MAE's decoder. forward(tokens (B, n_prefix + K, D_enc) layer-normed encoder output,
    keep_idx (B, K)) -> (B, N, n_targets, p * p) predictions of every patch."""

    def __init__(
        self,
        *,
        grid: tuple[int, int],
        patch_size: int,
        embed_dim: int,
        n_prefix: int = 1,
        n_targets: int = 1,
        decoder_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.grid = tuple(grid)
        self.n_patches = grid[0] * grid[1]
        self.n_prefix = n_prefix
        self.n_targets = n_targets
        self.patch_size = patch_size
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_pos_embed(decoder_dim, self.grid, n_prefix), persistent=False)
        self.transformer = Transformer(decoder_dim, depth, num_heads, mlp_ratio)
        self.head = nn.Linear(decoder_dim, n_targets * patch_size * patch_size)
        init_vit_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, keep_idx: Tensor) -> Tensor:
        z = self.embed(tokens)
        b, _, dd = z.shape
        grid = self.mask_token.to(z.dtype).expand(b, self.n_patches, dd)
        grid = grid.scatter(1, keep_idx[..., None].expand(-1, -1, dd), z[:, self.n_prefix:])
        seq = torch.cat([z[:, :self.n_prefix], grid], dim=1) + self.pos_embed.to(z.dtype)
        out = self.head(self.transformer(seq)[:, self.n_prefix:])
        return out.reshape(b, self.n_patches, self.n_targets, self.patch_size ** 2)
