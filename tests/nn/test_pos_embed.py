"""Tests of medssl.nn.pos_embed: sine-cosine encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.nn.pos_embed import sincos_1d, sincos_2d, sincos_3d, sincos_nd, sincos_pos_embed


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


def _legacy_ct_sincos_3d(dim: int, grid) -> torch.Tensor:
    """The CT encoders' former rule: 2 * (dim // 6) channels for each of the first two axes and
    the rest for the third (kept here only to pin where the two former 3-D rules agree)."""
    part = 2 * (dim // 6)
    coords = np.meshgrid(*(np.arange(g) for g in grid), indexing="ij")
    parts = [sincos_1d(p, c) for p, c in zip((part, part, dim - 2 * part), coords) if p > 0]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


def test_sincos_nd_splits_evenly_and_zero_fills_the_remainder():
    for grid in [(5,), (3, 4), (2, 3, 4), (2, 2, 3, 2)]:
        n = len(grid)
        for dim in (2 * n * 4, 2 * n * 4 + 2, 2 * n * 4 + 2 * n - 2):
            emb = sincos_nd(dim, grid)
            per_axis = 2 * (dim // (2 * n))
            assert emb.shape == (int(np.prod(grid)), dim) and emb.dtype == torch.float32
            coords = np.meshgrid(*(np.arange(g) for g in grid), indexing="ij")
            for a, c in enumerate(coords):
                expected = torch.from_numpy(sincos_1d(per_axis, c)).float()
                assert torch.equal(emb[:, a * per_axis:(a + 1) * per_axis], expected)
            assert (emb[:, n * per_axis:] == 0).all()
    with pytest.raises(ValueError, match="dim >= 6"):
        sincos_nd(4, (2, 2, 2))


def test_lower_dimensional_forms_are_the_nd_rule():
    assert torch.equal(sincos_nd(8, (7,)), torch.from_numpy(sincos_1d(8, np.arange(7))).float())
    assert torch.equal(sincos_2d(32, 4, 6), sincos_nd(32, (4, 6)))
    assert torch.equal(sincos_3d(40, (2, 3, 4)), sincos_nd(40, (2, 3, 4)))
    pe = sincos_pos_embed(32, (4, 6), n_prefix=1)
    assert pe.shape == (1, 25, 32) and (pe[0, 0] == 0).all() and torch.equal(pe[0, 1:], sincos_2d(32, 4, 6))
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(30, (4, 6), n_prefix=1)


def test_3d_rule_matches_both_former_3d_rules_at_multiples_of_6():
    # At every registered 3-D width (96, 768: multiples of 6) the former CT rule (remainder to the
    # last axis) and the MRI rule (remainder zeros) agree with sincos_3d; elsewhere the CT rule differed.
    for dim in (6, 96, 768):
        assert torch.equal(sincos_3d(dim, (3, 2, 4)), _legacy_ct_sincos_3d(dim, (3, 2, 4)))
    assert not torch.equal(sincos_3d(64, (3, 2, 4)), _legacy_ct_sincos_3d(64, (3, 2, 4)))


def test_where_fixed_positions_live_in_checkpoints():
    """3-D ViTs recompute their positions (not in the state_dict: an old checkpoint loads the
    current rule); the retina ViT saves them as a frozen parameter, and a loaded checkpoint's
    positions win over the rule."""
    from medssl.registry import create_encoder

    for name in ("ct_vit3d_tiny", "mri_vit3d_tiny"):
        assert not any("pos" in k for k in create_encoder(name, depth=1).state_dict())
    torch.manual_seed(0)
    vit = create_encoder("retina_vit_tiny", depth=1).eval()
    state = vit.state_dict()
    assert torch.equal(state["pos_embed"], sincos_pos_embed(128, (8, 8), n_prefix=1))
    state["pos_embed"] = state["pos_embed"] * 0.5  # an older rule's positions
    fresh = create_encoder("retina_vit_tiny", depth=1).eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(fresh.pos_embed, state["pos_embed"])
    vit.pos_embed.data.mul_(0.5)
    with torch.no_grad():
        assert torch.equal(fresh(x), vit(x))
