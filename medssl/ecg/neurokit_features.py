"""A non-learned ECG baseline: NeuroKit2 rhythm and conduction measurements, run as a frozen "encoder".

:func:`rhythm_features` measures, on one lead, with NeuroKit2 (``ecg_clean``, ``ecg_peaks``, DWT
``ecg_delineate``): heart rate (60 / median RR), QRS duration (median R-onset to R-offset), and RR
variability: SDNN, RMSSD, coefficient of variation of RR, pNN50, and the shortest and longest RR
relative to the median (premature beats and pauses). Values that cannot be measured (too few beats,
delineation failure) are set to 0 and flagged in one indicator per measurement, so a linear probe
sees "not measurable" rather than a made-up number.

:class:`NeuroKitFeatures` applies it to the lead(s) its input contract names (default lead II at
250 Hz, 10 s, 0.67-40 Hz band-pass, per-lead z-score: the preprocessing of the ECG-JEPA contract,
so no extra filtering) and returns (B, n_leads * 2 * 7) features. It has no parameters. It is not a
built-in encoder (nothing to train: the registry's gradient and seed checks do not apply);
:func:`register` adds it to the running process's registry as ``ecg_neurokit_features``, after
which a bench config names it as an encoder and ``medssl bench``'s logistic-regression probe scores
it on the same subject draws as the learned encoders (``benchmarks/real_ecg_cinc.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from medssl.ecg.preprocess import detect_beats, qrs_duration_ms, rr_intervals_s
from medssl.registry import EncoderSpec, list_encoders, register_encoder

__all__ = ["FEATURES", "NAME", "NeuroKitFeatures", "ecg_neurokit_features", "register", "rhythm_features"]

NAME = "ecg_neurokit_features"
FEATURES = ("heart_rate_bpm", "qrs_duration_ms", "rr_sdnn_ms", "rr_rmssd_ms", "rr_cv", "rr_pnn50",
            "rr_min_over_median", "rr_max_over_median")
_NORMALISATION = "per-lead zero mean, unit variance after 0.67-40 Hz band-pass"


def rhythm_features(signal_1d: np.ndarray, fs: float) -> dict[str, float]:
    """{name: value} of :data:`FEATURES` (NaN where not measurable) for one lead; never raises.
    Beats, R-R intervals and QRS duration as :func:`medssl.ecg.preprocess.neurokit_features`
    measures them."""
    out = {k: math.nan for k in FEATURES}
    beats = detect_beats(signal_1d, fs)
    if beats is None:
        return out
    cleaned, peaks = beats
    rr = rr_intervals_s(peaks, fs)
    if rr.size:
        med = float(np.median(rr))
        out["heart_rate_bpm"] = 60.0 / med
        out["rr_min_over_median"] = float(rr.min() / med)
        out["rr_max_over_median"] = float(rr.max() / med)
    if rr.size >= 2:
        d = np.diff(rr)
        out["rr_sdnn_ms"] = float(np.std(rr, ddof=1) * 1000.0)
        out["rr_rmssd_ms"] = float(np.sqrt(np.mean(d ** 2)) * 1000.0)
        out["rr_cv"] = float(np.std(rr, ddof=1) / np.mean(rr))
        out["rr_pnn50"] = float(np.mean(np.abs(d) > 0.05))
    out["qrs_duration_ms"] = qrs_duration_ms(cleaned, peaks, fs)
    return out


class NeuroKitFeatures(nn.Module):
    """(B, n_leads, num_samples) preprocessed ECGs -> (B, n_leads * 2 * len(FEATURES)): each
    measurement (0 where not measurable) and its not-measurable indicator, lead by lead."""

    def __init__(self, *, leads=("II",), sampling_rate: float = 250.0, num_samples: int = 2500):
        super().__init__()
        self.leads = [str(x) for x in leads]
        self.fs = float(sampling_rate)
        dim = len(self.leads) * 2 * len(FEATURES)
        self.spec = EncoderSpec(
            name=NAME, modality="ecg",
            input={"leads": list(self.leads), "sampling_rate": self.fs, "num_samples": int(num_samples),
                   "units": "mV", "normalisation": _NORMALISATION},
            embed_dim=dim,
            hparams={"leads": list(self.leads), "sampling_rate": self.fs, "num_samples": int(num_samples)},
            license="Apache-2.0; no weights (NeuroKit2 measurements, MIT)",
            provenance="non-learned NeuroKit2 rhythm/conduction measurements (medssl.ecg.neurokit_features)",
            paper="Makowski et al. 2021, NeuroKit2, Behavior Research Methods",
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] != len(self.leads):
            raise ValueError(f"NeuroKitFeatures: expected (B, {len(self.leads)}, samples), got {tuple(x.shape)}")
        arr = x.detach().float().cpu().numpy()
        rows = []
        for rec in arr:
            vals = []
            for lead in rec:
                f = rhythm_features(lead, self.fs)
                v = np.array([f[k] for k in FEATURES], dtype=np.float64)
                missing = ~np.isfinite(v)
                vals += [np.where(missing, 0.0, v), missing.astype(np.float64)]
            rows.append(np.concatenate(vals))
        return torch.from_numpy(np.stack(rows).astype(np.float32)).to(x.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)


def ecg_neurokit_features(**overrides) -> NeuroKitFeatures:
    """NeuroKit2 heart rate, QRS duration and RR variability of lead II (non-learned baseline)."""
    return NeuroKitFeatures(**overrides)


def register() -> str:
    """Add ``ecg_neurokit_features`` to this process's encoder registry (idempotent); its name."""
    if NAME not in list_encoders():
        register_encoder(ecg_neurokit_features, modality="ecg", name=NAME)
    return NAME
