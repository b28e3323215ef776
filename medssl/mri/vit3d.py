"""The MRI 3-D ViT (`mri_vit3d_*`, the encoder of the 3-D MAE option) and its patch layout.

The model is `medssl.nn.vit3d.ViT3d`, the one 3-D ViT class CT's `ct_vit3d_*` encoders also build;
the MRI factories use it shape-free (any D, H, W that are multiples of p, read without
interpolating positions), mean of the layer-normed tokens as the pooled embedding, torch's
default patch-embedding bias init. Positions: `medssl.nn.pos_embed.sincos_3d` (an even third of
the channels per axis, any remainder zeros). `encode(x, keep_idx)` runs only the visible patch
tokens, as MAE's encoder does. `patchify_3d` / `unpatchify_3d` give the matching voxel layout.
"""

from __future__ import annotations

from torch import Tensor

from medssl.nn.pos_embed import sincos_3d
from medssl.nn.vit3d import ViT3d

__all__ = ["ViT3d", "patchify_3d", "sincos_3d", "unpatchify_3d"]


def patchify_3d(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, D, H, W) -> (B, N, p^3 * C), tokens in the raster order of the patch embedding,
    each token's voxels ordered (pd, ph, pw, C)."""
    b, c, d, h, w = x.shape
    p = patch_size
    x = x.reshape(b, c, d // p, p, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (d // p) * (h // p) * (w // p), p**3 * c)


def unpatchify_3d(tokens: Tensor, patch_size: int, grid: tuple[int, int, int], channels: int) -> Tensor:
    """Inverse of `patchify_3d`: (B, N, p^3 * C) -> (B, C, D, H, W)."""
    b = tokens.shape[0]
    p = patch_size
    gd, gh, gw = grid
    x = tokens.reshape(b, gd, gh, gw, p, p, p, channels)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, channels, gd * p, gh * p, gw * p)
