"""A prompt-free mask decoder for ViT encoders, and the segmenter built from it.

In the spirit of SAM's mask decoder (Kirillov et al., "Segment Anything", ICCV 2023) as
MAE-SAM2-style segmenters use it without prompts: SAM decodes a learned output (mask) token
together with the image tokens, upsamples the image embedding with transposed convolutions and
turns the output token into per-channel weights (a hypernetwork MLP) whose dot product with the
upsampled embedding gives the mask logits. Here, with no prompt tokens:

1. the encoder's feature maps (`feature_maps(x)`, e.g. a ViT's token grid after one or more
   blocks) are resized to the first map's resolution, concatenated and projected by a 1x1
   convolution + LayerNorm2d to `decoder_dim` channels;
2. a learned mask token and the image tokens (plus fixed 2-D sin-cos positions) pass through
   `depth` pre-norm self-attention blocks (`medssl.nn.transformer`; SAM's two-way attention
   reduces to self-attention when the only non-image token is the mask token);
3. progressive 2x upsampling of the image tokens, each stage ConvTranspose2d(k=2, s=2) +
   LayerNorm2d + GELU with channels halved (not below `min_channels`), until one more stage
   would overshoot the input size (a patch-16 ViT: 4 stages, 14 -> 224);
4. logits = <MLP(mask token), upsampled features> per pixel + a learned bias, resized
   bilinearly to the input size when the stages do not land on it exactly.

`build_segmenter(encoder, input_shape=None, *, mode="frozen" | "finetune", ...)` returns a module
mapping (B, C, H, W) -> (B, 1, H, W) logits (the same call shape as `medssl.bench.segmentation`'s);
`DiceBCELoss` is the training loss (soft Dice + binary cross-entropy, both on logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.pos_embed import sincos_2d
from medssl.nn.segmenter import Segmenter as BaseSegmenter
from medssl.nn.transformer import Block, init_vit_weights


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map (SAM's LayerNorm2d)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class PromptFreeMaskDecoder(nn.Module):
    """forward(maps [(B, C_i, h_i, w_i)], out_size (H, W)) -> (B, 1, H, W) logits.

    in_channels: C_i of each map; in_size: (h, w) of the first map; out_size: the input image size.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_size: tuple[int, int],
        out_size: tuple[int, int],
        *,
        decoder_dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        min_channels: int = 16,
    ):
        super().__init__()
        self.in_size = tuple(in_size)
        self.out_size = tuple(out_size)
        self.fuse = nn.Sequential(nn.Conv2d(sum(in_channels), decoder_dim, 1), LayerNorm2d(decoder_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos_embed", sincos_2d(decoder_dim, *self.in_size)[None], persistent=False)
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        ratio = min(o / i for o, i in zip(self.out_size, self.in_size))
        n_up = max(int(math.floor(math.log2(ratio) + 1e-9)), 0)
        stages, c = [], decoder_dim
        for _ in range(n_up):
            c_next = max(c // 2, min_channels)
            stages += [nn.ConvTranspose2d(c, c_next, 2, stride=2), LayerNorm2d(c_next), nn.GELU()]
            c = c_next
        self.upsample = nn.Sequential(*stages)
        self.n_up = n_up
        self.hyper = nn.Sequential(  # SAM's hypernetwork MLP: mask token -> weights over the output channels
            nn.Linear(decoder_dim, decoder_dim), nn.GELU(), nn.Linear(decoder_dim, decoder_dim), nn.GELU(),
            nn.Linear(decoder_dim, c),
        )
        self.bias = nn.Parameter(torch.zeros(1))
        init_vit_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, maps: list[Tensor], out_size: tuple[int, int] | None = None) -> Tensor:
        out_size = tuple(out_size or self.out_size)
        maps = [m if tuple(m.shape[-2:]) == self.in_size
                else F.interpolate(m, size=self.in_size, mode="bilinear", align_corners=False) for m in maps]
        z = self.fuse(torch.cat(maps, dim=1))
        b, d, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2) + self.pos_embed.to(z.dtype)
        seq = torch.cat([self.mask_token.to(z.dtype).expand(b, -1, -1), tokens], dim=1)
        for blk in self.blocks:
            seq = blk(seq)
        seq = self.norm(seq)
        grid = seq[:, 1:].transpose(1, 2).reshape(b, d, h, w)
        up = self.upsample(grid)
        logits = torch.einsum("bc,bchw->bhw", self.hyper(seq[:, 0]), up)[:, None] + self.bias
        if tuple(logits.shape[-2:]) != out_size:
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits


SEGMENTER_MODES = ("frozen", "finetune")


class Segmenter(BaseSegmenter):
    """encoder.feature_maps -> PromptFreeMaskDecoder: (B, C, H, W) -> (B, 1, H, W) logits
    (:class:`medssl.nn.segmenter.Segmenter` with this decoder).

    mode "frozen": the encoder gets no gradient and stays in eval mode (`train()` keeps it so);
    "finetune": encoder and decoder train together.
    """

    def __init__(self, encoder: nn.Module, decoder: PromptFreeMaskDecoder, *, mode: str = "frozen"):
        if mode not in SEGMENTER_MODES:
            raise ValueError(f"unknown segmenter mode {mode!r}; known: {', '.join(SEGMENTER_MODES)}")
        super().__init__(encoder, decoder, frozen=mode == "frozen")
        if self.frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def decode(self, x: Tensor, maps: Sequence[Tensor]) -> Tensor:
        """Logits from the feature maps of ``x`` (only its size is read)."""
        return self.decoder(list(maps), tuple(x.shape[-2:]))


def build_segmenter(
    encoder: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    mode: str = "frozen",
    decoder_dim: int = 256,
    depth: int = 2,
    num_heads: int = 8,
    min_channels: int = 16,
) -> Segmenter:
    """A binary segmenter (B, C, H, W) -> (B, 1, H, W) logits on an encoder with `feature_maps`.

    input_shape: (C, H, W), default the encoder's `spec.input["input_shape"]`; mode: "frozen"
    (decoder only) or "finetune". The encoder is wrapped, not copied: pass a copy to keep the
    original untouched. The map shapes are read from one dry run of the encoder (eval mode, no
    gradients) on zeros. decoder_dim must be divisible by 4 and by num_heads.
    """
    if not hasattr(encoder, "feature_maps"):
        raise TypeError(f"{type(encoder).__name__} has no feature_maps(x); it cannot back a segmenter")
    in_shape = [int(s) for s in (input_shape if input_shape is not None else encoder.spec.input["input_shape"])]
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        device = next(encoder.parameters()).device
        maps = encoder.feature_maps(torch.zeros(1, *in_shape, device=device))
    encoder.train(was_training)
    decoder = PromptFreeMaskDecoder(
        [m.shape[1] for m in maps], tuple(maps[0].shape[-2:]), tuple(in_shape[1:]),
        decoder_dim=decoder_dim, depth=depth, num_heads=num_heads, min_channels=min_channels,
    ).to(device)
    return Segmenter(encoder, decoder, mode=mode)


def soft_dice_loss(logits: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    """1 - (2 |P.T| + s) / (|P| + |T| + s) per sample and channel, averaged; P = sigmoid(logits).

    The same quantity as MONAI's `DiceLoss(sigmoid=True)` with its default smoothing
    (smooth_nr = smooth_dr = 1e-5, reduction "mean", batch=False).
    """
    prob = torch.sigmoid(logits.float()).flatten(2)
    target = target.float().flatten(2)
    inter = (prob * target).sum(-1)
    denom = prob.sum(-1) + target.sum(-1)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


class DiceBCELoss(nn.Module):
    """dice_weight * soft Dice + bce_weight * binary cross-entropy, on logits (B, 1, H, W) and
    targets in {0, 1} of the same shape."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0):
        super().__init__()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
        return self.dice_weight * soft_dice_loss(logits, target) + self.bce_weight * bce


def _bench_mask_decoder(encoder: nn.Module, input_shape: Sequence[int], mode: str, width: int) -> Segmenter:
    """The benchmark's ``decoder: mask_decoder``: decoder_dim = the protocol's width rounded to a
    multiple of 8 (divisible by the 8 heads), at least 64; the other settings at their defaults."""
    return build_segmenter(encoder, input_shape, mode=mode, decoder_dim=max(64, 8 * round(width / 8)))


def _register() -> None:
    from medssl.bench.segmentation import register_decoder

    register_decoder("mask_decoder", _bench_mask_decoder)


_register()
