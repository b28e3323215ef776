"""Fast synthetic 12-lead ECGs with ground-truth labels, subjects and acquisition sites.

What it is for: tests, tutorials and audits (subject-level splits, site shift, membership
inference) that need 12-lead ECGs with known labels and no data-use agreement. It is NOT a
physiological simulator; see data_cards/synthetic_ecg.md.

Model (numpy only, vectorised over records):
- Each beat is a sum of asymmetric Gaussian bumps (P, septal q, R, S, pathological Q, late
  R', ST segment, T) in a 3-D heart-vector space (x = patient's left, y = inferior,
  z = anterior), a simplified vectorcardiogram in the spirit of McSharry et al. 2003
  (IEEE TBME 50:289) extended to 3-D dipoles (Sameni et al. 2007, EURASIP J. Adv. Signal Process.).
- The dipole is projected onto lead vectors: I at 0 deg and II at 60 deg in the frontal
  plane; III, aVR, aVL and aVF follow by Einthoven/Goldberger algebra (equivalent to the
  standard 120, -150, -30 and 90 deg directions, the augmented leads scaled by sqrt(3)/2), so
  the lead algebra of medssl.ecg.leads holds exactly in every generated record. V1-V6 use
  approximate horizontal-plane directions (115, 95, 75, 50, 25, 0 deg; 0 = left,
  90 = anterior) with an inferior tilt of 10-25 deg for V3-V6.
- Heart-rate variability: respiratory sinus arrhythmia plus small random RR jitter; atrial
  fibrillation has independent log-normal RR intervals, no P waves and fibrillatory f-waves.
- Sites add white noise, baseline wander, mains interference and an amplifier gain error.

Conditions (multi-hot over CONDITIONS, PTB-XL diagnostic superclasses plus AF; NORM excludes
the others, an abnormal record has 1 or 2 conditions), each visible in the signal:
    MI   pathological Q waves (>= 40 ms) and loss of R in the anterior (V1-V4) or inferior
         (II, III, aVF) territory, with T inversion there.
    STTC ST depression (0.08-0.2 mV) and T-wave inversion in I, II, V4-V6.
    CD   QRS > 120 ms: right-bundle-branch-like (late R' in V1, wide S in I/V6) or
         left-bundle-branch-like (broad notched R in I/V5-V6, no septal q, discordant T).
    HYP  left-ventricular hypertrophy: large QRS voltages (tall R in V5-V6, deep S in V1-V2),
         left axis shift and lateral strain (ST depression, T inversion).
    AF   irregular RR, no P waves, 4-9 Hz fibrillatory baseline waves (largest in V1).

Per-subject traits (SubjectTraits) fix the axis, amplitude, heart rate, intervals, condition
subtypes and labels; generate_signals adds small per-record variation, so the records of one
subject resemble each other more than those of different subjects.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from medssl.data.manifest import join_labels
from medssl.ecg.leads import STANDARD_LEADS
from medssl.ecg.record import EcgRecord
from medssl.io import atomic_write_text

CONDITIONS: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP", "AF")
_IDX = {c: i for i, c in enumerate(CONDITIONS)}
_ABNORMAL = np.array([c != "NORM" for c in CONDITIONS])

MI_TERRITORIES: tuple[str, ...] = ("anterior", "inferior")
CD_TYPES: tuple[str, ...] = ("RBBB-like", "LBBB-like")


@dataclass(frozen=True)
class SiteProfile:
    """How one (simulated) hospital records ECGs.

    sampling_rate: Hz. noise_std_mv: white-noise standard deviation per independent lead (mV).
    baseline_wander_mv: typical amplitude of 0.05-0.5 Hz wander (mV). mains_hz: 50 or 60.
    mains_mv: typical mains-interference amplitude (mV). gain: amplifier gain factor applied to
    everything (1.0 = calibrated). prevalence: relative weight of each condition as a subject's
    primary finding (keys from CONDITIONS, normalised on use); second_condition_rate: chance that
    an abnormal subject has a second, different abnormal condition.
    """

    name: str
    sampling_rate: float
    noise_std_mv: float
    baseline_wander_mv: float
    mains_hz: float
    mains_mv: float
    gain: float
    prevalence: dict = field(hash=False)
    second_condition_rate: float = 0.2

    def __post_init__(self) -> None:
        where = f"site {self.name!r}: "
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"{where}name must be a non-empty folder name")
        if self.sampling_rate <= 0:
            raise ValueError(f"{where}sampling_rate must be positive, got {self.sampling_rate}")
        if not 0 < self.mains_hz < self.sampling_rate / 2:
            raise ValueError(f"{where}mains_hz {self.mains_hz} must lie in (0, sampling_rate/2)")
        if min(self.noise_std_mv, self.baseline_wander_mv, self.mains_mv) < 0 or self.gain <= 0:
            raise ValueError(f"{where}noise, wander and mains must be >= 0 and gain > 0")
        unknown = set(self.prevalence) - set(CONDITIONS)
        if unknown:
            raise ValueError(f"{where}unknown condition(s) {sorted(unknown)}; known: {CONDITIONS}")
        weights = [float(v) for v in self.prevalence.values()]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"{where}prevalence weights must be >= 0 with a positive sum")
        if not 0 <= self.second_condition_rate <= 1:
            raise ValueError(f"{where}second_condition_rate must lie in [0, 1]")
        object.__setattr__(self, "prevalence", dict(self.prevalence))

    def condition_weights(self) -> np.ndarray:
        """(len(CONDITIONS),) float64 probabilities of the primary condition."""
        w = np.array([float(self.prevalence.get(c, 0.0)) for c in CONDITIONS])
        return w / w.sum()


DEFAULT_SITES: tuple[SiteProfile, ...] = (
    SiteProfile(
        name="site_a", sampling_rate=500.0, noise_std_mv=0.010, baseline_wander_mv=0.05,
        mains_hz=50.0, mains_mv=0.015, gain=1.0,
        prevalence={"NORM": 0.45, "MI": 0.14, "STTC": 0.14, "CD": 0.11, "HYP": 0.07, "AF": 0.09},
        second_condition_rate=0.2,
    ),
    SiteProfile(
        name="site_b", sampling_rate=250.0, noise_std_mv=0.030, baseline_wander_mv=0.20,
        mains_hz=60.0, mains_mv=0.04, gain=1.15,
        prevalence={"NORM": 0.32, "MI": 0.20, "STTC": 0.16, "CD": 0.10, "HYP": 0.10, "AF": 0.12},
        second_condition_rate=0.3,
    ),
)


@dataclass(frozen=True)
class SubjectTraits:
    """Traits of n subjects (or records), each field an array of length n (labels: (n, C) bool).

    axis_deg: frontal QRS axis. elevation_deg: anterior tilt of the QRS vector (negative =
    posterior). amplitude: QRS/T voltage factor. heart_rate_bpm: mean rate. pr_s: P peak to R
    peak. qtc_s: Fridericia-corrected QT. qrs_width: QRS duration factor. t_amplitude_mv,
    p_amplitude_mv: wave sizes. mi_territory: index into MI_TERRITORIES. cd_type: index into
    CD_TYPES (both only matter when the label is set). age: years. sex: 0 = female, 1 = male.
    """

    labels: np.ndarray
    axis_deg: np.ndarray
    elevation_deg: np.ndarray
    amplitude: np.ndarray
    heart_rate_bpm: np.ndarray
    pr_s: np.ndarray
    qtc_s: np.ndarray
    qrs_width: np.ndarray
    t_amplitude_mv: np.ndarray
    p_amplitude_mv: np.ndarray
    mi_territory: np.ndarray
    cd_type: np.ndarray
    age: np.ndarray
    sex: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray | Sequence[int]) -> SubjectTraits:
        """Traits of the rows in `index` (e.g. np.repeat(subject_index, records_each))."""
        index = np.asarray(index, dtype=np.intp)
        return SubjectTraits(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n, len(CONDITIONS)):
        raise ValueError(f"labels must have shape ({n}, {len(CONDITIONS)}), got {labels.shape}")
    labels = labels.astype(bool)
    if not labels.any(axis=1).all():
        raise ValueError("every record needs at least one label (NORM for a normal record)")
    if (labels[:, _IDX["NORM"]] & labels[:, _ABNORMAL].any(axis=1)).any():
        raise ValueError("NORM excludes the other conditions, but a record has both")
    return labels


def sample_labels(n: int, site: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """(n, len(CONDITIONS)) bool: a primary condition drawn from site.prevalence, plus a second
    abnormal one with probability site.second_condition_rate when the primary is abnormal."""
    p = site.condition_weights()
    labels = np.zeros((n, len(CONDITIONS)), dtype=bool)
    primary = rng.choice(len(CONDITIONS), size=n, p=p)
    labels[np.arange(n), primary] = True
    second = (primary != _IDX["NORM"]) & (rng.random(n) < site.second_condition_rate)
    w = np.where(_ABNORMAL, np.maximum(p, 1e-3), 0.0)[None, :].repeat(n, axis=0)
    w[np.arange(n), primary] = 0.0
    cum = np.cumsum(w, axis=1)
    pick = (cum < rng.random(n)[:, None] * cum[:, -1:]).sum(axis=1)
    rows = np.flatnonzero(second)
    labels[rows, pick[rows]] = True
    return labels


def sample_subject_traits(
    n: int, site: SiteProfile, rng: np.random.Generator, labels: np.ndarray | None = None
) -> SubjectTraits:
    """Draw traits for n subjects; labels (n, C) bool are drawn from the site when None."""
    labels = sample_labels(n, site, rng) if labels is None else _check_labels(labels, n)
    sex = (rng.random(n) < 0.55).astype(np.int8)
    age = np.clip(np.rint(rng.normal(60, 15, n)), 18, 95).astype(np.int16)
    af = labels[:, _IDX["AF"]]
    hr = np.clip(rng.normal(68, 9, n), 48, 100)
    hr = np.where(af, np.clip(rng.normal(95, 15, n), 65, 140), hr)
    return SubjectTraits(
        labels=labels,
        axis_deg=np.clip(rng.normal(50, 22, n), -25, 95),
        elevation_deg=np.clip(rng.normal(-20, 7, n), -40, 0),
        amplitude=np.exp(rng.normal(0, 0.15, n)) * np.where(sex == 1, 1.08, 0.94),
        heart_rate_bpm=hr,
        pr_s=np.clip(rng.normal(0.15, 0.015, n), 0.12, 0.19),
        qtc_s=np.clip(rng.normal(0.40, 0.015, n), 0.36, 0.45),
        qrs_width=np.clip(rng.normal(1.0, 0.07, n), 0.85, 1.15),
        t_amplitude_mv=np.clip(rng.normal(0.32, 0.06, n), 0.18, 0.5),
        p_amplitude_mv=np.clip(rng.normal(0.14, 0.025, n), 0.08, 0.2),
        mi_territory=rng.integers(0, len(MI_TERRITORIES), n).astype(np.int8),
        cd_type=rng.integers(0, len(CD_TYPES), n).astype(np.int8),
        age=age,
        sex=sex,
    )


def _jitter(tr: SubjectTraits, rng: np.random.Generator) -> SubjectTraits:
    """Small per-record variation around a subject's traits (electrode placement, state)."""
    n = len(tr)
    return replace(
        tr,
        axis_deg=tr.axis_deg + rng.normal(0, 3, n),
        elevation_deg=tr.elevation_deg + rng.normal(0, 2, n),
        amplitude=tr.amplitude * np.exp(rng.normal(0, 0.04, n)),
        heart_rate_bpm=tr.heart_rate_bpm * np.exp(rng.normal(0, 0.06, n)),
        pr_s=tr.pr_s + rng.normal(0, 0.004, n),
        t_amplitude_mv=tr.t_amplitude_mv * np.exp(rng.normal(0, 0.05, n)),
    )


def _direction(azimuth_deg, elevation_deg) -> np.ndarray:
    """Unit vectors (..., 3): frontal angle `azimuth` (0 = left, 90 = inferior) tilted by
    `elevation` towards anterior (+z)."""
    a, e = np.broadcast_arrays(np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg))
    return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _precordial(angle_deg: float, tilt_deg: float, gain: float) -> np.ndarray:
    a, t = np.deg2rad(angle_deg), np.deg2rad(tilt_deg)
    return gain * np.array([np.cos(t) * np.cos(a), np.sin(t), np.cos(t) * np.sin(a)])


# Rows: I, II, V1..V6 (the independent leads); columns: x (left), y (inferior), z (anterior).
_LEAD_MATRIX = np.stack([
    _direction(0.0, 0.0), _direction(60.0, 0.0),
    _precordial(115, 0, 1.2), _precordial(95, 0, 1.6), _precordial(75, 10, 1.6),
    _precordial(50, 25, 1.5), _precordial(25, 25, 1.3), _precordial(0, 25, 1.1),
]).astype(np.float32)

# Wave slots of the beat template.
_P, _QSEPT, _R, _S, _QPATH, _RLATE, _ST, _T = range(8)
_N_WAVES = 8

_S_DIR = _unit([-0.3, -0.4, -0.5])
_T_DIR = _unit([0.65, 0.55, 0.35])
_P_DIR = _unit([0.55, 0.8, 0.15])
_QSEPT_DIR = _unit([-0.45, 0.1, 0.9])
_ATRIAL_DIR = _unit([-0.35, 0.45, 0.8]).astype(np.float32)


def _beat_waves(tr: SubjectTraits, rr_s: np.ndarray):
    """Wave parameters for n records: centres (n, K) s rel. R peak, left/right widths (n, K) s,
    dipole vectors (n, K, 3) mV."""
    n = len(tr)
    lab = tr.labels
    w = tr.qrs_width
    amp = tr.amplitude[:, None]
    centre = np.zeros((n, _N_WAVES))
    sig_l = np.full((n, _N_WAVES), 0.01)
    sig_r = np.full((n, _N_WAVES), 0.01)
    vec = np.zeros((n, _N_WAVES, 3))

    r_dir = _direction(tr.axis_deg, tr.elevation_deg)
    r_amp = np.full(n, 1.35)
    s_amp = np.full(n, 0.45)

    qt = tr.qtc_s * np.cbrt(rr_s)  # Fridericia
    centre[:, _P] = -tr.pr_s
    sig_l[:, _P] = sig_r[:, _P] = 0.022
    vec[:, _P] = tr.p_amplitude_mv[:, None] * _P_DIR
    centre[:, _QSEPT] = -0.024 * w
    sig_l[:, _QSEPT] = sig_r[:, _QSEPT] = 0.007 * w
    vec[:, _QSEPT] = 0.22 * amp * _QSEPT_DIR
    sig_l[:, _R] = sig_r[:, _R] = 0.0105 * w
    centre[:, _S] = 0.027 * w
    sig_l[:, _S] = sig_r[:, _S] = 0.009 * w
    centre[:, _QPATH] = -0.022
    sig_l[:, _QPATH] = sig_r[:, _QPATH] = 0.014
    centre[:, _RLATE] = 0.065
    sig_l[:, _RLATE] = sig_r[:, _RLATE] = 0.02
    centre[:, _ST] = 0.11
    sig_l[:, _ST], sig_r[:, _ST] = 0.05, 0.05
    centre[:, _T] = qt - 0.14
    sig_l[:, _T], sig_r[:, _T] = 0.06, 0.04
    t_vec = tr.t_amplitude_mv[:, None] * _T_DIR * np.sqrt(tr.amplitude)[:, None]
    st_vec = np.zeros((n, 3))

    hyp = lab[:, _IDX["HYP"]]
    if hyp.any():
        r_dir[hyp] = _direction(tr.axis_deg[hyp] - 20, tr.elevation_deg[hyp] - 8)
        r_amp[hyp] *= 2.2
        s_amp[hyp] *= 2.0
        strain = -_unit([0.8, 0.2, -0.3])
        t_vec[hyp] = 0.8 * tr.t_amplitude_mv[hyp, None] * strain
        st_vec[hyp] = 0.08 * strain

    vec[:, _R] = (r_amp[:, None] * amp) * r_dir
    vec[:, _S] = (s_amp[:, None] * amp) * _S_DIR

    cd = lab[:, _IDX["CD"]]
    rbbb = cd & (tr.cd_type == 0)
    lbbb = cd & (tr.cd_type == 1)
    if rbbb.any():
        sig_l[rbbb, _R] = sig_r[rbbb, _R] = 0.013
        vec[rbbb, _RLATE] = 0.9 * amp[rbbb] * _unit([-0.55, -0.1, 0.8])
        centre[rbbb, _RLATE] = 0.07
        sig_l[rbbb, _RLATE] = sig_r[rbbb, _RLATE] = 0.022
        vec[rbbb, _S] *= 0.6
        t_vec[rbbb] = 0.6 * t_vec[rbbb] - 0.12 * _unit([-0.5, 0.0, 0.85])
    if lbbb.any():
        lb_dir = _direction(tr.axis_deg[lbbb] - 25, -35.0)
        vec[lbbb, _QSEPT] = 0.0
        centre[lbbb, _R] = -0.01
        sig_l[lbbb, _R] = sig_r[lbbb, _R] = 0.02
        vec[lbbb, _R] = 1.1 * amp[lbbb] * lb_dir
        vec[lbbb, _RLATE] = 1.0 * amp[lbbb] * lb_dir
        centre[lbbb, _RLATE] = 0.06
        sig_l[lbbb, _RLATE] = sig_r[lbbb, _RLATE] = 0.021
        vec[lbbb, _S] = 0.0
        t_vec[lbbb] = -0.9 * tr.t_amplitude_mv[lbbb, None] * lb_dir
        st_vec[lbbb] = -0.06 * lb_dir

    mi = lab[:, _IDX["MI"]]
    ant = mi & (tr.mi_territory == 0)
    inf = mi & (tr.mi_territory == 1)
    if ant.any():
        vec[ant, _QSEPT] = 0.0
        vec[ant, _QPATH] = 0.55 * amp[ant] * _unit([0.1, 0.0, -1.0])
        vec[ant, _R, 2] -= 0.45 * np.linalg.norm(vec[ant, _R], axis=1)
        t_vec[ant, 2] = -0.8 * np.abs(t_vec[ant]).sum(axis=1) / 1.5
    if inf.any():
        vec[inf, _QPATH] = 0.55 * amp[inf] * _unit([0.1, -1.0, 0.0])
        vec[inf, _R, 1] *= 0.3
        t_vec[inf, 1] = -0.6 * np.abs(t_vec[inf]).sum(axis=1) / 1.5

    sttc = lab[:, _IDX["STTC"]]
    if sttc.any():
        depress = -_unit([0.7, 0.55, 0.3])
        st_vec[sttc] = (0.08 + 0.12 * _hash_uniform(tr.t_amplitude_mv[sttc]))[:, None] * depress
        t_vec[sttc] = -(0.5 + 0.4 * _hash_uniform(tr.qtc_s[sttc] * 7.0))[:, None] * np.abs(
            t_vec[sttc]
        ).sum(axis=1, keepdims=True) / 1.5 * _T_DIR

    af = lab[:, _IDX["AF"]]
    vec[af, _P] = 0.0

    vec[:, _ST] = st_vec
    vec[:, _T] = t_vec
    return centre, sig_l, sig_r, vec


def _hash_uniform(x: np.ndarray) -> np.ndarray:
    """A deterministic value in [0, 1) from a trait, so severity stays fixed per subject."""
    return np.modf(np.abs(np.asarray(x, dtype=np.float64)) * 9973.0)[0]


def _templates(tr: SubjectTraits, rr_s: np.ndarray, fs: float, pre: int, width: int) -> np.ndarray:
    """Dipole beat templates (n, width, 3) float32 mV, R peak at sample `pre`."""
    centre, sig_l, sig_r, vec = _beat_waves(tr, rr_s)
    t = ((np.arange(width) - pre) / fs).astype(np.float32)
    d = t[None, None, :] - centre[:, :, None].astype(np.float32)
    s = np.where(d < 0, sig_l[:, :, None], sig_r[:, :, None]).astype(np.float32)
    g = np.exp(-0.5 * (d / s) ** 2)
    return np.matmul(g.transpose(0, 2, 1), vec.astype(np.float32))


def _beat_times(tr: SubjectTraits, duration_s: float, rng: np.random.Generator):
    """R-peak times (n, B) s (first beat before t=0) and per-beat amplitude factors (n, B)."""
    n = len(tr)
    rr0 = 60.0 / tr.heart_rate_bpm
    n_beats = int(np.ceil((duration_s + 1.0) / 0.28)) + 2
    b = np.arange(n_beats)[None, :]
    resp_hz = rng.uniform(0.15, 0.35, (n, 1))
    resp_phase = rng.uniform(0, 2 * np.pi, (n, 1))
    rsa = rng.uniform(0.02, 0.06, (n, 1))
    t_nominal = b * rr0[:, None]
    resp = np.sin(2 * np.pi * resp_hz * t_nominal + resp_phase)
    rr = rr0[:, None] * (1 + rsa * resp + 0.012 * rng.standard_normal((n, n_beats)))
    af = tr.labels[:, _IDX["AF"]]
    if af.any():
        sd = rng.uniform(0.18, 0.3, (int(af.sum()), 1))
        rr_af = rr0[af, None] * np.exp(sd * rng.standard_normal(sd.shape[:1] + (n_beats,)) - sd**2 / 2)
        rr[af] = rr_af
    rr = np.clip(rr, 0.28, 2.0)
    times = np.cumsum(rr, axis=1) - rr[:, :1] * (1 + rng.uniform(0, 1, (n, 1)))
    scale = 1 + 0.05 * resp + np.where(af[:, None], 0.04 * rng.standard_normal((n, n_beats)), 0.0)
    return times, scale


def generate_signals(
    n: int,
    site: SiteProfile,
    rng: np.random.Generator | int,
    duration_s: float = 10.0,
    labels: np.ndarray | None = None,
    subject_traits: SubjectTraits | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate n records at `site`.

    Returns signals (n, 12, T) float32 in millivolts, leads in STANDARD_LEADS order,
    T = round(duration_s * site.sampling_rate), and labels (n, len(CONDITIONS)) bool.
    labels: optional (n, C) bool to impose; subject_traits: optional SubjectTraits of length n
    (one row per record, e.g. a subject's traits repeated per record), which also fixes the
    labels; without either, subjects are drawn from the site's prevalence. Small per-record
    variation is always added. Deterministic given the state of `rng`.
    """
    rng = np.random.default_rng(rng)
    if n < 0 or duration_s <= 0:
        raise ValueError(f"need n >= 0 and duration_s > 0, got n={n}, duration_s={duration_s}")
    fs = float(site.sampling_rate)
    T = int(round(duration_s * fs))
    if subject_traits is None:
        tr = sample_subject_traits(n, site, rng, labels)
    else:
        if len(subject_traits) != n:
            raise ValueError(f"subject_traits has {len(subject_traits)} rows, expected n={n}")
        tr = subject_traits
        _check_labels(tr.labels, n)
        if labels is not None and not np.array_equal(_check_labels(labels, n), tr.labels):
            raise ValueError("labels disagree with subject_traits.labels; pass only one")
    out_labels = np.asarray(tr.labels, dtype=bool).copy()
    if n == 0:
        return np.zeros((0, 12, T), np.float32), out_labels
    tr = _jitter(tr, rng)

    pre, post = int(round(0.3 * fs)), int(round(0.6 * fs))
    width = pre + post
    times, beat_scale = _beat_times(tr, duration_s, rng)
    rr_mean = 60.0 / tr.heart_rate_bpm
    tmpl = _templates(tr, rr_mean, fs, pre, width)

    # Place beats: one vectorised scatter per beat index (records' windows never collide).
    buf = np.zeros((n, T + 2 * width, 3), dtype=np.float32)
    rows = np.arange(n)[:, None]
    offsets = np.arange(width)[None, :]
    starts = np.clip(np.rint(times * fs).astype(np.int64) - pre + width, 0, T + width)
    n_used = int((times - pre / fs < duration_s).sum(axis=1).max())
    beat_scale = beat_scale.astype(np.float32)
    for b in range(n_used):
        buf[rows, starts[:, b, None] + offsets] += tmpl * beat_scale[:, b, None, None]
    dipole = buf[:, width:width + T]
    t = (np.arange(T) / fs).astype(np.float32)

    af = np.flatnonzero(tr.labels[:, _IDX["AF"]])
    if af.size:
        dipole[af] += _fibrillatory_waves(len(af), t, rng)[:, :, None] * _ATRIAL_DIR

    lead8 = np.matmul(dipole, _LEAD_MATRIX.T).transpose(0, 2, 1)  # (n, 8, T)
    lead8 = np.ascontiguousarray(lead8)
    _add_site_artefacts(lead8, t, site, rng)
    lead8 *= np.float32(site.gain)

    out = np.empty((n, 12, T), dtype=np.float32)
    i, ii = lead8[:, 0], lead8[:, 1]
    out[:, 0], out[:, 1] = i, ii
    out[:, 2] = ii - i
    out[:, 3] = -(i + ii) / 2
    out[:, 4] = i - ii / 2
    out[:, 5] = ii - i / 2
    out[:, 6:] = lead8[:, 2:]
    return out, out_labels


def _fibrillatory_waves(m: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(m, T) float32 f-waves (mV): 4-9 Hz, slowly frequency- and amplitude-modulated."""
    f0 = rng.uniform(5.0, 8.0, (m, 1))
    fm = rng.uniform(0.1, 0.3, (m, 1))
    df = rng.uniform(0.3, 0.9, (m, 1))
    amp = rng.uniform(0.05, 0.12, (m, 1))
    ph = rng.uniform(0, 2 * np.pi, (m, 3))
    tt = t[None, :].astype(np.float64)
    phase = 2 * np.pi * f0 * tt - (df / fm) * np.cos(2 * np.pi * fm * tt + ph[:, :1]) + ph[:, 1:2]
    env = 1 + 0.35 * np.sin(2 * np.pi * 0.25 * tt + ph[:, 2:3])
    return (amp * env * (np.sin(phase) + 0.3 * np.sin(2 * phase + 1.0))).astype(np.float32)


def _add_site_artefacts(lead8: np.ndarray, t: np.ndarray, site: SiteProfile, rng) -> None:
    """In place on (n, 8, T): baseline wander, mains interference and white noise."""
    n = lead8.shape[0]
    if site.baseline_wander_mv > 0:
        f = rng.uniform(0.05, 0.5, (n, 3, 1)).astype(np.float32)
        ph = rng.uniform(0, 2 * np.pi, (n, 3, 1)).astype(np.float32)
        base = np.sin(2 * np.pi * f * t + ph)  # (n, 3, T)
        mix = rng.standard_normal((n, 8, 3)).astype(np.float32) * np.float32(
            site.baseline_wander_mv / np.sqrt(3)
        )
        lead8 += np.matmul(mix, base)
    if site.mains_mv > 0:
        ph = rng.uniform(0, 2 * np.pi, (n, 1)).astype(np.float32)
        hum = np.sin(np.float32(2 * np.pi * site.mains_hz) * t + ph)  # (n, T)
        a = rng.uniform(0.5, 1.5, (n, 8, 1)).astype(np.float32) * np.float32(site.mains_mv)
        lead8 += a * hum[:, None, :]
    if site.noise_std_mv > 0:
        lead8 += rng.standard_normal(lead8.shape, dtype=np.float32) * np.float32(site.noise_std_mv)


@dataclass
class SyntheticCohort:
    """A generated cohort, one entry per record.

    signals: list of (12, T_i) float32 arrays in mV, leads in STANDARD_LEADS order (T_i depends
    on the record's site). sampling_rates: (N,) float Hz. record_ids: unique ids ("rec_00012").
    subject_ids: pseudonymous ("S00012"). sites: site name per record. labels: (N, C) bool over
    condition_names. ages, sexes: synthetic demographics per record ("M"/"F").
    """

    signals: list[np.ndarray]
    sampling_rates: np.ndarray
    record_ids: list[str]
    subject_ids: list[str]
    sites: list[str]
    labels: np.ndarray
    condition_names: tuple[str, ...] = CONDITIONS
    ages: list[int] = field(default_factory=list)
    sexes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.record_ids)

    def label_names(self, i: int) -> list[str]:
        """Names of the conditions set for record i, in condition_names order."""
        return [c for c, on in zip(self.condition_names, self.labels[i]) if on]

    def record(self, i: int) -> EcgRecord:
        """Record i as an EcgRecord (path is the WFDB-layout relative path `<site>/<record_id>`)."""
        meta = {"subject_id": self.subject_ids[i], "site": self.sites[i],
                "labels": self.label_names(i)}
        if self.ages:
            meta["age"] = self.ages[i]
        if self.sexes:
            meta["sex"] = self.sexes[i]
        return EcgRecord(
            signal=self.signals[i], lead_names=STANDARD_LEADS,
            sampling_rate=float(self.sampling_rates[i]), record_id=self.record_ids[i],
            path=f"{self.sites[i]}/{self.record_ids[i]}", metadata=meta,
        )


def generate_cohort(
    n_subjects: int,
    records_per_subject: int | tuple[int, int] = (1, 3),
    sites: Sequence[SiteProfile] = DEFAULT_SITES,
    seed: int = 0,
    duration_s: float = 10.0,
    chunk_size: int = 256,
) -> SyntheticCohort:
    """A cohort of n_subjects assigned round-robin (evenly) to `sites`, each with
    records_per_subject records (an int, or an inclusive (min, max) range drawn per subject).
    All records of a subject come from its one site and share its traits. Records are ordered
    by subject; signals are generated per site in batches of chunk_size records (memory bound).
    Deterministic in seed.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    if not sites:
        raise ValueError("need at least one site")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"site names must be unique, got {names}")
    lo, hi = (records_per_subject, records_per_subject) if isinstance(
        records_per_subject, (int, np.integer)) else records_per_subject
    if not 1 <= lo <= hi:
        raise ValueError(f"records_per_subject must be >= 1 (min <= max), got {records_per_subject}")
    rng = np.random.default_rng(seed)
    width = max(5, len(str(n_subjects - 1)))
    subject_numbers = rng.permutation(n_subjects)
    counts = rng.integers(lo, hi + 1, size=n_subjects)
    site_of = np.arange(n_subjects) % len(sites)
    site_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(sites))]

    per_subject: list[list] = [[] for _ in range(n_subjects)]  # (signal, labels) per record
    demo: dict[int, tuple[int, str]] = {}
    for k, site in enumerate(sites):
        subj = np.flatnonzero(site_of == k)
        if subj.size == 0:
            continue
        srng = site_rngs[k]
        traits = sample_subject_traits(len(subj), site, srng)
        for j, s in enumerate(subj):
            demo[int(s)] = (int(traits.age[j]), "M" if traits.sex[j] else "F")
        rec_rows = np.repeat(np.arange(len(subj)), counts[subj])
        rec_traits = traits.take(rec_rows)
        for c0 in range(0, len(rec_rows), chunk_size):
            part = np.arange(c0, min(c0 + chunk_size, len(rec_rows)))
            sig, lab = generate_signals(len(part), site, srng, duration_s,
                                        subject_traits=rec_traits.take(part))
            for r, p in enumerate(part):
                per_subject[int(subj[rec_rows[p]])].append((sig[r], lab[r]))

    signals, labels, rates, rids, sids, snames, ages, sexes = [], [], [], [], [], [], [], []
    for s in range(n_subjects):
        for sig, lab in per_subject[s]:
            signals.append(sig)
            labels.append(lab)
            rates.append(float(sites[site_of[s]].sampling_rate))
            rids.append(f"rec_{len(rids):0{width}d}")
            sids.append(f"S{subject_numbers[s]:0{width}d}")
            snames.append(sites[site_of[s]].name)
            ages.append(demo[s][0])
            sexes.append(demo[s][1])
    return SyntheticCohort(
        signals=signals, sampling_rates=np.asarray(rates, dtype=np.float64), record_ids=rids,
        subject_ids=sids, sites=snames, labels=np.asarray(labels, dtype=bool).reshape(-1, len(CONDITIONS)),
        condition_names=CONDITIONS, ages=ages, sexes=sexes,
    )


_ADC_GAIN = 1000.0  # digital units per mV: 1 uV resolution, range +-32.767 mV in format 16


def write_wfdb_cohort(cohort: SyntheticCohort, out_dir: str | Path) -> Path:
    """Write every record as WFDB (format 16, 1000 units/mV, units mV, STANDARD_LEADS names)
    to out_dir/<site>/<record_id>.{hea,dat}, then out_dir/labels.csv with columns record
    (`<site>/<record_id>`), subject_id, site, labels (";"-joined). Each record's files are
    written in a temporary folder and renamed into place (data before header); labels.csv is
    written atomically last. Samples beyond +-32 mV are clipped. Returns the labels.csv path.
    """
    import wfdb  # imported here: only writing needs it

    out = Path(out_dir)
    rows = []
    for i in range(len(cohort)):
        site, rid = cohort.sites[i], cohort.record_ids[i]
        site_dir = out / site
        site_dir.mkdir(parents=True, exist_ok=True)
        sig = np.clip(np.asarray(cohort.signals[i], dtype=np.float64).T, -32.0, 32.0)
        comments = ["Synthetic: medssl.ecg.synthetic (not a real patient)"]
        if cohort.ages:
            comments.append(f"Age: {cohort.ages[i]}")
        if cohort.sexes:
            comments.append(f"Sex: {cohort.sexes[i]}")
        with tempfile.TemporaryDirectory(dir=site_dir, prefix=".tmp-") as tmp:
            wfdb.wrsamp(
                rid, fs=float(cohort.sampling_rates[i]), units=["mV"] * 12,
                sig_name=list(STANDARD_LEADS), p_signal=sig, fmt=["16"] * 12,
                adc_gain=[_ADC_GAIN] * 12, baseline=[0] * 12, comments=comments, write_dir=tmp,
            )
            os.replace(Path(tmp) / f"{rid}.dat", site_dir / f"{rid}.dat")
            os.replace(Path(tmp) / f"{rid}.hea", site_dir / f"{rid}.hea")
        rows.append({"record": f"{site}/{rid}", "subject_id": cohort.subject_ids[i],
                     "site": site, "labels": join_labels(cohort.label_names(i))})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["record", "subject_id", "site", "labels"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(out / "labels.csv", buf.getvalue())


__all__ = [
    "CONDITIONS", "CD_TYPES", "DEFAULT_SITES", "MI_TERRITORIES", "SiteProfile", "SubjectTraits",
    "SyntheticCohort", "generate_cohort", "generate_signals", "sample_labels",
    "sample_subject_traits", "write_wfdb_cohort",
]
