"""Frangi vesselness, Guo-Hall skeletons and VAMAE's patch masking probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medssl.retina.vessel_prior import (
    frangi_scale_responses,
    frangi_vesselness,
    masking_probabilities,
    otsu_threshold,
    patch_importance,
    skeletonize,
    vessel_priors,
)

EIGHT = np.ones((3, 3), bool)


def _bar(h=64, w=64, centre=32.3, radius=2.5, axis=0):
    yy, xx = np.mgrid[:h, :w].astype(float)
    d = np.abs((yy if axis == 0 else xx) - centre)
    return np.clip(radius + 0.5 - d, 0.0, 1.0)


def _no_2x2(s):
    return not (s[:-1, :-1] & s[1:, :-1] & s[:-1, 1:] & s[1:, 1:]).any()


def test_frangi_responds_on_a_tube_along_its_whole_length_and_not_on_flat_background():
    tube = _bar()
    v = frangi_vesselness(tube, sigmas=(1, 2, 3))
    assert v.dtype == np.float32 and v.min() >= 0 and v.max() <= 1
    assert v[32, 8:56].min() > 0.6  # the centreline
    assert v[:20, :].max() < 1e-3 and v[45:, :].max() < 1e-3  # flat background away from the tube
    assert frangi_vesselness(np.full((32, 32), 0.7)).max() == 0.0


def test_frangi_prefers_tubes_to_blobs_and_knows_the_polarity():
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 4.0 ** 2))
    assert frangi_vesselness(blob).max() < 0.5 * frangi_vesselness(_bar()).max()
    dark = 1.0 - _bar()
    assert frangi_vesselness(dark)[30:35, 8:56].max() < 1e-3  # a dark line is no bright vessel
    assert frangi_vesselness(dark, black_ridges=True)[32, 8:56].min() > 0.6


def test_frangi_scale_of_the_strongest_response_grows_with_the_calibre():
    img = np.maximum(_bar(64, 96, 16.0, 1.0), _bar(64, 96, 45.0, 5.0))
    r = frangi_scale_responses(img, sigmas=(1, 2, 3, 4, 5))
    thin, thick = int(r[:, 16, 48].argmax()), int(r[:, 45, 48].argmax())
    assert thin <= 1 and thick >= 3


def test_skeleton_of_a_bar_is_one_pixel_wide_inside_the_mask():
    m = np.zeros((30, 60), bool)
    m[10:17, 5:55] = True
    s = skeletonize(m)
    assert s.dtype == bool and not (s & ~m).any()
    assert _no_2x2(s)
    assert (s[:, 10:50].sum(axis=0) == 1).all()  # one pixel per column away from the ends


def test_skeleton_keeps_connectivity_and_holes():
    m = np.zeros((50, 60), bool)
    m[10:17, 5:55] = True
    m[10:45, 25:33] = True  # a T
    s = skeletonize(m)
    assert ndimage.label(s, EIGHT)[1] == 1 and _no_2x2(s)
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    ring = (r2 < 20 ** 2) & (r2 > 12 ** 2)
    sr = skeletonize(ring)
    assert ndimage.label(sr, EIGHT)[1] == 1
    assert ndimage.label(~sr)[1] == 2  # outside + the hole
    assert not (sr & ~ring).any() and _no_2x2(sr)
    assert not skeletonize(np.zeros((8, 8), bool)).any()


def test_priors_of_a_synthetic_image_follow_its_vessels():
    from medssl.retina.synthetic import generate_octa

    s = generate_octa(96, seed=4)
    p = vessel_priors(s.image)
    assert set(p) == {"vesselness", "skeleton"}
    assert p["vesselness"][s.vessel_mask].mean() > 4 * p["vesselness"][~s.vessel_mask].mean()
    near = ndimage.binary_dilation(s.vessel_mask, EIGHT)
    assert (p["skeleton"] & near).sum() > 0.9 * p["skeleton"].sum()
    assert 0 < otsu_threshold(p["vesselness"]) < p["vesselness"].max()


def test_patch_importance_ranks_vessel_patches_first():
    img = np.zeros((32, 32), np.float32)
    img[4:7, :16] = 1.0  # a vessel through the two top-left patches (patch 8)
    p = vessel_priors(img, sigmas=(1.0,))
    imp = patch_importance(p["vesselness"], p["skeleton"], 8)
    assert imp.shape == (16,)
    assert imp[:2].min() > imp[4:].max()
    assert imp.max() == pytest.approx(1.0)
    batch = patch_importance(torch.from_numpy(np.stack([p["vesselness"]] * 2)),
                             torch.from_numpy(np.stack([p["skeleton"]] * 2)), 8)
    assert batch.shape == (2, 16) and np.allclose(batch[1].numpy(), imp, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of patch size"):
        patch_importance(p["vesselness"], p["skeleton"], 5)


def test_masking_probabilities_sum_to_one_keep_the_floor_and_sharpen_with_temperature():
    imp = np.linspace(0, 1, 64).astype(np.float32)
    n = imp.size
    for floor in (0.0, 0.2, 1.0):
        p = masking_probabilities(imp, temperature=0.3, floor=floor)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert p.min() >= floor / n - 1e-7
    assert np.allclose(masking_probabilities(imp, 0.3, 1.0), 1 / n)

    def entropy(q):
        return float(-(q * np.log(q)).sum())

    hot, cold = masking_probabilities(imp, 1.0, 0.1), masking_probabilities(imp, 0.1, 0.1)
    assert entropy(cold) < entropy(hot) and cold.argmax() == n - 1
    t = masking_probabilities(torch.from_numpy(np.stack([imp, imp[::-1].copy()])), 0.1, 0.1)
    assert torch.allclose(t.sum(-1), torch.ones(2)) and np.allclose(t[0].numpy(), cold, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        masking_probabilities(imp, 0.0, 0.1)
    with pytest.raises(ValueError, match="floor"):
        masking_probabilities(imp, 1.0, 1.5)
