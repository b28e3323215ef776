"""DICOM as anonymisers leave it: blanked UIDs, JPEG 2000 / JPEG-LS / RLE pixel data, identities
written into free-text fields (issues 13 and 17), on pydicom's own real test files."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medssl.ct.modality import ct_inputs, index_dicom_folder
from medssl.imaging.dicom import DicomSeriesWarning, decoder_problem, read_dicom_series, read_header


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # shipped in the pydicom wheel; never downloaded
    if path is None:
        pytest.skip(f"{name} is not among this pydicom's bundled test files")
    return Path(path)


def _anonymised_stack(folder: Path, n: int, *, z0: float = 47.0, spacing: tuple[float, float] | None = None,
                      blank: str = "empty", prefix: str = "IM") -> None:
    """`n` slices of pydicom's real JPEG 2000 head CT (CQ500, 512 x 512) as an anonymiser exports
    them: Series/Study Instance UIDs blanked (blank="empty") or removed ("absent"), no PatientID,
    file names in no particular order; pixel data kept compressed."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ds = pydicom.dcmread(_testdata("693_J2KI.dcm"))
        for key in ("SeriesInstanceUID", "StudyInstanceUID", "PatientID", "PatientName"):
            if blank == "absent" and key in ds:
                del ds[key]
            else:
                setattr(ds, key, "")
        ds.ImagePositionPatient = [-122.5, -112.4, z0 + 5.0 * i]
        ds.InstanceNumber = i + 1
        if spacing is not None:
            ds.PixelSpacing = list(spacing)
        ds.save_as(folder / f"{prefix}{(7 * i) % n:04d}", enforce_file_format=True)


def test_declared_decoders_cover_the_anonymisers_transfer_syntaxes():
    # pylibjpeg + openjpeg + libjpeg are project dependencies (pyproject.toml)
    for ts in (JPEG2000, JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless, JPEGBaseline8Bit):
        assert decoder_problem(ts) is None, decoder_problem(ts)


def test_real_jpeg2000_ct_decodes_to_hounsfield_units():
    path = _testdata("693_J2KI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEG2000
    vol = read_dicom_series(path)
    assert vol.array.shape == (512, 512, 1) and vol.meta["modality"] == "CT"
    np.testing.assert_array_equal(vol.array[:, :, 0], ds.pixel_array.T.astype(np.float32) - 1024)  # intercept
    assert vol.meta["kernel"] == "STANDARD"


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_codecs_decode_exactly(name):
    ref = read_dicom_series(_testdata("MR_small.dcm"))
    np.testing.assert_array_equal(read_dicom_series(_testdata(name)).array, ref.array)


def test_blanked_uids_grouped_into_series_with_one_warning(tmp_path):
    root = tmp_path / "export"
    _anonymised_stack(root / "a", 20)  # the CT: 20 slices, 512 x 512, JPEG 2000, UIDs blanked
    _anonymised_stack(root / "a", 4, z0=300.0, spacing=(0.7, 0.7), blank="absent", prefix="X")  # another stack, same folder
    before = sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, skipped = index_dicom_folder(root, workers=1)
    ours = [w for w in caught if issubclass(w.category, DicomSeriesWarning)]
    assert len(ours) == 1 and "no SeriesInstanceUID" in str(ours[0].message) and "24 DICOM file" in str(ours[0].message)
    assert skipped == []
    assert sorted(int(r["n_slices"]) for r in rows) == [4, 20]
    big = next(r for r in rows if r["n_slices"] == "20")
    assert big["dim_x"] == "512" and big["spacing_z_mm"] == "5" and "JPEG 2000" in big["transfer_syntax"]
    assert big["series_id"].startswith("ser-") and big["subject_id"].startswith("sub-")
    assert big["series_id_source"].startswith("derived") and "folder" in big["subject_id_source"]
    assert big["path"].endswith(f"#{big['series_id']}")  # two series share the folder
    again, _ = index_dicom_folder(root, workers=1)
    assert [r["series_id"] for r in again] == [r["series_id"] for r in rows]  # stable pseudonyms
    assert sorted((p.name, p.stat().st_mtime_ns) for p in root.rglob("*")) == before  # read only

    vol = read_dicom_series(root / "a", series=big["series_id"])
    assert vol.array.shape == (512, 512, 20)
    first = pydicom.dcmread(_testdata("693_J2KI.dcm")).pixel_array.T.astype(np.float32) - 1024
    np.testing.assert_array_equal(vol.array[:, :, 0], first)
    np.testing.assert_allclose(vol.spacing, (0.478516, 0.478516, 5.0), rtol=1e-5)


SECRETS = ("Jane", "Doe", "PID-7731", "1961-02-03", "19610203", "ACCSECRET999", "03/02/1961")
LEAK = "Jane Doe DOB 1961-02-03 ACCSECRET999 PID-7731 03/02/1961 born 19610203 at St Elsewhere"
FREE_TEXT = (  # every free-text attribute an export may carry (LO, SH, ST, LT, UT, PN and the like)
    "SeriesDescription", "StudyDescription", "ImageComments", "ProtocolName", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "StationName", "Manufacturer", "ManufacturerModelName",
    "ConvolutionKernel", "SequenceName", "ContrastBolusAgent", "BodyPartExamined", "AdditionalPatientHistory",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription", "DerivationDescription",
    "PatientComments", "StudyID", "DeviceSerialNumber", "SoftwareVersions", "AcquisitionDeviceProcessingDescription",
)


def _leaky_series(folder: Path) -> None:
    folder.mkdir(parents=True)
    with warnings.catch_warnings():  # writing over-long values makes pydicom warn here too
        warnings.simplefilter("ignore")
        _write_leaky(folder)


def _write_leaky(folder: Path) -> None:
    for i in range(2):
        ds = pydicom.dcmread(_testdata("CT_small.dcm"))
        ds.PatientName, ds.PatientID = "Doe^Jane", "PID-7731"
        ds.PatientBirthDate, ds.AccessionNumber = "19610203", "ACCSECRET999"
        for key in FREE_TEXT:
            setattr(ds, key, LEAK)  # longer than SH/LO allow: pydicom's "exceeds VR" warnings too
        for elem in ds.iterall():  # and whatever other free text the file already holds
            if elem.VR in ("LO", "SH", "ST", "LT", "UT", "UC") and elem.VM <= 1:
                elem.value = LEAK
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.save_as(folder / f"slice{i}.dcm", enforce_file_format=True)


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret.lower() not in text.lower(), f"{secret!r} reached {where}"


def test_identities_in_free_text_never_reach_rows_meta_caches_or_logs(tmp_path, caplog, capfd):
    _leaky_series(tmp_path / "series")
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what writing the test files logged
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, skipped = index_dicom_folder(tmp_path / "series", workers=1)
        vol = read_dicom_series(tmp_path / "series")
        header = read_header(tmp_path / "series" / "slice0.dcm")
        cache = ct_inputs(rows, {"shape": [8, 8, 8], "spacing_mm": 4}, {}, tmp_path / "cache")
    assert skipped == [] and len(rows) == 1 and cache.signals.shape[0] == 1 and not cache.skipped
    _assert_clean(json.dumps(rows), "the manifest rows")
    _assert_clean(repr(vol.meta), "the volume's meta")
    _assert_clean(repr(header), "the slice header")
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            _assert_clean(f.read_bytes().decode("latin-1"), f"cache file {f.name}")
    # pydicom's own warnings and log lines ("value length exceeds VR ...") are silenced
    assert not [w for w in caught if "exceed" in str(w.message).lower() or "VR" in str(w.message)]
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    out, err = capfd.readouterr()
    _assert_clean(out + err + caplog.text + " ".join(str(w.message) for w in caught), "the console")
    assert "exceeds" not in err
    # only coded facts are kept: the vendor vocabulary says "other", the kernel is not kernel-shaped
    assert header.facts.get("manufacturer") == "other" and "kernel" not in header.facts
    assert header.facts.get("contrast") == "yes" and "series_description" not in header.facts
    assert "series_description" not in rows[0] and rows[0]["manufacturer"] == "other"


def test_coded_facts_kept(tmp_path):
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    ds.Manufacturer, ds.ConvolutionKernel, ds.BodyPartExamined = "SIEMENS", "B30f", "CHEST"
    ds.PatientName = "Kernel^B30f"  # a name part equal to a coded value: that value is dropped
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    facts = read_header(tmp_path / "a.dcm").facts
    assert facts["manufacturer"] == "siemens" and facts["body_part"] == "CHEST" and "kernel" not in facts
    assert facts["kvp"] == pytest.approx(float(ds.KVP))
