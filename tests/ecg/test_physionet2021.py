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
from medssl.ecg.physionet2021 import (  # noqa: E402
    index_physionet2021,
    is_lead_set_folder,
    record_source,
    snomed_table,
)
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
        assert row["subject_id"] == row["record_id"].rsplit("/", 1)[-1]  # the recording's name
        assert row["split"] == subject_split(row["subject_id"])
        assert row["n_leads"] == 12 and row["header_repairs"] == ""
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
    assert record_source("6_leads/georgia/E01234") == "georgia"  # lead-set folders are not sources
    assert record_source("twelve_leads/E01234") == "georgia"
    assert all(is_lead_set_folder(f) for f in ("12_leads", "2-lead", "six_leads", "training_data_3_leads"))
    assert not any(is_lead_set_folder(f) for f in ("georgia", "g1", "cpsc_2018", "ptb-xl"))


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


GEORGIA_RECORD_LINE = "E00271.mat 12 500 500 05-May-2020 14:50:55"  # as the Georgia source writes it


def _georgia(folder: Path, name: str = "E00271", leads: list[str] = LEADS) -> np.ndarray:
    """A Challenge .mat record whose header has the Georgia record line: extension on the name,
    date before the time, month as a name (wfdb raises HeaderSyntaxError or misreads the time)."""
    val = _write_mat(folder, name, "426783006,164889003")[[LEADS.index(lead) for lead in leads]]
    if len(leads) < 12:
        scipy_io.savemat(str(folder / f"{name}.mat"), {"val": val}, format="4")
    text = (folder / f"{name}.hea").read_text().splitlines()
    signal_lines = [line.replace(" 12 500 500", "") for line in text[1:13]]
    kept = [line for line in signal_lines if line.rsplit(" ", 1)[-1] in leads]
    record_line = GEORGIA_RECORD_LINE.replace("E00271", name).replace(" 12 ", f" {len(leads)} ")
    (folder / f"{name}.hea").write_text("\n".join([record_line, *kept, *text[13:]]) + "\n")
    return val


def test_georgia_record_line_is_read_not_skipped(tmp_path):
    from medssl.ecg.wfdb_reader import read_header, read_wfdb_record, repair_record_line

    val = _georgia(tmp_path)
    with pytest.raises(Exception, match="record line"):
        wfdb.rdheader(str(tmp_path / "E00271"))  # what wfdb-python does with it
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fixed, repairs = repair_record_line(GEORGIA_RECORD_LINE, "E00271")
    assert fixed == "E00271 12 500 500 14:50:55 05/05/2020"
    assert "file extension dropped from the record name" in repairs and "time moved before the date" in repairs
    header, repairs = read_header(tmp_path / "E00271.hea")
    assert header.fs == 500 and header.sig_len == 500 and header.n_sig == 12 and repairs
    assert str(header.base_time) == "14:50:55" and str(header.base_date) == "2020-05-05"
    rec = read_wfdb_record(tmp_path / "E00271")
    assert rec.signal.shape == (12, 500) and rec.lead_names == tuple(LEADS)
    np.testing.assert_allclose(rec.signal, val / 1000.0, atol=1e-6)
    assert rec.metadata["header_repairs"] == repairs and rec.metadata["base_date"] == "2020-05-05"
    assert not any("2020" in r or "May" in r for r in repairs)  # repairs never quote the date
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # the input folder is untouched

    rows, skipped = index_physionet2021(tmp_path)
    assert not skipped and [r["subject_id"] for r in rows] == ["E00271"]
    assert "time moved before the date" in rows[0]["header_repairs"]


def test_record_line_variants():
    from medssl.ecg.wfdb_reader import repair_record_line

    assert repair_record_line("100 2 360 650000") == ("100 2 360 650000", [])
    assert repair_record_line("100 2 360 650000 0:0:0 01/01/2020")[1] == []
    assert repair_record_line("A0001.mat 12 500 7500 05-Feb-2020 11:39:16")[0] == "A0001 12 500 7500 11:39:16 05/02/2020"
    assert repair_record_line("r.dat 12 500Hz 5000 2020-05-31")[0] == "r 12 500 5000 00:00:00 31/05/2020"
    assert repair_record_line("r 12 500 5000 10:00:00 not-a-date")[0] == "r 12 500 5000 10:00:00"
    with pytest.raises(ValueError, match="number of signals"):
        repair_record_line("r twelve 500")


def test_reduced_lead_copies_are_one_subject(tmp_path):
    sets = {"12_leads": LEADS, "6_leads": LEADS[:6], "4_leads": ["I", "II", "III", "V2"],
            "3_leads": ["I", "II", "V2"], "2_leads": ["I", "II"]}
    for folder, leads in sets.items():
        _georgia(tmp_path / folder / "georgia", "E00271", leads)
        _write_mat(tmp_path / folder / "georgia", "E00272", "426783006")
        if folder != "12_leads":  # the plain record's reduced copy: keep its leads' lines only
            hea = tmp_path / folder / "georgia" / "E00272.hea"
            lines = hea.read_text().splitlines()
            kept = [line for line in lines[1:13] if line.rsplit(" ", 1)[-1] in leads]
            val = scipy_io.loadmat(str(hea.with_suffix(".mat")))["val"][[LEADS.index(x) for x in leads]]
            scipy_io.savemat(str(hea.with_suffix(".mat")), {"val": val}, format="4")
            hea.write_text("\n".join([f"E00272 {len(leads)} 500 500", *kept, *lines[13:]]) + "\n")
    rows, skipped = index_physionet2021(tmp_path)
    assert skipped == []
    assert len(rows) == 10
    for name in ("E00271", "E00272"):
        mine = [r for r in rows if r["subject_id"] == name]
        assert len(mine) == 5 and len({r["split"] for r in mine}) == 1  # one subject, one split
        assert {r["site"] for r in mine} == {"georgia"}
        by_set = {r["record_id"].split("/")[0]: r for r in mine}
        for folder, leads in sets.items():
            assert by_set[folder]["leads"] == ";".join(leads) and by_set[folder]["n_leads"] == len(leads)
    rec = read_ecg_record(tmp_path / "3_leads/georgia/E00271")
    assert rec.lead_names == ("I", "II", "V2") and rec.signal.shape == (3, 500)
