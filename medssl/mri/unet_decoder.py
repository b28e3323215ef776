"""A 3-D U-Net decoder over an encoder's `feature_maps`, with or without skip connections.

Two uses, both from AMAES (Munk et al., ADSMI @ MICCAI 2024; code github.com/asbjrnmunk/amaes,
`src/models/networks/unet.py`):

- pretraining reconstruction: the "lightweight" decoder, one conv block per stage and NO skip
  connections (`skips=False, convs_per_stage=1`): with skips the decoder could copy the visible
  voxels from the first stage and the encoder would learn little; without them everything the
  reconstruction needs passes through the bottleneck;
- segmentation (FOMO25 task 2 and fine-tuning): the standard decoder, two conv blocks per stage
  with skip connections (`skips=True, convs_per_stage=2`).

Each stage upsamples by a 2x2x2 transposed convolution to the next finer width, concatenates the
encoder map of that resolution (with skips), and applies conv -> instance norm -> leaky ReLU
(MONAI `Convolution`) once or twice (`UnetBasicBlock`). A 1x1x1 convolution gives the output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UnetBasicBlock
from torch import Tensor, nn

from medssl.nn.unet import ACT, NORM


def _conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Module:
    if convs == 2:
        return UnetBasicBlock(3, in_channels, out_channels, kernel_size=3, stride=1, norm_name=NORM, act_name=ACT)
    if convs == 1:
        return Convolution(3, in_channels, out_channels, kernel_size=3, norm=NORM, act=ACT, bias=False)
    raise ValueError(f"convs_per_stage must be 1 or 2, got {convs}")


class UNetDecoder3d(nn.Module):
    """maps (fine to coarse, as `feature_maps` returns them; channel counts `widths`) ->
    (B, out_channels, *spatial of maps[0]).

    widths: the encoder's stage widths, fine to coarse; each map must have twice the spatial
    size of the next (U-Net encoders; not a ViT's single-resolution maps). Without skips only
    the last (bottleneck) map is read.
    """

    def __init__(self, widths: Sequence[int], out_channels: int = 1, *, skips: bool = True, convs_per_stage: int = 2):
        super().__init__()
        self.widths = [int(w) for w in widths]
        if len(self.widths) < 2:
            raise ValueError(f"a U-Net decoder needs at least 2 levels, got widths {self.widths}")
        self.skips = skips
        fine = self.widths[:-1]
        coarse = self.widths[1:]
        self.up = nn.ModuleList(nn.ConvTranspose3d(c, f, kernel_size=2, stride=2) for f, c in zip(fine, coarse))
        self.blocks = nn.ModuleList(_conv_block(f * (2 if skips else 1), f, convs_per_stage) for f in fine)
        self.head = nn.Conv3d(self.widths[0], out_channels, kernel_size=1)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        if len(maps) != len(self.widths) or any(m.shape[1] != w for m, w in zip(maps, self.widths)):
            raise ValueError(
                f"expected {len(self.widths)} maps with channels {self.widths}, "
                f"got channels {[m.shape[1] for m in maps]}"
            )
        x = maps[-1]
        for level in reversed(range(len(self.widths) - 1)):
            x = self.up[level](x)
            if self.skips:
                x = _cat_skip(x, maps[level])
            x = self.blocks[level](x)
        return self.head(x)


def _cat_skip(x: Tensor, skip: Tensor) -> Tensor:
    """Concatenate an upsampled map with the encoder map of the same resolution (channels)."""
    if x.shape[2:] != skip.shape[2:]:
        raise ValueError(f"skip connection of spatial size {tuple(skip.shape[2:])} meets {tuple(x.shape[2:])}")
    return torch.cat([x, skip], dim=1)
