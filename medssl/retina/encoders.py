"""2-D Vision Transformers for OCTA en-face images and retinal photographs.

The ViT of Dosovitskiy et al. (ICLR 2021) in the layout MAE (He et al., CVPR 2022) and RETFound
(Zhou et al., "A foundation model for generalizable disease detection from retinal images",
Nature 2023; github.com/rmaphoh/RETFound_MAE) use:

- patch embedding: a Conv2d with kernel = stride = patch size, (B, C, H, W) -> (B, D, H/p, W/p),
  tokens flattened row-major (patch index = row * grid_w + col);
- an optional learned cls token in front of the patch tokens;
- fixed 2-D sine-cosine positions (`medssl.nn.pos_embed.sincos_pos_embed`; zeros at the cls slot),
  held as a frozen parameter `pos_embed` (1, n_prefix + N, D) so that an imported checkpoint's
  positions (and their interpolation to another grid) replace it;
- pre-norm transformer blocks on scaled_dot_product_attention (`medssl.nn.transformer`), then a
  LayerNorm (eps 1e-6).

Initialisation: linear layers truncated normal (std 0.02, medssl's ViT init; MAE uses
Xavier-uniform), the patch projection Xavier-uniform on its flattened kernel (as MAE), cls token
normal (std 0.02).

Outputs:
- `forward(x) -> (B, D)`: with pool="mean" (default) the mean of the last block's patch tokens
  (cls excluded) passed through the final LayerNorm, as RETFound's `global_pool` fine-tuning does
  (it uses a separate `fc_norm`; here the one final LayerNorm serves); with pool="cls" the cls
  token of the layer-normed output (needs cls_token=True).
- `forward_features(x) -> (B, N, D)`: layer-normed patch tokens (cls excluded).
- `feature_maps(x) -> [(B, D, H/p, W/p), ...]`: the layer-normed token grid after each block in
  `feature_layers` (1-based; default: the last block only), in that order. All maps share one
  resolution (a plain ViT has no pyramid).
- `encode(x, keep_idx)`: the layer-normed tokens [cls, visible patches] of a visible subset, as
  masked autoencoders need.

Input contract (`spec.input`): `channels` (1 for OCTA en-face projections, 3 for colour fundus /
RETFound), `spatial_dims` 2, `shape` [H, W] and `input_shape` [C, H, W], `patch_size`,
`tile_size` [H, W] (the image region the model reads at once: the fixed positional grid times the
patch size; larger images are segmented in tiles of this size at their own resolution, never
shrunk more than 2x without being told, see `medssl.bench.tiling`),
`pixel_size_mm` (null: the model does not fix a physical scale), `intensity` (how inputs are
normalised; default "[0,1] then per-image z-score"), `priors` [] (an encoder takes image channels
only; SSL methods that use vessel priors get them as extra channels of their batch and split
them off before the encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn

from medssl.nn.pos_embed import sincos_pos_embed
from medssl.nn.transformer import Transformer, init_vit_weights
from medssl.registry import EncoderSpec, per_axis, register_encoder, resolve_hparams

RETINA_INTENSITY = "[0,1] then per-image z-score"
VIT_PAPER = (
    "Dosovitskiy A et al. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. "
    "ICLR 2021; layout of He K et al. Masked Autoencoders Are Scalable Vision Learners, CVPR 2022 and "
    "Zhou Y et al. A foundation model for generalizable disease detection from retinal images, Nature 2023 (RETFound)"
)


class RetinaViT(nn.Module):
    """ViT over non-overlapping p x p patches of a (B, C, H, W) image; see the module docstring."""

    def __init__(
        self,
        *,
        in_chans: int = 1,
        image_size: Sequence[int] = (224, 224),
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        cls_token: bool = True,
        pool: str = "mean",
        feature_layers: Sequence[int] | None = None,
        spec: EncoderSpec | None = None,
    ):
        super().__init__()
        h, w = (int(s) for s in image_size)
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
        if pool == "cls" and not cls_token:
            raise ValueError("pool='cls' needs cls_token=True")
        layers = [depth] if not feature_layers else [int(i) for i in feature_layers]
        if not all(1 <= i <= depth for i in layers):
            raise ValueError(f"feature_layers {layers} must lie in 1..{depth}")
        self.in_chans = in_chans
        self.image_size = (h, w)
        self.patch_size = patch_size
        self.grid = (h // patch_size, w // patch_size)
        self.n_patches = self.grid[0] * self.grid[1]
        self.embed_dim = embed_dim
        self.pool = pool
        self.feature_layers = layers
        self.n_prefix = 1 if cls_token else 0
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if cls_token else None
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, self.grid, self.n_prefix), requires_grad=False)
        self.transformer = Transformer(embed_dim, depth, num_heads, mlp_ratio)
        init_vit_weights(self)
        # MAE initialises the patch projection like a linear layer (xavier on the flattened kernel).
        nn.init.xavier_uniform_(self.patch_embed.weight.view(embed_dim, -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)
        self.spec = spec

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(
                f"expected input (batch, {self.in_chans}, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(x.shape)}"
            )

    def patch_tokens(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D) patch embeddings plus positions, row-major."""
        self._check(x)
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return t + self.pos_embed[:, self.n_prefix:].to(t.dtype)

    def _with_prefix(self, t: Tensor) -> Tensor:
        if self.cls_token is None:
            return t
        cls = (self.cls_token + self.pos_embed[:, :1]).to(t.dtype).expand(t.shape[0], -1, -1)
        return torch.cat([cls, t], dim=1)

    def _run(self, x: Tensor, keep_idx: Tensor | None = None, layers: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
        """Hidden states after the last block (before the final LayerNorm), and after each of `layers`."""
        t = self.patch_tokens(x)
        if keep_idx is not None:
            t = torch.gather(t, 1, keep_idx[..., None].expand(-1, -1, t.shape[-1]))
        h = self._with_prefix(t)
        taken = []
        for i, blk in enumerate(self.transformer.blocks, start=1):
            h = blk(h)
            if i in layers:
                taken.append(h)
        return h, taken

    def norm(self, h: Tensor) -> Tensor:
        """The encoder's final LayerNorm."""
        return self.transformer.norm(h)

    def encode(self, x: Tensor, keep_idx: Tensor | None = None) -> Tensor:
        """Layer-normed tokens [cls (if any), visible patches] -> (B, n_prefix + K, D).

        keep_idx: (B, K) long indices of the visible patches (row-major); default all N.
        """
        return self.norm(self._run(x, keep_idx)[0])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encode(x)[:, self.n_prefix:]

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self._run(x)
        if self.pool == "cls":
            return self.norm(h[:, 0])
        return self.norm(h[:, self.n_prefix:].mean(dim=1))

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """[(B, D, H/p, W/p)] the layer-normed token grid after each block of `feature_layers`."""
        _, taken = self._run(x, layers=self.feature_layers)
        b = x.shape[0]
        gh, gw = self.grid
        return [self.norm(h[:, self.n_prefix:]).transpose(1, 2).reshape(b, self.embed_dim, gh, gw) for h in taken]


_SIZES = {
    # CPU and tests: 64 x 64 OCTA patches of 8 pixels (8 x 8 tokens), 128 wide, 4 deep.
    "retina_vit_tiny": dict(image_size=[64, 64], patch_size=8, embed_dim=128, depth=4, num_heads=4),
    # ViT-B/16 at 224 x 224 (MAE's base model).
    "retina_vit_base": dict(image_size=[224, 224], patch_size=16, embed_dim=768, depth=12, num_heads=12),
    # ViT-L/16 at 224 x 224: RETFound's size (1024 wide, 24 deep, 16 heads).
    "retina_vit_large": dict(image_size=[224, 224], patch_size=16, embed_dim=1024, depth=24, num_heads=16),
}


def retina_vit_spec(name: str, hparams: dict) -> EncoderSpec:
    """The spec of a retina ViT from its resolved hyper-parameters."""
    h, w = hparams["image_size"]
    return EncoderSpec(
        name=name,
        modality="retina",
        input={
            "channels": int(hparams["in_chans"]),
            "spatial_dims": 2,
            "shape": [int(h), int(w)],
            "input_shape": [int(hparams["in_chans"]), int(h), int(w)],
            "patch_size": int(hparams["patch_size"]),
            "tile_size": [int(h), int(w)],
            "pixel_size_mm": hparams["pixel_size_mm"],
            "intensity": hparams["intensity"],
            "priors": [],
        },
        embed_dim=int(hparams["embed_dim"]),
        hparams=hparams,
        paper=VIT_PAPER,
    )


def _retina_vit_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(
        in_chans=1, mlp_ratio=4.0, cls_token=True, pool="mean", feature_layers=None,
        pixel_size_mm=None, intensity=RETINA_INTENSITY, **_SIZES[name],
    )
    hparams = resolve_hparams(name, defaults, overrides, int_lists=("feature_layers",))
    hparams["image_size"] = per_axis(hparams["image_size"], 2)
    return retina_vit_spec(name, hparams)


def _retina_vit(name: str, **overrides) -> RetinaViT:
    spec = _retina_vit_spec(name, **overrides)
    arch = {k: v for k, v in spec.hparams.items() if k not in ("pixel_size_mm", "intensity")}
    return RetinaViT(**arch, spec=spec)


@register_encoder(modality="retina", spec=partial(_retina_vit_spec, "retina_vit_tiny"))
def retina_vit_tiny(**overrides) -> RetinaViT:
    """ViT for 64x64 OCTA crops, patch 8 (8x8 tokens), 128 wide, 4 deep, 4 heads: CPU and tests."""
    return _retina_vit("retina_vit_tiny", **overrides)


@register_encoder(modality="retina", spec=partial(_retina_vit_spec, "retina_vit_base"))
def retina_vit_base(**overrides) -> RetinaViT:
    """ViT-B/16 at 224x224 (768 wide, 12 deep, 12 heads), 1 channel (OCTA) by default."""
    return _retina_vit("retina_vit_base", **overrides)


@register_encoder(modality="retina", spec=partial(_retina_vit_spec, "retina_vit_large"))
def retina_vit_large(**overrides) -> RetinaViT:
    """ViT-L/16 at 224x224 (1024 wide, 24 deep, 16 heads): RETFound's size; 1 channel by default."""
    return _retina_vit("retina_vit_large", **overrides)
