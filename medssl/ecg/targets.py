"""Physiological regression targets measured on the signal with NeuroKit2: heart rate (bpm) and
QRS duration (ms), for regression benchmarks (`medssl bench` tasks of kind `regression`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from medssl.ecg.leads import MissingLeadsError, select_leads
from medssl.ecg.preprocess import neurokit_features
from medssl.ecg.readers import read_ecg_record

TARGET_COLUMNS = ("heart_rate_bpm", "qrs_duration_ms")


def add_physiological_targets(rows: Sequence[dict], lead: str = "II") -> list[dict]:
    """Copies of `rows` with `heart_rate_bpm` and `qrs_duration_ms` measured on `lead` (limb
    leads derived from I and II when absent). Unreadable records and unmeasurable signals get
    empty values, never an exception: the batch goes on."""
    out = []
    for row in rows:
        values = {c: math.nan for c in TARGET_COLUMNS}
        try:
            record = read_ecg_record(row["path"])
            signal = select_leads(record.signal, record.lead_names, [lead], source=row["path"])[0]
            features = neurokit_features(signal, record.sampling_rate)
            values = {c: features[c] for c in TARGET_COLUMNS}
        except (ValueError, OSError, MissingLeadsError):
            pass
        out.append({**row, **{c: "" if math.isnan(v) else f"{v:.1f}" for c, v in values.items()}})
    return out
