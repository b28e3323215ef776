"""Synthetic brain phantoms: tissue contrasts, lesions, the age effect and site acquisition."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medssl.mri.phantom import (
    CSF,
    DEFAULT_SITES,
    INFARCT,
    INTRACRANIAL,
    MENINGIOMA,
    VENTRICLE,
    WM,
    make_anatomy,
    render,
    render_mask,
)

SHAPE = (48, 48, 48)
SITE_A, SITE_B = DEFAULT_SITES[0], DEFAULT_SITES[1]  # 1 mm RAS; 1 x 1 x 3 mm stored LPS


def test_same_seed_same_anatomy():
    a = make_anatomy(SHAPE, np.random.default_rng(5), age=50, infarct=True, meningioma=True)
    b = make_anatomy(SHAPE, np.random.default_rng(5), age=50, infarct=True, meningioma=True)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_infarct_bright_on_dwi_dark_on_adc():
    rng = np.random.default_rng(0)
    a = make_anatomy(SHAPE, rng, age=60, infarct=True)
    lesion, wm = a.mask(INFARCT), a.mask(WM)
    assert lesion.sum() > 20
    dwi, adc, flair = (render(a, s, SITE_A, rng).array for s in ("dwi_b1000", "adc", "flair"))
    assert dwi[lesion].mean() > 2.0 * dwi[wm].mean()
    assert adc[lesion].mean() < 0.6 * adc[wm].mean()
    assert flair[lesion].mean() > 1.5 * flair[wm].mean()


def test_csf_dark_on_flair_bright_on_t2():
    rng = np.random.default_rng(1)
    a = make_anatomy(SHAPE, rng, age=70)
    vent = a.mask(VENTRICLE)
    t2, flair = render(a, "t2", SITE_A, rng).array, render(a, "flair", SITE_A, rng).array
    wm = a.mask(WM)
    assert t2[vent].mean() > 1.5 * t2[wm].mean() and flair[vent].mean() < 0.5 * flair[wm].mean()


def test_ventricles_grow_and_brain_shrinks_with_age():
    ages = np.linspace(20, 85, 10)
    anat = [make_anatomy(SHAPE, np.random.default_rng(i), age=age) for i, age in enumerate(ages)]
    vent = np.array([a.ventricle_volume_ml for a in anat])
    brain = np.array([a.brain_volume_ml for a in anat])
    assert np.corrcoef(ages, vent)[0, 1] > 0.85
    assert np.corrcoef(ages, brain)[0, 1] < -0.7


def test_meningioma_is_extra_axial_and_inside_the_skull():
    a = make_anatomy(SHAPE, np.random.default_rng(3), age=55, meningioma=True)
    tumour = a.mask(MENINGIOMA)
    assert tumour.sum() > 30
    idx = np.argwhere(tumour)
    centre = (np.array(SHAPE) - 1) / 2
    radius = np.linalg.norm((idx - centre) / centre, axis=1)
    assert radius.mean() > 0.55  # on the convexity, not deep in the brain
    # it borders the CSF / skull side: some tumour voxels touch CSF
    from scipy import ndimage

    assert (ndimage.binary_dilation(tumour) & a.mask(CSF)).any()


def test_site_geometry_orientation_and_skull_stripping():
    rng = np.random.default_rng(4)
    a = make_anatomy(SHAPE, rng, age=40, meningioma=True)
    v = render(a, "t1", SITE_B, rng)
    assert "".join(nib.aff2axcodes(v.affine)) == "LPS"
    assert v.spacing == pytest.approx((1.0, 1.0, 3.0))
    assert v.array.shape == (48, 48, 16)
    m = render_mask(a, SITE_B, MENINGIOMA)
    assert m.array.shape == v.array.shape and np.allclose(m.affine, v.affine) and m.array.max() == 1
    # skull-stripped: zero outside the intracranial mask (stored LPS: flip x and y back to compare)
    ras = v.array[::-1, ::-1, :]
    inside = render_mask(a, SITE_B, *INTRACRANIAL).array[::-1, ::-1, :] > 0
    assert np.all(ras[~inside] == 0) and (ras[inside] > 0).mean() > 0.95
    # world coordinate of the volume's centre stays at the origin whatever the storage order
    centre = v.affine @ np.array([*(np.array(v.array.shape) - 1) / 2, 1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)
