"""Tests of medssl.nn.pos_embed: sine-cosine encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.nn.pos_embed import sincos_1d, sincos_2d


def test_sincos_1d_values():
    pos = np.arange(5)
    emb = sincos_1d(8, pos)
    assert emb.shape == (5, 8)
    omega = 1.0 / 10000 ** (np.arange(4) / 4)
    np.testing.assert_allclose(emb[:, :4], np.sin(pos[:, None] * omega))
    np.testing.assert_allclose(emb[:, 4:], np.cos(pos[:, None] * omega))
    np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_sincos_rejects_bad_dims():
    with pytest.raises(ValueError, match="even"):
        sincos_1d(7, np.arange(3))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, 2, 3)


def test_sincos_2d_shape_layout_and_distinct_positions():
    rows, cols, dim = 8, 50, 32
    emb = sincos_2d(dim, rows, cols)
    assert emb.shape == (rows * cols, dim) and emb.dtype == torch.float32
    grid = emb.view(rows, cols, dim)
    # Row-major: first half depends only on the row, second half only on the column.
    assert torch.allclose(grid[:, :, : dim // 2], grid[:, :1, : dim // 2].expand(-1, cols, -1))
    assert torch.allclose(grid[:, :, dim // 2:], grid[:1, :, dim // 2:].expand(rows, -1, -1))
    expected_row = torch.from_numpy(sincos_1d(dim // 2, np.arange(rows))).float()
    expected_col = torch.from_numpy(sincos_1d(dim // 2, np.arange(cols))).float()
    torch.testing.assert_close(grid[:, 0, : dim // 2], expected_row)
    torch.testing.assert_close(grid[0, :, dim // 2:], expected_col)
    # Every position has its own code.
    dists = torch.cdist(emb, emb)
    dists.fill_diagonal_(float("inf"))
    assert dists.min() > 1e-3
    assert emb.abs().max() <= 1.0 + 1e-6
