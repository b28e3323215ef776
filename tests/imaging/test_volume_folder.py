"""The `volume-folder` layout: NIfTI volumes and DICOM series described by a CSV, or matched by name to a
participants table (IXI-style), for MRI and CT."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl.data.layouts import index_layout, known_layouts
from medssl.data.manifest import subject_split
from medssl.imaging.volume_folder import (
    VolumeFolderError,
    guess_sequence,
    index_volume_folder,
    match_files_to_ids,
)


def _nifti(path: Path, shape=(6, 5, 4), zooms=(2.0, 2.0, 3.0), value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.diag([*zooms, 1.0])), str(path))
    return path


def _csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_with_image_column(tmp_path):
    _nifti(tmp_path / "scans/a.nii.gz")
    _nifti(tmp_path / "scans/b.nii")
    _nifti(tmp_path / "scans/b_mask.nii.gz", value=1.0)
    _nifti(tmp_path / "scans/c_FLAIR.nii.gz")
    _nifti(tmp_path / "scans/t.nii.gz", shape=(4, 4, 4, 3))  # a 4-D series: skipped, listed
    _csv(tmp_path / "volumes.csv", ["Image", "Mask", "Subject_ID", "labels", "split", "site", "Age", "Sex", "Scanner Type"], [
        ["scans/a.nii.gz", "", "s1", "healthy", "", "A", "38.5", "M", "1.5T"],
        ["scans/b.nii", "scans/b_mask.nii.gz", "s1", "", "", "A", "39", "M", "1.5T"],
        ["scans/c_FLAIR.nii.gz", "", "s2", "lesion;healthy", "test", "B", "71", "F", "3T"],
        ["scans/missing.nii.gz", "", "s3", "", "", "B", "50", "F", "3T"],
        ["scans/t.nii.gz", "", "s4", "", "", "B", "50", "F", "3T"],
    ])
    rows, skipped = index_volume_folder(tmp_path)
    assert [r["record_id"] for r in rows] == ["scans/a.nii.gz", "scans/b.nii", "scans/c_FLAIR.nii.gz"]
    a, b, c = rows
    assert a["subject_id"] == b["subject_id"] == "s1" and a["split"] == b["split"] == subject_split("s1")
    assert c["split"] == "test" and c["labels"] == "healthy;lesion"
    assert a["path"] == str(tmp_path.resolve() / "scans/a.nii.gz") and a["modality"] == "mri"
    assert b["mask_path"] == str(tmp_path.resolve() / "scans/b_mask.nii.gz")
    assert a["shape"] == "6x5x4" and a["spacing_mm"] == "2x2x3" and a["dim_z"] == "4" and a["spacing_z_mm"] == "3"
    assert a["age"] == "38.5" and a["sex"] == "M" and a["scanner_type"] == "1.5T"  # copied, snake_case
    assert c["sequence"] == "flair" and a["sequence"] == "other"
    reasons = {Path(p.partition("#")[0]).name: r for p, r in skipped}
    assert reasons["missing.nii.gz"] == "volume not found" and "4-D image" in reasons["t.nii.gz"]

    seg, _ = index_volume_folder(tmp_path, task="segmentation")
    assert [r["record_id"] for r in seg] == ["scans/b.nii"]
    by_sex, _ = index_volume_folder(tmp_path, task="Sex")
    assert [r["labels"] for r in by_sex] == ["M", "M", "F"] and by_sex[0]["task"] == "sex"
    with pytest.raises(VolumeFolderError, match="task 'grade'"):
        index_volume_folder(tmp_path, task="grade")


def test_csv_errors_name_the_file_and_line(tmp_path):
    _nifti(tmp_path / "a.nii.gz")
    _csv(tmp_path / "volumes.csv", ["image", "subject_id", "split"], [["a.nii.gz", "s1", "train"], ["a.nii.gz", "s1", "train"]])
    with pytest.raises(VolumeFolderError, match=r"volumes.csv:3: volume a.nii.gz already listed"):
        index_volume_folder(tmp_path)
    _nifti(tmp_path / "b.nii.gz")
    _csv(tmp_path / "volumes.csv", ["image", "subject_id", "split"], [["a.nii.gz", "s1", "train"], ["b.nii.gz", "s1", "test"]])
    with pytest.raises(VolumeFolderError, match="subject s1 is in split test here and train"):
        index_volume_folder(tmp_path)
    _csv(tmp_path / "volumes.csv", ["image", "split"], [["a.nii.gz", "holdout"]])
    with pytest.raises(VolumeFolderError, match="split 'holdout'"):
        index_volume_folder(tmp_path)
    with pytest.raises(VolumeFolderError, match="modality 'pet'"):
        index_volume_folder(tmp_path, modality="pet")


def _ixi_like(root: Path) -> None:
    for name in ("IXI012-HH-1211_T1.nii.gz", "IXI013-HH-1212_T1.nii.gz", "IXI013-HH-1212_T2.nii.gz",
                 "IXI500-IOP-1000_T1.nii.gz"):
        _nifti(root / "t1" / name)


def test_folder_matched_to_a_participants_table(tmp_path):
    _ixi_like(tmp_path)
    _csv(tmp_path / "participants.csv", ["MRID", "Age", "Sex"],
         [["IXI012-HH-1211", "38.78", "M"], ["IXI013-HH-1212", "46.71", "M"], ["IXI014-HH-1236", "34.24", "F"]])
    rows, skipped = index_layout("volume-folder", tmp_path)
    got = {r["record_id"]: r for r in rows}
    assert set(got) == {"t1/IXI012-HH-1211_T1.nii.gz", "t1/IXI013-HH-1212_T1.nii.gz", "t1/IXI013-HH-1212_T2.nii.gz"}
    assert got["t1/IXI012-HH-1211_T1.nii.gz"]["subject_id"] == "IXI012-HH-1211"
    assert got["t1/IXI012-HH-1211_T1.nii.gz"]["age"] == "38.78" and got["t1/IXI012-HH-1211_T1.nii.gz"]["sequence"] == "t1"
    assert got["t1/IXI013-HH-1212_T2.nii.gz"]["sequence"] == "t2"
    assert got["t1/IXI013-HH-1212_T1.nii.gz"]["split"] == got["t1/IXI013-HH-1212_T2.nii.gz"]["split"]
    reasons = sorted(r for _, r in skipped)
    assert reasons == ["mrid IXI014-HH-1236: no NIfTI file matches it under " + str(tmp_path.resolve()),
                       "no row for it in participants.csv (column mrid)"]

    # IXI's own spreadsheet: a numeric IXI_ID, in a TSV under another name; a pattern narrows the files
    _csv(tmp_path / "demographics.tsv", ["IXI_ID", "SEX_ID (1=m, 2=f)", "AGE"], [["12", "1", "38.78"], ["13", "1", "46.71"]],
         delimiter="\t")
    rows, skipped = index_layout("volume-folder", tmp_path, csv="demographics.tsv", pattern="*_T1.nii.gz")
    assert {r["subject_id"] for r in rows} == {"12", "13"} and len(rows) == 2
    assert rows[0]["sex_id_1_m_2_f"] == "1" and rows[0]["age"] == "38.78"
    assert [Path(p).name for p, _ in skipped] == ["IXI500-IOP-1000_T1.nii.gz"]
    with pytest.raises(VolumeFolderError, match="no 'image' column and no column 'eid'"):
        index_layout("volume-folder", tmp_path, csv="demographics.tsv", id_column="eid")


def test_name_matching_rules():
    files = [Path(n) for n in ("IXI012-HH-1211_T1.nii.gz", "sub-01_T1w.nii.gz", "sub-010_T1w.nii.gz", "x.nii")]
    matched, unmatched = match_files_to_ids(files, ["IXI012", "IXI012-HH-1211", "sub-01", "sub-010"])
    assert matched[files[0]] == "IXI012-HH-1211"  # the longest ID at a separator wins
    assert matched[files[1]] == "sub-01" and matched[files[2]] == "sub-010"  # not sub-01 for sub-010
    assert unmatched == [files[3]]
    matched, _ = match_files_to_ids(files[:1], ["12"])
    assert matched[files[0]] == "12"
    assert guess_sequence("IXI012-HH-1211_T1.nii.gz") == "t1" and guess_sequence("sub-01_T1w.nii.gz") == "t1"
    assert guess_sequence("example_ct.nii.gz") == "other"


def test_no_table_ct_folder_and_dicom_series(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    _nifti(tmp_path / "ct/one.nii.gz", zooms=(0.7, 0.7, 1.25))
    series = tmp_path / "ct/series1"
    series.mkdir()
    for i in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * i]
        ds.save_as(series / f"{i}.dcm", enforce_file_format=True)
    rows, skipped = index_layout("volume-folder", tmp_path / "ct", modality="ct")  # no table: every NIfTI file
    assert [r["record_id"] for r in rows] == ["one.nii.gz"] and not skipped
    assert rows[0]["modality"] == "ct" and "sequence" not in rows[0] and rows[0]["subject_id"] == "one"
    _csv(tmp_path / "ct/volumes.csv", ["image", "labels"], [["one.nii.gz", "a"], ["series1", "b"]])
    rows, skipped = index_layout("volume-folder", tmp_path / "ct", modality="ct")
    assert not skipped and rows[1]["shape"] == "128x128x3" and rows[1]["spacing_z_mm"] == "2.5"
    assert rows[1]["path"] == str((tmp_path / "ct/series1").resolve())

    from medssl.ct.modality import ct_inputs

    cache = ct_inputs(rows, {"shape": [8, 8, 8], "spacing_mm": 2}, {}, tmp_path / "cache")
    assert cache.signals.shape == (2, 1, 8, 8, 8) and not cache.skipped


def test_layout_registered_and_cli(tmp_path):
    from medssl.cli import main

    assert "volume-folder" in known_layouts()
    _ixi_like(tmp_path)
    _csv(tmp_path / "ages.csv", ["subject_id", "age"], [["IXI012-HH-1211", "38"]])
    with pytest.raises(ValueError, match="no option 'fov'"):
        index_layout("volume-folder", tmp_path, fov="3mm")
    out = tmp_path / "manifest.csv"
    code = main(["data", "index", "--layout", "volume-folder", "--root", str(tmp_path), "--option", "csv=ages.csv",
                 "--option", "pattern=*_T1.nii.gz", "--out", str(out)])
    assert code == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["subject_id"] for r in rows] == ["IXI012-HH-1211"] and rows[0]["age"] == "38"
