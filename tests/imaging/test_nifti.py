"""NIfTI reading: nibabel's shipped files, written phantoms, headers and broken files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl.imaging.nifti import NiftiReadError, read_nifti, write_nifti

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def test_reads_anatomical_with_its_sform():
    v = read_nifti(NIB_DATA / "anatomical.nii")
    img = nib.load(NIB_DATA / "anatomical.nii")
    assert v.array.shape == (33, 41, 25) and v.array.dtype == np.float32
    np.testing.assert_allclose(v.affine, img.header.get_sform())
    np.testing.assert_allclose(v.array, img.get_fdata(), rtol=1e-6)
    assert v.meta["affine_source"] == "sform" and v.meta["orientation"] == "LAS"
    assert v.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_standard_file_uses_sform_when_qform_is_unset():
    img = nib.load(NIB_DATA / "standard.nii.gz")
    assert int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) > 0
    v = read_nifti(NIB_DATA / "standard.nii.gz")
    assert v.meta["affine_source"] == "sform"
    assert v.spacing == pytest.approx((1.0, 3.0, 2.0))


def test_4d_is_refused_unless_a_volume_is_chosen():
    path = NIB_DATA / "example4d.nii.gz"
    with pytest.raises(NiftiReadError, match=r"example4d\.nii\.gz: 4-D image of 2 volumes.*volume_index"):
        read_nifti(path)
    v = read_nifti(path, volume_index=1)
    assert v.array.shape == (128, 96, 24) and v.meta["n_volumes"] == 2
    np.testing.assert_allclose(v.array, nib.load(path).get_fdata()[..., 1], rtol=1e-6)
    with pytest.raises(NiftiReadError, match="outside 0..1"):
        read_nifti(path, volume_index=2)


def test_round_trip_of_a_written_volume(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1000, size=(6, 7, 8)).astype(np.int16)
    affine = np.array([[-1.0, 0, 0, 10], [0, -1.2, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    write_nifti(tmp_path / "x.nii.gz", array, affine)
    v = read_nifti(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(v.array, array)
    np.testing.assert_allclose(v.affine, affine, atol=1e-5)
    assert v.meta["orientation"] == "LPS" and v.meta["dtype"] == "int16"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_qform_then_zooms_when_codes_are_unset(tmp_path):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    img = nib.Nifti1Image(np.ones((3, 3, 3), np.float32), aff)
    img.set_sform(np.diag([5.0, 5.0, 5.0, 1.0]), code=0)
    img.set_qform(aff, code=1)
    nib.save(img, tmp_path / "q.nii")
    assert read_nifti(tmp_path / "q.nii").meta["affine_source"] == "qform"
    img.set_qform(aff, code=0)
    nib.save(img, tmp_path / "z.nii")
    v = read_nifti(tmp_path / "z.nii")
    assert v.meta["affine_source"] == "zooms" and v.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_broken_files_name_the_file(tmp_path):
    good = tmp_path / "good.nii.gz"
    write_nifti(good, np.random.default_rng(1).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4))
    data = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.nii.gz").write_bytes(b"not an image at all" * 5)
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    cases = {"missing.nii.gz": "file not found", "trunc.nii.gz": "truncated or corrupt",
             "garbage.nii.gz": "not a gzip file and not a NIfTI", "empty.nii.gz": "empty file"}
    for name, reason in cases.items():
        with pytest.raises(NiftiReadError, match=reason) as e:
            read_nifti(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)


def test_plain_nifti_misnamed_gz_is_read(tmp_path):
    good = tmp_path / "good.nii.gz"
    write_nifti(good, np.arange(27, dtype=np.float32).reshape(3, 3, 3), np.eye(4))
    (tmp_path / "plain.nii.gz").write_bytes(gzip.decompress(good.read_bytes()))
    v = read_nifti(tmp_path / "plain.nii.gz")
    assert v.array[2, 2, 2] == 26 and "uncompressed" in v.meta["note"]


def test_2d_image_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), tmp_path / "flat.nii")
    with pytest.raises(NiftiReadError, match="2-D image"):
        read_nifti(tmp_path / "flat.nii")
