"""DICOM reader on real files shipped with pydicom and nibabel: HU, spacing, affine, codecs, identities."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medssl.imaging.dicom import (
    DicomDecodeError,
    DicomSeriesError,
    DicomSeriesWarning,
    decoder_problem,
    pseudonym,
    read_dicom_series,
)

NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


def _strings(obj) -> str:
    """Everything printable in a volume's meta (recursively), for identity checks."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return " ".join(f"{k} {_strings(v)}" for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return " ".join(_strings(v) for v in obj)
    return str(obj)


def test_ct_small_reads_to_hounsfield_units_with_geometry():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_dicom_series(path)
    assert vol.array.shape == (128, 128, 1) and vol.array.dtype == np.float32
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[:, :, 0], expected.T)  # (Rows, Cols) -> (X, Y)
    assert vol.array.min() == -896.0  # stored 128 with intercept -1024
    np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 5.0))
    # LPS ImagePositionPatient (-158.135803, -179.035797, -75.699997) -> RAS
    np.testing.assert_allclose(vol.affine[:3, 3], (158.135803, 179.035797, -75.699997))
    np.testing.assert_allclose(np.diag(vol.affine)[:3], (-0.661468, -0.661468, 5.0))
    assert vol.meta["modality"] == "CT" and vol.meta["kernel"] == "STANDARD"


def test_identities_become_pseudonyms():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    vol = read_dicom_series(path)
    text = _strings(vol.meta)
    for secret in (str(ds.PatientID), str(ds.PatientName), str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID)):
        assert secret not in text
    assert vol.meta["subject_id"] == pseudonym(str(ds.PatientID), prefix="sub")
    assert vol.meta["subject_id"].startswith("sub-") and len(vol.meta["subject_id"]) == 20
    other = read_dicom_series(path, salt="a-secret-salt")
    assert other.meta["subject_id"] != vol.meta["subject_id"]  # the salt changes every pseudonym
    assert read_dicom_series(path, salt="a-secret-salt").meta["subject_id"] == other.meta["subject_id"]


def test_mr_small_without_rescale():
    ref = read_dicom_series(get_testdata_file("MR_small.dcm"))
    assert ref.meta["modality"] == "MR" and ref.array.shape == (64, 64, 1)
    np.testing.assert_allclose(ref.spacing, (0.3125, 0.3125, 0.8))  # no rescale: stored values kept
    raw = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(ref.array[:, :, 0], raw.T)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                                  "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_mr_small_encodings_read_the_same(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not among this pydicom's test files")
    ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    problem = decoder_problem(ts)
    if problem:
        pytest.skip(f"{name}: {problem}")
    ref = read_dicom_series(get_testdata_file("MR_small.dcm"))
    vol = read_dicom_series(path)
    np.testing.assert_array_equal(vol.array, ref.array)  # lossless codecs: identical values
    np.testing.assert_allclose(vol.affine, ref.affine)
    assert vol.meta["transfer_syntaxes"] == [str(ts)]


def test_missing_decoder_names_the_file_and_the_plugins():
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    problem = decoder_problem(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    if problem is None:
        vol = read_dicom_series(path)  # a JPEG-LS plugin is installed: it must decode losslessly
        np.testing.assert_array_equal(vol.array, read_dicom_series(get_testdata_file("MR_small.dcm")).array)
        pytest.skip("a JPEG-LS decoder plugin is installed; the missing-plugin message cannot be shown")
    with pytest.raises(DicomDecodeError) as e:
        read_dicom_series(path)
    msg = str(e.value)
    assert "MR_small_jpeg_ls_lossless.dcm" in msg and "JPEG-LS" in msg
    assert "pylibjpeg" in msg or "gdcm" in msg or "pyjpegls" in msg


def test_real_two_slice_mr_series_sorted_by_position(tmp_path):
    src = [NIBABEL_DATA / "0.dcm", NIBABEL_DATA / "1.dcm"]
    if not all(p.is_file() for p in src):
        pytest.skip("nibabel's test DICOM files are not installed")
    # file names in reverse order of position: the reader must not trust them
    shutil.copy(src[0], tmp_path / "b.dcm")
    shutil.copy(src[1], tmp_path / "a.dcm")
    with pytest.warns(DicomSeriesWarning, match="sheared"):  # slices 0.3 deg off the normal: reported
        vol = read_dicom_series(tmp_path)
    assert vol.meta["report"].shear_deg == pytest.approx(0.3, abs=0.01)
    assert vol.array.shape == (256, 256, 2)
    first = pydicom.dcmread(src[0])
    np.testing.assert_array_equal(vol.array[:, :, 0], first.pixel_array.T.astype(np.float32))
    lps_step = np.array([0.0, 0.0, 3.0])  # ImagePositionPatient z -75.097641 -> -72.097641
    np.testing.assert_allclose(vol.affine[:3, 2], lps_step * [-1, -1, 1], atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 3], np.array([-805.0, -825.019119, -75.097641]) * [-1, -1, 1])


def test_non_image_files_get_clear_errors(tmp_path):
    with pytest.raises(DicomSeriesError, match="without an image"):
        read_dicom_series(get_testdata_file("rtplan.dcm"))
    with pytest.raises(DicomSeriesError, match="multi-frame"):
        read_dicom_series(get_testdata_file("rtdose.dcm"))
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(DicomSeriesError, match="not a DICOM file"):
        read_dicom_series(junk)
    with pytest.raises(DicomSeriesError, match="no such file"):
        read_dicom_series(tmp_path / "absent")
