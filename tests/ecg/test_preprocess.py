"""ECG preprocessing functions, the EcgPreprocess pipeline and NeuroKit2 features."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medssl.ecg.preprocess import (
    EcgPreprocess,
    bandpass,
    fix_length,
    neurokit_features,
    notch,
    resample,
    standardize,
    windows,
)
from medssl.ecg.leads import STANDARD_LEADS
from medssl.ecg.record import EcgRecord

FS = 500.0
DATA = Path(__file__).resolve().parents[3] / "shared/data/ecg"


def sine(freq: float, fs: float = FS, seconds: float = 10.0, amp: float = 1.0) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return amp * np.sin(2 * np.pi * freq * t)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def middle(x: np.ndarray) -> np.ndarray:  # away from filter edge effects
    n = x.shape[-1]
    return x[..., n // 4: 3 * n // 4]


def test_bandpass_keeps_10hz_and_removes_drift_and_mains():
    x = np.stack([sine(10), sine(0.1), sine(50)])
    y = bandpass(x, FS, 0.67, 40.0)
    assert y.shape == x.shape
    assert abs(rms(middle(y[0])) / rms(middle(x[0])) - 1) < 0.02  # pass-band: within 2 %
    assert rms(middle(y[1])) / rms(middle(x[1])) < 0.01  # 0.1 Hz drift: > 40 dB down
    # 50 Hz is only 1.25x the 40 Hz cut-off: order-4 Butterworth run twice gives ~18 dB
    assert rms(middle(y[2])) / rms(middle(x[2])) < 0.15
    # ...and with the mains notch after it, 50 Hz is gone while 10 Hz stays
    z = notch(y, FS, 50.0)
    assert rms(middle(z[2])) / rms(middle(x[2])) < 0.01
    assert abs(rms(middle(z[0])) / rms(middle(x[0])) - 1) < 0.02
    # zero phase: the 10 Hz sine is not shifted
    assert np.corrcoef(middle(y[0]), middle(x[0]))[0, 1] > 0.999


def test_bandpass_clips_high_cutoff_below_nyquist_and_is_one_sided_with_none():
    x = sine(10, fs=60)[None]
    y = bandpass(x, 60.0, 0.67, 40.0)  # 40 Hz > Nyquist 30 Hz: clipped, not an error
    assert np.all(np.isfinite(y))
    drift = sine(0.1)[None]
    assert rms(middle(bandpass(drift, FS, None, 40.0))) > 0.9 * rms(middle(drift))
    np.testing.assert_array_equal(bandpass(drift, FS, None, None), drift)


def test_notch_removes_mains_and_keeps_ecg_band():
    x = np.stack([sine(50), sine(10), sine(60)])
    y = notch(x, FS, 50.0)
    assert rms(middle(y[0])) / rms(middle(x[0])) < 0.01
    assert abs(rms(middle(y[1])) / rms(middle(x[1])) - 1) < 0.01
    assert abs(rms(middle(y[2])) / rms(middle(x[2])) - 1) < 0.05
    assert rms(middle(notch(x[2:], FS, 60.0))) < 0.01
    np.testing.assert_array_equal(notch(x, 80.0, 50.0), x)  # 50 Hz above Nyquist: skipped


def test_resample_500_to_250_keeps_frequency():
    x = sine(5)[None]
    y = resample(x, 500, 250)
    assert y.shape == (1, 2500)
    spectrum = np.abs(np.fft.rfft(y[0]))
    freqs = np.fft.rfftfreq(y.shape[1], d=1 / 250)
    assert freqs[np.argmax(spectrum)] == pytest.approx(5.0, abs=0.1)
    np.testing.assert_allclose(middle(y[0]), middle(sine(5, fs=250)), atol=1e-2)
    assert resample(x.astype(np.float32), 360, 500).shape == (1, 6945)
    assert resample(x.astype(np.float32), 360, 500).dtype == np.float32


def test_standardize_per_lead_and_flat_lead_gives_zeros():
    x = np.stack([sine(3, amp=4.0) + 2.0, np.full(5000, 7.0)])
    y = standardize(x)
    assert not np.isnan(y).any()
    assert y[0].mean() == pytest.approx(0, abs=1e-9) and y[0].std() == pytest.approx(1, abs=1e-9)
    np.testing.assert_array_equal(y[1], 0.0)


def test_fix_length_pads_and_crops():
    x = np.arange(10, dtype=float)[None]
    np.testing.assert_array_equal(fix_length(x, 4), [[3, 4, 5, 6]])
    np.testing.assert_array_equal(fix_length(x, 4, mode="start"), [[0, 1, 2, 3]])
    padded = fix_length(x, 14)
    np.testing.assert_array_equal(padded, [[0, 0] + list(range(10)) + [0, 0]])
    np.testing.assert_array_equal(fix_length(x, 12, mode="start")[0, 10:], [0, 0])
    with pytest.raises(ValueError):
        fix_length(x, 4, mode="end")


def test_windows():
    x = np.arange(20, dtype=float).reshape(2, 10)
    w = windows(x, 4, stride=3)
    assert w.shape == (3, 2, 4)
    np.testing.assert_array_equal(w[1], x[:, 3:7])
    assert windows(x, 5).shape == (2, 2, 5)
    short = windows(x, 16)
    assert short.shape == (1, 2, 16) and np.all(short[0, :, 10:] == 0)


def _record(fs=1000.0, seconds=12.0):
    t = np.arange(int(fs * seconds)) / fs
    lead_i = np.sin(2 * np.pi * 10 * t) + 0.5 * np.sin(2 * np.pi * 0.1 * t)
    lead_ii = 2 * np.sin(2 * np.pi * 7 * t)
    sig = np.stack([lead_i, lead_ii]).astype(np.float32)
    return EcgRecord(sig, ("I", "II"), fs, "r1", "/data/r1")


def test_pipeline_output_shape_order_and_derived_leads():
    pre = EcgPreprocess(leads=("II", "I", "III"), sampling_rate=250, num_samples=2000, notch_hz=50)
    y = pre(_record())
    assert y.shape == (3, 2000) and y.dtype == np.float32
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=1), 1, atol=1e-3)
    spectrum = np.abs(np.fft.rfft(y[1]))
    assert np.fft.rfftfreq(2000, 1 / 250)[np.argmax(spectrum)] == pytest.approx(10, abs=0.2)
    raw = EcgPreprocess(leads="8", standardize=False, bandpass_low=None, bandpass_high=None)
    with pytest.raises(ValueError, match="/data/r1: missing lead"):
        raw(_record())


def test_pipeline_settings_cache_key():
    a = EcgPreprocess(leads="12", notch_hz=50)
    b = EcgPreprocess(leads=tuple(a.leads), notch_hz=50.0)
    assert a == b and a.cache_key() == b.cache_key() and len(a.cache_key()) == 16
    assert a.cache_key() != EcgPreprocess(leads="12", notch_hz=60).cache_key()
    assert a.cache_key() != EcgPreprocess(leads="8", notch_hz=50).cache_key()
    assert EcgPreprocess.from_dict(a.to_dict()) == a
    assert a.to_dict()["leads"][0] == "I"
    with pytest.raises(ValueError):
        EcgPreprocess(leads=("I", "foo"))


def test_pipeline_on_real_record():
    if not (DATA / "s0010_re.hea").is_file():
        pytest.skip("real ECG records not available")
    from medssl.ecg.wfdb_reader import read_wfdb_record

    y = EcgPreprocess(sampling_rate=500, num_samples=5000)(read_wfdb_record(DATA / "s0010_re"))
    assert y.shape == (12, 5000) and np.isfinite(y).all()


def test_neurokit_features_on_synthetic_ecg():
    nk = pytest.importorskip("neurokit2")
    ecg = nk.ecg_simulate(duration=10, sampling_rate=250, heart_rate=70, random_state=0)
    f = neurokit_features(ecg, 250)
    assert abs(f["heart_rate_bpm"] - 70) < 5
    assert f["n_beats"] >= 9
    assert math.isnan(f["qrs_duration_ms"]) or 20 < f["qrs_duration_ms"] < 250


def test_neurokit_features_never_raise_on_bad_signals():
    pytest.importorskip("neurokit2")
    rng = np.random.default_rng(0)
    for bad in (np.zeros(2500), np.full(2500, np.nan), np.ones(10), rng.normal(size=2500)):
        f = neurokit_features(bad, 250)
        assert set(f) >= {"heart_rate_bpm", "qrs_duration_ms"}
    assert math.isnan(neurokit_features(np.zeros(2500), 250)["heart_rate_bpm"])


def test_windows_cut_a_long_record_and_standardise_each_window():

    fs = 100.0
    t = np.arange(int(25 * fs)) / fs
    sig = np.stack([np.sin(2 * np.pi * 5 * t) * (1 + i) for i in range(12)]).astype(np.float32)
    rec = EcgRecord(sig, STANDARD_LEADS, fs, "r", "/data/r")
    prep = EcgPreprocess(sampling_rate=fs, num_samples=1000, window_stride=500)
    w = prep.windows(rec)
    assert w.shape == (4, 12, 1000)  # starts 0, 5, 10, 15 s
    np.testing.assert_allclose(w.std(-1), 1.0, atol=1e-3)
    assert prep(rec).shape == (12, 1000)
    with pytest.raises(ValueError, match=r"/data/r: 25.00 s is shorter than one 30.00 s window"):
        EcgPreprocess(sampling_rate=fs, num_samples=3000, window_stride=3000).windows(rec)


def test_a_flat_lead_is_an_error_naming_record_and_lead():

    sig = np.random.default_rng(0).normal(size=(12, 1000)).astype(np.float32)
    sig[7] = 0.25  # V2 disconnected
    rec = EcgRecord(sig, STANDARD_LEADS, 100.0, "r", "/data/r")
    with pytest.raises(ValueError, match=r"/data/r: flat lead\(s\) V2"):
        EcgPreprocess(sampling_rate=100.0, num_samples=1000)(rec)
    assert EcgPreprocess(sampling_rate=100.0, num_samples=1000, reject_flat=False)(rec)[7].std() == 0
