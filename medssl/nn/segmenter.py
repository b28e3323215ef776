"""An encoder's feature maps -> a decoder's logits: the one segmenter every decoder plugs into.

The encoder gives ``feature_maps(x)`` (a list of (B, C_i, *S_i) maps, fine to coarse); the
decoder turns them into (B, 1, *S) logits. ``frozen``: the encoder runs without gradients and
stays in eval mode whatever ``train()`` is asked (a linear-probe analogue for dense tasks; its
maps can then be computed once per image and reused, see
:class:`medssl.bench.segmentation.FeatureMapCache`). Decoders that read more than the maps
(SwinUNETR's first convolution reads the input; the retina mask decoder its size) override
:meth:`Segmenter.decode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Segmenter(nn.Module):
    """encoder.feature_maps -> decoder: (B, C, *S) -> (B, 1, *S) logits (module docstring)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, frozen: bool):
        super().__init__()
        self.encoder, self.decoder, self.frozen = encoder, decoder, frozen

    def encode(self, x: Tensor) -> list[Tensor]:
        """The encoder's feature maps of ``x`` (without gradients when frozen)."""
        if self.frozen:
            with torch.no_grad():
                return [m.detach() for m in self.encoder.feature_maps(x)]
        return self.encoder.feature_maps(x)

    def decode(self, x: Tensor, maps: Sequence[Tensor]) -> Tensor:
        """Logits from the feature maps of ``x`` (``x`` itself is not read here)."""
        return self.decoder(maps)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(x, self.encode(x))

    def train(self, mode: bool = True) -> Segmenter:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self
