"""A 3-D Vision Transformer over cubic patches of a volume (the encoder of the 3-D MAE option).

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, in 3-D as UNETR (Hatamizadeh et
al., WACV 2022) and 3-D MAE pretraining (e.g. Chen et al., "Masked Image Modeling Advances 3D
Medical Image Analysis", WACV 2023) use it:

- patch embedding: Conv3d(C, D, kernel = stride = p) over non-overlapping p^3 cubes;
- fixed 3-D sine-cosine positions (MAE uses fixed sin-cos; `medssl.nn.pos_embed.sincos_3d`: an
  even third of the channels per axis, any remainder zeros), computed for the grid of whatever input arrives, so volumes of any size that is a
  multiple of p are read without interpolating learned positions;
- pre-norm transformer blocks on scaled_dot_product_attention (medssl.nn.transformer), final
  LayerNorm; no class token: the pooled embedding is the mean of the normalised patch tokens.

`encode(x, keep_idx)` runs only the visible patch tokens, as MAE's encoder does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.mri.unet_encoder import check_volume
from medssl.nn.pos_embed import sincos_3d
from medssl.nn.transformer import Transformer, init_vit_weights


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


class ViT3d(nn.Module):
    """x: (B, in_channels, D, H, W), D, H, W multiples of `patch_size`.

    forward_features(x) -> (B, N, embed_dim) normalised patch tokens; forward(x) -> (B, embed_dim)
    their mean; feature_maps(x) -> [(B, embed_dim, D/p, H/p, W/p)], the token grid as one map.
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio)
        init_vit_weights(self)
        # MAE initialises the patch projection like a linear layer (Xavier-uniform on its flattened weight).
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self._pos_cache: dict[tuple[int, int, int], Tensor] = {}

    @property
    def input_conv(self) -> nn.Conv3d:
        return self.patch_embed

    def grid(self, x: Tensor) -> tuple[int, int, int]:
        check_volume(x, self.in_channels, self.patch_size, type(self).__name__)
        return tuple(s // self.patch_size for s in x.shape[2:])

    def pos_embed(self, grid: tuple[int, int, int], like: Tensor) -> Tensor:
        """(N, embed_dim) positions of `grid`, on like's device and dtype (cached per grid)."""
        if grid not in self._pos_cache:
            self._pos_cache[grid] = sincos_3d(self.embed_dim, grid)
        return self._pos_cache[grid].to(device=like.device, dtype=like.dtype)

    def embed(self, x: Tensor) -> Tensor:
        """(B, N, embed_dim) patch tokens plus positions."""
        grid = self.grid(x)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return tokens + self.pos_embed(grid, tokens)

    def encode(self, x: Tensor, keep_idx: Tensor | None = None) -> Tensor:
        """Normalised tokens of the visible patches: keep_idx (B, K) long indices into the N
        raster-ordered patches (None: all) -> (B, K, embed_dim)."""
        tokens = self.embed(x)
        if keep_idx is not None:
            idx = keep_idx.to(tokens.device)[..., None].expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, idx)
        return self.transformer(tokens)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encode(x)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        grid = self.grid(x)
        tokens = self.encode(x)
        return [tokens.transpose(1, 2).reshape(x.shape[0], self.embed_dim, *grid)]

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x).mean(dim=1)
