"""Tests of medssl.ecg.synthetic: shapes, determinism, visible labels, sites, WFDB output."""

from __future__ import annotations

import csv
import re
from dataclasses import replace

import numpy as np
import pytest
from scipy.signal import find_peaks

from medssl.ecg.leads import STANDARD_LEADS
from medssl.ecg.synthetic import (
    CONDITIONS,
    DEFAULT_SITES,
    SiteProfile,
    SyntheticCohort,
    generate_cohort,
    generate_signals,
    sample_labels,
    sample_subject_traits,
    write_wfdb_cohort,
)

SITE_A, SITE_B = DEFAULT_SITES
LEAD = {n: i for i, n in enumerate(STANDARD_LEADS)}


def _only(cond: str, n: int) -> np.ndarray:
    lab = np.zeros((n, len(CONDITIONS)), dtype=bool)
    lab[:, CONDITIONS.index(cond)] = True
    return lab


def _gen(cond: str, n: int = 40, site: SiteProfile = SITE_A, seed: int = 0, **trait_changes):
    rng = np.random.default_rng(seed)
    traits = sample_subject_traits(n, site, rng, _only(cond, n))
    if trait_changes:
        traits = replace(traits, **{k: np.full(n, v, dtype=np.int8) for k, v in trait_changes.items()})
    x, _ = generate_signals(n, site, rng, subject_traits=traits)
    return x


# --- ground-truth-free measurements on the signal ---------------------------------------

def _r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """QRS locations (samples) of one (12, T) record from the smoothed spatial slope energy."""
    d = np.diff(x[[0, 1, 6, 7, 8, 9, 10, 11]], axis=1)
    energy = (d**2).sum(axis=0)
    k = max(1, int(0.04 * fs))
    energy = np.convolve(energy, np.ones(k) / k, mode="same")
    peaks, _ = find_peaks(energy, distance=int(0.25 * fs), height=0.25 * np.percentile(energy, 99))
    return peaks


def _median_beat(x: np.ndarray, fs: float, pre_s: float = 0.3, post_s: float = 0.5) -> np.ndarray:
    """(12, 41) median beat on a fixed 20 ms grid from -pre_s to +post_s s around each QRS,
    baseline taken 60-40 ms before the QRS centre."""
    peaks = _r_peaks(x, fs)
    pre, post = int(pre_s * fs), int(post_s * fs)
    peaks = peaks[(peaks >= pre) & (peaks < x.shape[1] - post)]
    beats = np.stack([x[:, p - pre:p + post] for p in peaks])
    med = np.median(beats, axis=0)
    t = np.arange(-pre, post) / fs
    base = med[:, (t >= -0.06) & (t <= -0.04)].mean(axis=1, keepdims=True)
    return med - base, t


def _qrs_width_s(x: np.ndarray, fs: float) -> float:
    """Duration of the high-slope region around the QRS of the median beat."""
    med, t = _median_beat(x, fs)
    slope = np.abs(np.diff(med, axis=1)).sum(axis=0) * fs
    near = np.abs(t[1:]) <= 0.15
    above = near & (slope > 0.2 * slope[near].max())
    idx = np.flatnonzero(above)
    return (idx[-1] - idx[0]) / fs


def _rr_irregularity(x: np.ndarray, fs: float) -> float:
    rr = np.diff(_r_peaks(x, fs)) / fs
    return float(np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean())


def _features(x: np.ndarray, fs: float) -> np.ndarray:
    """Median beat of the 12 leads on a 20 ms grid (-200..+480 ms) plus QRS width."""
    med, t = _median_beat(x, fs)
    grid = np.arange(-0.2, 0.5, 0.02)
    cols = np.searchsorted(t, grid)
    return np.concatenate([med[:, cols].ravel(), [_qrs_width_s(x, fs)]])


# --- shapes, dtypes, determinism ---------------------------------------------------------

def test_generate_signals_shapes_dtypes_and_labels():
    x, lab = generate_signals(7, SITE_A, np.random.default_rng(0), duration_s=2.0)
    assert x.shape == (7, 12, 1000) and x.dtype == np.float32
    assert lab.shape == (7, len(CONDITIONS)) and lab.dtype == bool
    assert np.isfinite(x).all()
    xb, _ = generate_signals(3, SITE_B, np.random.default_rng(0), duration_s=2.0)
    assert xb.shape == (3, 12, 500)


def test_generate_signals_is_deterministic_under_seed():
    a = generate_signals(5, SITE_B, np.random.default_rng(11))
    b = generate_signals(5, SITE_B, np.random.default_rng(11))
    c = generate_signals(5, SITE_B, np.random.default_rng(12))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_limb_leads_obey_einthoven_goldberger_algebra():
    x, _ = generate_signals(4, SITE_B, np.random.default_rng(1), duration_s=3.0)
    i, ii = x[:, LEAD["I"]], x[:, LEAD["II"]]
    np.testing.assert_allclose(x[:, LEAD["III"]], ii - i, atol=1e-5)
    np.testing.assert_allclose(x[:, LEAD["aVR"]], -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(x[:, LEAD["aVL"]], i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(x[:, LEAD["aVF"]], ii - i / 2, atol=1e-5)


def test_label_rules_and_prevalence():
    lab = sample_labels(4000, SITE_B, np.random.default_rng(0))
    norm = lab[:, CONDITIONS.index("NORM")]
    n_abn = lab[:, 1:].sum(axis=1)
    assert not (norm & (n_abn > 0)).any()
    assert ((n_abn >= 1) & (n_abn <= 2) | norm).all()
    assert (n_abn == 2).any()
    assert abs(norm.mean() - SITE_B.condition_weights()[0]) < 0.03
    lab_a = sample_labels(4000, SITE_A, np.random.default_rng(0))
    assert lab_a[:, 0].mean() > norm.mean() + 0.08  # site_a has more normals


def test_bad_inputs_raise_value_errors():
    bad = _only("NORM", 2)
    bad[0, CONDITIONS.index("MI")] = True
    with pytest.raises(ValueError, match="NORM"):
        generate_signals(2, SITE_A, np.random.default_rng(0), labels=bad)
    with pytest.raises(ValueError, match="mains_hz"):
        SiteProfile("x", 100.0, 0.01, 0.1, 60.0, 0.01, 1.0, {"NORM": 1.0})
    with pytest.raises(ValueError, match="unknown condition"):
        SiteProfile("x", 500.0, 0.01, 0.1, 50.0, 0.01, 1.0, {"FLU": 1.0})


# --- labels are visible in the signal ----------------------------------------------------

def test_cd_has_wide_qrs():
    fs = SITE_A.sampling_rate
    w_norm = np.array([_qrs_width_s(r, fs) for r in _gen("NORM", 30, seed=1)])
    w_cd = np.array([_qrs_width_s(r, fs) for r in _gen("CD", 30, seed=2)])
    assert np.median(w_cd) > np.median(w_norm) + 0.03
    assert np.median(w_cd) > 0.12 > np.median(w_norm)


def test_af_rr_irregular():
    fs = SITE_A.sampling_rate
    irr_norm = np.array([_rr_irregularity(r, fs) for r in _gen("NORM", 30, seed=3)])
    irr_af = np.array([_rr_irregularity(r, fs) for r in _gen("AF", 30, seed=4)])
    assert np.median(irr_af) > 3 * np.median(irr_norm)
    threshold = 0.1
    assert (irr_af > threshold).mean() > 0.9 and (irr_norm < threshold).mean() > 0.9


def test_af_has_no_p_wave_but_fibrillatory_waves():
    fs = SITE_A.sampling_rate
    site = replace(SITE_A, noise_std_mv=0.0, baseline_wander_mv=0.0, mains_mv=0.0)
    # P wave: lead II median beat 200-100 ms before the QRS, relative to baseline.
    p_norm = [(lambda m, t: m[LEAD["II"], (t > -0.2) & (t < -0.1)].max())(*_median_beat(r, fs))
              for r in _gen("NORM", 20, site=site, seed=5)]
    p_af = [(lambda m, t: m[LEAD["II"], (t > -0.2) & (t < -0.1)].max())(*_median_beat(r, fs))
            for r in _gen("AF", 20, site=site, seed=6)]
    assert np.median(p_norm) > 0.06 > np.median(p_af)
    # Fibrillatory waves are not locked to the beats: V1 varies from beat to beat just
    # before the QRS (where a normal record has its stable P-R segment).
    def beat_to_beat_sd(x):
        peaks = _r_peaks(x, fs)
        peaks = peaks[peaks > int(0.2 * fs)]
        seg = np.stack([x[LEAD["V1"], p - int(0.12 * fs):p - int(0.05 * fs)] for p in peaks])
        return float(np.median(seg.std(axis=0)))
    sd_af = np.median([beat_to_beat_sd(r) for r in _gen("AF", 20, site=site, seed=7)])
    sd_norm = np.median([beat_to_beat_sd(r) for r in _gen("NORM", 20, site=site, seed=8)])
    assert sd_af > 0.03 > 3 * sd_norm


def test_hyp_has_large_qrs_voltage():
    fs = SITE_A.sampling_rate

    def sokolow(x):  # S in V1 + R in V5 or V6, mV
        med, t = _median_beat(x, fs)
        qrs = np.abs(t) < 0.08
        return -med[LEAD["V1"], qrs].min() + max(med[LEAD["V5"], qrs].max(), med[LEAD["V6"], qrs].max())

    s_norm = np.array([sokolow(r) for r in _gen("NORM", 30, seed=9)])
    s_hyp = np.array([sokolow(r) for r in _gen("HYP", 30, seed=10)])
    assert np.median(s_hyp) > 1.5 * np.median(s_norm)
    assert (s_hyp > 3.5).mean() > 0.7 and (s_norm > 3.5).mean() < 0.2
    r_v5_norm = np.median([_median_beat(r, fs)[0][LEAD["V5"]].max() for r in _gen("NORM", 20, seed=9)])
    r_v5_hyp = np.median([_median_beat(r, fs)[0][LEAD["V5"]].max() for r in _gen("HYP", 20, seed=10)])
    assert r_v5_hyp > 1.3 * r_v5_norm


def _q_and_r(x, fs, lead):
    """Most negative value before the tallest QRS peak, and that peak (mV), in one lead."""
    med, t = _median_beat(x, fs)
    qrs = np.flatnonzero(np.abs(t) < 0.07)
    sig = med[LEAD[lead], qrs]
    k = int(np.argmax(sig))
    q = -sig[: k + 1].min()
    return q, sig[k]


def test_mi_shows_q_waves_and_lost_r_in_its_territory():
    fs = SITE_A.sampling_rate
    norm = _gen("NORM", 30, seed=11)
    inferior = _gen("MI", 30, seed=12, mi_territory=1)
    anterior = _gen("MI", 30, seed=13, mi_territory=0)
    territories = ((inferior, ("III", "aVF"), "aVF"), (anterior, ("V2", "V3", "V4"), "V4"))
    for records, leads, r_lead in territories:
        for lead in leads:  # pathological Q: deep initial negativity relative to the R
            qr_norm = np.median([np.divide(*_q_and_r(r, fs, lead)) for r in norm])
            qr_mi = np.median([np.divide(*_q_and_r(r, fs, lead)) for r in records])
            assert qr_mi > qr_norm + 1.0, lead
        r_norm = np.median([_q_and_r(r, fs, r_lead)[1] for r in norm])
        r_mi = np.median([_q_and_r(r, fs, r_lead)[1] for r in records])
        assert r_mi < 0.5 * r_norm, r_lead  # loss of R
    # The other territory keeps its R: anterior MI leaves aVF alone.
    r_avf_norm = np.median([_q_and_r(r, fs, "aVF")[1] for r in norm])
    r_avf_ant = np.median([_q_and_r(r, fs, "aVF")[1] for r in anterior])
    assert r_avf_ant > 0.8 * r_avf_norm


def test_sttc_has_st_depression_and_t_inversion():
    fs = SITE_A.sampling_rate

    def st_t(x):
        med, t = _median_beat(x, fs)
        v5 = med[LEAD["V5"]]
        return v5[(t > 0.08) & (t < 0.12)].mean(), v5[(t > 0.15) & (t < 0.4)].sum() / fs

    norm = np.array([st_t(r) for r in _gen("NORM", 30, seed=14)])
    sttc = np.array([st_t(r) for r in _gen("STTC", 30, seed=15)])
    assert np.median(sttc[:, 0]) < np.median(norm[:, 0]) - 0.05  # ST depression
    assert np.median(norm[:, 1]) > 0 > np.median(sttc[:, 1])  # T inversion


def test_simple_classifier_separates_norm_from_cd():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, ys = [], []
    for k, site in enumerate(DEFAULT_SITES):
        for cond, y in (("NORM", 0), ("CD", 1)):
            for r in _gen(cond, 30, site=site, seed=100 + 2 * k + y):
                xs.append(_features(r, site.sampling_rate))
                ys.append(y)
    x, y = np.array(xs), np.array(ys)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    half = len(y) // 2
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    clf.fit(x[:half], y[:half])
    assert clf.score(x[half:], y[half:]) > 0.85


# --- sites -------------------------------------------------------------------------------

def test_sites_differ_in_rate_and_mains_frequency():
    for site, expected, other in ((SITE_A, 50.0, 60.0), (SITE_B, 60.0, 50.0)):
        x, _ = generate_signals(6, site, np.random.default_rng(0))
        assert x.shape[-1] == int(10 * site.sampling_rate)
        spec = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean(axis=(0, 1))
        f = np.fft.rfftfreq(x.shape[-1], 1 / site.sampling_rate)
        band = (f > 40) & (f < 70)
        assert abs(f[band][np.argmax(spec[band])] - expected) < 0.5
        at = lambda hz: spec[np.argmin(np.abs(f - hz))]  # noqa: E731
        assert at(expected) > 10 * at(other)


def test_site_b_is_noisier():
    def hf_noise(site):
        x, _ = generate_signals(6, site, np.random.default_rng(0))
        return np.median(np.abs(np.diff(x[:, LEAD["V6"]], axis=-1)[:, :200]))
    assert hf_noise(SITE_B) > 1.5 * hf_noise(SITE_A)


# --- cohorts -----------------------------------------------------------------------------

def test_cohort_structure_and_pseudonymous_subjects():
    c = generate_cohort(10, records_per_subject=(1, 3), seed=4, duration_s=2.0)
    assert isinstance(c, SyntheticCohort)
    n = len(c)
    assert 10 <= n <= 30
    assert len(c.signals) == len(c.record_ids) == len(c.subject_ids) == len(c.sites) == n
    assert c.labels.shape == (n, len(CONDITIONS)) and c.labels.dtype == bool
    assert len(set(c.record_ids)) == n
    assert all(re.fullmatch(r"S\d{5}", s) for s in c.subject_ids)
    assert len(set(c.subject_ids)) == 10
    for s in set(c.subject_ids):
        idx = [i for i, v in enumerate(c.subject_ids) if v == s]
        assert len({c.sites[i] for i in idx}) == 1
        assert all(np.array_equal(c.labels[i], c.labels[idx[0]]) for i in idx)
    per_site = {name: len({s for s, v in zip(c.subject_ids, c.sites) if v == name})
                for name in ("site_a", "site_b")}
    assert per_site == {"site_a": 5, "site_b": 5}
    for i in range(n):
        fs = c.sampling_rates[i]
        assert fs == (500.0 if c.sites[i] == "site_a" else 250.0)
        assert c.signals[i].shape == (12, int(2 * fs)) and c.signals[i].dtype == np.float32
        assert c.label_names(i) == [k for k, on in zip(CONDITIONS, c.labels[i]) if on]
    rec = c.record(0)
    assert rec.lead_names == STANDARD_LEADS and rec.path == f"{c.sites[0]}/{c.record_ids[0]}"


def test_cohort_deterministic_and_fixed_count():
    a = generate_cohort(4, records_per_subject=2, seed=7, duration_s=1.0)
    b = generate_cohort(4, records_per_subject=2, seed=7, duration_s=1.0)
    c = generate_cohort(4, records_per_subject=2, seed=8, duration_s=1.0)
    assert len(a) == 8
    assert a.subject_ids == b.subject_ids and a.record_ids == b.record_ids
    assert all(np.array_equal(x, y) for x, y in zip(a.signals, b.signals))
    assert not all(np.array_equal(x, y) for x, y in zip(a.signals, c.signals))


def test_records_of_a_subject_resemble_each_other():
    c = generate_cohort(16, records_per_subject=2, sites=(SITE_A,), seed=5)
    feats = np.array([_features(s, 500.0)[:-1] for s in c.signals])
    subj = np.array(c.subject_ids)
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    same = (subj[:, None] == subj[None]) & ~np.eye(len(subj), dtype=bool)
    diff = subj[:, None] != subj[None]
    assert np.median(d[same]) < 0.6 * np.median(d[diff])


# --- WFDB output -------------------------------------------------------------------------

def test_write_wfdb_cohort_roundtrip(tmp_path):
    wfdb = pytest.importorskip("wfdb")
    c = generate_cohort(3, records_per_subject=(1, 2), seed=1, duration_s=2.0)
    labels_csv = write_wfdb_cohort(c, tmp_path / "synth")
    assert labels_csv == tmp_path / "synth" / "labels.csv"
    with open(labels_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["record"] for r in rows] == [f"{s}/{r}" for s, r in zip(c.sites, c.record_ids)]
    for i, row in enumerate(rows):
        assert row["subject_id"] == c.subject_ids[i] and row["site"] == c.sites[i]
        assert sorted(row["labels"].split(";")) == sorted(c.label_names(i))
        rec = wfdb.rdrecord(str(tmp_path / "synth" / row["record"]))
        assert rec.sig_name == list(STANDARD_LEADS)
        assert rec.fs == c.sampling_rates[i]
        assert rec.units == ["mV"] * 12
        assert any(x.startswith("Age:") for x in rec.comments)
        np.testing.assert_allclose(rec.p_signal.T, c.signals[i], atol=0.5e-3 + 1e-6)
    assert not list((tmp_path / "synth").rglob(".tmp-*"))
