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

Headers as found in the wild (`read_header`, `repair_record_line`): some corpora write the
record line in ways the WFDB spec does not allow and wfdb-python refuses with HeaderSyntaxError,
e.g. the PhysioNet/CinC Georgia and CPSC headers `E00271.mat 12 500 5000 05-May-2020 14:50:55`
(a file extension on the record name, the date before the time, a month name). When wfdb cannot
parse a header, its record line is repaired in memory (name = the header file's stem, time as
HH:MM:SS, date as DD/MM/YYYY, unreadable date/time tokens dropped) and the repaired header is
handed to wfdb from a private temporary folder that links the signal files; wfdb still reads the
signal, and nothing is written into the input folder. What was repaired is listed in
metadata["header_repairs"] (never quoting dates or comments).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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
_RESERVED_KEYS = frozenset({"comments", "ignored_channels", "units", "base_date", "base_time", "n_samples_header",
                            "header_repairs"})

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
    header, repairs = read_header(base)

    for name in _signal_file_names(header):
        if not (base.parent / name).is_file():
            raise EcgReadError(f"{base}: signal file {name} not found")

    try:
        with wfdb_readable(base, header if repairs else None) as readable:
            rec = wfdb.rdrecord(readable, physical=True)
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
    if repairs:
        metadata["header_repairs"] = list(repairs)
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


# ---------------------------------------------------------------- headers in the wild

_TIME = re.compile(r"^(\d{1,2}):(\d{1,2})(?::(\d{1,2})(\.\d{1,6})?)?$")
_DATE_FORMATS = ("%d/%m/%Y", "%d-%b-%Y", "%d-%B-%Y", "%d-%b-%y", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d-%m-%Y",
                 "%Y%m%d")
_FS_TOKEN = re.compile(r"^(\d*\.?\d+)(?:hz)?(/-?\d*\.?\d*(?:\(-?\d*\.?\d*\))?)?$", re.IGNORECASE)
_NAME_EXT = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")


def repair_record_line(line: str, record_name: str | None = None) -> tuple[str, list[str]]:
    """A WFDB record line rewritten in the form the WFDB spec (and wfdb-python) accepts, and the
    repairs made (short phrases, no values quoted; empty when nothing changed).

    `name[/n_seg] n_sig [fs[/counter[(base)]] [sig_len [time] [date]]]`, leniently: a file
    extension on the name is dropped (`E00271.mat` -> `E00271`; a name still not of the form
    [-A-Za-z0-9_]+ is replaced by `record_name`, the header file's stem), `fs` may carry a `Hz` suffix, the time and the date may
    come in either order, the time as H:MM[:SS[.ffffff]] (kept as written), the date as DD/MM/YYYY, DD-Mon-YYYY
    (`05-May-2020`), YYYY-MM-DD, DD.MM.YYYY, DD-MM-YYYY or YYYYMMDD; tokens that are neither
    (and fields after an unreadable one) are dropped. Raises ValueError when the line has no
    name or no integer number of signals.
    """
    tokens = line.split()
    if len(tokens) < 2:
        raise ValueError("record line holds fewer than 2 fields (name, number of signals)")
    repairs: list[str] = []
    name, _, n_seg = tokens[0].partition("/")
    new_name = name
    if _NAME_EXT.search(new_name):
        new_name = _NAME_EXT.sub("", new_name)
        repairs.append("file extension dropped from the record name")
    if not re.fullmatch(r"[-\w]+", new_name):
        usable = record_name and re.fullmatch(r"[-\w]+", record_name)
        new_name = record_name if usable else (re.sub(r"[^-\w]+", "_", new_name).strip("_") or "record")
        repairs.append("record name replaced (characters outside A-Z, a-z, 0-9, _ and -)")
    if n_seg and not n_seg.isdigit():
        raise ValueError("number of segments is not an integer")
    if not tokens[1].isdigit():
        raise ValueError("number of signals is not an integer")
    out = [new_name + (f"/{n_seg}" if n_seg else ""), tokens[1]]
    rest = tokens[2:]
    if rest:
        m = _FS_TOKEN.match(rest[0])
        if m is None:
            repairs.append("unreadable sampling frequency and the fields after it dropped")
            return " ".join(out), repairs
        fs = m.group(1) + (m.group(2) or "")
        if fs != rest[0]:
            repairs.append("unit dropped from the sampling frequency")
        out.append(fs)
        rest = rest[1:]
    if rest:
        if not rest[0].isdigit():
            repairs.append("unreadable number of samples and the fields after it dropped")
            return " ".join(out), repairs
        out.append(rest[0])
        rest = rest[1:]
    time = date = None
    for token in rest:
        t = _parse_time(token) if time is None else None
        if t is not None:
            time = t
            if date is not None:
                repairs.append("time moved before the date")
            continue
        d = _parse_date(token) if date is None else None
        if d is not None:
            date = d
            if d != token:
                repairs.append("date rewritten as DD/MM/YYYY")
            continue
        repairs.append("unreadable date/time field dropped")
    if date is not None and time is None:
        time = "00:00:00"  # WFDB writes a date only after a time; midnight is its default
        repairs.append("time 00:00:00 inserted before the date")
    out += [v for v in (time, date) if v is not None]
    return " ".join(out), list(dict.fromkeys(repairs))


def _parse_time(token: str) -> str | None:
    """`token` when it is a time of day as WFDB writes it (H:MM[:SS[.ffffff]]), else None."""
    m = _TIME.match(token)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3) or 0) > 59:
        return None
    return token


def _parse_date(token: str) -> str | None:
    for fmt in _DATE_FORMATS:
        try:
            d = _dt.datetime.strptime(token, fmt).date()
        except ValueError:
            continue
        return token if fmt == "%d/%m/%Y" else f"{d.day:02d}/{d.month:02d}/{d.year:04d}"
    return None


def _header_text(header_path: Path) -> str:
    return header_path.read_bytes().decode("ascii", errors="ignore")


def read_header(path: str | Path, rd_segments: bool = False):
    """(wfdb header, repairs) of the record at `path` (with or without extension), read leniently.

    When the record line is not as the WFDB spec writes it (wfdb refuses some such lines and
    silently misreads others: `05-May-2020 14:50:55` gives a base time of 00:00:05), it is
    repaired in memory (`repair_record_line`) and the repaired header parsed from a private
    temporary folder; otherwise wfdb.rdheader reads the file as it is. The input folder is only read. `repairs` lists what was changed (empty: the header parsed as it
    is). Raises EcgReadError naming the record when the header is missing or still does not parse.
    """
    import wfdb

    base = record_base_path(path)
    header_path = base.with_name(base.name + ".hea")
    if not header_path.is_file():
        raise EcgReadError(f"{base}: header file {header_path.name} not found")
    try:
        text, repairs = _repaired_header_text(_header_text(header_path), base.name)
    except (OSError, ValueError):
        text, repairs = "", []  # left to wfdb, which names the problem
    if not repairs:
        try:
            return wfdb.rdheader(str(base), rd_segments=rd_segments), []
        except Exception as exc:  # wfdb raises HeaderSyntaxError, ValueError, IndexError...
            raise EcgReadError(f"{base}: header {header_path.name} does not parse ({type(exc).__name__})") from None
    with tempfile.TemporaryDirectory(prefix="medssl-hea-") as tmp:
        fixed = Path(tmp) / header_path.name
        fixed.write_text(text, encoding="ascii", errors="ignore")
        try:
            header = wfdb.rdheader(str(fixed.with_suffix("")), rd_segments=False)
        except Exception as exc:
            raise EcgReadError(f"{base}: header {header_path.name} does not parse, even with its record line "
                               f"repaired ({type(exc).__name__})") from None
    if getattr(header, "seg_name", None):
        raise EcgReadError(f"{base}: multi-segment header {header_path.name} needed repairs "
                           f"({'; '.join(repairs)}); repaired multi-segment headers are not supported")
    return header, repairs


def _repaired_header_text(text: str, record_name: str) -> tuple[str, list[str]]:
    """The header text with its record line (the first line that is not a comment) repaired."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        content, hash_, comment = line.partition("#")
        fixed, repairs = repair_record_line(content, record_name)
        lines[i] = fixed + (f" {hash_}{comment}" if hash_ else "")
        return "\n".join(lines) + "\n", repairs
    raise ValueError("no record line")


@contextlib.contextmanager
def wfdb_readable(path: str | Path, header=None) -> Iterator[str]:
    """A record path wfdb.rdrecord can read: the record itself when its header parses as written
    (`header` None), else a private temporary folder holding the repaired header and links to (or,
    where links are impossible, copies of) its signal files. Removed on exit."""
    base = record_base_path(path)
    if header is None:
        yield str(base)
        return
    text, _ = _repaired_header_text(_header_text(base.with_name(base.name + ".hea")), base.name)
    with tempfile.TemporaryDirectory(prefix="medssl-wfdb-") as tmp:
        folder = Path(tmp)
        (folder / f"{base.name}.hea").write_text(text, encoding="ascii", errors="ignore")
        for name in _signal_file_names(header):
            src = (base.parent / name).resolve()
            dst = folder / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_file() and not dst.exists():
                try:
                    os.symlink(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
        yield str(folder / base.name)


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
