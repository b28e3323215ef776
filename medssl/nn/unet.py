"""A plain U-Net encoder for 2-D images or 3-D volumes, built from MONAI blocks.

The design is the contracting path of Ronneberger et al., "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015, as nnU-Net and AMAES build it (Munk et al., ADSMI @
MICCAI 2024, `src/models/networks/unet.py` of github.com/asbjrnmunk/amaes):

- stages of given widths (AMAES's U-Net B: 32, 64, 128, 256, 512; Ronneberger's: 64 ... 1024);
- each stage two 3x3(x3) convolutions, each followed by instance norm (affine) and leaky ReLU
  (slope 0.01): MONAI's `UnetBasicBlock` (conv, norm, act, conv, norm, act);
- 2x max pooling between stages, so every spatial size must be a multiple of
  2 ** (n_stages - 1).

`block="residual"` swaps in MONAI's `UnetResBlock` (the nnU-Net residual encoder's block).
Convolutions carry no bias (the instance norm that follows has one). The decoder that makes it a
U-Net is the segmentation protocol's (:class:`medssl.bench.segmentation.FeaturePyramidDecoder`
over :meth:`UNetEncoder.feature_maps`) or a method's own (AMAES's `UNetDecoder3d`).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.blocks import UnetBasicBlock, UnetResBlock
from torch import Tensor, nn

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
_BLOCKS = {"basic": UnetBasicBlock, "residual": UnetResBlock}
_AXES = {2: "H, W", 3: "D, H, W"}


def check_spatial(x: Tensor, spatial_dims: int, in_channels: int, multiple: int, who: str) -> None:
    """A clear error unless x is (B, in_channels, *spatial) with ``spatial_dims`` axes, each a
    multiple of ``multiple``."""
    axes = _AXES[spatial_dims]
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(f"{who}: expected input (batch, {in_channels} channels, {axes}), got {tuple(x.shape)}")
    if any(s % multiple for s in x.shape[2:]):
        raise ValueError(f"{who}: spatial size {tuple(x.shape[2:])} must be a multiple of {multiple} in every axis")


class UNetEncoder(nn.Module):
    """Plain U-Net encoder. x: (B, in_channels, *S), ``spatial_dims`` = len(S) in {2, 3}, every
    size a multiple of ``divisor`` = 2 ** (len(widths) - 1).

    feature_maps(x) -> [(B, widths[i], *S / 2**i) for each stage], fine to coarse;
    forward_features(x) -> (B, n positions of the last map, widths[-1]), bottleneck positions as
    tokens; forward(x) -> (B, widths[-1]), the bottleneck averaged over space.
    """

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128, 256, 512), block: str = "basic",
                 spatial_dims: int = 3):
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose from {', '.join(_BLOCKS)}")
        if len(widths) < 2:
            raise ValueError(f"a U-Net encoder needs at least 2 stages, got widths {list(widths)}")
        if spatial_dims not in _AXES:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.widths = [int(w) for w in widths]
        self.embed_dim = self.widths[-1]
        self.divisor = 2 ** (len(self.widths) - 1)
        chans = [in_channels, *self.widths]
        self.stages = nn.ModuleList(
            _BLOCKS[block](spatial_dims, chans[i], chans[i + 1], kernel_size=3, stride=1, norm_name=NORM,
                           act_name=ACT)
            for i in range(len(self.widths))
        )
        self.pool = (nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d)(2)

    @property
    def input_conv(self) -> nn.Module:
        """The first convolution, the one that sees the input channels."""
        return self.stages[0].conv1.conv

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        check_spatial(x, self.spatial_dims, self.in_channels, self.divisor, type(self).__name__)
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
