"""The CT layouts and data hooks: folder indexing with skips, nodule rows, aligned inputs and masks,
contract problems, the synthetic cohort, and no patient identity anywhere."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.ct.modality import (
    CTInputSettings,
    ct_contract_problems,
    ct_inputs,
    ct_masks,
)
from medssl.ct.nodules import Nodule, write_nodule_csv
from medssl.ct.phantom import (
    make_chest_phantom,
    write_dicom_series,
    write_mask_nifti,
    write_synthetic,
)
from medssl.data.layouts import index_layout
from medssl.data.manifest import manifest_to_csv
from medssl.data.modalities import modality_data
from medssl.imaging.dicom import DicomSeriesWarning, pseudonym

SPEC = {"shape": [9, 9, 9], "spacing_mm": 2.0, "windows": ["lung", "mediastinum"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A read-only-style folder: two series in one study folder, a third with a missing slice,
    a text file, a NIfTI file; and a nodule list for the first series."""
    root = tmp_path_factory.mktemp("dicom-root")
    a = make_chest_phantom((40, 40, 16), pixel_mm=4.0, slice_mm=2.5, n_nodules=2, malignancy=[5, 1], seed=4)
    b = make_chest_phantom((32, 32, 8), pixel_mm=5.0, n_nodules=0, seed=5)
    write_dicom_series(a, root / "PAT1" / "study" / "s1", patient_id="PHANTOM-0001", shuffle=True)
    write_dicom_series(b, root / "PAT1" / "study" / "s2", patient_id="PHANTOM-0001", seed=1)
    write_dicom_series(b, root / "PAT2" / "gap", patient_id="PHANTOM-0002", drop_slice=4, seed=2)
    (root / "PAT1" / "study" / "s1" / "README.txt").write_text("notes")
    write_mask_nifti(a, root / "a_mask.nii.gz")
    # mix the two series of PAT1 into one folder to force "folder#series" paths
    for f in (root / "PAT1" / "study" / "s2").iterdir():
        f.rename(root / "PAT1" / "study" / "s1" / f"s2_{f.name}")
    (root / "PAT1" / "study" / "s2").rmdir()
    from pydicom.uid import generate_uid

    sid = pseudonym(generate_uid(entropy_srcs=["medssl-phantom", "PHANTOM-0001", "0", "series"]), prefix="ser")
    nodules = [Nodule(sid, n.centre_ras, n.diameter_mm, float(n.malignancy)) for n in a.nodules]
    nodules.append(Nodule(sid, a.nodules[0].centre_ras + 1.0, 6.0, 3.0))  # indeterminate
    nodules.append(Nodule("ser-0000000000000000", np.zeros(3), 6.0, 5.0))  # unknown series
    csv_path = tmp_path_factory.mktemp("lists") / "nodules.csv"
    write_nodule_csv(csv_path, nodules)
    return root, a, csv_path, sid


def test_dicom_layout_rows_and_skips(study):
    root, a, _, sid = study
    rows, skipped = index_layout("dicom", root)
    assert len(rows) == 2
    by_slices = {r["n_slices"]: r for r in rows}
    r1 = by_slices["16"]
    assert r1["record_id"] == sid and r1["subject_id"] == pseudonym("PHANTOM-0001", prefix="sub")
    assert r1["path"] == f"{root}/PAT1/study/s1#{sid}"  # shares its folder with another series
    assert (r1["spacing_x_mm"], r1["spacing_z_mm"], r1["modality"]) == ("4", "2.5", "CT")
    assert by_slices["8"]["subject_id"] == r1["subject_id"]  # same patient, same pseudonym
    reasons = dict(skipped)
    assert "not a DICOM file" in reasons[str(root / "PAT1/study/s1/README.txt")]
    assert "NIfTI file" in reasons[str(root / "a_mask.nii.gz")]
    assert "1 slice(s) missing" in reasons[str(root / "PAT2" / "gap")]
    rows_ok, skipped_ok = index_layout("dicom", root, missing="interpolate")
    assert len(rows_ok) == 3
    assert "1 missing slice(s)" in [r for r in rows_ok if r["n_files"] == "7"][0]["dicom_problems"]
    with pytest.raises(ValueError, match="no option 'colour'"):
        index_layout("dicom", root, colour="red")


def test_nodule_rows_labels_and_skips(study):
    root, a, csv_path, sid = study
    rows, skipped = index_layout("dicom", root, nodules=str(csv_path))
    assert [r["labels"] for r in rows] == ["malignant", ""]
    assert [r["record_id"] for r in rows] == [f"{sid}-n00", f"{sid}-n01"]
    np.testing.assert_allclose([float(rows[0][f"center_{c}_mm"]) for c in "xyz"], a.nodules[0].centre_ras, atol=1e-3)
    reasons = " | ".join(r for _, r in skipped)
    assert "malignancy 3 (indeterminate)" in reasons and "no such series" in reasons


def test_parallel_header_scan_gives_the_same_rows(study, monkeypatch):
    import medssl.ct.dicom_folder as m

    root, _, csv_path, _ = study
    serial = m.index_dicom_folder(root, nodules=csv_path, workers=1)
    monkeypatch.setattr(m, "SCAN_CHUNK", 8)
    assert m.index_dicom_folder(root, nodules=csv_path, workers=2) == serial


def test_no_patient_identity_anywhere(study):
    root, _, csv_path, _ = study
    rows, skipped = index_layout("dicom", root, nodules=str(csv_path), missing="interpolate")
    text = manifest_to_csv(rows) + repr(skipped) + csv_path.read_text()
    for secret in ("PHANTOM-0001", "PHANTOM-0002", "Jane0001", "Jane0002", "19000101"):
        assert secret not in text


def test_inputs_and_masks_are_aligned(study, tmp_path):
    root, a, csv_path, _ = study
    rows, _ = index_layout("dicom", root, nodules=str(csv_path))
    for r in rows:
        r["mask_path"] = str(root / "a_mask.nii.gz")
    cache = ct_inputs(rows, SPEC, {}, tmp_path)
    masks = ct_masks(rows, SPEC, {}, tmp_path)
    assert cache.signals.shape == (2, 2, 9, 9, 9) and masks.signals.shape == (2, 1, 9, 9, 9)
    assert cache.skipped == [] and [r["record_id"] for r in cache.rows] == [r["record_id"] for r in masks.rows]
    assert set(np.unique(masks.signals)) <= {0.0, 1.0}
    assert (masks.signals[:, 0, 4, 4, 4] == 1).all()  # each patch is centred on its nodule
    x = np.asarray(cache.signals)
    assert 0 <= x.min() and x.max() <= 1
    inside = x[:, 0][masks.signals[:, 0] == 1].mean()
    outside = x[:, 0][masks.signals[:, 0] == 0].mean()
    assert inside > outside  # nodule brighter than the lung around it in the lung window
    again = ct_inputs(rows, SPEC, {}, tmp_path)  # cached
    assert again.folder == cache.folder


def test_whole_volume_rows_and_bad_series(study, tmp_path):
    root, a, _, _ = study
    rows, _ = index_layout("dicom", root)
    broken = {**rows[0], "record_id": "broken", "path": str(root / "PAT2" / "gap")}
    spec = {"shape": [12, 12, 6], "spacing_mm": [8.0, 8.0, 6.0], "channels": 1}
    cache = ct_inputs([*rows, broken], spec, {}, tmp_path)
    assert cache.signals.shape == (2, 1, 12, 12, 6)
    assert len(cache.skipped) == 1 and "missing" in cache.skipped[0][1]
    # the whole-volume grid is centred: the body (not air) fills the middle
    assert cache.signals[:, 0, 6, 6, 3].min() > 0.2
    with pytest.warns(DicomSeriesWarning, match="1 interpolated"):
        fixed = ct_inputs([broken], spec, {"missing": "interpolate"}, tmp_path)
    assert fixed.signals.shape == (1, 1, 12, 12, 6)


def test_2d_contract_and_organmnist_rows(tmp_path):
    from medssl.ct.organmnist import index_organmnist3d

    rng = np.random.default_rng(1)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 28, 28, 28), dtype=np.uint8) for s, n in
              (("train", 2), ("val", 1), ("test", 1))}
    arrays.update({f"{s}_labels": np.zeros((len(arrays[f"{s}_images"]), 1), np.uint8)
                   for s in ("train", "val", "test")})
    np.savez(tmp_path / "organmnist3d.npz", **arrays)
    rows, _ = index_layout("organmnist3d", tmp_path)
    assert rows == index_organmnist3d(tmp_path)[0]
    cache = ct_inputs(rows, {"shape": [28, 28, 28], "channels": ["lung"]}, {}, tmp_path / "c")
    np.testing.assert_allclose(cache.signals[0, 0], arrays["train_images"][0] / 255.0, atol=1e-6)
    flat = ct_inputs(rows, {"shape": [14, 14], "spacing_mm": 1.0}, {}, tmp_path / "c")
    assert flat.signals.shape == (4, 1, 14, 14)
    problems = ct_contract_problems({"shape": [28, 28, 28], "windows": ["lung", "bone"]}, rows)
    assert problems and "OrganMNIST3D" in problems[0]


def test_contract_problems_and_settings(study):
    root, _, _, _ = study
    rows, _ = index_layout("dicom", root)
    assert ct_contract_problems({"shape": [16, 16, 16], "spacing_mm": 1.5}, rows) == []
    problems = ct_contract_problems({"shape": [16, 16, 16], "spacing_mm": 0.5}, rows)
    assert len(problems) == 1 and "5 mm" in problems[0]  # 5 mm pixels, 10x the encoder's 0.5 mm
    assert "shape" in ct_contract_problems({"shape": [16]}, rows)[0]
    s = CTInputSettings.from_spec({"shape": [8, 8, 8], "channels": ["lung", "bone"], "spacing_mm": [1, 1, 2]})
    assert s.windows == ("lung", "bone") and s.spacing_mm == (1.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="without windows"):
        CTInputSettings.from_spec({"shape": [8, 8, 8], "channels": 3})


def test_synthetic_cohort_hook(tmp_path):
    hooks = modality_data("ct")
    assert hooks.write_synthetic is not None and hooks.masks is not None
    rows, skipped = write_synthetic(tmp_path / "syn", subjects_per_site=2, seed=3, shape=(40, 40), z_extent_mm=40.0,
                                    workers=1)
    assert rows and {r["site"] for r in rows} <= {"A", "B"}
    assert {r["labels"] for r in rows} <= {"malignant", ""}
    assert all(r["split"] in ("train", "val", "test") and r["mask_path"].endswith(".nii.gz") for r in rows)
    assert all("indeterminate" in reason for _, reason in skipped)
    text = (tmp_path / "syn" / "manifest.csv").read_text() + (tmp_path / "syn" / "nodules.csv").read_text()
    assert "PHANTOM-" not in text and "Jane" not in text
    again, _ = write_synthetic(tmp_path / "syn", subjects_per_site=2, seed=3, shape=(40, 40), z_extent_mm=40.0)
    assert again == rows  # the same settings re-index the folder
    with pytest.raises(ValueError, match="other settings"):
        write_synthetic(tmp_path / "syn", subjects_per_site=3, seed=3)
    masks = ct_masks(rows, {"shape": [7, 7, 7], "spacing_mm": 2.0}, {}, tmp_path / "c")
    assert (masks.signals[:, 0, 3, 3, 3] == 1).all()
