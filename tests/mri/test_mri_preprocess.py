"""MRI preprocessing: world coordinates kept through reorientation and resampling, output
statistics, NaN guard, multi-channel alignment and the way back to the input's grid."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.imaging.volume import Volume
from medssl.mri.phantom import (
    DEFAULT_SITES,
    INFARCT,
    MENINGIOMA,
    make_anatomy,
    render,
    render_mask,
)
from medssl.mri.preprocess import (
    Geometry,
    MriPreprocess,
    to_model_space,
    to_original_space,
)

SITE_A, SITE_B, SITE_C = DEFAULT_SITES


def _lps_marker_volume():
    """A 1 x 1 x 3 mm LPS-stored block with one bright voxel at a known world point."""
    affine = np.array([[-1.0, 0, 0, 20], [0, -1.0, 0, 25], [0, 0, 3.0, -40], [0, 0, 0, 1]])
    a = np.zeros((40, 50, 28), np.float32)
    a[4:36, 6:44, 3:25] = 1.0
    a[12, 30, 14] = 50.0
    return Volume(a, affine), (affine @ np.array([12, 30, 14, 1.0]))[:3]


def test_reorientation_and_resampling_keep_world_coordinates():
    v, world = _lps_marker_volume()
    x, g = MriPreprocess(channels=("any",), shape=(48, 48, 80)).apply([v])
    idx = np.unravel_index(np.argmax(x[0]), x.shape[1:])
    model_affine = np.asarray(g.model_affine)
    np.testing.assert_allclose((model_affine @ np.array([*idx, 1.0]))[:3], world, atol=1e-6)
    # the model grid is RAS+ at 1 mm
    np.testing.assert_allclose(model_affine[:3, :3], np.eye(3), atol=1e-9)


def test_output_shape_and_zscore_over_brain():
    rng = np.random.default_rng(0)
    a = make_anatomy((40, 40, 40), rng, age=50)
    v = render(a, "t1", SITE_C, rng)  # 1.2 x 1.2 x 1.5 mm, LAS
    x, g = MriPreprocess(channels=("t1",), shape=(64, 64, 64)).apply([v])  # large enough to hold the brain
    assert x.shape == (1, 64, 64, 64) and x.dtype == np.float32 and g.model_shape == (64, 64, 64)
    brain = x[0] != 0
    assert abs(float(x[0][brain].mean())) < 1e-3 and float(x[0][brain].std()) == pytest.approx(1.0, abs=1e-3)
    # the intracranial space spans ~80% of the 40 mm field of view: ~32 voxels at 1 mm, zero-padded around
    extent = [np.ptp(np.nonzero(brain.any(axis=tuple(j for j in range(3) if j != i)))[0]) + 1 for i in range(3)]
    assert 28 <= extent[0] <= 36 and x[0, 0].max() == 0 and x[0, -1].max() == 0


def test_centre_crop_when_the_input_shape_is_smaller():
    v, _ = _lps_marker_volume()  # 32 x 38 x 64 mm of foreground once at 1 mm
    x, g = MriPreprocess(channels=("any",), shape=(16, 16, 16)).apply([v])
    assert x.shape == (1, 16, 16, 16) and (x[0] != 0).all()  # only the inside of the block is left
    centre = np.asarray(g.model_affine) @ np.array([7.5, 7.5, 7.5, 1.0])
    full, gf = MriPreprocess(channels=("any",), shape=(64, 64, 96)).apply([v])
    np.testing.assert_allclose(centre[:3], (np.asarray(gf.model_affine) @ np.array([31.5, 31.5, 47.5, 1]))[:3],
                               atol=0.51)


def test_non_finite_voxels_are_zeroed_and_counted():
    v, _ = _lps_marker_volume()
    v.array[20, 20, 10] = np.nan
    v.array[21, 20, 10] = np.inf
    x, g = MriPreprocess(channels=("any",), shape=(32, 32, 32)).apply([v])
    assert np.isfinite(x).all() and g.non_finite == 2
    with pytest.raises(ValueError, match="empty image"):
        MriPreprocess(channels=("any",), shape=(8, 8, 8)).apply([Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))])


def test_channels_on_different_grids_are_aligned():
    rng = np.random.default_rng(1)
    a = make_anatomy((56, 56, 56), rng, age=60, infarct=True)
    dwi_a = render(a, "dwi", SITE_A, rng)  # 1 mm RAS
    # the same voxels stored LPS: after preprocessing the two channels are identical
    same_lps = Volume(dwi_a.array[::-1, ::-1, :].copy(), dwi_a.affine @ np.array(
        [[-1.0, 0, 0, 55], [0, -1.0, 0, 55], [0, 0, 1, 0], [0, 0, 0, 1]]))
    x, g = MriPreprocess(channels=("dwi", "dwi_lps"), shape=(64, 64, 64)).apply([dwi_a, same_lps])
    np.testing.assert_allclose(x[0], x[1], atol=1e-4)
    # the same brain acquired 1 x 1 x 3 mm and stored LPS lands on the same grid: its infarct (one
    # hemisphere, so a flip would miss it) sits where the 1 mm infarct mask says
    dwi_b = render(a, "dwi", SITE_B, rng)
    x, g = MriPreprocess(channels=("dwi", "dwi_thick"), shape=(64, 64, 64)).apply([dwi_a, dwi_b])
    lesion = to_model_space(render_mask(a, SITE_A, INFARCT), g).astype(bool)
    brain = (x[0] != 0) & ~lesion
    assert lesion.sum() > 20
    assert x[1][lesion].mean() > x[1][brain].mean() + 1.5
    assert x[1][lesion[::-1]].mean() < x[1][lesion].mean() - 1.0


def test_mask_to_model_space_and_back():
    rng = np.random.default_rng(2)
    a = make_anatomy((40, 40, 40), rng, age=45, meningioma=True)
    for site in (SITE_A, SITE_B):
        img, mask = render(a, "flair", site, rng), render_mask(a, site, MENINGIOMA)
        _, g = MriPreprocess(channels=("flair",), shape=(48, 48, 48)).apply([img])
        model = to_model_space(mask, g)
        assert model.shape == (48, 48, 48) and set(np.unique(model)) <= {0, 1}
        assert model.sum() == pytest.approx(mask.array.sum() * np.prod(site.spacing_mm), rel=0.15)
        back = to_original_space(model, g)
        dice = 2 * (back * mask.array).sum() / (back.sum() + mask.array.sum())
        assert back.shape == mask.array.shape and dice > 0.95
        assert Geometry.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="not on the model grid"):
        to_original_space(np.zeros((4, 4, 4)), g)


def test_settings_and_contract():
    p = MriPreprocess.for_encoder({"channels": ["flair", "adc"], "shape": [32, 32, 32], "spacing_mm": [1, 1, 1]})
    assert p.channels == ("flair", "adc") and p.shape == (32, 32, 32)
    assert MriPreprocess.for_encoder({"channels": 1, "shape": [2, 16, 16, 16]}).shape == (16, 16, 16)
    assert p.cache_key() != MriPreprocess.for_encoder({"channels": ["flair", "adc"], "shape": [32, 32, 32],
                                                       "spacing_mm": 1.5}).cache_key()
    assert MriPreprocess.for_encoder({"channels": 3, "shape": [8, 8, 8]}).channels == ("any",) * 3
    with pytest.raises(ValueError, match="positive count"):
        MriPreprocess.for_encoder({"channels": 0, "shape": [8, 8, 8]})
