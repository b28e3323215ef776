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


def preprocess_for_encoder(spec_input: dict, **settings) -> EcgPreprocess:
    """The preprocessing an ECG encoder's input contract asks for (leads, rate, length)."""
    return EcgPreprocess(
        leads=tuple(spec_input["leads"]),
        sampling_rate=spec_input["sampling_rate"],
        num_samples=spec_input["num_samples"],
        **settings,
    )


def ecg_array_cache(
    rows: Sequence[dict], preprocess: EcgPreprocess, cache_root: str | Path | None = None
) -> ArrayCache:
    """Preprocessed (N, n_leads, num_samples) float32 signals for the usable records of `rows`.

    Records that cannot be read, lack leads, or hold NaNs are skipped and listed in `.skipped`.
    """

    def load(row: dict) -> np.ndarray:
        return preprocess(read_ecg_record(row["path"]))

    return build_array_cache(
        rows, load, settings=preprocess.to_dict(), settings_key=preprocess.cache_key(),
        modality="ecg", cache_root=cache_root, errors=(EcgReadError, MissingLeadsError, ValueError, OSError),
    )
