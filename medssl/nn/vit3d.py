"""The one 3-D Vision Transformer over cubic patches of a volume (CT's and MRI's 3-D ViT encoders).

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, in 3-D as UNETR (Hatamizadeh et
al., WACV 2022) and 3-D MAE pretraining (e.g. Chen et al., "Masked Image Modeling Advances 3D
Medical Image Analysis", WACV 2023) use it:

- patch embedding: Conv3d(C, D, kernel = stride = p) over non-overlapping p^3 cubes, Xavier-uniform
  on its flattened kernel as MAE; its bias zero with `zero_patch_bias` (CT), else torch's default;
- fixed 3-D sine-cosine positions (`medssl.nn.pos_embed.sincos_3d`), computed for the grid of the
  input and cached per (grid, device, dtype); not in the state_dict;
- pre-norm transformer blocks on scaled_dot_product_attention (`medssl.nn.transformer`), a final
  LayerNorm; no class token.

Input: (B, in_channels, D, H, W); with `shape` exactly that size (CT), else any D, H, W that are
multiples of p (MRI: whole volumes or patches). Outputs:

- `forward(x) -> (B, embed_dim)`: the mean of the layer-normed tokens, or with `norm_after_pool`
  the final LayerNorm of the mean of the last block's tokens (UNETR/RETFound-style pooling, CT);
- `forward_features(x) -> (B, N, embed_dim)`: layer-normed tokens, row-major over (d, h, w);
- `feature_maps(x)` = `stages(x)`: [(B, embed_dim, d, h, w)] the layer-normed token grid after
  each of `feature_layers` (1-based block numbers; default the last block);
- `stages(x, embed_hook)`: the same with `embed_hook` editing the (B, D, d, h, w) patch-embedding
  grid first (SimMIM's mask tokens, a noisy teacher's noise), with `embed_stride`,
  `embed_channels`, `stage_strides`, `stage_channels` describing the maps;
- `encode(x, keep_idx)`: layer-normed tokens of a visible subset only, as MAE's encoder runs.

State-dict keys: `patch_embed.{weight,bias}`, `transformer.blocks.<i>.*`, `transformer.norm.*`
(the keys both former CT and MRI 3-D ViTs had).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from medssl.nn.pos_embed import sincos_3d
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.nn.unet import check_spatial

EmbedHook = Callable[[Tensor], Tensor]


class ViT3d(nn.Module):
    """A ViT over non-overlapping p^3 patches of (B, C, D, H, W) volumes; see the module docstring."""

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        *,
        shape: Sequence[int] | None = None,
        feature_layers: Sequence[int] | None = None,
        norm_after_pool: bool = False,
        zero_patch_bias: bool = False,
        spec=None,
    ):
        super().__init__()
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        if self.shape is not None and (len(self.shape) != 3 or any(s % patch_size for s in self.shape)):
            raise ValueError(f"input shape {list(self.shape)} must be 3 sizes, each a multiple of patch {patch_size}")
        layers = [int(i) for i in feature_layers] if feature_layers else [depth]
        if not all(1 <= i <= depth for i in layers) or layers != sorted(set(layers)):
            raise ValueError(f"feature_layers {layers} must be increasing block numbers in 1..{depth}")
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.feature_layers = layers
        self.norm_after_pool = norm_after_pool
        self.fixed_grid = None if self.shape is None else tuple(s // patch_size for s in self.shape)
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio)
        init_vit_weights(self)
        # MAE initialises the patch projection like a linear layer (Xavier-uniform on its flattened weight).
        nn.init.xavier_uniform_(self.patch_embed.weight.view(embed_dim, -1))
        if zero_patch_bias:
            nn.init.zeros_(self.patch_embed.bias)
        self.embed_stride = patch_size
        self.embed_channels = embed_dim
        self.stage_strides = [patch_size] * len(layers)
        self.stage_channels = [embed_dim] * len(layers)
        self.spec = spec
        self._pos_cache: dict[tuple, Tensor] = {}

    @property
    def input_conv(self) -> nn.Conv3d:
        return self.patch_embed

    def grid(self, x: Tensor) -> tuple[int, int, int]:
        """The token grid (D/p, H/p, W/p) of input x, after checking x against the input contract."""
        if self.shape is None:
            check_spatial(x, 3, self.in_channels, self.patch_size, type(self).__name__)
        elif x.ndim != 5 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.shape:
            raise ValueError(f"expected input (batch, {self.in_channels}, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x.shape)}")
        return tuple(s // self.patch_size for s in x.shape[2:])

    def positions(self, grid: tuple[int, int, int], like: Tensor) -> Tensor:
        """(N, embed_dim) positions of `grid`, on like's device and dtype (cached)."""
        key = (tuple(grid), like.device, like.dtype)
        if key not in self._pos_cache:
            with torch.inference_mode(False):  # a plain tensor even when first built under inference mode
                self._pos_cache[key] = sincos_3d(self.embed_dim, grid).to(device=like.device, dtype=like.dtype)
        return self._pos_cache[key]

    def embed(self, x: Tensor, embed_hook: EmbedHook | None = None) -> Tensor:
        """(B, N, embed_dim) patch tokens plus positions (`embed_hook` edits the grid before)."""
        grid = self.grid(x)
        g = self.patch_embed(x)
        if embed_hook is not None:
            g = embed_hook(g)
        tokens = g.flatten(2).transpose(1, 2)
        return tokens + self.positions(grid, tokens)

    def _run(self, x: Tensor, embed_hook: EmbedHook | None = None) -> tuple[Tensor, list[Tensor]]:
        """Hidden states after the last block and after each of `feature_layers` (before the final norm)."""
        h = self.embed(x, embed_hook)
        taken = []
        for i, blk in enumerate(self.transformer.blocks, start=1):
            h = blk(h)
            if i in self.feature_layers:
                taken.append(h)
        return h, taken

    def encode(self, x: Tensor, keep_idx: Tensor | None = None) -> Tensor:
        """Normalised tokens of the visible patches: keep_idx (B, K) long indices into the N
        raster-ordered patches (None: all) -> (B, K, embed_dim)."""
        tokens = self.embed(x)
        if keep_idx is not None:
            idx = keep_idx.to(tokens.device)[..., None].expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, idx)
        return self.transformer(tokens)

    def stages(self, x: Tensor, embed_hook: EmbedHook | None = None) -> list[Tensor]:
        """The layer-normed token grid after each of `feature_layers`, (B, D, d, h, w) each."""
        grid = self.grid(x)
        _, taken = self._run(x, embed_hook)
        return [self.transformer.norm(h).transpose(1, 2).reshape(x.shape[0], -1, *grid) for h in taken]

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        return self.stages(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encode(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.norm_after_pool:
            return self.transformer.norm(self._run(x)[0].mean(dim=1))
        return self.encode(x).mean(dim=1)
