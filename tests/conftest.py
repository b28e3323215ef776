"""Shared fixtures: small synthetic ECG cohorts on disk, and a private cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# trainer.precision "auto" on a CPU is chosen by timing both precisions (medssl.engine.precision_probe);
# the suite pins fp32 (its bf16 subset sets MEDSSL_PRECISION=bf16) so no result depends on the
# machine's speed. tests/engine/test_precision_probe.py unsets it to check the probe itself.
os.environ.setdefault("MEDSSL_PRECISION", "32")

SHARED_ECG = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg"
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real recordings in ../shared/data/real/ (see its README), read in place and never written;
    tests that take this fixture are skipped, with the reason, where that folder is absent."""
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (../shared/data/real/ sits beside the repository in the "
                    f"project's workspace and in CI; it is not distributed with medssl)")
    return REAL_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models run faster on one thread, and a loaded machine does not stall them."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep every test's preprocessed-array cache out of the user's home."""
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path_factory.mktemp("medssl-cache")))


@pytest.fixture(scope="session")
def tiny_cohort_dir(tmp_path_factory) -> Path:
    """A WFDB folder + labels.csv of 8 synthetic subjects (two sites), written once per session."""
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    out = tmp_path_factory.mktemp("tiny-cohort")
    write_wfdb_cohort(generate_cohort(8, records_per_subject=2, seed=3), out)
    return out
