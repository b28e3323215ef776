"""The 3-D U-Net encoder of AMAES, built from MONAI blocks.

Munk, Ambsdorf, Llambias, Nielsen, "AMAES: Augmented Masked Autoencoder Pretraining on Public
Brain MRI Data for 3D-Native Segmentation", ADSMI @ MICCAI 2024 (code: github.com/asbjrnmunk/amaes,
`src/models/networks/unet.py`; the FOMO25 baseline codebase reuses it). Its U-Net B encoder:

- 5 stages of widths 32, 64, 128, 256, 512 (U-Net XL: 64 ... 1024);
- each stage two 3x3x3 convolutions, each followed by instance norm (affine) and leaky ReLU
  (slope 0.01): MONAI's `UnetBasicBlock` (conv, norm, act, conv, norm, act);
- 2x2x2 max pooling between stages, so the input's D, H, W must be multiples of
  2 ** (n_stages - 1).

`block="residual"` swaps in MONAI's `UnetResBlock` (the nnU-Net residual encoder's block); AMAES
uses the plain one. Convolutions carry no bias (the instance norm that follows has one).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import UnetBasicBlock, UnetResBlock
from torch import Tensor, nn

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
_BLOCKS = {"basic": UnetBasicBlock, "residual": UnetResBlock}


def check_volume(x: Tensor, in_channels: int, multiple: int, who: str) -> None:
    """A clear error unless x is (B, in_channels, D, H, W) with D, H, W multiples of `multiple`."""
    if x.ndim != 5 or x.shape[1] != in_channels:
        raise ValueError(f"{who}: expected input (batch, {in_channels} channels, D, H, W), got {tuple(x.shape)}")
    if any(s % multiple for s in x.shape[2:]):
        raise ValueError(f"{who}: spatial size {tuple(x.shape[2:])} must be a multiple of {multiple} in every axis")


class UNetEncoder3d(nn.Module):
    """Plain 3-D U-Net encoder. x: (B, in_channels, D, H, W), D, H, W multiples of `divisor`.

    feature_maps(x) -> [(B, widths[i], D / 2**i, H / 2**i, W / 2**i) for each stage], fine to
    coarse; forward_features(x) -> (B, n_voxels of the last map, widths[-1]) bottleneck voxels
    as tokens; forward(x) -> (B, widths[-1]), the bottleneck averaged over space.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128, 256, 512), block: str = "basic"):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(_BLOCKS)}")
        if len(widths) < 2:
            raise ValueError(f"a U-Net encoder needs at least 2 stages, got widths {list(widths)}")
        self.in_channels = in_channels
        self.widths = [int(w) for w in widths]
        self.embed_dim = self.widths[-1]
        self.divisor = 2 ** (len(self.widths) - 1)
        chans = [in_channels, *self.widths]
        self.stages = nn.ModuleList(
            _BLOCKS[block](3, chans[i], chans[i + 1], kernel_size=3, stride=1, norm_name=NORM, act_name=ACT)
            for i in range(len(self.widths))
        )
        self.pool = nn.MaxPool3d(2)

    @property
    def input_conv(self) -> nn.Conv3d:
        """The first convolution, the one that sees the input channels."""
        return self.stages[0].conv1.conv

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        check_volume(x, self.in_channels, self.divisor, type(self).__name__)
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(self.pool(x) if i else x)
            maps.append(x)
        return maps

    @staticmethod
    def pool_map(fmap: Tensor) -> Tensor:
        """(B, C, *spatial) -> (B, C): global average."""
        return fmap.flatten(2).mean(dim=2)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.feature_maps(x)[-1].flatten(2).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_map(self.feature_maps(x)[-1])
