"""Read one ECG record from any storage medssl indexes, chosen by the form of its path.

- "<file>.hdf5#<row>" (or .h5): a CODE-15% exam, read by `medssl.ecg.code15.read_code15_record`;
- anything else: a WFDB record, read by `medssl.ecg.wfdb_reader.read_wfdb_record`.

Both return an `EcgRecord` with signal (n_leads, n_samples) float32 in mV and raise
`EcgReadError` (a ValueError whose message starts with the path) for unreadable records.
"""

from __future__ import annotations

from pathlib import Path

from medssl.ecg.record import EcgRecord


def read_ecg_record(path: str | Path) -> EcgRecord:
    """The record at `path`, read by the reader its form names (see the module docstring)."""
    from medssl.ecg.code15 import is_code15_path, read_code15_record

    if is_code15_path(path):
        return read_code15_record(path)
    from medssl.ecg.wfdb_reader import read_wfdb_record

    return read_wfdb_record(path)
