"""Index the PhysioNet/CinC Challenge 2020/2021 training data (the `physionet2021` layout).

The Challenge ("Will Two Do? Varying Dimensions in Electrocardiography", Reyna et al.,
CinC 2021) ships WFDB records from several sources, one folder each, split into groups of
at most a few thousand records:

    training/cpsc_2018/g1/A0001.hea + A0001.mat
    training/georgia/g3/E02001.hea + .mat
    training/chapman_shaoxing/g1/JS00001.hea + .mat
    ...

Each header carries the diagnoses as SNOMED-CT codes in comment lines: `#Dx: 426783006,164889003`
(plus `#Age`, `#Sex`, `#Rx`, `#Hx`, `#Sx`, which medssl never writes or logs). Labels are the
codes' Challenge abbreviations, looked up in the table shipped with medssl,
`medssl/ecg/data/snomed_ct_ecg.csv`: the 30 scored and 103 unscored diagnoses of the 2021
Challenge (`dx_mapping_scored.csv` / `dx_mapping_unscored.csv` of its evaluation code).

A code missing from the table does not stop the batch. A record with at least one known code is
kept with its known codes, its unknown codes are listed in the row's `unknown_dx` column, and a
warning naming the record is logged. A record with no known code is skipped with the codes named.

Site: the first folder under the root (or under a `training`/`validation`/`test` folder) that
is not a `g<N>` group folder nor a lead-set folder; without one, the source is inferred from the
record name prefix (`SOURCE_PREFIXES`).

Subjects: the Challenge headers carry no patient id, so each recording is its own subject, named
by the recording (`E00271`), not by its path: the Challenge's reduced-lead copies of a recording
(folders such as `12_leads/`, `6_leads/`, `4_leads/`, `3_leads/`, `2_leads/`, each holding the same
names with fewer channels) are one subject, so one person's ECG never sits in two splits. Each
row says which leads it holds (`leads`, `n_leads`). See the data card for the caveat on PTB and
PTB-XL, which have repeat recordings of one person under different names. Splits by subject
through `medssl.ecg.layouts.subject_split`.

Headers are read leniently (`medssl.ecg.wfdb_reader.read_header`): record lines as written by
the Georgia and CPSC sources (`E00271.mat 12 500 5000 05-May-2020 14:50:55`) are repaired in
memory and the repairs listed in the row's `header_repairs`.
"""

from __future__ import annotations

import csv
import logging
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from medssl.data.manifest import join_labels
from medssl.ecg.layouts import LayoutError, subject_split
from medssl.ecg.leads import canonical_lead_name
from medssl.ecg.wfdb_reader import EcgReadError, parse_header_comments, read_header

log = logging.getLogger(__name__)

SNOMED_TABLE = "snomed_ct_ecg.csv"

# Record-name prefix -> source, for records not stored under a source folder (longest match wins).
SOURCE_PREFIXES: dict[str, str] = {
    "A": "cpsc_2018",
    "Q": "cpsc_2018_extra",
    "I": "st_petersburg_incart",
    "S": "ptb",
    "HR": "ptb-xl",
    "E": "georgia",
    "JS": "chapman_shaoxing_ningbo",  # both sources use JS; their folders tell them apart
}

_SPLIT_FOLDERS = frozenset({"training", "validation", "test"})
_GROUP_FOLDER = re.compile(r"^g\d+$", re.IGNORECASE)
_LEAD_FOLDER = re.compile(r"(^|[_\-\s])(\d{1,2}|twelve|six|four|three|two)[_\-\s]?leads?$", re.IGNORECASE)

# Bytes per sample of the WFDB storage formats whose file size is checked against the header.
_BYTES_PER_SAMPLE: dict[str, float] = {
    "8": 1, "80": 1, "16": 2, "61": 2, "160": 2, "24": 3, "32": 4, "212": 1.5, "310": 4 / 3, "311": 4 / 3,
}


@lru_cache(maxsize=1)
def snomed_table() -> dict[str, dict[str, str]]:
    """The shipped SNOMED-CT table: code -> {abbreviation, description, scored ("1"/"0"), scored_as}.

    `scored_as` names the code the Challenge scores this one as (e.g. CRBBB 713427006 and RBBB
    59118001); labels keep each code's own abbreviation.
    """
    text = resources.files("medssl.ecg").joinpath("data", SNOMED_TABLE).read_text()
    out: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(text.splitlines()):
        out[row["snomed_code"].strip()] = {k: (v or "").strip() for k, v in row.items() if k != "snomed_code"}
    return out


def index_physionet2021(
    root: str | Path,
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows for the Challenge records under `root`, and the (path, reason) pairs skipped.

    Row: record_id (path relative to root without extension), subject_id (the recording's name,
    shared by its reduced-lead copies), path (absolute, without extension), split (by subject),
    labels (";"-joined abbreviations), site (source), sampling_rate (Hz), n_samples, leads
    (";"-joined canonical leads in the header), n_leads, dx (the header's SNOMED codes,
    ";"-joined), unknown_dx (codes not in the table), header_repairs (what the lenient header
    reader changed, "; "-joined; usually empty). Sorted by record_id.

    Skipped: headers that do not parse even repaired; no standard lead; a missing signal file; a signal file
    whose size disagrees with the header's length (e.g. a 500 Hz header on 250 Hz data); no
    `#Dx` line; no code in the table. Raises LayoutError for a missing root.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"{root}: folder not found")
    table = snomed_table()
    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for hea in sorted(root.rglob("*.hea")):
        base = hea.with_suffix("")
        record_id = base.relative_to(root).as_posix()
        try:
            header, repairs = read_header(base)
        except EcgReadError as exc:
            skipped.append((str(base), _reason(exc, base)))
            continue
        if getattr(header, "seg_name", None):
            skipped.append((str(base), "multi-segment record; the Challenge layout has single-segment records"))
            continue
        leads = _leads(header)
        if not leads:
            skipped.append((str(base), f"no standard ECG lead among {', '.join(map(str, header.sig_name or []))}"))
            continue
        problem = signal_file_problem(header, base)
        if problem:
            skipped.append((str(base), problem))
            continue
        meta = parse_header_comments(header.comments or [])
        codes = list(dict.fromkeys(meta.get("dx_codes", [])))
        if not codes:
            skipped.append((str(base), "no #Dx line (SNOMED-CT codes) in the header"))
            continue
        known = [c for c in codes if c in table]
        unknown = [c for c in codes if c not in table]
        if not known:
            skipped.append((str(base), f"no Dx code in the SNOMED-CT table ({', '.join(unknown)})"))
            continue
        if unknown:
            log.warning("%s: Dx code(s) %s not in %s; kept the record with its known codes",
                        base, ", ".join(unknown), SNOMED_TABLE)
        rows.append({
            "record_id": record_id,
            "subject_id": recording_name(record_id),
            "path": str(base),
            "split": subject_split(recording_name(record_id), split_seed, split_fractions),
            "labels": join_labels(table[c]["abbreviation"] for c in known),
            "site": record_source(record_id),
            "sampling_rate": float(header.fs),
            "n_samples": int(header.sig_len or 0),
            "leads": ";".join(leads),
            "n_leads": len(leads),
            "dx": ";".join(codes),
            "unknown_dx": ";".join(unknown),
            "header_repairs": "; ".join(repairs),
        })
    rows.sort(key=lambda r: r["record_id"])
    skipped.sort()
    return rows, skipped


def recording_name(record_id: str) -> str:
    """The recording a record is a copy of: its file name (`E00271` for `georgia/g1/E00271` and for
    `6_leads/georgia/E00271`). The Challenge's record names are unique across its sources, and its
    reduced-lead copies keep the name, so the name is the subject."""
    return record_id.rsplit("/", 1)[-1]


def is_lead_set_folder(folder: str) -> bool:
    """Whether `folder` names one of the Challenge's lead sets (`12_leads`, `6-lead`, `twelve_leads`,
    `training_data_3_leads`...): reduced-lead copies of the same recordings, not a source."""
    return _LEAD_FOLDER.search(folder) is not None


def record_source(record_id: str) -> str:
    """Source of a record: its source folder, else the one its name prefix implies, else ""."""
    parts = record_id.split("/")
    for folder in parts[:-1]:
        if folder.lower() in _SPLIT_FOLDERS or _GROUP_FOLDER.match(folder) or is_lead_set_folder(folder):
            continue
        return folder
    name = parts[-1]
    for prefix in sorted(SOURCE_PREFIXES, key=len, reverse=True):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return SOURCE_PREFIXES[prefix]
    return ""


def _reason(exc: Exception, base: Path) -> str:
    msg = str(exc)
    return msg[len(f"{base}: "):] if msg.startswith(f"{base}: ") else msg


def signal_file_problem(header, base: Path) -> str:
    """Why the signal files of a single-segment header cannot hold what it says, or "".

    Checks that each file named exists and that its size matches the header's number of
    samples at the storage format's width (after any byte offset, e.g. the 24-byte MATLAB v4
    header of the Challenge `.mat` files, format "16+24"). Formats of unknown width are only
    checked for existence.
    """
    names = [str(n) for n in (header.file_name or [])]
    fmts = [str(f) for f in (header.fmt or [None] * len(names))]
    offsets = list(getattr(header, "byte_offset", None) or [None] * len(names))
    sig_len = int(header.sig_len or 0)
    files: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name and not name.startswith("~"):
            files.setdefault(name, []).append(i)
    for name, channels in sorted(files.items()):
        path = base.parent / name
        if not path.is_file():
            return f"signal file {name} not found"
        width = _BYTES_PER_SAMPLE.get(fmts[channels[0]])
        if width is None or sig_len <= 0:
            continue
        offset = int(offsets[channels[0]] or 0)
        frame = width * len(channels)
        held = (path.stat().st_size - offset) / frame
        if abs(held - sig_len) >= 1:
            return (
                f"header says {sig_len} samples ({sig_len / float(header.fs):g} s at {float(header.fs):g} Hz) "
                f"but {name} holds {int(held)} samples per channel"
            )
    return ""


def _leads(header) -> list[str]:
    leads: list[str] = []
    for name in header.sig_name or []:
        lead = canonical_lead_name(str(name))
        if lead is not None and lead not in leads:
            leads.append(lead)
    return leads
