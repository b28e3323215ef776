"""SimMIM for 3-D CT (Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022).

What the paper specifies, kept here: random masking of whole mask patches at ratio 0.6; masked
patch embeddings replaced by one learned mask token (the encoder sees every position, so Swin's
windows stay intact); a one-layer prediction head on the encoder's last, stride-s feature map (a
1x1 convolution to s^2 x channels, then a pixel shuffle, in 2-D); an L1 loss on the masked pixels
only, averaged over masked pixels and channels.

What 3-D changes, chosen here:
- mask patch size: SimMIM masks 32 px patches of 192 px images (6 x 6 = 36 patches). At 96^3 a
  32-voxel mask patch leaves only 3^3 = 27 cells, so the default is 16 voxels (6^3 = 216 cells,
  130 hidden), and 8 voxels for the 32^3 CPU model (4^3 = 64 cells). It must be a multiple of
  the encoder's patch-embedding stride (2 for Swin, p for the ViT) and divide the input shape.
- head: a 1x1x1 convolution to s^3 x channels and a 3-D pixel shuffle (`PixelShuffle3d`), on the
  last map (stride 32 for Swin: 768 -> 32768 outputs per position at feature size 48).

Parts: `MaskGeometry` (cells, their size on the embedding grid and in voxels), `random_cells`,
`mask_token_hook` (an encoder `embed_hook`), `PixelShuffle3d`, `SimMIMHead`, `masked_l1`, and the
method `SimMIM3D`. `medssl.ct.dagman` reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medssl.ct.attention_guided import upsample_cells
from medssl.ssl.random import step_generator


@dataclass(frozen=True)
class MaskGeometry:
    """Mask cells of `patch` voxels tiling a volume of `shape`, for an encoder whose patch embedding
    has stride `embed_stride`."""

    shape: tuple[int, int, int]
    patch: int
    embed_stride: int

    def __post_init__(self):
        if self.patch % self.embed_stride:
            raise ValueError(f"mask patch size {self.patch} must be a multiple of the encoder's "
                             f"patch-embedding stride {self.embed_stride}")
        if any(s % self.patch for s in self.shape):
            raise ValueError(f"mask patch size {self.patch} must divide the input shape {list(self.shape)}")

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(s // self.patch for s in self.shape)

    @property
    def n_cells(self) -> int:
        return math.prod(self.grid)

    def on_embedding(self, cells: Tensor) -> Tensor:
        """(B, P) bool -> (B, D/e, H/e, W/e) on the patch-embedding grid."""
        return upsample_cells(cells, self.grid, self.patch // self.embed_stride)

    def on_voxels(self, cells: Tensor) -> Tensor:
        """(B, P) bool -> (B, D, H, W)."""
        return upsample_cells(cells, self.grid, self.patch)


def random_cells(batch: int, n_cells: int, n_mask: int, generator: torch.Generator) -> Tensor:
    """(B, P) bool with exactly `n_mask` True per row, positions uniform and independent per row."""
    order = torch.argsort(torch.rand(batch, n_cells, generator=generator), dim=1)
    return torch.zeros(batch, n_cells, dtype=torch.bool).scatter_(1, order[:, :n_mask], True)


def mask_token_hook(embedding_mask: Tensor, mask_token: Tensor) -> Callable[[Tensor], Tensor]:
    """An `embed_hook` replacing the embeddings of (B, d, h, w) masked positions by `mask_token` (C,)."""

    def hook(grid: Tensor) -> Tensor:
        token = mask_token.to(grid.dtype).view(1, -1, 1, 1, 1)
        return torch.where(embedding_mask[:, None].to(grid.device), token, grid)

    return hook


class PixelShuffle3d(nn.Module):
    """(B, C * r^3, d, h, w) -> (B, C, d*r, h*r, w*r), the 3-D analogue of nn.PixelShuffle."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        b, c, d, h, w = x.shape
        r = self.factor
        x = x.reshape(b, c // r**3, r, r, r, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, c // r**3, d * r, h * r, w * r)


class SimMIMHead(nn.Sequential):
    """SimMIM's one-layer prediction head in 3-D: 1x1x1 conv to stride^3 * out_channels, pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(nn.Conv3d(in_channels, stride**3 * out_channels, kernel_size=1), PixelShuffle3d(stride))


def masked_l1(pred: Tensor, target: Tensor, voxel_mask: Tensor) -> Tensor:
    """L1 over masked voxels, averaged over masked voxels and channels (SimMIM's loss).
    pred, target: (B, C, D, H, W); voxel_mask: (B, D, H, W) bool."""
    m = voxel_mask[:, None].to(pred.dtype)
    err = (pred.float() - target.float()).abs() * m
    return err.sum() / (m.sum() * pred.shape[1] + 1e-5)


class SimMIM3D(nn.Module):
    """SimMIM over an encoder with `stages(x, embed_hook)`, `embed_stride`, `embed_channels`,
    `stage_strides`, `stage_channels`, `in_channels`, `shape` (the CT encoders of medssl.ct.encoders).

    forward(x (B, C, D, H, W), *, step, rank) -> the masked-voxel L1 loss; masks are drawn from
    `step_generator(seed, step, rank)`. `last_metrics` holds the masked fraction of voxels.
    """

    def __init__(self, encoder: nn.Module, *, mask_ratio: float = 0.6, mask_patch_size: int = 16, seed: int = 0):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.geometry = MaskGeometry(tuple(encoder.shape), int(mask_patch_size), int(encoder.embed_stride))
        self.n_mask = min(max(int(round(mask_ratio * self.geometry.n_cells)), 1), self.geometry.n_cells - 1)
        self.mask_token = nn.Parameter(torch.zeros(encoder.embed_channels))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = SimMIMHead(encoder.stage_channels[-1], encoder.in_channels, encoder.stage_strides[-1])
        self.seed = seed
        self.last_metrics: dict[str, Tensor] = {}

    def draw_mask(self, batch: int, step: int, rank: int) -> Tensor:
        """(B, P) bool mask cells for this (seed, step, rank)."""
        return random_cells(batch, self.geometry.n_cells, self.n_mask, step_generator(self.seed, step, rank))

    def reconstruct(self, x: Tensor, cells: Tensor) -> Tensor:
        """The head's prediction (B, C, D, H, W) of x from its visible cells."""
        hook = mask_token_hook(self.geometry.on_embedding(cells.to(x.device)), self.mask_token)
        return self.head(self.encoder.stages(x, embed_hook=hook)[-1])

    def forward(self, x: Tensor, *, step: int, rank: int = 0) -> Tensor:
        cells = self.draw_mask(x.shape[0], step, rank).to(x.device)
        loss = masked_l1(self.reconstruct(x, cells), x, self.geometry.on_voxels(cells))
        self.last_metrics = {"mask_fraction": cells.float().mean().detach()}
        return loss

