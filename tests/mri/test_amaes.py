"""AMAES and its contrastive hybrid: mask geometry, the loss, augmentation reversal, reproducibility,
and that optimisation reduces the loss."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from medssl.mri.amaes import AMAES, AmaesViews, CubeMasker, voxel_mse
from medssl.mri.augment3d import IntensityAugment, RandomPatch3d, SpatialAugment
from medssl.mri.hybrid import AMAESHybrid
from medssl.mri.unet_decoder import UNetDecoder3d
from medssl.registry import create_encoder
from medssl.ssl.contrastive import NTXentLoss, ProjectionHead

ALL_INTENSITY = IntensityAugment(**{f.name: 1.0 for f in fields(IntensityAugment) if f.name.startswith("p_")})


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("ratio, token", [(0.6, 4), (0.75, 2), (0.3, 8)])
def test_cube_masks_have_the_exact_count_and_geometry(ratio, token):
    masker = CubeMasker(ratio, token)
    mask = masker(3, (32, 32, 16), _gen())
    assert mask.shape == (3, 1, 32, 32, 16) and mask.dtype == torch.bool
    n_tokens = (32 // token) ** 2 * (16 // token)
    n_masked = n_tokens - int(n_tokens * (1 - ratio))  # AMAES's generate_random_mask
    cubes = mask[:, 0].reshape(3, 32 // token, token, 32 // token, token, 16 // token, token)
    per_cube = cubes.permute(0, 1, 3, 5, 2, 4, 6).flatten(4)
    assert (per_cube.all(-1) | ~per_cube.any(-1)).all()  # every cube is all masked or all visible
    assert (per_cube.all(-1).flatten(1).sum(1) == n_masked).all()
    assert not torch.equal(mask[0], mask[1])  # independent per sample
    assert torch.equal(mask, masker(3, (32, 32, 16), _gen()))
    with pytest.raises(ValueError, match="multiple"):
        masker(1, (31, 32, 32), _gen())


def test_masked_only_loss_has_no_gradient_at_visible_voxels():
    target = torch.randn(2, 2, 8, 8, 8)
    pred = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    mask = CubeMasker(0.5, 4)(2, (8, 8, 8), _gen())
    loss = voxel_mse(pred, target, mask)
    loss.backward()
    visible = ~mask.expand_as(pred)
    assert (pred.grad[visible] == 0).all() and (pred.grad[~visible] != 0).all()
    expected = (pred - target).pow(2)[~visible].mean()
    assert torch.allclose(loss, expected)
    pred.grad = None
    voxel_mse(pred, target).backward()
    assert (pred.grad != 0).all()


def _views(intensity=ALL_INTENSITY, spatial=None, fill=0.0):
    return AmaesViews(RandomPatch3d([16, 16, 16], spatial), intensity, CubeMasker(0.6, 4), fill)


def test_augmentation_touches_the_input_but_not_the_target():
    x = torch.randn(2, 1, 20, 24, 20)
    views = _views()
    inputs, target, mask = views(x, _gen(3))
    crops = RandomPatch3d([16, 16, 16])(x, _gen(3))  # the same first draws: the crop positions
    assert torch.equal(target, crops)  # the target is the plain crop, unaugmented
    visible = ~mask.expand_as(inputs)
    assert (inputs[visible] - target[visible]).abs().mean() > 1e-2  # the input is corrupted
    assert (inputs[~visible] == 0).all()  # masked voxels are zeroed, AMAES's mask token
    assert abs(mask.float().mean().item() - (64 - int(64 * 0.4)) / 64) < 1e-6
    filled, _, m2 = _views(fill=-3.0)(x, _gen(3))
    assert (filled[~visible] == -3.0).all()


def test_spatial_augmentation_moves_input_and_target_together():
    x = torch.randn(2, 1, 20, 24, 20)
    views = _views(intensity=None, spatial=SpatialAugment(p_rotation=1.0, p_deform=0.0, p_scale=1.0))
    inputs, target, mask = views(x, _gen(4))
    assert not torch.equal(target, RandomPatch3d([16, 16, 16])(x, _gen(4)))  # resampled
    assert torch.equal(inputs, target.masked_fill(mask, 0.0))  # no intensity change: input = masked target


def _amaes(masked_only=False, seed=0):
    torch.manual_seed(0)
    enc = create_encoder("mri_unet_tiny", shape=[16, 16, 16], widths=[4, 8, 16])
    dec = UNetDecoder3d(enc.widths, 1, skips=False, convs_per_stage=1)
    views = _views(intensity=IntensityAugment(), spatial=SpatialAugment())
    return AMAES(enc, dec, views, masked_only=masked_only, seed=seed)


def test_amaes_loss_is_a_function_of_seed_step_rank():
    method = _amaes()
    x = torch.randn(2, 1, 20, 20, 20)
    a = method(x, step=5, rank=0)
    assert torch.equal(a, method(x, step=5, rank=0))
    assert not torch.equal(a, method(x, step=6, rank=0))
    assert not torch.equal(a, method(x, step=5, rank=1))
    assert torch.isfinite(a) and a.ndim == 0


def test_amaes_masked_only_scores_only_masked_voxels():
    method = _amaes(masked_only=True)
    x = torch.randn(2, 1, 20, 20, 20)
    inputs, target, mask = method.draw(x, step=0)
    pred = method.decoder(method.encoder.feature_maps(inputs))
    expected = (pred - target).pow(2)[mask.expand_as(pred)].mean()
    assert torch.allclose(method(x, step=0), expected, atol=1e-6)


def test_a_few_steps_reduce_the_amaes_loss_on_a_fixed_batch():
    method = _amaes()
    x = torch.randn(2, 1, 16, 16, 16)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = method(x, step=0)  # the same draws every time: a fixed problem
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def _hybrid(weight=0.5):
    torch.manual_seed(0)
    enc = create_encoder("mri_unet_tiny", shape=[16, 16, 16], widths=[4, 8, 16])
    dec = UNetDecoder3d(enc.widths, 1, skips=False, convs_per_stage=1)
    proj = ProjectionHead(16, 16, 8)
    return AMAESHybrid(enc, dec, proj, _views(intensity=IntensityAugment()), NTXentLoss(0.1), weight=weight)


def test_hybrid_loss_is_reconstruction_plus_weighted_contrastive():
    method = _hybrid(weight=0.5)
    x = torch.randn(3, 1, 20, 20, 20)
    parts = method.losses(x, step=2)
    assert torch.allclose(parts["loss"], parts["reconstruction"] + 0.5 * parts["contrastive"])
    assert torch.equal(method(x, step=2), parts["loss"])
    assert parts["contrastive"] > 0 and parts["reconstruction"] > 0
    # The two views of a volume differ (own crops, corruption and masks) but share the volume.
    inputs, targets, masks = method.draw(x, step=2)
    assert inputs.shape == (6, 1, 16, 16, 16)
    assert not torch.equal(masks[:3], masks[3:])
    # The contrastive term reaches the encoder.
    method.zero_grad()
    parts["contrastive"].backward()
    assert method.encoder.stages[-1].conv2.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        method(x[:1], step=0)


def test_a_few_steps_reduce_the_hybrid_loss_on_a_fixed_batch():
    method = _hybrid(weight=0.2)
    x = torch.randn(4, 1, 16, 16, 16)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    first = last = None
    for _ in range(10):
        loss = method(x, step=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.9 * first
