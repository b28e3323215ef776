"""Synthetic OCTA: ground truth agrees with the image, the FAZ is avascular, disease is measurable."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from medssl.retina.synthetic import SITES, generate_octa, generate_octa_cohort

EIGHT = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def sample():
    return generate_octa(96, seed=5)


def test_vessel_mask_matches_the_image(sample):
    m, img = sample.vessel_mask, sample.image
    assert img.dtype == np.float32 and img.shape == (96, 96) and 0 <= img.min() and img.max() <= 1
    assert 0.03 < m.mean() < 0.4
    assert img[m].mean() > img[~m].mean() + 0.25
    # the clean tubes: bright wherever the mask is, dark a pixel away from it (image border aside)
    assert (sample.vessels[m] > 0).mean() > 0.99
    far = ~ndimage.binary_dilation(m, EIGHT)
    assert sample.vessels[1:-1, 1:-1][far[1:-1, 1:-1]].max() == 0


def test_faz_is_avascular_and_dark(sample):
    faz = sample.faz_mask
    assert faz.sum() > 0.5 * np.pi * sample.faz_radius ** 2
    assert not (sample.vessel_mask & faz).any() and not (sample.capillary_mask & faz).any()
    assert sample.capillaries[faz].max() == 0 and sample.vessels[faz].max() == 0
    assert sample.image[faz].mean() < 0.5 * sample.image[~faz].mean()
    cy, cx = ndimage.center_of_mass(faz)
    assert abs(cy - 48) < 12 and abs(cx - 48) < 12


def test_skeleton_and_vessel_classes(sample):
    s, m = sample.skeleton, sample.vessel_mask
    assert s.any() and not (s & ~m).any()
    blocks = s[:-1, :-1] & s[1:, :-1] & s[:-1, 1:] & s[1:, 1:]  # 2 x 2 only where vessels cross
    assert blocks.sum() < 0.01 * s.sum()
    assert not (sample.artery_mask & sample.vein_mask).any()
    assert ((sample.artery_mask | sample.vein_mask) == m).mean() > 0.98
    assert sample.artery_mask.any() and sample.vein_mask.any()
    assert not (m & ~sample.capillary_mask).any()  # GT_Capillary holds the large vessels too


def test_disease_enlarges_the_faz_and_drops_capillaries():
    n = 64
    yy, xx = np.mgrid[:n, :n]
    disc = np.hypot(yy - n / 2, xx - n / 2) < 0.3 * n

    def stats(disease):
        out = [generate_octa(n, disease=disease, seed=i) for i in range(8)]
        return np.array([s.faz_mask.mean() for s in out]), np.array([s.capillaries[disc].mean() for s in out])

    faz0, cap0 = stats(False)
    faz1, cap1 = stats(True)
    assert faz1.mean() > 1.8 * faz0.mean()
    assert cap1.max() < cap0.min()  # parafoveal capillary density separates every pair


def test_sites_change_the_rendering_not_the_anatomy():
    a, b = generate_octa(64, seed=3, site="A"), generate_octa(64, seed=3, site="B")
    for key in ("vessel_mask", "skeleton", "faz_mask", "capillary_mask"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert np.abs(a.image - b.image).mean() > 0.03
    bg = ~ndimage.binary_dilation(a.vessel_mask | a.capillary_mask, iterations=2) & ~a.faz_mask
    assert b.image[bg].std() != pytest.approx(a.image[bg].std(), rel=0.1)
    assert np.array_equal(generate_octa(64, seed=3).image, a.image)  # reproducible
    with pytest.raises(ValueError, match="unknown site"):
        generate_octa(64, site="Z")
    assert set(SITES) >= {"A", "B", "C"}


def test_cohort_balance_sites_and_speed():
    t0 = time.perf_counter()
    cohort = generate_octa_cohort(10, 128, seed=1, disease_fraction=0.3, sites=("A", "C"))
    per_image = (time.perf_counter() - t0) / 10
    assert sum(s.disease for s in cohort) == 3
    assert [s.site for s in cohort[:4]] == ["A", "C", "A", "C"]
    assert per_image < 0.25  # ~10-20 ms on an idle core; generous for loaded test machines
    again = generate_octa_cohort(10, 128, seed=1, disease_fraction=0.3, sites=("A", "C"))
    assert np.array_equal(cohort[7].image, again[7].image)
    render = cohort[0].render(0.3, 1.0)
    assert render.shape == (128, 128) and render[cohort[0].vessel_mask].mean() < cohort[0].image[
        cohort[0].vessel_mask].mean()
