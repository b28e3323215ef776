"""AMAES's spatial and intensity augmentations: geometry conventions, ranges, reproducibility."""

from __future__ import annotations

import math
from dataclasses import fields, replace

import pytest
import torch

from medssl.mri.augment3d import (
    IntensityAugment,
    PatchDraw,
    RandomPatch3d,
    SpatialAugment,
    _gaussian_kernel,
    elastic_displacement,
    rotation_matrix,
    separable_filter,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_plain_crops_are_exact_slices_at_the_drawn_start():
    x = torch.randn(3, 2, 12, 14, 10)
    crop = RandomPatch3d([8, 8, 8])
    draws = crop.draw(tuple(x.shape[2:]), 3, _gen())
    out = crop(x, _gen(), draws)
    assert out.shape == (3, 2, 8, 8, 8)
    for b, d in enumerate(draws):
        s0, s1, s2 = d.start
        assert 0 <= s0 <= 4 and 0 <= s1 <= 6 and 0 <= s2 <= 2
        assert torch.equal(out[b], x[b, :, s0:s0 + 8, s1:s1 + 8, s2:s2 + 8])
    assert torch.equal(crop(x, _gen(5)), crop(x, _gen(5)))


def test_resampling_with_the_identity_equals_the_crop():
    x = torch.randn(1, 1, 12, 10, 9)
    crop = RandomPatch3d([6, 6, 6])
    d = PatchDraw((3, 2, 1), torch.eye(3, dtype=torch.float64))
    plain = crop(x, _gen(), [PatchDraw((3, 2, 1))])
    assert torch.allclose(crop(x, _gen(), [d]), plain, atol=1e-5)


def test_rotation_by_90_degrees_matches_rot90():
    x = torch.randn(1, 1, 7, 7, 7)
    crop = RandomPatch3d([7, 7, 7])
    for axis, dims in ((0, (3, 4)), (1, (2, 4)), (2, (2, 3))):
        angles = [0.0, 0.0, 0.0]
        angles[axis] = math.pi / 2
        out = crop(x, _gen(), [PatchDraw((0, 0, 0), rotation_matrix(tuple(angles)))])
        assert any(torch.allclose(out, torch.rot90(x, k, dims), atol=1e-4) for k in (1, -1)), axis


def test_zooming_out_fills_outside_with_the_volume_minimum():
    x = torch.rand(1, 1, 8, 8, 8) + 2.0
    x[0, 0, 0, 0, 0] = 1.5
    crop = RandomPatch3d([8, 8, 8])
    out = crop(x, _gen(), [PatchDraw((0, 0, 0), torch.eye(3, dtype=torch.float64) * 2.0)])
    assert out.min() >= 1.5 - 1e-5 and out.max() <= x.max() + 1e-5
    assert torch.isclose(out[0, 0, 0, 0, 0], torch.tensor(1.5))  # far outside -> the minimum


def test_volume_smaller_than_the_patch_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than the patch"):
        RandomPatch3d([32, 32, 32])(torch.zeros(1, 1, 40, 24, 40), _gen())


def test_spatial_draws_follow_the_probabilities():
    crop = RandomPatch3d([8, 8, 8], SpatialAugment())
    draws = crop.draw((16, 16, 16), 2000, _gen())
    deformed = sum(d.deform is not None for d in draws) / len(draws)
    transformed = sum(d.matrix is not None for d in draws) / len(draws)
    assert abs(deformed - 0.33) < 0.04
    assert abs(transformed - (1 - 0.8 * 0.8)) < 0.04  # rotation or scaling, each p = 0.2
    for d in draws:
        if d.deform is not None:
            assert 200 <= d.deform[0] <= 600 and 20 <= d.deform[1] <= 30
    # A transformed batch is reproducible and stays within the volume's range.
    x = torch.randn(4, 1, 16, 16, 16)
    aug = RandomPatch3d([8, 8, 8], SpatialAugment(p_rotation=1.0, p_deform=1.0))
    a, b = aug(x, _gen(3)), aug(x, _gen(3))
    assert torch.equal(a, b) and a.min() >= x.min() - 1e-5 and a.max() <= x.max() + 1e-5


def test_elastic_field_has_batchgenerators_statistics():
    # batchgenerators: gaussian_filter(uniform(-1, 1) noise, sigma) * alpha; away from the
    # borders its standard deviation is alpha / sqrt(3) * sqrt(sum of the squared 3-D kernel).
    sigma, alpha = 4.0, 100.0
    t = torch.arange(-40, 41, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    expected = alpha / math.sqrt(3) * float((k**2).sum()) ** 1.5
    g = _gen(1)
    centre = torch.stack([elastic_displacement((32, 32, 32), alpha, sigma, g, "cpu")[:, 16, 16, 16] for _ in range(150)])
    assert 0.75 * expected < float(centre.std()) < 1.25 * expected


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_separable_filter_matches_scipy(mode):
    from scipy.ndimage import gaussian_filter

    v = torch.randn(9, 11, 13, dtype=torch.float64)
    ours = separable_filter(v, _gaussian_kernel(1.3).double(), mode)
    assert torch.allclose(ours, torch.from_numpy(gaussian_filter(v.numpy(), 1.3, mode=mode, truncate=4.0)), atol=1e-6)


def test_intensity_augmentation_with_no_probability_is_the_identity():
    off = IntensityAugment(**{f.name: 0.0 for f in fields(IntensityAugment) if f.name.startswith("p_")})
    x = torch.randn(2, 2, 8, 8, 8)
    assert torch.allclose(off(x, _gen()), x, atol=1e-5)


FORCED = {
    "additive": dict(p_additive_noise=1.0, additive_sigma=(0.05, 0.05)),
    "blur": dict(p_blur=1.0, p_blur_per_channel=1.0, blur_sigma=(1.0, 1.0)),
    "multiplicative": dict(p_multiplicative_noise=1.0, multiplicative_sigma=(0.05, 0.05)),
    "ghosting": dict(p_ghosting=1.0),
    "ringing": dict(p_ringing=1.0, ringing_keep=(0.5, 0.5)),
    "lowres": dict(p_lowres=1.0, p_lowres_per_channel=1.0, p_lowres_per_axis=1.0, lowres_zoom=(0.5, 0.5)),
    "bias_field": dict(p_bias_field=1.0),
    "gamma": dict(p_gamma=1.0, gamma=(2.0, 2.0)),
}


@pytest.mark.parametrize("which", sorted(FORCED))
def test_each_intensity_augmentation_changes_the_input_within_its_range(which):
    off = {f.name: 0.0 for f in fields(IntensityAugment) if f.name.startswith("p_")}
    aug = replace(IntensityAugment(**off), **FORCED[which])
    x = torch.randn(2, 1, 12, 12, 12)
    before = x.clone()
    out = aug(x, _gen())
    assert torch.equal(x, before)  # the input (AMAES's reconstruction target) is untouched
    assert out.shape == x.shape and torch.isfinite(out).all()
    lo, hi = x.amin(dim=(1, 2, 3, 4)), x.amax(dim=(1, 2, 3, 4))
    assert (out.amin(dim=(1, 2, 3, 4)) >= lo - 1e-4).all() and (out.amax(dim=(1, 2, 3, 4)) <= hi + 1e-4).all()
    assert (out - x).abs().mean() > 1e-3
    assert torch.equal(aug(x, _gen(7)), aug(x, _gen(7)))


def test_unknown_augmentation_setting_is_named():
    with pytest.raises(ValueError, match="p_rotate"):
        SpatialAugment.from_config({"p_rotate": 0.2})
    assert SpatialAugment.from_config(None) is None
    assert IntensityAugment.from_config({"gamma": [0.7, 1.5]}).gamma == (0.7, 1.5)
