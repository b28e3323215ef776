"""Fixed sine-cosine positional encodings (Vaswani et al. 2017; 2-D form as in MAE/I-JEPA)."""

from __future__ import annotations

import numpy as np
import torch


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), dim) encoding; dim must be even."""
    if dim % 2:
        raise ValueError(f"sine-cosine encoding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    out = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, dim) encoding of a rows x cols grid, row-major: half the channels encode
    the row index, half the column index. dim must be divisible by 4."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine encoding needs dim divisible by 4, got {dim}")
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    emb = np.concatenate([sincos_1d(dim // 2, r), sincos_1d(dim // 2, c)], axis=1)
    return torch.from_numpy(emb).float()
