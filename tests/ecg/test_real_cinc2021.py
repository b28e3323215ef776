"""Real PhysioNet/CinC 2021 ECGs (../shared/data/real/ecg_cinc2021: 50 twelve-lead records from Georgia,
PTB-XL and Chapman-Shaoxing/Ningbo): every record indexed and read, with no skip."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest


@pytest.fixture(scope="module")
def cinc(real_data):
    root = real_data / "ecg_cinc2021"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    return root


def test_every_real_record_is_indexed_and_read(cinc):
    from medssl.ecg.physionet2021 import index_physionet2021
    from medssl.ecg.readers import read_ecg_record

    n_headers = len(list(cinc.glob("*.hea")))
    rows, skipped = index_physionet2021(cinc)
    assert skipped == [] and len(rows) == n_headers == 50
    assert Counter(r["site"] for r in rows) == {"georgia": 20, "chapman_shaoxing_ningbo": 20, "ptb-xl": 10}
    assert all(r["subject_id"] == r["record_id"] and r["n_leads"] == 12 and r["labels"] for r in rows)
    for row in rows:
        rec = read_ecg_record(row["path"])
        assert rec.signal.shape == (12, 5000) and rec.sampling_rate == 500.0, row["record_id"]
        assert np.isfinite(rec.signal).all() and 0 < np.abs(rec.signal).max() < 50  # mV


def test_real_folder_through_the_generic_wfdb_layout(cinc):
    from medssl.data.layouts import index_layout

    rows, skipped = index_layout("wfdb", cinc)
    assert skipped == [] and len(rows) == 50
