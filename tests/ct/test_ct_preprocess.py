"""Reading CT volumes (DICOM folder, one series of a folder, NIfTI), resampling, world-aligned grids."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medssl.ct.phantom import make_chest_phantom, write_dicom_series
from medssl.ct.preprocess import (
    antialias_sigma,
    load_ct_volume,
    resample_volume,
    sample_patch,
    volume_centre,
    world_grid,
)
from medssl.imaging.volume import Volume


def _ramp_volume() -> Volume:
    """Values equal to the world x coordinate (RAS mm), on an LPS-oriented, anisotropic grid."""
    affine = np.diag([-2.0, -1.0, 3.0, 1.0])
    affine[:3, 3] = (40.0, 10.0, -5.0)
    idx = np.indices((20, 16, 8)).astype(np.float64)
    x = affine[0, 0] * idx[0] + affine[0, 3]
    return Volume(x.astype(np.float32), affine)


def test_world_grid_axes_follow_ras():
    g = world_grid((1.0, 2.0, 3.0), (3, 2, 1), (2.0, 1.0, 5.0))
    assert g.shape == (3, 2, 1, 3)
    np.testing.assert_allclose(g[:, 0, 0, 0], [-1, 1, 3])
    np.testing.assert_allclose(g[0, :, 0, 1], [1.5, 2.5])
    np.testing.assert_allclose(g[1, 0, 0], [1.0, 1.5, 3.0])


def test_patch_of_a_flipped_volume_runs_along_ras():
    vol = _ramp_volume()
    patch = sample_patch(vol, (20.0, 0.0, 5.0), (5, 3, 3), 1.5)
    # axis 0 of the patch is +x (RAS) even though the volume's first axis runs towards -x
    np.testing.assert_allclose(patch[:, 1, 1], 20.0 + 1.5 * np.arange(-2, 3), atol=1e-4)


def test_resample_volume_keeps_world_positions():
    vol = _ramp_volume()
    out = resample_volume(vol, (1.0, 1.0, 1.5), antialias=False)
    assert out.spatial_shape == (39, 16, 15)
    np.testing.assert_allclose(out.spacing, (1.0, 1.0, 1.5))
    np.testing.assert_allclose(out.affine[:3, 3], vol.affine[:3, 3])
    np.testing.assert_allclose(out.affine[:3, :3] @ [1, 0, 0], [-1, 0, 0])
    np.testing.assert_allclose(out.array[:, 0, 0], 40.0 - np.arange(39), atol=1e-4)  # still world x


def test_antialiasing_only_when_coarser():
    vol = _ramp_volume()  # spacing (2, 1, 3)
    np.testing.assert_allclose(antialias_sigma(vol, (4.0, 4.0, 3.0)), [0.5, 1.5, 0.0])
    np.testing.assert_allclose(antialias_sigma(vol, 0.5), [0, 0, 0])


def test_load_dicom_folder_series_and_nifti(tmp_path):
    a = make_chest_phantom((24, 24, 6), pixel_mm=6.0, n_nodules=0, seed=1)
    b = make_chest_phantom((24, 24, 6), pixel_mm=6.0, n_nodules=0, seed=2, centre_lps=(0, 0, 100))
    write_dicom_series(a, tmp_path / "a", patient_id="PHANTOM-0001")
    write_dicom_series(b, tmp_path / "b", patient_id="PHANTOM-0002", seed=1)
    both = tmp_path / "study"
    both.mkdir()
    for sub in ("a", "b"):
        (tmp_path / sub).rename(both / sub)
    with pytest.raises(ValueError, match="2 series found"):
        load_ct_volume(both)
    vol_a = load_ct_volume(both / "a")
    series_b = load_ct_volume(both / "b").meta["series_id"]
    vol_b = load_ct_volume(f"{both}#{series_b}")
    np.testing.assert_array_equal(vol_b.array, b.hu)
    np.testing.assert_array_equal(vol_a.array, a.hu)
    nii = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(a.hu.astype(np.int16), a.affine), str(nii))
    vol_n = load_ct_volume(nii)
    np.testing.assert_array_equal(vol_n.array, a.hu)
    np.testing.assert_allclose(vol_n.affine, vol_a.affine, atol=1e-5)
    np.testing.assert_allclose(volume_centre(vol_n), a.affine[:3, :3] @ [11.5, 11.5, 2.5] + a.affine[:3, 3])
    with pytest.raises(ValueError, match="not found"):
        load_ct_volume(tmp_path / "absent.nii.gz")
