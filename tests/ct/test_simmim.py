"""SimMIM for 3-D CT: mask geometry, the pixel-shuffle head, the masked L1, and the method."""

from __future__ import annotations

import pytest
import torch

from medssl.ct.simmim import (
    MaskGeometry,
    PixelShuffle3d,
    SimMIM3D,
    masked_l1,
    random_cells,
)
from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.registry import create_encoder


def test_pixel_shuffle_3d_places_channels_as_sub_voxels():
    r, c = 2, 3
    x = torch.arange(c * r**3 * 2 * 1 * 1, dtype=torch.float32).reshape(1, c * r**3, 2, 1, 1)
    y = PixelShuffle3d(r)(x)
    assert y.shape == (1, c, 4, 2, 2)
    for ch in range(c):
        for d in range(2):
            for i in range(r):
                for j in range(r):
                    for k in range(r):
                        assert y[0, ch, d * r + i, j, k] == x[0, ch * r**3 + i * r * r + j * r + k, d, 0, 0]


def test_mask_geometry():
    geo = MaskGeometry((32, 32, 32), 8, 2)
    assert geo.grid == (4, 4, 4) and geo.n_cells == 64
    cells = torch.zeros(1, 64, dtype=torch.bool)
    cells[0, 1] = True  # cell (0, 0, 1): voxels [0:8, 0:8, 8:16]
    vox = geo.on_voxels(cells)
    assert vox.shape == (1, 32, 32, 32) and vox.sum() == 512 and vox[0, :8, :8, 8:16].all()
    emb = geo.on_embedding(cells)
    assert emb.shape == (1, 16, 16, 16) and emb[0, :4, :4, 4:8].all() and emb.sum() == 64
    with pytest.raises(ValueError, match="multiple of the encoder's patch-embedding stride 2"):
        MaskGeometry((32, 32, 32), 3, 2)
    with pytest.raises(ValueError, match="must divide the input shape"):
        MaskGeometry((32, 32, 48), 32, 2)


def test_random_cells_exact_count_and_reproducible():
    a = random_cells(3, 64, 38, torch.Generator().manual_seed(1))
    b = random_cells(3, 64, 38, torch.Generator().manual_seed(1))
    c = random_cells(3, 64, 38, torch.Generator().manual_seed(2))
    assert (a.sum(1) == 38).all() and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # positions independent per sample


def test_masked_l1_ignores_visible_voxels():
    x = torch.rand(2, 1, 8, 8, 8)
    mask = torch.zeros(2, 8, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    pred = x.clone()
    pred[:, :, 4:] += 5.0  # wrong only where visible
    assert masked_l1(pred, x, mask) == 0
    pred[:, :, :4] += 0.5
    assert masked_l1(pred, x, mask) == pytest.approx(0.5, rel=1e-4)


def _method(seed=0, **kw) -> SimMIM3D:
    torch.manual_seed(seed)
    return SimMIM3D(create_encoder("ct_swin_tiny"), mask_patch_size=8, **kw)


def test_masked_cells_are_hidden_from_the_encoder():
    """The encoder sees mask tokens, not voxels, in masked cells: editing them changes nothing."""
    m = _method().eval()
    x = torch.rand(2, 1, 32, 32, 32)
    cells = m.draw_mask(2, step=3, rank=0)
    assert (cells.sum(1) == round(0.6 * 64)).all()
    vox = m.geometry.on_voxels(cells)[:, None]
    edited = torch.where(vox, torch.rand_like(x), x)
    with torch.no_grad():
        assert torch.equal(m.reconstruct(x, cells), m.reconstruct(edited, cells))
        visible_edit = torch.where(vox, x, torch.rand_like(x))
        assert not torch.equal(m.reconstruct(x, cells), m.reconstruct(visible_edit, cells))


def test_same_seed_step_rank_same_loss():
    m = _method()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        a, b = m(x, step=5, rank=0), m(x, step=5, rank=0)
        c, d = m(x, step=6, rank=0), m(x, step=5, rank=1)
    assert a == b and a != c and a != d


def test_a_few_steps_reduce_the_loss():
    m = _method()
    x = torch.rand(2, 1, 32, 32, 32)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        loss = m(x, step=0, rank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_simmim_with_the_3d_vit():
    torch.manual_seed(0)
    m = SimMIM3D(create_encoder("ct_vit3d_tiny"), mask_patch_size=8)
    loss = m(torch.rand(2, 1, 32, 32, 32), step=0, rank=0)
    assert torch.isfinite(loss)
    loss.backward()
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0


def test_build_method_on_the_recipe():
    cfg = resolve_recipe("simmim_ct", ["variant=cpu"])
    encoder, method = build_method(cfg)
    assert encoder.spec.name == "ct_swin_tiny" and isinstance(method, SimMIM3D) and method.encoder is encoder
    assert encoder.spec.input["shape"] == cfg["data"]["shape"] and encoder.spec.input["windows"] == ["lung"]
    assert method.geometry.patch == 8
    with torch.no_grad():
        assert torch.isfinite(method(torch.rand(1, 1, 32, 32, 32), step=0, rank=0))
    gpu = resolve_recipe("simmim_ct", ["variant=gpu"])
    assert gpu["encoder"]["name"] == "ct_swin_base" and gpu["data"]["shape"] == [96, 96, 96]
    assert gpu["trainer"]["precision"] == "bf16-mixed"
