"""The in-memory form of one ECG recording, whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EcgRecord:
    """One ECG recording.

    signal: (n_channels, n_samples) float32, millivolts.
    lead_names: canonical standard lead name for each row of `signal` ("I", "aVR", "V1"...),
        or None for a channel that is not a standard ECG lead (kept out of `signal`).
    sampling_rate: Hz.
    metadata: header fields (age, sex, diagnoses...). May hold identifying data: never log it.
    """

    signal: np.ndarray
    lead_names: tuple[str, ...]
    sampling_rate: float
    record_id: str
    path: str
    metadata: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.sampling_rate
