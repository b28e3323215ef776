"""2-D U-Net encoders for retinal images: the supervised reference for vessel segmentation.

A U-Net trained from scratch on patches is the standard supervised baseline on DRIVE (Ronneberger
et al., MICCAI 2015; patch-based training on fundus images as in the retina-unet reference
implementation, 48 x 48 px patches, and in most DRIVE papers since). Here the contracting path is
:class:`medssl.nn.unet.UNetEncoder` with ``spatial_dims=2``; the expanding path is the
segmentation protocol's decoder (``decoder: pyramid``, :class:`medssl.bench.segmentation.FeaturePyramidDecoder`:
upsample, concatenate the skip, two conv blocks per stage), which together make a U-Net.

- `retina_unet_small`: 4 stages of 16, 32, 64, 128 channels on 64 x 64 px tiles (CPU size);
- `retina_unet_base`: Ronneberger's 5 stages of 64 ... 1024 channels on 64 x 64 px tiles.

Input contract as the retina ViTs' (`medssl.retina.encoders`): one grey channel by default,
"[0,1] then per-image z-score", `tile_size` = `shape` (the tile the benchmark trains on and slides
at native resolution); any H, W that are multiples of ``divisible_by`` = 2 ** (stages - 1) work.
"""

from __future__ import annotations

from functools import partial

from medssl.nn.unet import UNetEncoder
from medssl.registry import EncoderSpec, per_axis, register_encoder, resolve_hparams
from medssl.retina.encoders import RETINA_INTENSITY

UNET_PAPER = ("Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
              "MICCAI 2015")
_SIZES = {
    "retina_unet_small": dict(widths=[16, 32, 64, 128], image_size=[64, 64]),
    "retina_unet_base": dict(widths=[64, 128, 256, 512, 1024], image_size=[64, 64]),
}


def _unet_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(in_chans=1, block="basic", pixel_size_mm=None, intensity=RETINA_INTENSITY, **_SIZES[name])
    hp = resolve_hparams(name, defaults, overrides)
    hp["widths"] = [int(w) for w in hp["widths"]]
    hp["image_size"] = per_axis(hp["image_size"], 2)
    divisor = 2 ** (len(hp["widths"]) - 1)
    if any(s % divisor for s in hp["image_size"]):
        raise ValueError(f"{name}: image_size {hp['image_size']} must be a multiple of {divisor} "
                         f"({len(hp['widths'])} stages)")
    h, w = hp["image_size"]
    c = int(hp["in_chans"])
    return EncoderSpec(
        name=name, modality="retina",
        input={"channels": c, "spatial_dims": 2, "shape": [h, w], "input_shape": [c, h, w], "tile_size": [h, w],
               "divisible_by": divisor, "pixel_size_mm": hp["pixel_size_mm"], "intensity": hp["intensity"],
               "priors": []},
        embed_dim=hp["widths"][-1], hparams=hp, paper=UNET_PAPER,
    )


def _unet(name: str, **overrides) -> UNetEncoder:
    spec = _unet_spec(name, **overrides)
    hp = spec.hparams
    model = UNetEncoder(int(hp["in_chans"]), hp["widths"], hp["block"], spatial_dims=2)
    model.spec = spec
    return model


@register_encoder(modality="retina", spec=partial(_unet_spec, "retina_unet_small"))
def retina_unet_small(**overrides) -> UNetEncoder:
    """2-D U-Net encoder, 4 stages (16-128), instance norm, leaky ReLU; 64 x 64 px tiles: CPU size."""
    return _unet("retina_unet_small", **overrides)


@register_encoder(modality="retina", spec=partial(_unet_spec, "retina_unet_base"))
def retina_unet_base(**overrides) -> UNetEncoder:
    """Ronneberger's 2-D U-Net encoder, 5 stages (64-1024); 64 x 64 px tiles."""
    return _unet("retina_unet_base", **overrides)
