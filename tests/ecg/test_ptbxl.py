"""PTB-XL layout: benchmark tasks, fold splits, rates, and bad rows, on a small on-disk replica."""

from __future__ import annotations

from pathlib import Path

import pytest

wfdb = pytest.importorskip("wfdb")

from medssl.cli import main  # noqa: E402
from medssl.data.layouts import index_layout  # noqa: E402
from medssl.data.manifest import REQUIRED_COLUMNS, read_manifest  # noqa: E402
from medssl.ecg.layouts import LayoutError  # noqa: E402
from medssl.ecg.ptbxl import PTBXL_TASKS, fold_split, index_ptbxl, task_labels  # noqa: E402
from replicas import RECORDS, STATEMENTS, _rel, _write_record  # noqa: E402
from replicas import write_ptbxl_replica as _write_replica  # noqa: E402

@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    return _write_replica(tmp_path_factory.mktemp("ptbxl"), skip_files=(12,))


def _by_id(rows):
    return {r["record_id"]: r for r in rows}


def test_superdiagnostic_labels_splits_and_rows(replica):
    rows, skipped = index_ptbxl(replica, task="superdiagnostic", rate=100)
    got = _by_id(rows)
    assert set(got) == {"1", "2", "3", "4", "5", "6", "7", "10"}
    assert got["1"]["labels"] == "NORM"
    assert got["3"]["labels"] == "MI"  # IMI and ASMI both map to MI
    assert got["6"]["labels"] == "CD"
    assert got["10"]["labels"] == "MI;STTC"  # NDT at likelihood 0.0 still counts
    for row in rows:
        assert all(c in row for c in REQUIRED_COLUMNS)
        assert row["task"] == "superdiagnostic" and row["sampling_rate"] == 100.0 and row["n_samples"] == 100
        assert row["path"] == str(replica.resolve() / _rel(int(row["record_id"]), 100))
        assert row["leads"].split(";")[:3] == ["I", "II", "III"]
        assert "age" not in row and "sex" not in row
    assert got["1"]["subject_id"] == got["2"]["subject_id"] == "P101"
    assert [got[i]["split"] for i in ("1", "6", "7", "10")] == ["train", "train", "val", "test"]
    assert got["7"]["strat_fold"] == 9 and got["10"]["site"] == "3"
    reasons = dict(skipped)
    # 8 has only a class-less diagnostic statement, 9 only rhythm, 11 only form statements.
    for ecg_id in (8, 9, 11):
        assert reasons[str(replica.resolve() / _rel(ecg_id, 100))] == "no superdiagnostic label"
    assert reasons[str(replica.resolve() / _rel(12, 100))] == "header file 00012_lr.hea not found"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("all", {"3": "ABQRS;ASMI;IMI;SR", "9": "SR", "8": "SR;XDIAG"}),
        ("diagnostic", {"3": "ASMI;IMI", "8": "XDIAG", "10": "IMI;NDT"}),
        ("subdiagnostic", {"3": "AMI;IMI", "10": "IMI;STTC", "6": "CLBBB"}),
        ("form", {"3": "ABQRS", "4": "NDT", "6": "PVC", "11": "ABQRS"}),
        ("rhythm", {"1": "SR", "4": "AFIB", "5": "STACH", "6": "PVC;SR", "9": "SR"}),
    ],
)
def test_each_task_follows_the_benchmark(replica, task, expected):
    rows, skipped = index_ptbxl(replica, task=task, rate=100)
    got = _by_id(rows)
    for ecg_id, labels in expected.items():
        assert got[ecg_id]["labels"] == labels
    no_label = {p for p, reason in skipped if reason == f"no {task} label"}
    no_files = {p for p, reason in skipped if reason.startswith("header file")}
    assert len(got) + len(no_label) + len(no_files) == len(RECORDS) == len(skipped) + len(rows)


def test_task_labels_counts_statements_by_flag():
    statements = {c: dict(zip(("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"), v))
                  for c, v in STATEMENTS.items()}
    codes = list(STATEMENTS)
    assert task_labels(codes, statements, "superdiagnostic") == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert len(task_labels(codes, statements, "diagnostic")) == 7
    assert task_labels(codes, statements, "rhythm") == ["AFIB", "PVC", "SR", "STACH"]
    assert task_labels(["UNKNOWN"], statements, "all") == ["UNKNOWN"]
    assert task_labels(["UNKNOWN"], statements, "diagnostic") == []
    assert PTBXL_TASKS == ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
    assert [fold_split(f) for f in (1, 8, 9, 10)] == ["train", "train", "val", "test"]


def test_rate_500_reads_the_hr_records(replica):
    rows, _ = index_ptbxl(replica, task="rhythm", rate=500)
    assert rows and all(r["sampling_rate"] == 500.0 and r["n_samples"] == 500 for r in rows)
    assert all(r["path"].endswith("_hr") for r in rows)


def test_bad_rows_are_skipped_with_reasons_and_the_batch_goes_on(tmp_path):
    records = RECORDS[:6] + [(13, 111.0, 2, "__import__('os').system('echo pwned')", 0.0),
                             (14, 112.0, 2, "{'NORM': 100.0}", 0.0)]
    root = _write_replica(tmp_path / "ptbxl", records=records)
    # 14: the 500 Hz header says 250 Hz; 5: its 100 Hz signal file is truncated.
    _write_record(root / "records500/00000", "00014_hr", 250, seconds=2.0)
    dat = root / "records100/00000/00005_lr.dat"
    dat.write_bytes(dat.read_bytes()[: 12 * 2 * 50])
    rows, skipped = index_ptbxl(root, task="superdiagnostic", rate=100)
    reasons = {p: r for p, r in skipped}
    assert {r["record_id"] for r in rows} == {"1", "2", "3", "4", "6", "14"}
    assert any("record 13 has an unparsable scp_codes" in r for r in reasons.values())
    five = reasons[str(root.resolve() / _rel(5, 100))]
    assert "header says 100 samples" in five and "holds 50 samples" in five
    rows500, skipped500 = index_ptbxl(root, task="superdiagnostic", rate=500)
    assert "14" not in {r["record_id"] for r in rows500}
    assert "header says 250 Hz" in dict(skipped500)[str(root.resolve() / _rel(14, 500))]


def test_patient_in_two_splits_raises(tmp_path):
    records = [(1, 101.0, 1, "{'NORM': 100.0}", 0.0), (2, 101.0, 10, "{'NORM': 100.0}", 0.0)]
    root = _write_replica(tmp_path / "ptbxl", records=records)
    with pytest.raises(LayoutError, match=r"ptbxl_database\.csv: records 1 and 2 of one patient"):
        index_ptbxl(root)


def test_bad_task_rate_and_missing_csv(tmp_path, replica):
    with pytest.raises(ValueError, match="unknown PTB-XL task"):
        index_ptbxl(replica, task="beats")
    with pytest.raises(ValueError, match="100 or 500"):
        index_ptbxl(replica, rate=250)
    with pytest.raises(LayoutError, match="scp_statements.csv: not found"):
        index_ptbxl(tmp_path)
    with pytest.raises(ValueError, match="no --rate"):
        index_layout("wfdb", replica, rate=500)


def test_cli_indexes_ptbxl_rhythm_at_500_hz(replica, tmp_path, capsys):
    before = {p.relative_to(replica).as_posix(): p.stat().st_mtime_ns for p in replica.rglob("*")}
    out = tmp_path / "manifest.csv"
    code = main(["data", "index", "--layout", "ptbxl", "--task", "rhythm", "--rate", "500",
                 "--root", str(replica), "--out", str(out)])
    assert code == 0
    rows = read_manifest(out)
    assert {r["task"] for r in rows} == {"rhythm"} and {r["sampling_rate"] for r in rows} == {"500.0"}
    assert _by_id(rows)["6"]["labels"] == "PVC;SR"
    err = capsys.readouterr().err
    assert "records500/00000/00010_hr: no rhythm label" in err
    assert before == {p.relative_to(replica).as_posix(): p.stat().st_mtime_ns for p in replica.rglob("*")}
    assert main(["data", "index", "--layout", "wfdb", "--task", "rhythm", "--root", str(replica),
                 "--out", str(tmp_path / "x.csv")]) == 2
