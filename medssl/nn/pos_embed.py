"""Fixed sine-cosine positional encodings (Vaswani et al. 2017), on grids of any dimension.

One N-D rule, as MAE's `get_2d_sincos_pos_embed` (He et al., CVPR 2022) splits the width in 2-D:
every axis gets the same number of channels, 2 * (dim // (2 * n_axes)), holding the 1-D encoding
(`sincos_1d`: [sin, cos] of its index) of that axis, axes in order. When dim is not a multiple of
2 * n_axes the leftover channels (fewer than 2 * n_axes) are zeros at the end: the split stays
even, no axis gets more frequencies than another (e.g. 3-D at dim 32: 10 channels per axis, 2
zeros). MAE itself asserts divisibility instead; at the widths it uses (multiples of 2 * n_axes)
both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), dim) encoding; dim must be even."""
    if dim % 2:
        raise ValueError(f"sine-cosine encoding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    out = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_nd(dim: int, grid: Sequence[int]) -> Tensor:
    """(prod(grid), dim) float32 encoding of a grid of any number of axes, row-major (the last
    axis fastest): 2 * (dim // (2 * len(grid))) channels per axis, zeros for the remainder (see the
    module docstring). Raises ValueError when dim leaves no channel for an axis."""
    grid = tuple(int(g) for g in grid)
    per_axis = 2 * (dim // (2 * len(grid)))
    if per_axis == 0:
        raise ValueError(f"{len(grid)}-D sine-cosine positions need dim >= {2 * len(grid)}, got {dim}")
    coords = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
    parts = [sincos_1d(per_axis, c) for c in coords]
    rest = dim - len(grid) * per_axis
    if rest:
        parts.append(np.zeros((parts[0].shape[0], rest)))
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


def sincos_2d(dim: int, rows: int, cols: int) -> Tensor:
    """(rows * cols, dim) encoding of a rows x cols grid, row-major: half the channels encode
    the row index, half the column index (`sincos_nd`). dim must be divisible by 4, as in MAE."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine encoding needs dim divisible by 4, got {dim}")
    return sincos_nd(dim, (rows, cols))


def sincos_3d(dim: int, grid: Sequence[int]) -> Tensor:
    """(d * h * w, dim) encoding of a d x h x w grid, row-major (w fastest): `sincos_nd` in 3-D,
    2 * (dim // 6) channels per axis, the remainder zeros."""
    if len(grid) != 3:
        raise ValueError(f"a 3-D grid needs 3 sizes, got {list(grid)}")
    return sincos_nd(dim, grid)


def sincos_pos_embed(dim: int, grid: Sequence[int], n_prefix: int = 0) -> Tensor:
    """(1, n_prefix + prod(grid), dim): zeros for `n_prefix` prefix tokens (cls), then
    `sincos_nd` of the grid (2-D grids keep `sincos_2d`'s dim-divisible-by-4 check)."""
    pos = sincos_2d(dim, *grid) if len(grid) == 2 else sincos_nd(dim, grid)
    return torch.cat([torch.zeros(n_prefix, dim), pos])[None]
