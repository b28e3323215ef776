"""ECG preprocessing: composable functions on (n_leads, n_samples) arrays, and a pipeline.

Every function takes a float array whose last axis is time (usually (n_leads, n_samples),
millivolts) and a sampling rate in Hz, returns a new array and leaves its input untouched.
Floating inputs keep their dtype; computation is in float64.

`EcgPreprocess` chains them in the usual order for ECG foundation models (e.g. the 0.67-40 Hz
band-pass of the PhysioNet/CinC 2020/21 entries, per-lead z-scoring as in ECG-FM / CLEF-style
pipelines): select leads -> resample -> band-pass -> notch -> fix length -> standardize.
Its `cache_key()` names a preprocessed-array cache.

`neurokit_features` measures heart rate (and QRS duration when it can) with NeuroKit2
(Makowski et al., Behav. Res. Methods 2021) for sanity checks and simple baselines.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
from scipy import signal as sps

from medssl.ecg.leads import STANDARD_LEADS, parse_lead_set, select_leads
from medssl.ecg.record import EcgRecord

# Bump when the meaning of a setting or the algorithm changes, so old caches are not reused.
PREPROCESS_VERSION = 1


def _as_float(x: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    return x.astype(np.float64, copy=False), out_dtype


def resample(x: np.ndarray, fs_in: float, fs_out: float, *, max_denominator: int = 1000) -> np.ndarray:
    """Resample along the last axis from `fs_in` to `fs_out` Hz with a polyphase filter.

    The rate ratio is approximated by a fraction up/down with down <= `max_denominator`
    (exact for the usual 250/257/360/400/500/1000 Hz rates); output length is
    ceil(n_samples * up / down). Same rate: a copy.
    """
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got {fs_in} -> {fs_out}")
    xf, dtype = _as_float(x)
    if fs_in == fs_out:
        return xf.astype(dtype, copy=True)
    ratio = Fraction(float(fs_out) / float(fs_in)).limit_denominator(max_denominator)
    y = sps.resample_poly(xf, ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(dtype, copy=False)


def _padlen(n_samples: int, default: int) -> int:
    return max(0, min(default, n_samples - 1))


def bandpass(
    x: np.ndarray,
    fs: float,
    low: float | None = 0.67,
    high: float | None = 40.0,
    order: int = 4,
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (sosfiltfilt) along the last axis.

    `low`/`high` in Hz; None drops that side (high-pass or low-pass only; both None: a copy).
    `high` is clipped to 0.95 x Nyquist; a `high` that then falls at or below `low` is an error.
    Filtering forward and back doubles the effective order and gives no phase shift.
    """
    xf, dtype = _as_float(x)
    nyq = fs / 2.0
    if high is not None and high >= 0.95 * nyq:
        high = 0.95 * nyq
    if low is not None and low <= 0:
        low = None
    if low is None and high is None:
        return xf.astype(dtype, copy=True)
    if low is not None and high is not None:
        if high <= low:
            raise ValueError(f"band-pass needs low < high, got {low} Hz and {high} Hz at fs={fs} Hz")
        sos = sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    elif low is not None:
        sos = sps.butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        sos = sps.butter(order, high, btype="lowpass", fs=fs, output="sos")
    default_pad = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    y = sps.sosfiltfilt(sos, xf, axis=-1, padlen=_padlen(xf.shape[-1], default_pad))
    return y.astype(dtype, copy=False)


def notch(x: np.ndarray, fs: float, mains_hz: float = 50.0, q: float = 30.0) -> np.ndarray:
    """Remove mains interference at `mains_hz` (50 or 60 Hz) with a zero-phase IIR notch.

    Quality factor `q` sets the width (bandwidth = mains_hz / q). When `mains_hz` is at or above
    the Nyquist frequency the signal cannot hold it, and a copy is returned.
    """
    xf, dtype = _as_float(x)
    if mains_hz <= 0 or mains_hz >= fs / 2.0:
        return xf.astype(dtype, copy=True)
    b, a = sps.iirnotch(mains_hz, q, fs=fs)
    y = sps.filtfilt(b, a, xf, axis=-1, padlen=_padlen(xf.shape[-1], 3 * max(len(a), len(b))))
    return y.astype(dtype, copy=False)


def standardize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-lead z-score along the last axis: zero mean, unit standard deviation.

    A flat lead (std < `eps`, e.g. a disconnected electrode) becomes all zeros, not NaN.
    """
    xf, dtype = _as_float(x)
    mean = xf.mean(axis=-1, keepdims=True)
    std = xf.std(axis=-1, keepdims=True)
    flat = std < eps
    y = np.where(flat, 0.0, (xf - mean) / np.where(flat, 1.0, std))
    return y.astype(dtype, copy=False)


def fix_length(x: np.ndarray, n_samples: int, mode: str = "center") -> np.ndarray:
    """Crop or zero-pad the last axis to exactly `n_samples`.

    mode "center": keep the middle / pad equally on both sides (extra sample at the end);
    mode "start": keep the beginning / pad at the end.
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if mode not in ("center", "start"):
        raise ValueError(f"mode must be 'center' or 'start', got {mode!r}")
    x = np.asarray(x)
    n = x.shape[-1]
    if n == n_samples:
        return x.copy()
    if n > n_samples:
        start = (n - n_samples) // 2 if mode == "center" else 0
        return x[..., start:start + n_samples].copy()
    before = (n_samples - n) // 2 if mode == "center" else 0
    pad = [(0, 0)] * (x.ndim - 1) + [(before, n_samples - n - before)]
    return np.pad(x, pad, mode="constant")


def windows(x: np.ndarray, n_samples: int, stride: int | None = None) -> np.ndarray:
    """Cut (n_leads, T) into windows: (n_windows, n_leads, n_samples).

    Windows start at 0, stride, 2*stride...(default stride = n_samples, no overlap); trailing
    samples that do not fill a window are dropped. A signal shorter than one window gives one
    window, zero-padded at the end.
    """
    stride = n_samples if stride is None else stride
    if n_samples <= 0 or stride <= 0:
        raise ValueError(f"n_samples and stride must be positive, got {n_samples} and {stride}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"windows expects (n_leads, n_samples), got shape {x.shape}")
    if x.shape[-1] < n_samples:
        return fix_length(x, n_samples, mode="start")[None]
    view = np.lib.stride_tricks.sliding_window_view(x, n_samples, axis=-1)[:, ::stride]
    return np.ascontiguousarray(view.transpose(1, 0, 2))


@dataclass(frozen=True)
class EcgPreprocess:
    """Settings of the ECG preprocessing pipeline; calling it on a record gives the model input.

    leads: lead names in output order (a spec such as "12"/"8" is accepted and expanded).
    sampling_rate: output rate in Hz. num_samples: output length (e.g. 10 s at 500 Hz = 5000).
    bandpass_low/bandpass_high: Hz, None to skip that side. notch_hz: 50/60 or None.
    standardize: per-lead z-score. derive_leads: compute missing limb leads from I and II.
    crop: "center" or "start" (see `fix_length`), used when window_stride is None.
    window_stride: None -> one window per record (cropped or padded to num_samples); an integer
        -> every full window of num_samples at that stride (samples), a record shorter than one
        window being an error.
    reject_flat: a selected lead whose standard deviation is below 1 uV is an error (a
        disconnected electrode), not a lead of zeros.
    """

    leads: tuple[str, ...] = STANDARD_LEADS
    sampling_rate: float = 500.0
    num_samples: int = 5000
    bandpass_low: float | None = 0.67
    bandpass_high: float | None = 40.0
    notch_hz: float | None = None
    standardize: bool = True
    derive_leads: bool = True
    crop: str = "center"
    filter_order: int = 4
    window_stride: int | None = None
    reject_flat: bool = True
    version: int = field(default=PREPROCESS_VERSION)

    def __post_init__(self) -> None:
        object.__setattr__(self, "leads", parse_lead_set(self.leads))
        object.__setattr__(self, "sampling_rate", float(self.sampling_rate))
        for name in ("bandpass_low", "bandpass_high", "notch_hz"):  # 50 and 50.0 hash alike
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))
        if self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {self.sampling_rate}")
        if int(self.num_samples) != self.num_samples or self.num_samples <= 0:
            raise ValueError(f"num_samples must be a positive integer, got {self.num_samples}")
        object.__setattr__(self, "num_samples", int(self.num_samples))
        if self.crop not in ("center", "start"):
            raise ValueError(f"crop must be 'center' or 'start', got {self.crop!r}")
        if self.window_stride is not None and int(self.window_stride) <= 0:
            raise ValueError(f"window_stride must be a positive integer, got {self.window_stride}")

    def _filtered(self, record: EcgRecord) -> np.ndarray:
        source = record.path or record.record_id
        x = select_leads(record.signal, record.lead_names, self.leads, derive=self.derive_leads, source=source)
        x = x.astype(np.float64)
        if self.reject_flat:
            flat = [lead for lead, row in zip(self.leads, x) if np.nanstd(row) < 1e-3]
            if flat:
                raise ValueError(f"{source}: flat lead(s) {', '.join(flat)} (standard deviation below 1 uV)")
        x = resample(x, record.sampling_rate, self.sampling_rate)
        x = bandpass(x, self.sampling_rate, self.bandpass_low, self.bandpass_high, order=self.filter_order)
        if self.notch_hz:
            x = notch(x, self.sampling_rate, self.notch_hz)
        return x

    def windows(self, record: EcgRecord) -> np.ndarray:
        """(n_windows, len(leads), num_samples) float32 model inputs of one record."""
        x = self._filtered(record)
        if self.window_stride is None:
            out = fix_length(x, self.num_samples, mode=self.crop)[None]
        elif x.shape[-1] < self.num_samples:
            raise ValueError(
                f"{record.path or record.record_id}: {x.shape[-1] / self.sampling_rate:.2f} s is shorter than "
                f"one {self.num_samples / self.sampling_rate:.2f} s window"
            )
        else:
            out = windows(x, self.num_samples, int(self.window_stride))
        if self.standardize:
            out = standardize(out)
        return out.astype(np.float32)

    def __call__(self, record: EcgRecord) -> np.ndarray:
        """(len(leads), num_samples) float32: the first (or only) window of one record."""
        return self.windows(record)[0]

    def to_dict(self) -> dict:
        """JSON-ready settings (leads as a list)."""
        d = asdict(self)
        d["leads"] = list(self.leads)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EcgPreprocess:
        return cls(**{**d, "leads": tuple(d.get("leads", STANDARD_LEADS))})

    def cache_key(self) -> str:
        """Stable 16-hex-digit hash of the settings (and algorithm version) for a cache folder."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def detect_beats(signal_1d: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(cleaned signal, R-peak sample indices int64) of one lead by NeuroKit2's `ecg_clean` and
    `ecg_peaks`; None where the lead cannot be measured (shorter than 2 s, non-finite, flat) or
    NeuroKit2 fails on it. Never raises."""
    x = np.asarray(signal_1d, dtype=np.float64).ravel()
    if fs <= 0 or x.size < int(2 * fs) or not np.all(np.isfinite(x)) or np.std(x) < 1e-9:
        return None
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cleaned = nk.ecg_clean(x, sampling_rate=fs)
            _, info = nk.ecg_peaks(cleaned, sampling_rate=fs)
        except Exception:  # noqa: BLE001 - NeuroKit2 raises many kinds on bad signals
            return None
    return cleaned, np.asarray(info.get("ECG_R_Peaks", []), dtype=np.int64)


def rr_intervals_s(peaks: np.ndarray, fs: float) -> np.ndarray:
    """R-R intervals (s) between successive peaks, keeping the plausible ones (20-300 bpm)."""
    rr = np.diff(peaks) / fs
    return rr[(rr > 0.2) & (rr < 3.0)]


def qrs_duration_ms(cleaned: np.ndarray, peaks: np.ndarray, fs: float) -> float:
    """Median R-onset-to-R-offset time (ms) of NeuroKit2's DWT `ecg_delineate`, over beats of
    20-250 ms; NaN with fewer than 3 beats or when delineation fails. Never raises."""
    if peaks.size < 3:
        return math.nan
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, waves = nk.ecg_delineate(cleaned, peaks, sampling_rate=fs, method="dwt")
        except Exception:  # noqa: BLE001
            return math.nan
    onsets = np.asarray(waves.get("ECG_R_Onsets", []), dtype=np.float64)
    offsets = np.asarray(waves.get("ECG_R_Offsets", []), dtype=np.float64)
    n = min(onsets.size, offsets.size)
    qrs = (offsets[:n] - onsets[:n]) / fs * 1000.0
    qrs = qrs[np.isfinite(qrs) & (qrs > 20) & (qrs < 250)]
    return float(np.median(qrs)) if qrs.size else math.nan


def neurokit_features(signal_1d: np.ndarray, fs: float) -> dict:
    """Heart rate and QRS duration of one ECG lead, measured with NeuroKit2.

    Returns {"heart_rate_bpm", "qrs_duration_ms", "n_beats"}: heart rate from the median R-R
    interval of `ecg_peaks` on the `ecg_clean`-ed signal; QRS duration as the median
    R-onset-to-R-offset time of the DWT `ecg_delineate`. Anything that cannot be measured
    (too short, flat or noisy signal, fewer than 2 beats, delineation failure) is NaN; this
    function does not raise on bad signals.
    """
    out = {"heart_rate_bpm": math.nan, "qrs_duration_ms": math.nan, "n_beats": 0}
    beats = detect_beats(signal_1d, fs)
    if beats is None:
        return out
    cleaned, peaks = beats
    out["n_beats"] = int(peaks.size)
    rr = rr_intervals_s(peaks, fs)
    if rr.size:
        out["heart_rate_bpm"] = float(60.0 / np.median(rr))
    out["qrs_duration_ms"] = qrs_duration_ms(cleaned, peaks, fs)
    return out
