"""The fomo-task layout (FOMO25 tasks 1-3) on replicas of the task folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medssl.data.layouts import index_layout
from medssl.mri.fomo_task import index_fomo_task, parse_task
from medssl.mri.phantom import DEFAULT_SITES


def test_task1_rows_labels_and_swi_or_t2s(fomo_task_root):
    root = fomo_task_root(1)
    rows, skipped = index_fomo_task(root, 1)
    assert skipped == [] and len(rows) == 12
    assert len({r["subject_id"] for r in rows}) == 12 and all(r["record_id"].startswith("fomo1-") for r in rows)
    # half of each site's subjects have an infarct; labels say "infarct" exactly for them
    assert sum(r["infarct"] == "1" for r in rows) == 6
    assert all((r["labels"] == "infarct") == (r["infarct"] == "1") for r in rows)
    for r in rows:
        site = next(s for s in DEFAULT_SITES if s.name == r["site"])
        assert r["swi_or_t2s"] == site.susceptibility
        assert Path(r["seq_swi_or_t2s"]).name == f"{site.susceptibility}.nii.gz"
        assert all(Path(r[f"seq_{n}"]).is_file() for n in ("flair", "adc", "dwi_b1000"))
        assert Path(r["path"]).name == "ses_1"


def test_labels_with_and_without_the_session_level(fomo_task_root):
    root = fomo_task_root(3)
    rows, skipped = index_fomo_task(root, "brain_age")
    assert skipped == []
    # the replica writes siteB's labels as labels/sub_X/label.txt, the others under ses_1/
    assert not (root / "labels" / "sub_5" / "ses_1").exists() and (root / "labels" / "sub_5" / "label.txt").is_file()
    ages = {r["subject"]: float(r["age"]) for r in rows}
    assert len(ages) == 12 and all(20 <= a <= 85 for a in ages.values())
    assert ages["sub_5"] == pytest.approx(float((root / "labels" / "sub_5" / "label.txt").read_text()), abs=0.01)
    assert all(set(r) >= {"seq_t1", "seq_t2"} for r in rows)


def test_task2_mask_paths(fomo_task_root):
    rows, skipped = index_layout("fomo-task", fomo_task_root(2), task="2")
    assert skipped == [] and len(rows) == 12
    assert all(Path(r["mask_path"]).name == "seg.nii.gz" and Path(r["mask_path"]).is_file() for r in rows)
    assert all(r["labels"] == "" and "seq_adc" not in r for r in rows)


def test_missing_sequences_and_labels_are_skipped_with_reasons(fomo_task_root, tmp_path):
    root = tmp_path / "t1"
    shutil.copytree(fomo_task_root(1), root)
    (root / "preprocessed" / "sub_1" / "ses_1" / "adc.nii.gz").unlink()
    (root / "preprocessed" / "sub_2" / "ses_1" / "swi.nii.gz").unlink()
    (root / "labels" / "sub_5" / "label.txt").unlink()  # siteB: labels without ses_1
    (root / "labels" / "sub_4" / "ses_1" / "label.txt").write_text("maybe\n")
    (root / "preprocessed" / "sub_99").mkdir()
    rows, skipped = index_fomo_task(root, 1)
    reasons = {Path(p).relative_to(root).as_posix(): r for p, r in skipped}
    assert reasons["preprocessed/sub_1/ses_1"] == "task 1 (infarct) needs adc: not in the session folder"
    assert reasons["preprocessed/sub_2/ses_1"] == "task 1 (infarct) needs swi or t2s: not in the session folder"
    assert reasons["preprocessed/sub_5/ses_1"].startswith("no label.txt under")
    assert "expected 0 or 1" in reasons["preprocessed/sub_4/ses_1"]
    assert reasons["preprocessed/sub_99"] == "no ses_* folder"
    assert len(rows) == 8
    kept, _ = index_layout("fomo-task", root, task="task1", require_labels="false")
    assert next(r for r in kept if r["subject"] == "sub_5")["infarct"] == ""


def test_t2s_used_when_swi_absent_and_swi_preferred(fomo_task_root, tmp_path):
    root = tmp_path / "t2"
    shutil.copytree(fomo_task_root(2), root)
    ses = root / "preprocessed" / "sub_1" / "ses_1"
    shutil.copy(ses / "swi.nii.gz", ses / "t2s.nii.gz")  # both present: SWI taken
    (root / "preprocessed" / "sub_2" / "ses_1" / "swi.nii.gz").rename(
        root / "preprocessed" / "sub_2" / "ses_1" / "T2star.nii.gz")  # a name normalise_sequence knows
    rows, _ = index_fomo_task(root, 2)
    by = {r["subject"]: r for r in rows}
    assert by["sub_1"]["swi_or_t2s"] == "swi"
    assert by["sub_2"]["swi_or_t2s"] == "t2s" and by["sub_2"]["seq_swi_or_t2s"].endswith("T2star.nii.gz")


def test_task_parsing_and_layout_refusals(fomo_task_root):
    assert parse_task("3").name == "brain_age" and parse_task("task_2").number == 2 and parse_task(1).number == 1
    assert parse_task("infarct").number == 1
    with pytest.raises(ValueError, match="unknown FOMO task"):
        parse_task("4")
    with pytest.raises(ValueError, match="needs --task"):
        index_layout("fomo-task", fomo_task_root(1))
    with pytest.raises(ValueError, match="drop --labels"):
        index_layout("fomo-task", fomo_task_root(1), task="1", labels="x.csv")
