"""Reading real and replica WFDB records into EcgRecord."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

wfdb = pytest.importorskip("wfdb")

from medssl.ecg.leads import INDEPENDENT_LEADS, MissingLeadsError  # noqa: E402
from medssl.ecg.wfdb_reader import (  # noqa: E402
    EcgReadError,
    load_leads,
    parse_header_comments,
    read_wfdb_record,
)

DATA = Path(__file__).resolve().parents[3] / "shared/data/ecg"


def real(name: str) -> Path:
    if not (DATA / f"{name}.hea").is_file():
        pytest.skip(f"real ECG record {name} not available at {DATA}")
    return DATA / name


def test_ptb_lower_case_leads_and_frank_leads_ignored():
    rec = read_wfdb_record(real("s0010_re"))
    assert rec.lead_names == ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    assert rec.sampling_rate == 1000.0
    assert rec.signal.shape == (12, 38400) and rec.signal.dtype == np.float32
    assert rec.metadata["ignored_channels"] == ["vx", "vy", "vz"]
    # mV: ECG amplitudes are a few mV at most, and Einthoven's law holds (III = II - I).
    assert 0.2 < np.abs(rec.signal).max() < 20
    np.testing.assert_allclose(rec.signal[2], rec.signal[1] - rec.signal[0], atol=0.01)
    assert rec.metadata["age"] == "81" and rec.metadata["sex"] == "female"
    assert "age: 81" in rec.metadata["comments"]
    assert rec.record_id == "s0010_re" and rec.path == str(DATA / "s0010_re")


def test_path_with_extension_reads_the_same_record():
    a = read_wfdb_record(real("s0010_re"))
    b = read_wfdb_record(str(real("s0010_re")) + ".hea")
    np.testing.assert_array_equal(a.signal, b.signal)


def test_mitbih_mlii_is_lead_ii_and_eight_leads_are_missing():
    rec = read_wfdb_record(real("100"))
    assert rec.lead_names == ("II", "V5") and rec.sampling_rate == 360.0
    assert rec.signal.shape == (2, 650000)
    np.testing.assert_array_equal(load_leads(rec, ["V5", "II"]), rec.signal[::-1])
    with pytest.raises(MissingLeadsError) as err:
        load_leads(rec, INDEPENDENT_LEADS)
    msg = str(err.value)
    assert "V1" in msg and str(DATA / "100") in msg
    assert set(err.value.missing) == {"I", "V1", "V2", "V3", "V4", "V6"}


def test_mat_signal_file_reads_ii_and_ignores_pleth():
    rec = read_wfdb_record(real("a103l"))
    assert rec.lead_names == ("II",) and rec.sampling_rate == 250.0
    assert rec.signal.shape == (1, 82500)
    assert "PLETH" in rec.metadata["ignored_channels"]
    assert rec.metadata["comments"] == ["Asystole", "False alarm"]


def test_record_without_standard_leads_is_an_error():
    with pytest.raises(EcgReadError, match="no standard ECG lead among ECG 1, ECG 2") as err:
        read_wfdb_record(real("test01_00s"))
    assert str(err.value).startswith(str(DATA / "test01_00s"))
    assert "25" not in str(err.value)  # the age in its header comments is not leaked


def _write(folder: Path, name: str, sig: np.ndarray, names, units=None, comments=None) -> Path:
    wfdb.wrsamp(
        name, fs=500, units=units or ["mV"] * len(names), sig_name=list(names), p_signal=sig,
        fmt=["16"] * len(names), comments=comments or [], write_dir=str(folder),
    )
    return folder / name


def _sig(n_ch: int = 3, n: int = 1000) -> np.ndarray:
    t = np.arange(n) / 500
    return np.stack([np.sin(2 * np.pi * (k + 1) * t) * (k + 1) * 0.5 for k in range(n_ch)], axis=1)


def test_replica_units_comments_and_non_ecg_channels(tmp_path):
    sig = _sig(3)
    sig[:, 1] *= 1000  # this channel is stored in uV
    base = _write(tmp_path, "rep", sig, ["I", "ii", "PLETH"], units=["mV", "uV", "NU"],
                  comments=["Age: 63", "Sex: Male", "Dx: 426783006,164889003", "Rx: Unknown"])
    rec = read_wfdb_record(base)
    assert rec.lead_names == ("I", "II")
    assert rec.metadata["ignored_channels"] == ["PLETH"]
    np.testing.assert_allclose(rec.signal[1], _sig(3)[:, 1], atol=2e-3)  # uV -> mV
    assert rec.metadata["age"] == "63" and rec.metadata["sex"] == "Male"
    assert rec.metadata["dx_codes"] == ["426783006", "164889003"]
    assert rec.metadata["comments"][0] == "Age: 63"


def test_volts_are_converted_to_millivolts(tmp_path):
    sig = _sig(1) / 1000.0
    rec = read_wfdb_record(_write(tmp_path, "volts", sig, ["V1"], units=["V"]))
    np.testing.assert_allclose(rec.signal[0], _sig(1)[:, 0], atol=1e-3)


def test_missing_header_and_signal_file(tmp_path):
    with pytest.raises(EcgReadError, match="header file nothere.hea not found") as err:
        read_wfdb_record(tmp_path / "nothere")
    assert str(err.value).startswith(str(tmp_path / "nothere"))
    base = _write(tmp_path, "nodat", _sig(2), ["I", "II"])
    (tmp_path / "nodat.dat").unlink()
    with pytest.raises(EcgReadError, match="signal file nodat.dat not found") as err:
        read_wfdb_record(base)
    assert str(err.value).startswith(str(base))


def test_corrupted_header(tmp_path):
    base = _write(tmp_path, "bad", _sig(2), ["I", "II"], comments=["Age: 77"])
    text = (tmp_path / "bad.hea").read_text().splitlines()
    (tmp_path / "bad.hea").write_text("\n".join([text[0], "garbage"] + text[3:]) + "\n")
    with pytest.raises(EcgReadError, match="does not parse") as err:
        read_wfdb_record(base)
    # the header's contents (the age) stay out of the message; the path itself may hold any digits
    assert str(err.value).startswith(str(base)) and "77" not in str(err.value)[len(str(base)):]
    (tmp_path / "bad.hea").write_text("bad x y z\n")
    with pytest.raises(EcgReadError, match="does not parse"):
        read_wfdb_record(base)


def test_nan_samples_name_the_lead_and_count(tmp_path):
    sig = _sig(2)
    sig[[5, 6, 7], 1] = np.nan
    base = _write(tmp_path, "withnan", sig, ["I", "II"], comments=["Sex: Female"])
    with pytest.raises(EcgReadError, match="II has 3 NaN sample") as err:
        read_wfdb_record(base)
    assert str(err.value).startswith(str(base)) and "Female" not in str(err.value)


def test_parse_header_comment_styles():
    md = parse_header_comments(["#Age: 63", "<age>: 25  <sex>: M  <diagnoses>: (none)", "69 M 1085", "ignored_channels: x"])
    assert md["age"] == "63"  # first occurrence wins
    assert md["sex"] == "M" and md["diagnoses"] == "(none)"
    assert "ignored_channels" not in md and md["comment_ignored_channels"] == "x"
