"""The fomo60k layout on a replica of the release's folders and tables."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from medssl.data.layouts import index_layout, known_layouts
from medssl.mri.fomo60k import index_fomo60k, normalise_sequence


@pytest.mark.parametrize("raw, seq", [
    ("t1", "t1"), ("T1w", "t1"), ("mprage", "t1"), ("t1_2.nii.gz", "t1"), ("t1flair", "t1"), ("t1ce", "t1c"),
    ("T1_Gd", "t1c"), ("t2", "t2"), ("t2_tse", "t2"), ("t2spc", "t2"), ("t2_flair", "flair"), ("FLAIR_3", "flair"),
    ("t2s", "t2s"), ("t2star", "t2s"), ("T2*", "t2s"), ("swi", "swi"), ("SWAN", "swi"), ("dwi_b1000", "dwi"),
    ("trace", "dwi"), ("adc", "adc"), ("ADC_map", "adc"), ("pd", "pd"), ("scan", "other"), ("localizer", "other"),
])
def test_sequence_vocabulary(raw, seq):
    assert normalise_sequence(raw) == seq


def test_ids_unique_across_sources_whose_subjects_collide(fomo60k_root):
    rows, skipped = index_fomo60k(fomo60k_root)
    assert skipped == []
    assert len({r["record_id"] for r in rows}) == len(rows)
    # every source numbers its subjects sub_1..sub_3: the folder names collide, the IDs do not
    assert {r["subject"] for r in rows} == {"sub_1", "sub_2", "sub_3"}
    subjects = {r["subject_id"] for r in rows}
    assert len(subjects) == 9 and "PT002_siteB-sub_1" in subjects
    # the third subject of each source has two sessions, under one subject_id
    ses = {r["session"] for r in rows if r["subject_id"] == "PT001_siteA-sub_3"}
    assert ses == {"ses_1", "ses_2"}
    assert {r["site"] for r in rows} == {"PT001_siteA", "PT002_siteB", "PT003_siteC"}
    assert all(r["split"] == "" and r["labels"] == "" for r in rows)


def test_sequences_normalised_raw_names_kept(fomo60k_root):
    rows, _ = index_fomo60k(fomo60k_root)
    by_raw = {(r["site"], r["sequence_raw"]): r["sequence"] for r in rows}
    assert by_raw[("PT002_siteB", "mprage")] == "t1"
    assert by_raw[("PT003_siteC", "t1_2")] == "t1"
    assert by_raw[("PT002_siteB", "t2s")] == "t2s"
    counts = Counter(r["sequence"] for r in rows if r["site"] == "PT003_siteC")
    assert counts["t1"] == 2 * counts["swi"]  # t1 and its repeat t1_2


def test_tables_in_differing_spellings(fomo60k_root):
    rows, _ = index_fomo60k(fomo60k_root)
    for site, vendor, tesla in [("PT001_siteA", "Siemens", "3"), ("PT002_siteB", "Philips", "1.5"),
                                ("PT003_siteC", "GE", "3")]:
        site_rows = [r for r in rows if r["site"] == site]
        assert {r["vendor"] for r in site_rows} == {vendor}
        assert {r["field_strength"] for r in site_rows} == {tesla}
        # participants.tsv columns are age/Age/age_at_scan and sex/gender/Sex: all read
        assert all(18 < float(r["age"]) < 90 and r["sex"] in ("M", "F") for r in site_rows)


def test_bad_folders_are_skipped_with_reasons(fomo60k_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(fomo60k_root, root)
    (root / "PT001_siteA" / "sub_9" / "ses_1").mkdir(parents=True)  # empty session
    (root / "PT001_siteA" / "sub_8").mkdir()
    (root / "PT001_siteA" / "sub_8" / "ses_1.zip").write_bytes(b"PK")  # zipped session
    (root / "PT001_siteA" / "sub_1" / "ses_1" / "t2.nii.gz").write_bytes(b"")  # empty file
    shutil.copy(root / "PT001_siteA" / "sub_2" / "ses_1" / "t1.nii.gz", root / "PT001_siteA" / "sub_2" / "ses_1" / "t1.nii")
    (root / "participants.tsv").write_text("participant_id\tage\nsub_1\t30\n")  # no dataset column
    (root / "PT002_siteB" / "mri_info.tsv").write_text("nothing useful\n1\n")
    rows, skipped = index_fomo60k(root)
    reasons = {p.split("copy/", 1)[1]: r for p, r in skipped}
    assert reasons["PT001_siteA/sub_9/ses_1"] == "no NIfTI files"
    assert reasons["PT001_siteA/sub_8/ses_1.zip"].startswith("zipped session")
    assert reasons["PT001_siteA/sub_1/ses_1/t2.nii.gz"] == "empty file"
    assert "duplicate scan" in reasons["PT001_siteA/sub_2/ses_1/t1.nii.gz"] or \
        "duplicate scan" in reasons["PT001_siteA/sub_2/ses_1/t1.nii"]
    assert "no dataset column" in reasons["participants.tsv"]
    assert "no participant or file column" in reasons["PT002_siteB/mri_info.tsv"]
    assert len(rows) > 40 and all(r["vendor"] == "" for r in rows if r["site"] == "PT002_siteB")


def test_root_tables_and_nested_sources(fomo60k_root, tmp_path):
    root = tmp_path / "nested"
    shutil.copytree(fomo60k_root / "PT001_siteA", root / "PT030_OpenNeuro" / "ds000001")
    (root / "PT030_OpenNeuro" / "ds000001" / "participants.tsv").unlink()
    shutil.copytree(fomo60k_root / "PT002_siteB", root / "PT002_siteB")
    (root / "participants.tsv").write_text("dataset\tparticipant_id\tsession_id\tage\tsex\n"
                                           "PT030_OpenNeuro/ds000001\tsub-01\tses-01\t71Y\tfemale\n")
    rows, skipped = index_fomo60k(root)
    assert skipped == []
    nested = [r for r in rows if r["source"] == "PT030_OpenNeuro"]
    assert nested and {r["site"] for r in nested} == {"PT030_OpenNeuro/ds000001"}
    assert all(r["subject_id"].startswith("PT030_OpenNeuro-ds000001-sub_") for r in nested)
    first = [r for r in nested if r["subject"] == "sub_1" and r["session"] == "ses_1"]
    assert first and all(r["age"] == "71" and r["sex"] == "F" for r in first)  # sub-01/ses-01 matched sub_1/ses_1


def test_layout_registered_headers_option_and_refusals(fomo60k_root, tmp_path):
    assert {"fomo60k", "fomo-task"} <= set(known_layouts())
    rows, _ = index_layout("fomo60k", fomo60k_root, headers="true")
    b = next(r for r in rows if r["site"] == "PT002_siteB")
    assert b["shape"] == "32x32x11" and b["spacing_mm"] == "1x1x3"
    with pytest.raises(ValueError, match="no labels or tasks"):
        index_layout("fomo60k", fomo60k_root, task="1")
    with pytest.raises(ValueError, match="no FOMO60K sources"):
        index_fomo60k(tmp_path)
    root = tmp_path / "broken"
    shutil.copytree(fomo60k_root / "PT001_siteA", root / "PT001_siteA")
    (root / "PT001_siteA" / "sub_1" / "ses_1" / "t1.nii.gz").write_bytes(b"garbage!")
    rows, skipped = index_fomo60k(root, headers=True)
    assert any(p.endswith("sub_1/ses_1/t1.nii.gz") and "not a gzip file" in r for p, r in skipped)
