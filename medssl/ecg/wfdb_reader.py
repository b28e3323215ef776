"""Read one WFDB record (PhysioNet's header + signal files) into an `EcgRecord`.

Any storage format that `wfdb.rdrecord` reads is accepted: `.dat` files in formats 16/212/...,
MATLAB `.mat` signal files (format "16+24", as in the PhysioNet/CinC Challenges), records
whose channels are spread over several signal files (PTB's `s0010_re.dat` + `.xyz`), and
multi-segment records (read through wfdb's segment merging).

Channels are matched to the standard 12 leads case-insensitively through
`canonical_lead_name` ("i", "AVR", "MLII" -> "II"). Other channels (Frank leads vx/vy/vz,
PLETH, ABP, "ECG 1"...) are kept out of `signal` and listed in metadata["ignored_channels"].
Signals are returned in millivolts whatever the header's units (uV, mV, V).

Header comments are kept: raw lines in metadata["comments"], and `key: value` lines as
written by the PhysioNet/CinC Challenge 2020/21 (`#Age: 63`, `#Sex: Male`,
`#Dx: 426783006,164889003`) or by WFDB test records (`<age>: 25 <sex>: M`) as
metadata[<snake_case key>] = value (strings; `dx` also split into metadata["dx_codes"]).
Metadata may identify a person: it is never put in error messages or logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl.ecg.leads import canonical_lead_name, select_leads
from medssl.ecg.record import EcgRecord

# Extensions that may be given with a record path; they are stripped to get the record name.
_RECORD_EXTENSIONS = (".hea", ".dat", ".mat")

# Multiplier from a header unit to millivolts (keys lower-cased, without spaces).
_TO_MV: dict[str, float] = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,
    "μv": 1e-3,  # Greek mu, not the micro sign
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "nv": 1e-6,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
}

# Metadata keys this reader sets itself; header comments cannot overwrite them.
_RESERVED_KEYS = frozenset({"comments", "ignored_channels", "units", "base_date", "base_time", "n_samples_header"})

_ANGLE_FIELD = re.compile(r"<([^<>]{1,64})>:\s*(.*?)(?=\s*<[^<>]{1,64}>:|$)")


class EcgReadError(ValueError):
    """A WFDB record cannot be read as an ECG; the message starts with the record path."""


def record_base_path(path: str | Path) -> Path:
    """The record path without a `.hea`/`.dat`/`.mat` extension (as wfdb wants it)."""
    p = Path(path)
    if p.suffix.lower() in _RECORD_EXTENSIONS:
        p = p.with_suffix("")
    return p


def read_wfdb_record(path: str | Path) -> EcgRecord:
    """Read a WFDB record into an `EcgRecord` with signal (n_leads, n_samples) float32 in mV.

    `path`: record path with or without extension (`data/100`, `data/100.hea`).
    Only the standard 12-lead channels found in the header are kept, in header order, named
    canonically; the others are listed in metadata["ignored_channels"]. When two channels map
    to the same lead, the first is kept and the others are listed as ignored.

    Raises EcgReadError (a ValueError, message starting with the record path) when the header
    or a signal file is missing, the header does not parse, a lead has a unit that is not a
    voltage, an ECG lead holds NaN (invalid) samples, or no channel is a standard ECG lead.
    """
    import wfdb  # imported lazily: wfdb pulls in pandas/matplotlib

    base = record_base_path(path)
    header_path = base.with_name(base.name + ".hea")
    if not header_path.is_file():
        raise EcgReadError(f"{base}: header file {header_path.name} not found")
    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises ValueError, IndexError, UnicodeDecodeError...
        raise EcgReadError(f"{base}: header {header_path.name} does not parse ({type(exc).__name__})") from None

    for name in _signal_file_names(header):
        if not (base.parent / name).is_file():
            raise EcgReadError(f"{base}: signal file {name} not found")

    try:
        rec = wfdb.rdrecord(str(base), physical=True)
    except FileNotFoundError as exc:
        missing = Path(exc.filename).name if exc.filename else "?"
        raise EcgReadError(f"{base}: file {missing} not found") from None
    except Exception as exc:
        raise EcgReadError(
            f"{base}: signal could not be read ({type(exc).__name__}); the header may not match its signal files"
        ) from None

    channel_names = [str(n) for n in (rec.sig_name or [])]
    p_signal = rec.p_signal
    if p_signal is None or p_signal.ndim != 2:
        raise EcgReadError(f"{base}: record holds no signal samples")
    units = list(rec.units or [""] * len(channel_names))

    kept: list[int] = []
    lead_names: list[str] = []
    ignored: list[str] = []
    for i, name in enumerate(channel_names):
        lead = canonical_lead_name(name)
        if lead is None or lead in lead_names:
            ignored.append(name)
            continue
        kept.append(i)
        lead_names.append(lead)
    if not kept:
        raise EcgReadError(
            f"{base}: no standard ECG lead among {', '.join(channel_names) or 'its channels'}"
        )

    signal = np.empty((len(kept), p_signal.shape[0]), dtype=np.float32)
    for row, (i, lead) in enumerate(zip(kept, lead_names)):
        unit = str(units[i] if i < len(units) and units[i] is not None else "")
        scale = _unit_to_mv(unit)
        if scale is None:
            raise EcgReadError(f"{base}: lead {lead} has unit {unit!r}, which is not a voltage")
        signal[row] = p_signal[:, i] * scale

    nan_counts = np.isnan(signal).sum(axis=1)
    if nan_counts.any():
        detail = ", ".join(
            f"{lead} has {int(c)} NaN sample(s)" for lead, c in zip(lead_names, nan_counts) if c
        )
        raise EcgReadError(f"{base}: {detail} of {signal.shape[1]} (invalid samples in the signal file)")

    metadata = parse_header_comments(rec.comments or [])
    metadata["comments"] = list(rec.comments or [])
    metadata["ignored_channels"] = ignored
    metadata["units"] = "mV"
    if getattr(rec, "base_date", None) is not None:
        metadata["base_date"] = str(rec.base_date)
    if getattr(rec, "base_time", None) is not None:
        metadata["base_time"] = str(rec.base_time)

    return EcgRecord(
        signal=signal,
        lead_names=tuple(lead_names),
        sampling_rate=float(rec.fs),
        record_id=base.name,
        path=str(base),
        metadata=metadata,
    )


def load_leads(record: EcgRecord, leads: Sequence[str], derive: bool = True) -> np.ndarray:
    """`leads` of `record`, in that order, as (len(leads), n_samples) float32 mV.

    With `derive`, limb leads III/aVR/aVL/aVF are computed from I and II when absent.
    Raises MissingLeadsError naming the missing leads and the record's path.
    """
    return select_leads(
        record.signal, record.lead_names, leads, derive=derive, source=record.path or record.record_id
    )


def parse_header_comments(comments: Sequence[str]) -> dict:
    """`key: value` fields of WFDB header comment lines, keys in snake_case, values as strings.

    Handles PhysioNet/CinC 2020/21 lines (`Age: 63`, `#Sex: Male`, `Dx: 426783006,164889003`;
    `dx` is also split into `dx_codes`) and WFDB's `<age>: 25  <sex>: M` style. Lines without a
    key (`69 M 1085 1629 x1`) and keys with empty values are left to metadata["comments"].
    The first occurrence of a key wins.
    """
    fields: dict[str, str] = {}

    def add(key: str, value: str) -> None:
        k = _snake_key(key)
        v = value.strip()
        if not k or not v:
            return
        if k in _RESERVED_KEYS:
            k = f"comment_{k}"
        fields.setdefault(k, v)

    for line in comments:
        text = str(line).strip().lstrip("#").strip()
        if not text:
            continue
        angled = _ANGLE_FIELD.findall(text)
        if angled and text.startswith("<"):
            for key, value in angled:
                add(key, value)
            continue
        key, sep, value = text.partition(":")
        if sep and 0 < len(key.strip()) <= 64:
            add(key, value)

    out: dict = dict(fields)
    if "dx" in out:
        out["dx_codes"] = [c.strip() for c in re.split(r"[,;]", out["dx"]) if c.strip()]
    return out


def _snake_key(key: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", key.strip().lower()).strip("_")


def _unit_to_mv(unit: str) -> float | None:
    key = unit.strip().lower().replace(" ", "")
    if not key:
        return 1.0  # WFDB's default unit is mV
    return _TO_MV.get(key)


def _signal_file_names(header) -> list[str]:
    """Signal files a single-segment header names (multi-segment records are checked by wfdb)."""
    names = getattr(header, "file_name", None)
    if not names or getattr(header, "seg_name", None):
        return []
    return sorted({str(n) for n in names if n and not str(n).startswith("~")})
