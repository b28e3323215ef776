"""A real torso CT as NIfTI (../shared/data/real/ct_nifti/example_ct.nii.gz, 3 mm, HU), indexed by the
volume-folder layout and read into CT encoder inputs, with no skip."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ct_root(real_data):
    root = real_data / "ct_nifti"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def test_real_ct_is_indexed_and_read_in_hounsfield_units(ct_root, tmp_path):
    from medssl.ct.modality import ct_contract_problems, ct_inputs
    from medssl.ct.preprocess import load_ct_volume
    from medssl.data.layouts import index_layout

    rows, skipped = index_layout("volume-folder", ct_root, modality="ct")
    assert skipped == [] and len(rows) == len(list(ct_root.glob("*.nii*"))) == 1
    row = rows[0]
    assert row["modality"] == "ct" and row["shape"] == "122x101x112" and row["spacing_mm"] == "3x3x3"
    vol = load_ct_volume(row["path"])
    assert vol.array.shape == (122, 101, 112)
    assert np.percentile(vol.array, 1) < -900 and np.percentile(vol.array, 99.9) > 300  # air and bone, in HU
    spec_input = {"shape": [32, 32, 32], "spacing_mm": [1.5, 1.5, 2.0], "windows": ["lung"]}
    assert ct_contract_problems(spec_input, rows) == []
    cache = ct_inputs(rows, spec_input, {}, tmp_path / "cache")
    assert cache.signals.shape == (1, 1, 32, 32, 32) and not cache.skipped
    assert 0.0 <= float(np.min(cache.signals)) and float(np.max(cache.signals)) <= 1.0
