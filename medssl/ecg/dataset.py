"""From an ECG manifest to model-ready arrays through the preprocessed cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl.data.cache import ArrayCache, build_array_cache
from medssl.ecg.leads import MissingLeadsError
from medssl.ecg.preprocess import EcgPreprocess
from medssl.ecg.readers import read_ecg_record
from medssl.ecg.wfdb_reader import EcgReadError


def spec_filtering(spec_input: dict) -> dict:
    """The filter and standardisation an ECG contract declares (`bandpass_hz`: [low, high] or None
    for no filter; `standardize`: per-lead z-score or not), as EcgPreprocess settings; {} when it
    declares neither (medssl's own encoders: EcgPreprocess's defaults, 0.67-40 Hz and z-score).
    Imported release weights declare their release's (ECG-JEPA: no filter, raw amplitudes)."""
    out = {}
    if "bandpass_hz" in spec_input:
        band = spec_input["bandpass_hz"]
        low, high = (None, None) if band is None else band
        out.update(bandpass_low=low, bandpass_high=high)
    if "standardize" in spec_input:
        out["standardize"] = bool(spec_input["standardize"])
    return out


def preprocess_for_encoder(spec_input: dict, **settings) -> EcgPreprocess:
    """The preprocessing an ECG encoder's input contract asks for (leads, rate, length, and the
    filter and standardisation it declares, see `spec_filtering`); `settings` fill in the rest
    but never override what the contract declares."""
    declared = spec_filtering(spec_input)
    return EcgPreprocess(
        leads=tuple(spec_input["leads"]),
        sampling_rate=spec_input["sampling_rate"],
        num_samples=spec_input["num_samples"],
        **{**settings, **declared},
    )


class EcgWindowLoader:
    """Manifest row -> (n_windows, n_leads, num_samples) float32; picklable for worker processes."""

    def __init__(self, preprocess: EcgPreprocess):
        self.preprocess = preprocess

    def __call__(self, row: dict) -> np.ndarray:
        return self.preprocess.windows(read_ecg_record(row["path"]))


def ecg_array_cache(
    rows: Sequence[dict], preprocess: EcgPreprocess, cache_root: str | Path | None = None,
    *, workers: int | None = None,
) -> ArrayCache:
    """Preprocessed (N_windows, n_leads, num_samples) float32 windows of the usable records of `rows`;
    `.rows` has one manifest row per window (with its `window` number and the record's subject).

    Records that cannot be read, lack leads, hold NaNs, have a flat lead or are shorter than a
    window are skipped and listed in `.skipped`.
    """
    return build_array_cache(
        rows, EcgWindowLoader(preprocess), settings=preprocess.to_dict(), settings_key=preprocess.cache_key(),
        modality="ecg", cache_root=cache_root, errors=(EcgReadError, MissingLeadsError, ValueError, OSError),
        workers=workers,
    )
