"""The 3-D U-Net encoder of AMAES: :class:`medssl.nn.unet.UNetEncoder` on volumes.

Munk, Ambsdorf, Llambias, Nielsen, "AMAES: Augmented Masked Autoencoder Pretraining on Public
Brain MRI Data for 3D-Native Segmentation", ADSMI @ MICCAI 2024 (code: github.com/asbjrnmunk/amaes,
`src/models/networks/unet.py`; the FOMO25 baseline codebase reuses it). Its U-Net B encoder:
5 stages of widths 32, 64, 128, 256, 512, two 3x3x3 conv-instance-norm-leaky-ReLU per stage,
2x2x2 max pooling between stages (see :mod:`medssl.nn.unet`).
"""

from __future__ import annotations

from collections.abc import Sequence

from medssl.nn.unet import UNetEncoder


class UNetEncoder3d(UNetEncoder):
    """:class:`medssl.nn.unet.UNetEncoder` with ``spatial_dims=3``: x (B, C, D, H, W)."""

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128, 256, 512), block: str = "basic"):
        super().__init__(in_channels, widths, block, spatial_dims=3)
