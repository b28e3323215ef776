"""Registered brain-MRI encoders and the explicit adaptation of their input layer to other channels.

Encoders (all take (B, C, D, H, W) float32 volumes at 1 mm isotropic spacing, intensities z-scored
over brain voxels, one channel per MRI sequence named in `spec.input["channels"]`):

- `mri_unet_base`: AMAES's U-Net B encoder (5 stages, widths 32-512), trained on 96^3 patches;
- `mri_unet_tiny`: the same design at CPU size (4 stages, widths 8-64, 32^3 patches);
- `mri_vit3d_base`: a ViT-B 3-D (768 wide, 12 deep, 12 heads) over 16^3 patches of 96^3 inputs;
- `mri_vit3d_tiny`: a 96 wide, 4 deep, 4 heads ViT over 8^3 patches of 32^3 inputs.

All are fully convolutional or position-agnostic in size: any D, H, W that are multiples of
`spec.input["divisible_by"]` work (whole volumes for embedding, patches for training);
`spec.input["shape"]` is the patch size the recipe trains on.

Multi-sequence inputs: `channels=["t1", "t2", "flair"]` builds a 3-channel first layer. A
pretrained single-channel encoder is adapted on purpose, never silently, by
`adapt_input_channels` (see its docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from torch import nn

from medssl.mri.unet_encoder import UNetEncoder3d
from medssl.mri.vit3d import ViT3d
from medssl.registry import EncoderSpec, register_encoder, resolve_hparams

log = logging.getLogger(__name__)

AMAES_PAPER = (
    "Munk A, Ambsdorf J, Llambias S, Nielsen M. AMAES: Augmented Masked Autoencoder Pretraining on "
    "Public Brain MRI Data for 3D-Native Segmentation. ADSMI @ MICCAI 2024 (arXiv:2408.00640)"
)
VIT3D_PAPER = (
    "Dosovitskiy et al. An Image is Worth 16x16 Words, ICLR 2021; 3-D patches as in Hatamizadeh et al., "
    "UNETR, WACV 2022; MAE pretraining: He et al., CVPR 2022"
)
MRI_INTENSITY = "z-score over brain voxels"
MRI_SPACING_MM = [1.0, 1.0, 1.0]
ANY_SEQUENCE = "any"


def channel_names(channels: Sequence[str] | int) -> list[str] | int:
    """Validated channel names (lower-cased, unique), or a channel count."""
    if isinstance(channels, bool):
        raise TypeError(f"channels must be a list of sequence names or a count, got {channels!r}")
    if isinstance(channels, int):
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        return channels
    if isinstance(channels, str) or not channels:
        raise ValueError(f"channels must be a non-empty list of sequence names, got {channels!r}")
    names = [str(c).strip().lower() for c in channels]
    if len(set(names)) != len(names):
        raise ValueError(f"channel names repeat: {list(channels)}")
    return names


def n_channels(channels: Sequence[str] | int) -> int:
    return channels if isinstance(channels, int) else len(channels)


def _resolve(name: str, defaults: dict, overrides: dict) -> dict:
    """`medssl.registry.resolve_hparams`, then validated channels and a [D, H, W] shape."""
    hp = resolve_hparams(name, defaults, overrides)
    hp["channels"] = channel_names(hp["channels"])
    hp["shape"] = [int(s) for s in hp["shape"]]
    if len(hp["shape"]) != 3:
        raise ValueError(f"{name}: shape must be [D, H, W], got {hp['shape']}")
    return hp


def mri_input_contract(channels: list[str] | int, shape: list[int], divisible_by: int) -> dict:
    if any(s % divisible_by for s in shape):
        raise ValueError(f"shape {shape} must be a multiple of {divisible_by} in every axis")
    return {
        "channels": channels,
        "spatial_dims": 3,
        "shape": list(shape),
        "input_shape": [n_channels(channels), *shape],
        "spacing_mm": list(MRI_SPACING_MM),
        "intensity": MRI_INTENSITY,
        "divisible_by": divisible_by,
    }


_SIZES = {
    "mri_unet_base": dict(channels=[ANY_SEQUENCE], shape=[96, 96, 96], widths=[32, 64, 128, 256, 512], block="basic"),
    "mri_unet_tiny": dict(channels=[ANY_SEQUENCE], shape=[32, 32, 32], widths=[8, 16, 32, 64], block="basic"),
    "mri_vit3d_base": dict(channels=[ANY_SEQUENCE], shape=[96, 96, 96], patch_size=16, embed_dim=768, depth=12,
                           num_heads=12, mlp_ratio=4.0),
    "mri_vit3d_tiny": dict(channels=[ANY_SEQUENCE], shape=[32, 32, 32], patch_size=8, embed_dim=96, depth=4,
                           num_heads=4, mlp_ratio=4.0),
}


def _unet_spec(name: str, **overrides) -> EncoderSpec:
    hp = _resolve(name, _SIZES[name], overrides)
    hp["widths"] = [int(w) for w in hp["widths"]]
    divisor = 2 ** (len(hp["widths"]) - 1)  # UNetEncoder3d's: one 2x pooling between stages
    return EncoderSpec(
        name=name, modality="mri", input=mri_input_contract(hp["channels"], hp["shape"], divisor),
        embed_dim=hp["widths"][-1], hparams=hp, paper=AMAES_PAPER,
    )


def _unet(name: str, **overrides) -> UNetEncoder3d:
    spec = _unet_spec(name, **overrides)
    hp = spec.hparams
    model = UNetEncoder3d(n_channels(hp["channels"]), hp["widths"], hp["block"])
    model.spec = spec
    return model


def _vit_spec(name: str, **overrides) -> EncoderSpec:
    hp = _resolve(name, _SIZES[name], overrides)
    return EncoderSpec(
        name=name, modality="mri", input=mri_input_contract(hp["channels"], hp["shape"], int(hp["patch_size"])),
        embed_dim=int(hp["embed_dim"]), hparams=hp, paper=VIT3D_PAPER,
    )


def _vit(name: str, **overrides) -> ViT3d:
    spec = _vit_spec(name, **overrides)
    hp = spec.hparams
    model = ViT3d(
        n_channels(hp["channels"]), int(hp["patch_size"]), int(hp["embed_dim"]), int(hp["depth"]),
        int(hp["num_heads"]), float(hp["mlp_ratio"]),
    )
    model.spec = spec
    return model


@register_encoder(modality="mri", spec=partial(_unet_spec, "mri_unet_base"))
def mri_unet_base(**overrides) -> UNetEncoder3d:
    """AMAES U-Net B encoder: 5 stages (32-512), instance norm, leaky ReLU, max pooling; 96^3 patches."""
    return _unet("mri_unet_base", **overrides)


@register_encoder(modality="mri", spec=partial(_unet_spec, "mri_unet_tiny"))
def mri_unet_tiny(**overrides) -> UNetEncoder3d:
    """AMAES U-Net design at CPU size: 4 stages (8-64); 32^3 patches."""
    return _unet("mri_unet_tiny", **overrides)


@register_encoder(modality="mri", spec=partial(_vit_spec, "mri_vit3d_base"))
def mri_vit3d_base(**overrides) -> ViT3d:
    """3-D ViT-B/16: 768 wide, 12 deep, 12 heads over 16^3 patches of 96^3 volumes, sin-cos positions."""
    return _vit("mri_vit3d_base", **overrides)


@register_encoder(modality="mri", spec=partial(_vit_spec, "mri_vit3d_tiny"))
def mri_vit3d_tiny(**overrides) -> ViT3d:
    """3-D ViT at CPU size: 96 wide, 4 deep, 4 heads over 8^3 patches of 32^3 volumes."""
    return _vit("mri_vit3d_tiny", **overrides)


def adapt_input_channels(encoder: nn.Module, channels: Sequence[str] | int) -> nn.Module:
    """Adapt `encoder`'s first layer, in place, to read `channels`; returns the encoder.

    Rules, applied to the first convolution's kernel W (out, C_old, k, k, k):
    - same channels as now: unchanged;
    - from one channel (a single-sequence or "any" pretrained stem) to C: every new channel gets
      W / C. On C identical channels the layer computes exactly what it computed on one, so
      the pretrained features are preserved at the start of fine-tuning, and no sequence is
      favoured;
    - from named channels to a subset or reordering of those names: the kernels are picked by
      name (a dropped sequence is said so in the log and the card);
    - anything else (e.g. pretrained on [t1, t2], asked for [flair]) is an error: there is no
      principled mapping.
    `spec.input["channels"]`, `spec.input["input_shape"]` and `spec.hparams["channels"]` are
    updated (so `create_encoder(name, **spec.hparams)` rebuilds the adapted architecture), the
    change is appended to `spec.provenance` and logged at WARNING level.
    """
    spec: EncoderSpec = encoder.spec
    conv: nn.Conv3d = encoder.input_conv
    old, new = spec.input["channels"], channel_names(channels)
    if old == new:
        return encoder
    c_old, c_new = conv.in_channels, n_channels(new)
    weight = conv.weight.detach()
    if c_old == 1:
        adapted = weight.repeat(1, c_new, 1, 1, 1) / c_new
        how = f"the single-channel kernel repeated over {c_new} channels and divided by {c_new}"
    elif isinstance(old, list) and isinstance(new, list) and set(new) <= set(old):
        adapted = weight[:, [old.index(c) for c in new]].clone()
        dropped = [c for c in old if c not in new]
        how = f"kernels picked by sequence name{'; dropped ' + ', '.join(dropped) if dropped else ''}"
    else:
        raise ValueError(
            f"{spec.name}: cannot adapt a first layer pretrained on channels {old} to {new}: "
            "only a single-channel layer can be spread over new sequences, or named channels subset/reordered"
        )
    conv.weight = nn.Parameter(adapted.contiguous())
    conv.in_channels = c_new
    encoder.in_channels = c_new
    spec.input["channels"] = new
    spec.input["input_shape"] = [c_new, *spec.input["input_shape"][1:]]
    spec.hparams["channels"] = new
    note = f"input layer adapted from channels {old} to {new} ({how})"
    spec.provenance = f"{spec.provenance}; {note}"
    log.warning("%s: %s", spec.name, note)
    return encoder
