"""PhysioNet/CinC 2020-2021 layout: SNOMED-CT labels, sources, splits, bad headers, on a replica."""

from __future__ import annotations

import csv
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

wfdb = pytest.importorskip("wfdb")
scipy_io = pytest.importorskip("scipy.io")

from medssl.data.layouts import index_layout  # noqa: E402
from medssl.ecg.layouts import subject_split  # noqa: E402
from medssl.ecg.physionet2021 import index_physionet2021, record_source, snomed_table  # noqa: E402
from medssl.ecg.readers import read_ecg_record  # noqa: E402

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _write(folder: Path, name: str, dx: str | None, fs: int = 500, seconds: float = 1.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * (k + 1) * t) for k in range(12)], axis=1)
    comments = ["Age: 53", "Sex: Male"] + ([f"Dx: {dx}"] if dx is not None else []) + ["Rx: Unknown", "Hx: Unknown"]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=sig, fmt=["16"] * 12,
                write_dir=str(folder), comments=comments)


def _write_mat(folder: Path, name: str, dx: str, fs: int = 500, n: int = 500) -> np.ndarray:
    """A record stored as the Challenge stores it: MATLAB v4 `val` (12, n) int16 + a "16+24" header."""
    folder.mkdir(parents=True, exist_ok=True)
    val = (np.sin(np.arange(n) / 20)[None, :] * np.arange(1, 13)[:, None] * 100).astype(np.int16)
    scipy_io.savemat(str(folder / f"{name}.mat"), {"val": val}, format="4")
    lines = [f"{name} 12 {fs} {n}"]
    for i, lead in enumerate(LEADS):
        checksum = int(val[i].astype(np.int64).sum()) % 65536
        checksum -= 65536 if checksum >= 32768 else 0
        lines.append(f"{name}.mat 16+24 1000/mV 16 0 {val[i, 0]} {checksum} 0 {lead}")
    lines += ["#Age: 61", "#Sex: Female", f"#Dx: {dx}", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return val


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cinc2021")
    tr = root / "training"
    _write(tr / "cpsc_2018/g1", "A0001", "426783006")
    _write(tr / "cpsc_2018/g1", "A0002", "164889003,59118001")
    _write(tr / "cpsc_2018/g1", "A0003", "270492004,999999999")  # one code not in the table: kept
    _write_mat(tr / "cpsc_2018_extra/g1", "Q0001", "713427006,426177001")
    _write(tr / "georgia/g1", "E00001", "164934002,59931005,426783006")
    _write(tr / "georgia/g1", "E00002", "111111111")  # only unknown codes: skipped
    _write(tr / "georgia/g2", "E00003", None)  # no #Dx line: skipped
    _write(tr / "chapman_shaoxing/g1", "JS00001", "426177001", fs=500)
    _write(tr / "ningbo/g1", "JS10650", "164890007,284470004")
    _write(tr / "ningbo/g1", "JS10651", "427084000")
    _write(root, "HR00001", "426783006,39732003", fs=500)  # no source folder: from the prefix
    _write(tr / "st_petersburg_incart/g1", "I0001", "427172004,17338001", fs=257)
    # Header says 1000 samples at 500 Hz (2 s) but the file holds 500 (data written at 250 Hz).
    _write(tr / "georgia/g2", "E00004", "426783006", fs=500, seconds=2.0)
    dat = tr / "georgia/g2/E00004.dat"
    dat.write_bytes(dat.read_bytes()[: 12 * 2 * 500])
    return root


def test_labels_sources_and_splits(replica, caplog):
    with caplog.at_level(logging.WARNING, logger="medssl.ecg.physionet2021"):
        rows, skipped = index_physionet2021(replica)
    got = {r["record_id"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(got) == {"A0001", "A0002", "A0003", "Q0001", "E00001", "JS00001", "JS10650", "JS10651", "HR00001",
                        "I0001"}
    assert got["A0001"]["labels"] == "NSR"
    assert got["A0002"]["labels"] == "AF;RBBB"
    assert got["Q0001"]["labels"] == "CRBBB;SB"  # labels keep each code's own abbreviation
    assert got["E00001"]["labels"] == "NSR;TAb;TInv"
    assert got["JS10650"]["labels"] == "AFL;PAC"
    assert got["I0001"]["labels"] == "PVC;VPB" and got["I0001"]["sampling_rate"] == 257.0
    assert got["A0003"]["labels"] == "IAVB" and got["A0003"]["unknown_dx"] == "999999999"
    assert got["A0003"]["dx"] == "270492004;999999999"
    assert "A0003" in caplog.text and "999999999" in caplog.text
    assert "Age" not in caplog.text and "Male" not in caplog.text
    sites = {k: r["site"] for k, r in got.items()}
    assert sites["A0001"] == "cpsc_2018" and sites["Q0001"] == "cpsc_2018_extra" and sites["E00001"] == "georgia"
    assert sites["JS00001"] == "chapman_shaoxing" and sites["JS10650"] == "ningbo" and sites["HR00001"] == "ptb-xl"
    for row in rows:
        assert row["subject_id"] == row["record_id"]
        assert row["split"] == subject_split(row["record_id"])
        assert row["path"] == str(replica.resolve() / row["record_id"])
        assert "age" not in row and "sex" not in row
    assert got["A0001"]["record_id"] == "training/cpsc_2018/g1/A0001"
    reasons = {Path(p).name: r for p, r in skipped}
    assert reasons["E00002"] == "no Dx code in the SNOMED-CT table (111111111)"
    assert reasons["E00003"] == "no #Dx line (SNOMED-CT codes) in the header"
    assert reasons["E00004"] == "header says 1000 samples (2 s at 500 Hz) but E00004.dat holds 500 samples per channel"
    assert len(rows) + len(skipped) == 13


def test_mat_record_reads_through_the_dispatcher(replica):
    rec = read_ecg_record(replica / "training/cpsc_2018_extra/g1/Q0001")
    assert rec.signal.shape == (12, 500) and rec.sampling_rate == 500.0
    assert rec.lead_names == tuple(LEADS)
    expected = (np.sin(np.arange(500) / 20) * 3 * 100).astype(np.int16) / 1000.0
    np.testing.assert_allclose(rec.signal[2], expected, atol=1e-6)


def test_record_source_rules():
    assert record_source("training/georgia/g3/E01234") == "georgia"
    assert record_source("georgia/E01234") == "georgia"
    assert record_source("g1/A0001") == "cpsc_2018"  # indexed from inside a source folder
    assert record_source("HR12345") == "ptb-xl" and record_source("S0001") == "ptb"
    assert record_source("JS00001") == "chapman_shaoxing_ningbo"
    assert record_source("rec_001") == ""


def test_snomed_table_ships_with_the_package():
    text = resources.files("medssl.ecg").joinpath("data", "snomed_ct_ecg.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert {"snomed_code", "abbreviation", "description"} <= set(rows[0])
    table = snomed_table()
    assert sum(v["scored"] == "1" for v in table.values()) == 30
    assert table["426783006"]["abbreviation"] == "NSR" and table["164889003"]["abbreviation"] == "AF"
    assert table["713427006"]["scored_as"] == "59118001"
    abbreviations = [v["abbreviation"] for v in table.values()]
    assert len(set(abbreviations)) == len(abbreviations) and not any(";" in a for a in abbreviations)


def test_layout_is_registered_and_rejects_tasks(replica):
    rows, _ = index_layout("physionet2021", replica)
    assert len(rows) == 10
    with pytest.raises(ValueError, match="no tasks"):
        index_layout("physionet2021", replica, task="rhythm")
