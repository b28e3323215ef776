"""Nodule lists in world coordinates, LIDC labels, and patches that land on the nodule."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.ct.nodules import (
    Nodule,
    lps_to_ras,
    malignancy_label,
    read_nodule_csv,
    row_centre,
    voxel_patch,
    write_nodule_csv,
)
from medssl.ct.phantom import make_chest_phantom
from medssl.ct.preprocess import sample_patch, world_to_voxel
from medssl.imaging.volume import Volume


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom((64, 64, 40), pixel_mm=3.0, slice_mm=2.0, n_nodules=2, malignancy=[5, 4], seed=11,
                              tilt_deg=10.0)


def test_lidc_convention():
    assert malignancy_label(4.5) == "malignant" and malignancy_label(3.5) == "malignant"
    assert malignancy_label(1) == "" and malignancy_label(2.5) == ""
    assert malignancy_label(3) is None and malignancy_label(None) is None
    assert malignancy_label(5, diameter_mm=2.0) is None  # under 3 mm


def test_csv_round_trip_in_lps(tmp_path):
    n = Nodule("ser-abc", np.array([10.0, -20.0, 30.0]), 8.5, 4.0, "sub-1")
    path = write_nodule_csv(tmp_path / "n.csv", [n])
    text = path.read_text()
    assert "-10.0000,20.0000,30.0000,LPS" in text  # RAS (10, -20, 30) is LPS (-10, 20, 30)
    (back,) = read_nodule_csv(path)
    np.testing.assert_allclose(back.centre_ras, n.centre_ras)
    assert (back.series_id, back.diameter_mm, back.malignancy, back.subject_id) == ("ser-abc", 8.5, 4.0, "sub-1")


def test_luna16_columns_and_errors(tmp_path):
    p = tmp_path / "annotations.csv"
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,-100.5,50,-200,6.2\n")
    (n,) = read_nodule_csv(p)
    np.testing.assert_allclose(n.centre_ras, [100.5, -50.0, -200.0])
    assert n.malignancy is None and n.diameter_mm == pytest.approx(6.2)
    p.write_text("seriesuid,coordX,coordY\n1.2.3,1,2\n")
    with pytest.raises(ValueError, match="lacks column.*z_mm"):
        read_nodule_csv(p)
    p.write_text("series_id,x_mm,y_mm,z_mm,malignancy\ns,1,2,abc,3\n")
    with pytest.raises(ValueError, match="line 2: z_mm 'abc' is not a number"):
        read_nodule_csv(p)
    p.write_text("series_id,x_mm,y_mm,z_mm,malignancy\ns,1,2,3,7\n")
    with pytest.raises(ValueError, match="malignancy 7 outside 1-5"):
        read_nodule_csv(p)


def test_row_centre_frames():
    row = {"center_x_mm": "1", "center_y_mm": "2", "center_z_mm": "3"}
    np.testing.assert_allclose(row_centre(row), [1, 2, 3])
    np.testing.assert_allclose(row_centre({**row, "center_frame": "LPS"}), [-1, -2, 3])
    assert row_centre({"path": "x"}) is None
    np.testing.assert_allclose(lps_to_ras(lps_to_ras([1, 2, 3])), [1, 2, 3])


def test_world_patch_is_centred_on_the_nodule(phantom):
    vol = Volume(phantom.hu, phantom.affine)
    labels = Volume(phantom.mask.astype(np.float32), phantom.affine)
    for k, n in enumerate(phantom.nodules):
        # the nodule centre maps through the inverse affine to a voxel inside its mask
        v = np.round(world_to_voxel(phantom.affine, n.centre_ras)).astype(int)
        assert phantom.mask[tuple(v)] == k + 1
        patch = sample_patch(labels, n.centre_ras, (15, 15, 15), 1.0, order=0, fill=0)
        assert patch[7, 7, 7] == k + 1
        inside = np.argwhere(patch == k + 1)
        np.testing.assert_allclose(inside.mean(0), [7, 7, 7], atol=2.5)  # centred, whatever the orientation
        hu = sample_patch(vol, n.centre_ras, (15, 15, 15), 1.0)
        assert hu[7, 7, 7] > -300  # solid nodule tissue, not lung


def test_patches_are_padded_with_air_at_the_border(phantom):
    vol = Volume(phantom.hu, phantom.affine)
    corner = phantom.affine[:3, 3]  # world position of voxel (0, 0, 0)
    patch = sample_patch(vol, corner, (9, 9, 9), phantom.pixel_mm[0])
    assert (patch == -1000).mean() > 0.5
    vp = voxel_patch(vol, corner, (5, 5, 5))
    assert vp[2, 2, 2] == phantom.hu[0, 0, 0] and vp[0, 0, 0] == -1000
    far = voxel_patch(vol, corner + 1e4, (3, 3, 3))
    assert (far == -1000).all()
