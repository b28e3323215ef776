"""CODE-15% layout: exams.csv + HDF5 parts, labels, subject splits, reading through the cache."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from medssl.data.layouts import index_layout  # noqa: E402
from medssl.ecg.code15 import CODE15_LEADS, index_code15, is_code15_path, read_code15_record  # noqa: E402
from medssl.ecg.dataset import ecg_array_cache  # noqa: E402
from medssl.ecg.layouts import subject_split  # noqa: E402
from medssl.ecg.preprocess import EcgPreprocess  # noqa: E402
from medssl.ecg.readers import read_ecg_record  # noqa: E402
from medssl.ecg.wfdb_reader import EcgReadError  # noqa: E402

COLUMNS = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
           "patient_id", "death", "timey", "normal_ecg", "trace_file"]
T = 800  # 2 s at 400 Hz (the real files hold 4096 samples)


def _tracing(seed: int, active: int, pad: int) -> np.ndarray:
    x = np.zeros((T, 12), dtype=np.float32)
    rng = np.random.default_rng(seed)
    x[pad:pad + active] = rng.normal(size=(active, 12)).astype(np.float32) + 0.1
    return x


def _write_part(path: Path, exam_ids: list[int], pads: list[int]) -> np.ndarray:
    tracings = np.stack([_tracing(e, T - 2 * p, p) for e, p in zip(exam_ids, pads)])
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=tracings)
        f.create_dataset("exam_id", data=np.asarray(exam_ids, dtype=np.int64))
    return tracings


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("code15")
    # Part 0: exams 1001-1006 + a filler row (exam_id 0, all zeros) as in the release.
    _write_part(root / "exams_part0.hdf5", [1001, 1002, 1003, 1004, 1005, 1006, 0], [0, 100, 0, 50, 0, 0, 400])
    _write_part(root / "exams_part1.hdf5", [2001, 2002, 2003, 2004, 2005], [0, 0, 0, 0, 0])
    rows = [
        # exam, patient, 1dAVb, RBBB, LBBB, SB, ST, AF, normal, part
        (1001, 11, "False", "False", "False", "False", "False", "False", "True", 0),
        (1002, 11, "True", "False", "False", "True", "False", "False", "False", 0),
        (1003, 12, "False", "True", "False", "False", "False", "False", "False", 0),
        (1004, 13, "False", "False", "True", "False", "False", "True", "False", 0),
        (1005, 14, "False", "False", "False", "False", "True", "False", "False", 0),
        (1006, 15, "False", "False", "False", "False", "False", "False", "False", 0),
        (2001, 16, "False", "False", "False", "False", "False", "True", "False", 1),
        (2002, 17, "False", "False", "False", "False", "False", "False", "True", 1),
        (2003, 18, "maybe", "False", "False", "False", "False", "False", "False", 1),  # bad value: skipped
        (2009, 19, "False", "False", "False", "False", "False", "False", "True", 1),  # not in the HDF5
        (3001, 20, "False", "False", "False", "False", "False", "False", "True", 2),  # part 2 missing
        (2004, 21, "False", "False", "False", "False", "False", "False", "True", 1),
    ]
    with (root / "exams.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for exam, patient, av, rbbb, lbbb, sb, st, af, normal, part in rows:
            w.writerow([exam, 57, "True", 60.1, av, rbbb, lbbb, sb, st, af, patient, "False", 5.2, normal,
                        f"exams_part{part}.hdf5"])
    return root


def test_index_rows_labels_and_splits(replica):
    rows, skipped = index_code15(replica)
    got = {r["record_id"]: r for r in rows}
    assert list(got) == ["1001", "1002", "1003", "1004", "1005", "1006", "2001", "2002", "2004"]
    assert got["1001"]["labels"] == "NORM"
    assert got["1002"]["labels"] == "1dAVb;SB"
    assert got["1004"]["labels"] == "AF;LBBB"
    assert got["1005"]["labels"] == "ST" and got["1006"]["labels"] == ""
    assert got["1001"]["subject_id"] == got["1002"]["subject_id"] == "P11"
    assert got["2004"]["path"] == f"{replica.resolve() / 'exams_part1.hdf5'}#3"
    assert got["1003"]["path"].endswith("exams_part0.hdf5#2")
    for row in rows:
        assert row["split"] == subject_split(row["subject_id"])
        assert row["sampling_rate"] == 400.0 and row["n_samples"] == T
        assert "age" not in row and "is_male" not in row and "death" not in row
    reasons = [r for _, r in skipped]
    assert len(skipped) == 3
    assert any("exam 2003 has non-boolean label value(s) 1dAVb='maybe'" in r for r in reasons)
    assert any(r == "exam 2009 not found in exams_part1.hdf5" for r in reasons)
    assert any(r == "exam 3001: HDF5 file exams_part2.hdf5 not found" for r in reasons)
    assert all(p.startswith(str(replica.resolve() / "exams.csv") + ":") for p, _ in skipped)


def test_read_record_trims_padding_and_keeps_values(replica):
    path = f"{replica / 'exams_part0.hdf5'}#1"
    assert is_code15_path(path) and not is_code15_path(replica / "rec_001")
    rec = read_ecg_record(path)
    with h5py.File(replica / "exams_part0.hdf5", "r") as f:
        stored = np.asarray(f["tracings"][1])
    assert rec.lead_names == CODE15_LEADS and rec.sampling_rate == 400.0
    assert rec.signal.shape == (12, T - 200) and rec.signal.dtype == np.float32
    np.testing.assert_array_equal(rec.signal, stored[100:T - 100].T)
    assert rec.metadata["padding"] == (100, 100) and rec.metadata["exam_id"] == 1002
    assert rec.record_id == "1002"


def test_read_errors_name_the_path(replica):
    with pytest.raises(EcgReadError, match=r"#6: the tracing is all zeros"):
        read_code15_record(f"{replica / 'exams_part0.hdf5'}#6")
    with pytest.raises(EcgReadError, match="row 9 out of range"):
        read_code15_record(f"{replica / 'exams_part0.hdf5'}#9")
    with pytest.raises(EcgReadError, match="exams_part7.hdf5 not found"):
        read_code15_record(f"{replica / 'exams_part7.hdf5'}#0")


def test_cache_reads_code15_rows(replica, tmp_path):
    rows, _ = index_layout("code15", replica)
    pre = EcgPreprocess(leads=("I", "II", "V1"), sampling_rate=400, num_samples=400)
    before = {p.name: p.stat().st_mtime_ns for p in replica.iterdir()}
    cache = ecg_array_cache(rows[:3], pre, tmp_path / "cache")
    assert cache.signals.shape == (3, 3, 400) and not cache.skipped
    assert before == {p.name: p.stat().st_mtime_ns for p in replica.iterdir()}
    with pytest.raises(ValueError, match="no tasks"):
        index_layout("code15", replica, task="superdiagnostic")
