"""SwinUNETR's decoder as a benchmark segmentation decoder (``decoder: swin_unetr``).

SwinUNETR (Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain
Tumors in MRI Images", BrainLes 2021) decodes the five maps of its Swin transformer (patch
embedding at stride 2, stages at strides 4, 8, 16, 32; channel-wise layer-normed) with
convolutional blocks: a residual block on the input voxels (the full-resolution skip), one on each
of the first three maps and on the coarsest, then five transposed-convolution up-blocks that each
merge a skip, and a 1x1x1 convolution to the output channels. The blocks here are MONAI's own,
taken from the `SwinUNETR` that :func:`medssl.ct.encoders.build_swin_unetr` builds around the CT
Swin encoder; only the forward pass is spelled out, so that the benchmark can run the encoder
frozen (no gradients, eval mode) or fine-tuned while the decoder always trains.

Choices the paper does not make (it segments 96^3 and larger crops):
- one output channel (a binary mask's logits), as the benchmark's protocol expects;
- instance norm, SwinUNETR's, when the stride-32 map has more than one voxel (inputs of 64 or more
  per side); for smaller inputs (the tiny encoder's 32^3) instance norm of a single voxel is
  undefined, and every block uses group norm with one group (statistics over channels and space);
- the decoder's widths follow the encoder's ``feature_size`` (SwinUNETR's skips fix them): the
  protocol's ``width`` setting does not apply and is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medssl.nn.segmenter import Segmenter

SMALL_INPUT_NORM = ("group", {"num_groups": 1})


class SwinUNETRDecoder(nn.Module):
    """forward(x (B, C, D, H, W), maps [5 x (B, C_i, *S_i)] fine to coarse) -> (B, out, D, H, W) logits.

    unetr: a MONAI ``SwinUNETR`` whose ``swinViT`` has been removed (the encoder holds it)."""

    def __init__(self, unetr: nn.Module):
        super().__init__()
        for name in ("encoder1", "encoder2", "encoder3", "encoder4", "encoder10", "decoder5", "decoder4",
                     "decoder3", "decoder2", "decoder1", "out"):
            self.add_module(name, getattr(unetr, name))

    def forward(self, x: Tensor, maps: Sequence[Tensor]) -> Tensor:
        if len(maps) != 5:
            raise ValueError(f"SwinUNETR's decoder reads 5 feature maps (strides 2-32), got {len(maps)}")
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(maps[0])
        enc2 = self.encoder3(maps[1])
        enc3 = self.encoder4(maps[2])
        dec4 = self.encoder10(maps[4])
        dec3 = self.decoder5(dec4, maps[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return self.out(self.decoder1(dec0, enc0))


class SwinUNETRSegmenter(Segmenter):
    """CT Swin encoder + :class:`SwinUNETRDecoder`: (B, C, D, H, W) -> (B, 1, D, H, W) logits.
    With ``frozen``, the encoder runs without gradients and stays in eval mode."""

    def decode(self, x: Tensor, maps: Sequence[Tensor]) -> Tensor:
        """Logits from ``x`` (the decoder's own first convolution reads it) and its feature maps."""
        return self.decoder(x, maps)


def build_swin_unetr_segmenter(encoder: nn.Module, input_shape: Sequence[int], mode: str = "frozen",
                               width: int | None = None) -> SwinUNETRSegmenter:
    """The benchmark's decoder builder (:func:`medssl.bench.segmentation.register_decoder`):
    `encoder` a CT Swin encoder (its private copy), `input_shape` (C, D, H, W), `mode` frozen |
    finetune; `width` is ignored (module docstring)."""
    from medssl.ct.encoders import CTSwinEncoder, build_swin_unetr

    if not isinstance(encoder, CTSwinEncoder):
        name = getattr(getattr(encoder, "spec", None), "name", type(encoder).__name__)
        raise ValueError(f"decoder swin_unetr needs a CT Swin encoder (ct_swin_tiny, ct_swin_base), got {name}; "
                         f"use decoder: pyramid for other encoders")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or shape[0] != encoder.in_channels or shape[1:] != encoder.shape:
        raise ValueError(f"input shape {list(shape)} does not match the encoder's "
                         f"[{encoder.in_channels}, {', '.join(map(str, encoder.shape))}]")
    coarsest = [s // encoder.stage_strides[-1] for s in encoder.shape]
    norm = "instance" if min(coarsest) > 1 else SMALL_INPUT_NORM
    unetr = build_swin_unetr(encoder, 1, norm_name=norm)
    del unetr.swinViT  # the encoder owns the Swin; the decoder gets the maps it computes
    frozen = mode == "frozen"
    if frozen:
        encoder.requires_grad_(False)
    return SwinUNETRSegmenter(encoder, SwinUNETRDecoder(unetr), frozen)


def _register() -> None:
    from medssl.bench.segmentation import register_decoder

    register_decoder("swin_unetr", build_swin_unetr_segmenter)


_register()
