"""Synthetic phantom series written as real DICOM and read back: exact HU and geometry, slice problems."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medssl.ct.phantom import make_chest_phantom, write_dicom_series
from medssl.imaging.dicom import (
    DicomSeriesError,
    DicomSeriesWarning,
    SliceHeader,
    plan_series,
    read_dicom_series,
)

PATIENT = "PHANTOM-0007"


@pytest.fixture(scope="module")
def phantom():
    # non-square pixels and grid: a transposition or swapped PixelSpacing would show
    return make_chest_phantom((40, 48, 12), pixel_mm=(4.0, 3.5), slice_mm=2.5, n_nodules=1, seed=5)


def _secrets_absent(text: str) -> None:
    for secret in (PATIENT, "Jane0007", "19000101"):
        assert secret not in text


def test_plain_series_reads_back_exactly(phantom, tmp_path):
    write_dicom_series(phantom, tmp_path / "s", patient_id=PATIENT)
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, phantom.hu)
    np.testing.assert_allclose(vol.affine, phantom.affine, atol=1e-5)
    np.testing.assert_allclose(vol.spacing, (4.0, 3.5, 2.5), atol=1e-6)
    assert vol.meta["report"].problems() == []
    _secrets_absent(repr(vol.meta) + repr(vol.meta["report"].to_dict()))


def test_shuffled_tilted_signed_rescaled_series(tmp_path):
    ph = make_chest_phantom((32, 36, 10), pixel_mm=(5.0, 4.5), slice_mm=3.0, tilt_deg=20.0, n_nodules=1, seed=2)
    files = write_dicom_series(ph, tmp_path / "s", patient_id=PATIENT, shuffle=True, rescale=(2.0, -2048.0),
                               signed=True, seed=3)
    assert sorted(p.name for p in files) != [f"IM{i + 1:04d}.dcm" for i in range(10)]
    vol = read_dicom_series(tmp_path / "s")
    assert np.abs(vol.array - ph.hu).max() <= 1.0  # slope 2: stored values round to 2 HU steps
    np.testing.assert_allclose(vol.affine, ph.affine, atol=1e-5)
    normal = vol.affine[:3, 2] / np.linalg.norm(vol.affine[:3, 2])
    assert abs(normal[2]) < 0.95  # truly oblique


def test_rle_compressed_series(phantom, tmp_path):
    write_dicom_series(phantom, tmp_path / "s", compress="rle")
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, phantom.hu)
    assert vol.meta["transfer_syntaxes"] == ["1.2.840.10008.1.2.5"]


def test_missing_slice_refused_then_interpolated(phantom, tmp_path):
    write_dicom_series(phantom, tmp_path / "s", patient_id=PATIENT, drop_slice=5)
    with pytest.raises(DicomSeriesError) as e:
        read_dicom_series(tmp_path / "s")
    msg = str(e.value)
    assert "1 slice(s) missing" in msg and "IM0005.dcm" in msg and "missing='interpolate'" in msg
    _secrets_absent(msg)
    with pytest.warns(DicomSeriesWarning, match="missing"):
        vol = read_dicom_series(tmp_path / "s", missing="interpolate")
    report = vol.meta["report"]
    assert report.missing_slices == 1 and report.gaps[0]["gap_mm"] == pytest.approx(5.0)
    assert report.interpolated_slices == 1 and vol.array.shape == phantom.hu.shape
    np.testing.assert_allclose(vol.affine, phantom.affine, atol=1e-5)
    keep = [k for k in range(12) if k != 5]
    np.testing.assert_array_equal(vol.array[:, :, keep], phantom.hu[:, :, keep])
    np.testing.assert_allclose(vol.array[:, :, 5], (phantom.hu[:, :, 4] + phantom.hu[:, :, 6]) / 2, atol=1e-4)


def test_duplicated_slice_dropped_and_reported(phantom, tmp_path):
    write_dicom_series(phantom, tmp_path / "s", patient_id=PATIENT, duplicate_slice=3, shuffle=True)
    with pytest.warns(DicomSeriesWarning, match="1 duplicated slice"):
        vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, phantom.hu)
    assert len(vol.meta["report"].duplicates) == 1 and vol.meta["report"].n_files == 13
    with pytest.raises(DicomSeriesError, match="share a position"):
        read_dicom_series(tmp_path / "s", duplicates="error")


def test_duplicate_with_other_pixels_is_not_silently_dropped(phantom, tmp_path):
    import shutil

    import pydicom

    write_dicom_series(phantom, tmp_path / "s", duplicate_slice=3)
    dup = tmp_path / "s" / "IM0013.dcm"
    ds = pydicom.dcmread(dup)
    ds.PixelData = (ds.pixel_array + 1).astype(np.uint16).tobytes()  # a second echo, say
    ds.save_as(dup)
    with pytest.raises(DicomSeriesError, match="different images at the same position"):
        read_dicom_series(tmp_path / "s")
    with pytest.warns(DicomSeriesWarning):
        vol = read_dicom_series(tmp_path / "s", duplicates="keep_first")
    np.testing.assert_array_equal(vol.array, phantom.hu)
    shutil.rmtree(tmp_path / "s")


def _header(z: float, name: str) -> SliceHeader:
    return SliceHeader(path=Path(name), series_uid="1.2.3", series_id="ser-x", subject_id="sub-x",
                       subject_source="PatientID", modality="CT", sop_class="CT Image Storage",
                       transfer_syntax="1.2.840.10008.1.2.1", rows=4, columns=4, n_frames=1,
                       position=np.array([0.0, 0.0, z]), orientation=np.array([1.0, 0, 0, 0, 1, 0]),
                       pixel_spacing=(1.0, 1.0), instance=None, spacing_between_slices=None, facts={})


def test_uneven_steps_resampled_or_refused():
    zs = [0.0, 2.0, 4.0, 6.4, 8.4, 10.0]
    headers = [_header(z, f"f{i}.dcm") for i, z in enumerate(zs)]
    plan = plan_series(headers)
    assert plan.report.uneven_steps == 2 and not plan.regular  # steps 2.4 and 1.6 around a median 2
    np.testing.assert_allclose(plan.grid, [0, 2, 4, 6, 8, 10])
    assert plan.report.interpolated_slices == 2 and plan.report.max_step_deviation_mm == pytest.approx(0.4)
    assert plan.report.spacing_mm[2] == pytest.approx(2.0) and len(plan.grid) == 6
    with pytest.raises(DicomSeriesError, match="differ from the median"):
        plan_series(headers, uneven="error")
    with pytest.raises(ValueError, match="missing='maybe'"):
        plan_series(headers, missing="maybe")


def test_series_is_fast(tmp_path):
    ph = make_chest_phantom((64, 64, 48), n_nodules=2, seed=1)  # warm-up of imports is not timed
    start = time.perf_counter()
    ph = make_chest_phantom((64, 64, 48), n_nodules=2, seed=2)
    write_dicom_series(ph, tmp_path / "s")
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5, f"64x64x48 phantom made and written in {elapsed:.2f} s"
