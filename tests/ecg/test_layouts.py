"""Indexing a folder of WFDB records into manifest rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

wfdb = pytest.importorskip("wfdb")

from medssl.data.manifest import REQUIRED_COLUMNS  # noqa: E402
from medssl.ecg.layouts import LayoutError, index_wfdb_folder, subject_split  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared/data/ecg"


def _write(folder: Path, name: str, names=("I", "II", "V1"), fs=500, n=500) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * (k + 1) * t) for k in range(len(names))], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=sig,
                fmt=["16"] * len(names), write_dir=str(folder))


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture()
def cohort(tmp_path):
    root = tmp_path / "cohort"
    rows = []
    for i in range(12):
        site = "site_a" if i < 6 else "site_b"
        name = f"rec_{i:03d}"
        _write(root / site, name)
        rows.append({"record": f"{site}/{name}", "labels": "AF;NORM" if i % 3 == 0 else ("" if i % 3 == 1 else "MI"),
                     "subject_id": f"p{i // 3}", "age_group": str(i % 2)})
    _write(root / "site_b", "extra_on_disk")  # absent from the CSV
    _write(root / "site_a", "no_leads", names=("PLETH", "ABP"))
    rows.append({"record": "site_a/no_leads", "labels": "", "subject_id": "p9", "age_group": "0"})
    rows.append({"record": "site_c/ghost", "labels": "MI", "subject_id": "p8", "age_group": "1"})
    (root / "site_a" / "broken.hea").write_text("broken x y z\n")
    rows.append({"record": "site_a/broken", "labels": "", "subject_id": "p7", "age_group": "1"})
    csv_path = tmp_path / "labels.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["record", "labels", "subject_id", "age_group"])
        w.writeheader()
        w.writerows(rows)
    return root, csv_path


def test_index_with_labels_csv(cohort):
    root, csv_path = cohort
    before = _listing(root)
    rows, skipped = index_wfdb_folder(root, csv_path, split_seed=3)
    assert _listing(root) == before  # nothing written, nothing touched
    assert len(rows) == 12
    row = next(r for r in rows if r["record_id"] == "site_a/rec_000")
    assert set(REQUIRED_COLUMNS) <= set(row)
    assert row["path"] == str(root.resolve() / "site_a" / "rec_000")
    assert Path(row["path"] + ".hea").is_file()
    assert row["subject_id"] == "p0" and row["labels"] == "AF;NORM" and row["site"] == "site_a"
    assert row["sampling_rate"] == 500.0 and row["n_samples"] == 500 and row["leads"] == "I;II;V1"
    assert row["age_group"] == "0"  # extra CSV column kept
    reasons = {Path(p).relative_to(root.resolve()).as_posix(): r for p, r in skipped}
    assert set(reasons) == {"site_b/extra_on_disk", "site_a/no_leads", "site_c/ghost", "site_a/broken"}
    assert "not listed" in reasons["site_b/extra_on_disk"]
    assert "no standard ECG lead among PLETH, ABP" in reasons["site_a/no_leads"]
    assert "not found on disk" in reasons["site_c/ghost"]
    assert "does not parse" in reasons["site_a/broken"]


def test_splits_are_by_subject_and_deterministic(cohort):
    root, csv_path = cohort
    rows, _ = index_wfdb_folder(root, csv_path, split_seed=3)
    by_subject: dict[str, set[str]] = {}
    for r in rows:
        by_subject.setdefault(r["subject_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_subject.values())
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    for r in rows:
        assert r["split"] == subject_split(r["subject_id"], 3)
    again, _ = index_wfdb_folder(root, csv_path, split_seed=3)
    assert again == rows
    # many subjects: fractions are roughly respected and the seed matters
    splits = [subject_split(f"s{i}", 0) for i in range(3000)]
    assert 0.66 < splits.count("train") / 3000 < 0.74
    assert splits != [subject_split(f"s{i}", 1) for i in range(3000)]


def test_split_column_is_used_and_leaky_csv_is_refused(tmp_path):
    root = tmp_path / "r"
    for name in ("a", "b", "c"):
        _write(root, name)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("record,labels,subject_id,split\na,,s1,test\nb,,s1,\nc,X,s2,val\n")
    rows, skipped = index_wfdb_folder(root, csv_path)
    assert skipped == []
    assert {r["record_id"]: r["split"] for r in rows} == {"a": "test", "b": "test", "c": "val"}
    assert all(r["site"] == "" for r in rows)
    csv_path.write_text("record,labels,subject_id,split\na,,s1,test\nb,,s1,train\nc,X,s2,val\n")
    with pytest.raises(LayoutError, match="both"):
        index_wfdb_folder(root, csv_path)
    csv_path.write_text("record,labels,split\na,,holdout\n")
    with pytest.raises(LayoutError, match=str(csv_path)):
        index_wfdb_folder(root, csv_path)
    csv_path.write_text("rec,labels\na,\n")
    with pytest.raises(LayoutError, match="lacks column"):
        index_wfdb_folder(root, csv_path)


def test_index_without_csv_on_real_records():
    if not (DATA / "100.hea").is_file():
        pytest.skip("real ECG records not available")
    before = _listing(DATA)
    rows, skipped = index_wfdb_folder(DATA)
    assert _listing(DATA) == before
    by_id = {r["record_id"]: r for r in rows}
    assert set(by_id) == {"100", "a103l", "s0010_re"}
    assert by_id["100"]["leads"] == "II;V5" and by_id["100"]["sampling_rate"] == 360.0
    assert by_id["s0010_re"]["n_samples"] == 38400
    assert all(r["subject_id"] == r["record_id"] and r["labels"] == "" for r in rows)
    assert [Path(p).name for p, _ in skipped] == ["test01_00s"]


def test_missing_signal_file_is_skipped(tmp_path):
    _write(tmp_path, "ok")
    _write(tmp_path, "nodat")
    os.remove(tmp_path / "nodat.dat")
    rows, skipped = index_wfdb_folder(tmp_path)
    assert [r["record_id"] for r in rows] == ["ok"]
    assert skipped == [(str(tmp_path.resolve() / "nodat"), "signal file nodat.dat not found")]
