"""CT encoders: the SwinUNETR Swin transformer and a 3-D ViT, over windowed CT volumes.

Swin (`ct_swin_base`, `ct_swin_tiny`): the backbone of SwinUNETR (Hatamizadeh et al., "Swin UNETR:
Swin Transformers for Semantic Segmentation of Brain Tumors in MRI Images", BrainLes 2021) as
pretrained by Tang et al. ("Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image
Analysis", CVPR 2022): MONAI's `SwinTransformer` with patch 2, window 7, depths (2, 2, 2, 2), heads
(3, 6, 12, 24), feature size 48, on 96^3 sub-volumes. Its parameters are MONAI's own, under
`swin.*`, so `build_swin_unetr` can hand the very same module to a MONAI `SwinUNETR` as `swinViT`,
and MONAI SwinUNETR checkpoints map onto it key for key (`medssl.ct.importers`).

The stages run through `SwinBackbone.forward`, which reimplements MONAI's `BasicLayer` loop
without `einops` (MONAI imports it optionally; medssl does not depend on it), caches the
shifted-window attention masks per grid instead of rebuilding them every call, and lets a caller
edit the patch-embedding grid (`embed_hook`: SimMIM's mask tokens, a noisy teacher's noise). The
numbers are MONAI's: `tests/ct/test_ct_encoders.py` checks them against MONAI's forward.

3-D ViT (`ct_vit3d_base`, `ct_vit3d_tiny`): `medssl.nn.vit3d.ViT3d`, the class the MRI 3-D ViTs
also build, at a fixed input shape, in UNETR's encoder layout (Hatamizadeh et al., WACV 2022:
96^3 input, patch 16, 768 wide, 12 deep, 12 heads) on `medssl.nn.transformer` blocks, with fixed
3-D sine-cosine positions (`medssl.nn.pos_embed.sincos_3d`: 2 * (dim // 6) channels per axis, any
remainder zeros) instead of UNETR's learned ones. The positions are a non-persistent buffer: not in
the state_dict, recomputed on load.

Every encoder here:
- `forward(x) -> (B, embed_dim)`: the mean over the coarsest map's positions (Swin: of the
  layer-normed last stage, 16 x feature_size wide; ViT: of the last block, then the final LayerNorm);
- `forward_features(x) -> (B, N, embed_dim)`: the coarsest map's tokens, row-major over (D, H, W);
- `feature_maps(x) -> [(B, C_i, d_i, h_i, w_i)]` fine to coarse: Swin, the five MONAI outputs
  (patch embedding at stride 2, then strides 4, 8, 16, 32; channel-wise layer-normed as SwinUNETR
  uses them); ViT, the layer-normed token grid after each of `feature_layers` (all at stride p);
- for masked image modelling: `stages(x, embed_hook)` (the feature maps, with the hook applied to
  the patch-embedding grid), `embed_stride`, `embed_channels`, `stage_strides`, `stage_channels`.

Input contract (`spec.input`): `channels` (the window names, one channel each), `windows` (names of
`medssl.ct.windowing` or [lower, upper] HU), `spatial_dims` 3, `shape` [D, H, W] (array axes, RAS+ as
`medssl.ct.preprocess` orders them), `input_shape` [C, D, H, W], `spacing_mm` per axis, `intensity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch.nn.functional as F
from monai.networks.nets.swin_unetr import (
    SwinTransformer,
    compute_mask,
    get_window_size,
)
from torch import Tensor, nn

from medssl.nn.vit3d import ViT3d
from medssl.registry import EncoderSpec, per_axis, register_encoder, resolve_hparams

CT_INTENSITY = "HU windowed to [0,1]"
SWIN_PAPER = (
    "Hatamizadeh A et al. Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI "
    "Images. BrainLes 2021; Tang Y et al. Self-Supervised Pre-Training of Swin Transformers for 3D Medical "
    "Image Analysis. CVPR 2022"
)
VIT3D_PAPER = "Hatamizadeh A et al. UNETR: Transformers for 3D Medical Image Segmentation. WACV 2022"

EmbedHook = Callable[[Tensor], Tensor]


def _channels_last_norm(x: Tensor) -> Tensor:
    """LayerNorm over channels (no affine) of (B, C, D, H, W): MONAI's `proj_out(normalize=True)`."""
    return F.layer_norm(x.permute(0, 2, 3, 4, 1), x.shape[1:2]).permute(0, 4, 1, 2, 3)


class SwinBackbone(SwinTransformer):
    """MONAI's 3-D `SwinTransformer` (same parameters, same numbers) with an einops-free forward,
    cached shifted-window masks, and an optional hook on the patch-embedding grid."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._masks: dict[tuple, Tensor | None] = {}

    def _shift_mask(self, grid: tuple[int, int, int], window, shift, device) -> Tensor | None:
        if not any(s > 0 for s in shift):
            return None
        padded = tuple(int(math.ceil(g / w)) * w for g, w in zip(grid, window))
        key = (padded, tuple(window), tuple(shift), str(device))
        if key not in self._masks:
            self._masks[key] = compute_mask(list(padded), window, shift, device)
        return self._masks[key]

    def _stage(self, layer: nn.Module, x: Tensor) -> Tensor:
        """One MONAI `BasicLayer` (blocks, then patch merging) on (B, C, D, H, W)."""
        b, _, d, h, w = x.shape
        window, shift = get_window_size((d, h, w), layer.window_size, layer.shift_size)
        mask = self._shift_mask((d, h, w), window, shift, x.device)
        x = x.permute(0, 2, 3, 4, 1)
        for blk in layer.blocks:
            x = blk(x, mask)
        x = x.reshape(b, d, h, w, -1)
        if layer.downsample is not None:
            x = layer.downsample(x)
        return x.permute(0, 4, 1, 2, 3)

    def forward(self, x: Tensor, normalize: bool = True, embed_hook: EmbedHook | None = None) -> list[Tensor]:
        """[patch embedding (stride p), stage 1..4 outputs (strides 2p..16p)], each (B, C_i, d_i, h_i, w_i);
        with `normalize`, layer-normed over channels (as SwinUNETR consumes them)."""
        if self.use_v2:
            raise NotImplementedError("SwinBackbone does not implement SwinUNETR-v2's residual conv blocks")
        x = self.pos_drop(self.patch_embed(x))
        if embed_hook is not None:
            x = embed_hook(x)
        outs = [x]
        for layers in (self.layers1, self.layers2, self.layers3, self.layers4)[: self.num_layers]:
            x = self._stage(layers[0], x.contiguous())
            outs.append(x)
        return [_channels_last_norm(o) for o in outs] if normalize else outs


class CTSwinEncoder(nn.Module):
    """SwinUNETR's Swin transformer over (B, C, D, H, W) windowed CT; see the module docstring."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        shape: Sequence[int] = (96, 96, 96),
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        spec: EncoderSpec | None = None,
    ):
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"SwinUNETR's Swin has 4 stages: got depths {list(depths)}, num_heads {list(num_heads)}")
        for i, h in enumerate(num_heads):
            if (feature_size * 2**i) % h:
                raise ValueError(f"stage {i + 1}: width {feature_size * 2**i} is not divisible by {h} heads")
        self.shape = tuple(int(s) for s in shape)
        divisor = patch_size * 2 ** len(depths)
        if len(self.shape) != 3 or any(s % divisor for s in self.shape):
            raise ValueError(f"input shape {list(self.shape)} must be 3 sizes, each a multiple of {divisor} "
                             f"(patch {patch_size} x 2^{len(depths)} patch mergings)")
        self.in_channels = in_channels
        self.swin = SwinBackbone(
            in_chans=in_channels, embed_dim=feature_size, window_size=(window_size,) * 3,
            patch_size=(patch_size,) * 3, depths=tuple(depths), num_heads=tuple(num_heads), mlp_ratio=mlp_ratio,
            qkv_bias=True, drop_path_rate=drop_path_rate, spatial_dims=3,
        )
        self.embed_stride = patch_size
        self.embed_channels = feature_size
        self.stage_strides = [patch_size * 2**i for i in range(len(depths) + 1)]
        self.stage_channels = [feature_size * 2**i for i in range(len(depths) + 1)]
        self.embed_dim = self.stage_channels[-1]
        self.spec = spec

    def _check(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels or tuple(x.shape[2:]) != self.shape:
            raise ValueError(f"expected input (batch, {self.in_channels}, {', '.join(map(str, self.shape))}), "
                             f"got {tuple(x.shape)}")

    def stages(self, x: Tensor, embed_hook: EmbedHook | None = None) -> list[Tensor]:
        """The five layer-normed maps, fine to coarse; `embed_hook` edits the (B, feature_size, D/p,
        H/p, W/p) patch-embedding grid before the stages."""
        self._check(x)
        return self.swin(x, normalize=True, embed_hook=embed_hook)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        return self.stages(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(x)[-1].flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(x)[-1].flatten(2).mean(dim=2)


def _resolve(name: str, defaults: dict, overrides: dict, int_lists: tuple[str, ...]) -> dict:
    """`medssl.registry.resolve_hparams`, then the CT contract's JSON-stable forms and checks."""
    h = resolve_hparams(name, defaults, overrides, int_lists=int_lists)
    h["windows"] = [w if isinstance(w, str) else [float(v) for v in w] for w in h["windows"]]
    h["shape"] = per_axis(h["shape"], 3)
    h["spacing_mm"] = per_axis(h["spacing_mm"], 3, float)
    if not h["windows"]:
        raise ValueError(f"{name}: at least one window (input channel) is needed")
    if len(h["spacing_mm"]) != 3 or min(h["spacing_mm"]) <= 0:
        raise ValueError(f"{name}: spacing_mm {h['spacing_mm']} must be 3 positive sizes (mm)")
    return h


def _channel_names(windows: list) -> list[str]:
    from medssl.ct.windowing import window_name

    return [window_name(w) for w in windows]


def ct_encoder_spec(name: str, hparams: dict, embed_dim: int, paper: str, **extra) -> EncoderSpec:
    """The spec of a CT encoder from its resolved hyper-parameters (see the module docstring)."""
    shape = hparams["shape"]
    return EncoderSpec(
        name=name,
        modality="ct",
        input={
            "channels": _channel_names(hparams["windows"]),
            "windows": hparams["windows"],
            "spatial_dims": 3,
            "shape": list(shape),
            "input_shape": [len(hparams["windows"]), *shape],
            "spacing_mm": hparams["spacing_mm"],
            "intensity": hparams["intensity"],
            **extra,
        },
        embed_dim=int(embed_dim),
        hparams=hparams,
        paper=paper,
    )


_CONTRACT = ("windows", "spacing_mm", "intensity")
_SWIN_SIZES = {
    # SwinUNETR / Tang et al. 2022: feature size 48, window 7, 96^3 sub-volumes at 1.5 x 1.5 x 2 mm.
    "ct_swin_base": dict(shape=[96, 96, 96], spacing_mm=[1.5, 1.5, 2.0], feature_size=48, window_size=7,
                         num_heads=[3, 6, 12, 24]),
    # CPU and tests: feature size 12, 32^3. Window 4 rather than 7: a 7^3 window on the 16^3 first
    # stage pads it to 21^3 and costs ~10x more on a CPU, for no gain at this size. Heads 1-2-4-8
    # (12 channels each) rather than SwinUNETR's 3-6-12-24, which would leave 4 per head: 2x faster.
    "ct_swin_tiny": dict(shape=[32, 32, 32], spacing_mm=[1.5, 1.5, 2.0], feature_size=12, window_size=4,
                         num_heads=[1, 2, 4, 8]),
}


def _ct_swin_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(
        windows=["lung"], intensity=CT_INTENSITY, depths=[2, 2, 2, 2], patch_size=2,
        mlp_ratio=4.0, drop_path_rate=0.0, **_SWIN_SIZES[name],
    )
    h = _resolve(name, defaults, overrides, ("depths", "num_heads"))
    emb = int(h["feature_size"]) * 2 ** len(h["depths"])
    return ct_encoder_spec(name, h, emb, SWIN_PAPER, patch_size=int(h["patch_size"]))


def _ct_swin(name: str, **overrides) -> CTSwinEncoder:
    spec = _ct_swin_spec(name, **overrides)
    h = spec.hparams
    arch = {k: v for k, v in h.items() if k not in _CONTRACT}
    return CTSwinEncoder(in_channels=len(h["windows"]), **arch, spec=spec)


@register_encoder(modality="ct", spec=partial(_ct_swin_spec, "ct_swin_base"))
def ct_swin_base(**overrides) -> CTSwinEncoder:
    """SwinUNETR's Swin (feature 48, window 7, depths 2-2-2-2, heads 3-6-12-24) on 96^3 CT, 768-d."""
    return _ct_swin("ct_swin_base", **overrides)


@register_encoder(modality="ct", spec=partial(_ct_swin_spec, "ct_swin_tiny"))
def ct_swin_tiny(**overrides) -> CTSwinEncoder:
    """SwinUNETR's Swin at feature size 12, window 4, heads 1-2-4-8, on 32^3 CT (192-d): CPU and tests."""
    return _ct_swin("ct_swin_tiny", **overrides)


_VIT_SIZES = {
    # UNETR's encoder: 96^3, patch 16 (6^3 tokens), 768 wide, 12 deep, 12 heads; maps after blocks 3, 6, 9, 12.
    "ct_vit3d_base": dict(shape=[96, 96, 96], spacing_mm=[1.5, 1.5, 2.0], patch_size=16, embed_dim=768, depth=12,
                          num_heads=12, feature_layers=[3, 6, 9, 12]),
    # CPU and tests: 32^3, patch 8 (4^3 tokens), 96 wide, 4 deep, 4 heads.
    "ct_vit3d_tiny": dict(shape=[32, 32, 32], spacing_mm=[1.5, 1.5, 2.0], patch_size=8, embed_dim=96, depth=4,
                          num_heads=4, feature_layers=None),
}


def _ct_vit3d_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(windows=["lung"], intensity=CT_INTENSITY, mlp_ratio=4.0, **_VIT_SIZES[name])
    h = _resolve(name, defaults, overrides, ("feature_layers",))
    if h["feature_layers"] is not None and max(h["feature_layers"]) > h["depth"]:
        # e.g. depth=1 on the base size: keep the layers that exist (the last block at least).
        h["feature_layers"] = [i for i in h["feature_layers"] if i <= h["depth"]] or [int(h["depth"])]
    return ct_encoder_spec(name, h, h["embed_dim"], VIT3D_PAPER, patch_size=int(h["patch_size"]))


def _ct_vit3d(name: str, **overrides) -> ViT3d:
    """`medssl.nn.vit3d.ViT3d` at a fixed input shape, pooled then normed, zero patch bias."""
    spec = _ct_vit3d_spec(name, **overrides)
    h = spec.hparams
    arch = {k: v for k, v in h.items() if k not in _CONTRACT}
    return ViT3d(in_channels=len(h["windows"]), **arch, norm_after_pool=True, zero_patch_bias=True, spec=spec)


@register_encoder(modality="ct", spec=partial(_ct_vit3d_spec, "ct_vit3d_base"))
def ct_vit3d_base(**overrides) -> ViT3d:
    """UNETR's 3-D ViT: 96^3 CT, patch 16, 768 wide, 12 deep, 12 heads."""
    return _ct_vit3d("ct_vit3d_base", **overrides)


@register_encoder(modality="ct", spec=partial(_ct_vit3d_spec, "ct_vit3d_tiny"))
def ct_vit3d_tiny(**overrides) -> ViT3d:
    """3-D ViT on 32^3 CT, patch 8, 96 wide, 4 deep, 4 heads: CPU and tests."""
    return _ct_vit3d("ct_vit3d_tiny", **overrides)


def build_swin_unetr(encoder: CTSwinEncoder, out_channels: int, *, norm_name: str = "instance") -> nn.Module:
    """A MONAI `SwinUNETR` for `out_channels`-class segmentation whose `swinViT` IS the encoder's
    Swin (`encoder.swin`): the same parameters, trained together; its convolutional encoder blocks
    and decoder are new. Input (B, C, D, H, W) as the encoder's contract -> logits (B, out_channels, D, H, W).
    With instance norm (the default), every side must be >= 64: the stride-32 map needs more than one voxel."""
    from monai.networks.nets import SwinUNETR

    if not isinstance(encoder, CTSwinEncoder):
        raise TypeError(f"build_swin_unetr needs a CT Swin encoder, got {type(encoder).__name__}")
    swin = encoder.swin
    model = SwinUNETR(
        in_channels=encoder.in_channels, out_channels=out_channels, patch_size=encoder.embed_stride,
        depths=[len(layer[0].blocks) for layer in (swin.layers1, swin.layers2, swin.layers3, swin.layers4)],
        num_heads=[layer[0].blocks[0].num_heads for layer in (swin.layers1, swin.layers2, swin.layers3, swin.layers4)],
        window_size=swin.window_size, feature_size=encoder.embed_channels, norm_name=norm_name, spatial_dims=3,
    )
    model.swinViT = swin
    return model
