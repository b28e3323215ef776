"""Real IXI T1 brain MRI (../shared/data/real/ixi_t1: 100 NIfTI volumes at 2 mm + participants.csv with
MRID, Age, Sex), indexed as found by the volume-folder layout and read, with no skip."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ixi(real_data):
    root = real_data / "ixi_t1"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.fixture(scope="module")
def ixi_rows(ixi):
    from medssl.data.layouts import index_layout

    return index_layout("volume-folder", ixi)


def test_every_ixi_volume_is_indexed_with_its_age_and_sex(ixi, ixi_rows):
    rows, skipped = ixi_rows
    n_files = len(list(ixi.rglob("*.nii.gz")))
    assert skipped == [] and len(rows) == n_files == 100
    assert len({r["subject_id"] for r in rows}) == 100
    for r in rows:
        assert r["path"].endswith(f"{r['subject_id']}_T1.nii.gz") and r["mrid"] == r["subject_id"]
        assert 18 <= float(r["age"]) <= 90 and r["sex"] in ("M", "F")
        assert r["sequence"] == "t1" and r["shape"] == "120x120x90" and r["spacing_mm"] == "2x2x2"
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_every_ixi_volume_reads(ixi_rows):
    from medssl.mri.modality import read_volume

    rows, _ = ixi_rows
    for r in rows:
        vol = read_volume(r["path"])
        assert vol.array.shape == (120, 120, 90) and np.isfinite(vol.array).all(), r["record_id"]
        assert vol.array.max() > vol.array.min()
        np.testing.assert_allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), 2.0, rtol=1e-4)


def test_ixi_meets_the_mri_encoder_contract_and_preprocesses(ixi_rows):
    from medssl.data.modalities import modality_data
    from medssl.registry import encoder_entry

    rows, _ = ixi_rows
    hooks = modality_data("mri")
    spec_input = {"channels": ["t1"], "spatial_dims": 3, "shape": [16, 16, 16], "spacing_mm": [4.0, 4.0, 4.0],
                  "divisible_by": 8}
    assert encoder_entry("mri_unet_tiny").modality == "mri"
    assert hooks.contract_problems(spec_input, rows) == []
    cache = hooks.inputs(rows[:1], spec_input, {"workers": 1}, None)
    assert cache.signals.shape == (1, 1, 16, 16, 16) and not cache.skipped
    assert np.isfinite(np.asarray(cache.signals)).all()
