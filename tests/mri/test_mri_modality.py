"""The MRI data hooks: cached inputs and masks for encoder contracts, contract problems,
synthetic datasets and their learnability."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medssl.data.modalities import modality_data
from medssl.imaging.nifti import read_nifti
from medssl.mri.fomo60k import index_fomo60k
from medssl.mri.fomo_task import index_fomo_task
from medssl.mri.modality import MriLoader, channel_paths, mri_contract_problems
from medssl.mri.preprocess import Geometry, to_original_space

ANY = {"channels": ["any"], "shape": [32, 32, 32], "spacing_mm": [1.0, 1.0, 1.0]}
TASK1 = {"channels": ["flair", "adc", "dwi_b1000", "swi_or_t2s"], "shape": [32, 32, 32]}
TASK2 = {"channels": ["flair", "dwi_b1000", "swi_or_t2s"], "shape": [32, 32, 32]}
ONE_WORKER = {"workers": 1}


def test_hooks_registered():
    mri = modality_data("mri")
    assert mri.masks is not None and mri.contract_problems is not None and mri.write_synthetic is not None


def test_pretraining_inputs_cached_once_bad_files_skipped(fomo60k_root, tmp_path, monkeypatch):
    root = tmp_path / "f60"
    shutil.copytree(fomo60k_root / "PT002_siteB", root / "PT002_siteB")
    rows, _ = index_fomo60k(root)
    bad = next(r for r in rows if r["sequence_raw"] == "flair")
    data = Path(bad["path"]).read_bytes()
    Path(bad["path"]).write_bytes(data[: len(data) // 3])  # truncated after indexing
    cache = modality_data("mri").inputs(rows, ANY, {"workers": 2}, tmp_path / "cache")
    assert cache.signals.shape == (len(rows) - 1, 1, 32, 32, 32) and cache.signals.dtype == np.float32
    assert [p for p, _ in cache.skipped] == [bad["path"]] and "truncated or corrupt" in cache.skipped[0][1]
    assert [r["record_id"] for r in cache.rows] == [r["record_id"] for r in rows if r is not bad]
    assert np.isfinite(cache.signals).all()
    # one item per scan, z-scored over its brain voxels (the centre crop keeps most of them)
    item = np.asarray(cache.signals[0, 0])
    assert abs(item[item != 0].mean()) < 0.3 and 0.7 < item[item != 0].std() < 1.3

    def refuse(self, row):
        raise AssertionError("cache rebuilt")

    monkeypatch.setattr(MriLoader, "__call__", refuse)
    again = modality_data("mri").inputs(rows, ANY, {}, tmp_path / "cache")
    assert again.folder == cache.folder and len(again) == len(cache)
    # the geometry of each item was kept for mapping predictions back
    g = Geometry.from_dict(json.loads(Path(again.rows[0]["geometry_path"]).read_text()))
    assert g.model_shape == (32, 32, 32) and g.original_shape == read_nifti(again.rows[0]["path"]).array.shape


def test_recipe_data_shape_overrides_the_encoder_patch(fomo60k_root, tmp_path):
    rows, _ = index_fomo60k(fomo60k_root)
    rows = [r for r in rows if r["site"] == "PT001_siteA" and r["sequence"] == "t1"]
    cache = modality_data("mri").inputs(rows, ANY, {"shape": [24, 28, 24], **ONE_WORKER}, tmp_path)
    assert cache.signals.shape == (len(rows), 1, 24, 28, 24)
    t1_only = modality_data("mri").inputs(rows, {**ANY, "channels": ["t1"]}, ONE_WORKER, tmp_path)
    assert len(t1_only) == len(rows)


def test_task_channels_in_encoder_order(fomo_task_root, tmp_path):
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    cache = modality_data("mri").inputs(rows, TASK1, ONE_WORKER, tmp_path)
    assert cache.signals.shape == (12, 4, 32, 32, 32)
    # infarcts are bright on DWI (channel 2) and dark on ADC (channel 1): the task is learnable
    score = np.array([ndimage.uniform_filter(np.asarray(x[2]) - np.asarray(x[1]), 3).max() for x in cache.signals])
    infarct = np.array([r["infarct"] == "1" for r in cache.rows])
    assert score[infarct].min() > score[~infarct].max() + 0.5
    # channels follow the spec's order: reversing it reverses the cached channels
    rev = modality_data("mri").inputs(rows, {**TASK1, "channels": TASK1["channels"][::-1]}, ONE_WORKER, tmp_path)
    np.testing.assert_allclose(rev.signals[0, ::-1], cache.signals[0], atol=1e-5)


def test_masks_aligned_with_inputs_and_mapped_back(fomo_task_root, tmp_path):
    rows, _ = index_fomo_task(fomo_task_root(2), 2)
    mri = modality_data("mri")
    inputs = mri.inputs(rows, TASK2, ONE_WORKER, tmp_path)
    masks = mri.masks(rows, TASK2, ONE_WORKER, tmp_path)
    assert masks.signals.shape == (12, 1, 32, 32, 32)
    assert [r["record_id"] for r in masks.rows] == [r["record_id"] for r in inputs.rows]
    assert set(np.unique(masks.signals)) <= {0.0, 1.0}
    for x, m, row in zip(inputs.signals, masks.signals, inputs.rows):
        m = np.asarray(m[0]) > 0
        if m.any():  # the tumour lies on imaged tissue, and its FLAIR is above the brain's average
            assert (np.asarray(x[0])[m] != 0).mean() > 0.9
        seg = read_nifti(row["mask_path"])
        g = Geometry.from_dict(json.loads(Path(row["geometry_path"]).read_text()))
        back = to_original_space(m.astype(np.uint8), g)
        assert back.shape == seg.array.shape and (back <= (seg.array > 0)).all()  # inside the truth
    assert masks.signals.sum() > 0.5 * sum(read_nifti(r["mask_path"]).array.sum() for r in rows[:4]) / 4


def test_dicom_series_rows_read_through_the_dicom_reader(tmp_path):
    from pydicom.data import get_testdata_file

    row = {"record_id": "mr-small", "subject_id": "s1", "path": get_testdata_file("MR_small.dcm"), "split": "",
           "labels": "", "sequence": "t1"}
    cache = modality_data("mri").inputs([row], {**ANY, "shape": [32, 32, 4]}, ONE_WORKER, tmp_path)
    assert cache.signals.shape == (1, 1, 32, 32, 4) and cache.skipped == []
    x = np.asarray(cache.signals)
    assert (x != 0).any(axis=(0, 1, 2, 3)).sum() == 1  # one 0.8 mm slice, padded to 4 at 1 mm
    assert 0.8 < x[x != 0].std() < 1.2


def test_masks_refused_without_mask_paths(fomo_task_root, tmp_path):
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    with pytest.raises(ValueError, match="no mask_path"):
        modality_data("mri").masks(rows, TASK1, ONE_WORKER, tmp_path)


def test_channel_resolution_and_contract_problems(fomo_task_root, fomo60k_root):
    task1, _ = index_fomo_task(fomo_task_root(1), 1)
    scans, _ = index_fomo60k(fomo60k_root)
    t2s_row = next(r for r in task1 if r["swi_or_t2s"] == "t2s")
    assert channel_paths(t2s_row, ["dwi", "t2s"]) == [t2s_row["seq_dwi_b1000"], t2s_row["seq_swi_or_t2s"]]
    assert channel_paths(t2s_row, ["any"] * 4) == [t2s_row[f"seq_{n}"] for n in TASK1["channels"]]
    assert mri_contract_problems(TASK1, task1) == []
    swi = mri_contract_problems({**TASK1, "channels": ["flair", "swi"]}, task1)
    assert len(swi) == 1 and swi[0].startswith("channels: 4 of 12 records") and "no swi sequence" in swi[0]
    t1 = mri_contract_problems({**ANY, "channels": ["t1"]}, scans)
    assert t1[0].startswith("channels: ") and "the encoder reads t1" in t1[0]
    multi = mri_contract_problems(TASK1, scans)
    assert f"{len(scans)} of {len(scans)} records" in multi[0] and "reads 4 channels" in multi[0]
    ecg_rows = [{"record_id": "a", "subject_id": "s", "path": "x", "split": "", "labels": ""}]
    assert mri_contract_problems(ANY, ecg_rows)[0].startswith("records: 1 of 1 rows are not MRI")
    thick = [{**r, "spacing_mm": "1x1x6"} for r in scans[:3]]
    assert any(p.startswith("spacing: 3 of 3") for p in mri_contract_problems(ANY, thick))
    assert "reads 2 channels" in mri_contract_problems({"channels": 2, "shape": [8, 8, 8]}, scans)[0]
    assert mri_contract_problems({"channels": 4, "shape": [8, 8, 8]}, task1) == []
    assert mri_contract_problems({"channels": 0, "shape": [8, 8, 8]}, scans)[0].startswith("contract:")


def test_write_synthetic_reuses_and_refuses(tmp_path):
    write = modality_data("mri").write_synthetic
    rows, skipped = write(tmp_path / "syn", task=3, subjects_per_site=1, seed=0, shape=(24, 24, 24))
    assert skipped == [] and len(rows) == 3 and all(r["age"] for r in rows)
    stamp = (tmp_path / "syn" / ".medssl-synthetic-mri.json").stat().st_mtime_ns
    again, _ = write(tmp_path / "syn", task=3, subjects_per_site=1, seed=0, shape=(24, 24, 24))
    assert again == rows and (tmp_path / "syn" / ".medssl-synthetic-mri.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        write(tmp_path / "syn", task=3, subjects_per_site=2, seed=0, shape=(24, 24, 24))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write(tmp_path / "other", task="fomo60k")
