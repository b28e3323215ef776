"""DICOM series -> :class:`medssl.imaging.volume.Volume` (CT and MRI), with pseudonymous identities.

A series is the set of files sharing a SeriesInstanceUID. Files whose SeriesInstanceUID is
missing or blank (anonymisers blank or drop UIDs) are grouped by what remains: their folder,
FrameOfReferenceUID, StudyInstanceUID, Modality, SeriesNumber, matrix size (Rows x Columns),
ImageOrientationPatient and PixelSpacing (rounded); such a series gets a stable pseudonymous id
(the same files in the same folder give the same id on every run) and ``series_id_source``
says how it was formed; `warn_derived_series` warns once per scan. Its slices are ordered by their
position along the slice normal (ImagePositionPatient projected on the cross product of the two
ImageOrientationPatient direction cosines), never by file name or InstanceNumber. Stored values
become physical values through the modality LUT (RescaleSlope/RescaleIntercept: Hounsfield units
for CT). The affine maps voxel indices to RAS+ millimetres: DICOM's patient coordinates are LPS+,
so x and y change sign.

Voxel axes of the returned array (X, Y, Z): X runs along a row of the image (DICOM column index,
direction ImageOrientationPatient[:3], spacing PixelSpacing[1]), Y down the columns (DICOM row
index, direction ImageOrientationPatient[3:], spacing PixelSpacing[0]), Z along the sorted slices.

Slice problems are detected from the headers and reported (:class:`SeriesReport`):
  duplicates  two slices at the same position (within 0.01 mm). Policy ``duplicates``:
              "drop" (default) keeps one and drops identical copies, refusing copies whose pixels
              differ (several echoes, phases or repeats stored in one series); "keep_first" keeps
              the first (lowest InstanceNumber, then file name) whatever the pixels; "error" refuses.
  missing     a step between neighbouring slices over ``gap_factor`` (1.5) x the median step.
              Policy ``missing``: "error" (default) refuses; "interpolate" fills the gap by
              linear interpolation between its neighbours (reported: those slices are not data).
  uneven      steps that differ from the median by more than 1% (at least 0.01 mm), gaps aside.
              Policy ``uneven``: "interpolate" (default; warns) resamples onto a regular grid at
              the median step; "error" refuses.
Allowed problems raise a :class:`DicomSeriesWarning`; refused ones a :class:`DicomSeriesError`.

Identities: PatientID and SeriesInstanceUID never leave this module in clear. A subject is
``sub-`` + the first 16 hex digits of HMAC-SHA256(salt, PatientID) (a salted SHA-256), a series
``ser-`` + the same of its SeriesInstanceUID. The salt is the ``salt`` argument, else the
environment variable ``MEDSSL_PSEUDONYM_SALT``, else a public default: with the default, anyone
holding a PatientID can recompute its pseudonym, so set a secret salt (and keep it: another salt
gives other IDs) before sharing manifests of real data. File paths are reported as they are: name
folders after pseudonyms, not patients.

Free text is never kept: descriptions, comments, institution, physician, protocol and sequence
names (SeriesDescription, StudyDescription, ImageComments, ProtocolName, ...) can hold names,
birth dates and accession numbers, so only whitelisted, coded facts leave this module
(:data:`FACT_KEYS`): numbers (kVp, field strength, TE/TR/TI, slice thickness), the manufacturer
mapped onto a fixed vocabulary of vendors (else "other"), the reconstruction kernel only when it
is kernel-shaped (`B30f`, `STANDARD`, `FC13`...), BodyPartExamined and ScanningSequence only as
DICOM code strings, and ``contrast`` (yes/no, whether ContrastBolusAgent is set, not its text).
A coded value that contains a part of the patient's identity (ID, name parts, birth date,
accession number) is dropped too.

Compressed transfer syntaxes are read through pydicom's pixel-data plugins; when a plugin is
missing the error names the file, the transfer syntax and the packages that would decode it.
The project declares pylibjpeg with its openjpeg (JPEG 2000), libjpeg (JPEG, JPEG-LS) and RLE
plugins as dependencies, so the transfer syntaxes anonymisers use decode out of the box.
Multi-frame (enhanced) images are refused with a clear error. pydicom's own warnings and log
records (e.g. "value length exceeds VR") are silenced while a file is read and its elements are
converted (:func:`quiet_pydicom`): they can quote header values, names included.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.imaging.volume import Volume

DEFAULT_SALT = "medssl-public-default-salt"
SALT_ENV = "MEDSSL_PSEUDONYM_SALT"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DUPLICATE_TOL_MM = 0.01
COLLINEAR_TOL_MM = 0.1
DUPLICATE_POLICIES = ("drop", "keep_first", "error")
MISSING_POLICIES = ("error", "interpolate")
UNEVEN_POLICIES = ("interpolate", "error")
_NUMERIC_FACTS = {  # header keyword -> meta key: numbers about the acquisition, never the patient
    "KVP": "kvp", "MagneticFieldStrength": "field_strength_t", "EchoTime": "echo_time_ms",
    "RepetitionTime": "repetition_time_ms", "InversionTime": "inversion_time_ms",
    "SliceThickness": "slice_thickness_mm",
}
FACT_KEYS = ("manufacturer", "kernel", "body_part", "scanning_sequence", "contrast", *_NUMERIC_FACTS.values())
# Manufacturer (free text, LO) -> vendor; matched on the lower-cased value, first match wins.
VENDORS: tuple[tuple[str, str], ...] = (
    ("siemens", "siemens"), ("ge medical", "ge"), ("ge healthcare", "ge"), ("general electric", "ge"),
    ("gems", "ge"), ("philips", "philips"), ("toshiba", "canon"), ("canon", "canon"), ("hitachi", "hitachi"),
    ("fujifilm", "fujifilm"), ("samsung", "samsung"), ("united imaging", "united_imaging"), ("uih", "united_imaging"),
    ("neusoft", "neusoft"), ("esaote", "esaote"), ("agfa", "agfa"), ("carestream", "carestream"),
    ("hologic", "hologic"), ("imatron", "imatron"), ("elscint", "elscint"), ("picker", "picker"),
    ("marconi", "marconi"), ("bruker", "bruker"), ("mediso", "mediso"), ("shimadzu", "shimadzu"),
)
_KERNEL = re.compile(r"^[A-Za-z]{1,8}\d{0,3}[A-Za-z]?(?:[ ,\\/]\d{1,2}[A-Za-z]?)?$")
_CODE_STRING = re.compile(r"^[A-Z_ ]{1,16}$")
_SCANNING_SEQUENCES = frozenset({"SE", "IR", "GR", "EP", "RM"})
_UID_FREE_KEY = ("FrameOfReferenceUID", "StudyInstanceUID", "Modality", "SeriesNumber")


class DicomSeriesError(ValueError):
    """A DICOM file or series cannot be read as a volume; the message names the file or series."""


class NotDicomError(DicomSeriesError):
    """A file is not a DICOM file."""


class DicomDecodeError(DicomSeriesError):
    """Pixel data cannot be decoded (typically: no installed plugin for its transfer syntax)."""


class DicomSeriesWarning(UserWarning):
    """A series was read despite allowed problems (duplicates dropped, gaps interpolated...)."""


# ---------------------------------------------------------------- pseudonyms

def resolve_salt(salt: str | None = None) -> str:
    """The salt in force: `salt`, else $MEDSSL_PSEUDONYM_SALT, else the public default."""
    if salt:
        return str(salt)
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def pseudonym(value: str, *, salt: str | None = None, prefix: str = "sub", length: int = 16) -> str:
    """``prefix-`` + the first `length` hex digits of HMAC-SHA256(salt, value).

    The same value and salt always give the same pseudonym; without the salt it cannot be
    inverted except by trying candidate values (hence: keep a real salt secret)."""
    digest = hmac.new(resolve_salt(salt).encode(), str(value).strip().encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:length]}"


def _identity_parts(ds) -> list[str]:
    """Strings that identify the patient or the visit: IDs, name parts, birth date (as written and
    as YYYY-MM-DD, DD/MM/YYYY, DD.MM.YYYY), accession number."""
    parts = []
    for key in ("PatientID", "OtherPatientIDs", "AccessionNumber", "IssuerOfPatientID"):
        value = ds.get(key)
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        parts += [str(v).strip() for v in values if v is not None and len(str(v).strip()) >= 2]
    for key in ("PatientName", "PatientMotherBirthName", "OtherPatientNames"):
        name = str(ds.get(key, "") or "")
        parts += [p for p in re.split(r"[\^=\s,]+", name) if len(p) >= 2]
    dob = re.sub(r"\D", "", str(ds.get("PatientBirthDate", "") or ""))
    if len(dob) == 8:
        y, m, d = dob[:4], dob[4:6], dob[6:]
        parts += [dob, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{d}.{m}.{y}", f"{m}/{d}/{y}"]
    return parts


def scrub(text: str, identities: Iterable[str]) -> str:
    """`text` with every whole-word occurrence of the identity strings replaced by "[removed]"
    (case-insensitive)."""
    for part in sorted(identities, key=len, reverse=True):
        if part:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(part)}(?![A-Za-z0-9])", "[removed]", text,
                          flags=re.IGNORECASE)
    return text


# ---------------------------------------------------------------- headers

class _DropRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom while a file is read and its elements converted: its warnings and its log
    records (pydicom both warns and logs, e.g. "The value length (72) exceeds the maximum length
    of 64 allowed for VR LO", and may quote the value, a name included). pydicom converts raw
    elements lazily, on first access, so every access to a dataset must happen inside."""
    logger = logging.getLogger("pydicom")
    quiet = _DropRecords()
    logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeFilter(quiet)


def _coded_facts(ds, identities: Sequence[str]) -> dict[str, Any]:
    """The whitelisted, coded facts of a header (module docstring): never free text."""
    facts: dict[str, Any] = {}
    for tag, key in _NUMERIC_FACTS.items():
        num = _number(ds.get(tag))
        if num is not None:
            facts[key] = num

    def safe(value: str) -> bool:
        return bool(value) and scrub(value, identities) == value

    maker = str(ds.get("Manufacturer", "") or "").strip().lower()
    if maker:
        facts["manufacturer"] = next((v for k, v in VENDORS if k in maker), "other")
    kernel = ds.get("ConvolutionKernel")
    if kernel is not None and kernel != "":
        if isinstance(kernel, (list, tuple)) or type(kernel).__name__ == "MultiValue":
            kernel = "\\".join(str(v) for v in kernel)
        kernel = str(kernel).strip()
        if _KERNEL.match(kernel) and safe(kernel):
            facts["kernel"] = kernel
    body = str(ds.get("BodyPartExamined", "") or "").strip()
    if _CODE_STRING.match(body) and safe(body):
        facts["body_part"] = body
    seq = ds.get("ScanningSequence")
    if seq is not None and seq != "":
        codes = [str(v).strip() for v in (seq if not isinstance(seq, str) else str(seq).split("\\"))]
        if codes and all(c in _SCANNING_SEQUENCES for c in codes):
            facts["scanning_sequence"] = "\\".join(codes)
    if "ContrastBolusAgent" in ds:
        facts["contrast"] = "yes" if str(ds.get("ContrastBolusAgent", "") or "").strip() else "no"
    return facts


def _derived_series_key(ds, path: Path, rows: int, cols: int, orientation, pixel_spacing) -> str:
    """What groups a file into a series when its SeriesInstanceUID is missing or blank."""
    parts = [f"folder={path.parent.resolve()}"]
    for key in _UID_FREE_KEY:
        parts.append(f"{key}={str(ds.get(key, '') or '').strip()}")
    parts.append(f"matrix={rows}x{cols}")
    parts.append("orientation=" + ("" if orientation is None else ",".join(f"{v:.3f}" for v in orientation)))
    parts.append("spacing=" + ("" if pixel_spacing is None else ",".join(f"{v:.4f}" for v in pixel_spacing)))
    return "derived:" + "|".join(parts)


DERIVED_SERIES_SOURCE = ("derived (no SeriesInstanceUID): folder, FrameOfReferenceUID, StudyInstanceUID, "
                         "Modality, SeriesNumber, matrix, orientation, pixel spacing")


_WARNED_READING = False  # read_dicom_series warns about derived series once per process


def warn_derived_series(series: dict[str, list[SliceHeader]], where: str = "", *, once_per_process: bool = False
                        ) -> int:
    """Warn once (one DicomSeriesWarning for the whole scan; with `once_per_process`, for the first
    such scan of the process only, as when a cache reads series one by one) when some series were
    formed without a SeriesInstanceUID; returns how many were."""
    global _WARNED_READING
    derived = [hs for uid, hs in series.items() if uid.startswith("derived:")]
    if derived and once_per_process:
        if _WARNED_READING:
            return len(derived)
        _WARNED_READING = True
    if derived:
        n_files = sum(len(hs) for hs in derived)
        warnings.warn(DicomSeriesWarning(
            f"{where + ': ' if where else ''}{n_files} DICOM file(s) have no SeriesInstanceUID (blanked by an "
            f"anonymiser?); grouped into {len(derived)} series by folder, FrameOfReferenceUID, StudyInstanceUID, "
            f"Modality, SeriesNumber, matrix, orientation and pixel spacing, with stable pseudonymous ids"),
            stacklevel=2)
    return len(derived)


@dataclass
class SliceHeader:
    """What medssl keeps from one file's header (no identities: subject and series as pseudonyms;
    the raw SeriesInstanceUID, or the key standing in for it, only groups files in memory and is
    never written)."""

    path: Path
    series_uid: str = field(repr=False)
    series_id: str
    subject_id: str
    subject_source: str
    modality: str
    sop_class: str
    transfer_syntax: str
    rows: int
    columns: int
    n_frames: int
    position: np.ndarray | None  # (3,) LPS mm
    orientation: np.ndarray | None  # (6,) row then column direction cosines
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    instance: int | None
    spacing_between_slices: float | None
    facts: dict[str, Any]  # whitelisted coded facts only (FACT_KEYS)
    series_source: str = "SeriesInstanceUID"  # or DERIVED_SERIES_SOURCE


def _floats(value, n: int, what: str, path: Path) -> np.ndarray | None:
    if value is None or value == "":
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise DicomSeriesError(f"{path}: {what} is not numeric") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"{path}: {what} should hold {n} finite numbers")
    return arr


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def read_header(path: str | Path, *, salt: str | None = None) -> SliceHeader:
    """The header of one DICOM image file. Raises :class:`NotDicomError` for a non-DICOM file and
    :class:`DicomSeriesError` for a DICOM file that holds no image or a malformed geometry."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    with quiet_pydicom():  # also around every element access: pydicom converts values lazily
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            raise NotDicomError(f"{path}: not a DICOM file (no 'DICM' preamble)") from None
        except (OSError, EOFError) as e:
            raise DicomSeriesError(f"{path}: unreadable DICOM file ({type(e).__name__})") from None
        except Exception as e:  # pydicom raises assorted errors on truncated/corrupt files
            raise DicomSeriesError(f"{path}: corrupt DICOM header ({type(e).__name__})") from None
        try:
            return _header_from_dataset(ds, path, salt)
        except DicomSeriesError:
            raise
        except Exception as e:  # a malformed element met on conversion
            raise DicomSeriesError(f"{path}: malformed DICOM header ({type(e).__name__})") from None


def _header_from_dataset(ds, path: Path, salt: str | None) -> SliceHeader:
    sop = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", ""))
    sop_name = getattr(ds.get("SOPClassUID"), "name", sop) if "SOPClassUID" in ds else sop
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomSeriesError(f"{path}: DICOM file without an image ({sop_name or 'no SOP class'})")
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    identities = _identity_parts(ds)
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        subject, source = pseudonym(pid, salt=salt, prefix="sub"), "PatientID"
    else:
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
        if study:
            subject, source = pseudonym(study, salt=salt, prefix="sub"), "StudyInstanceUID (no PatientID)"
        else:
            subject = pseudonym(str(path.parent.resolve()), salt=salt, prefix="sub")
            source = "folder (no PatientID, no StudyInstanceUID)"
    rows, cols = int(ds.Rows), int(ds.Columns)
    pixel_spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", path)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", path)
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    series_source = "SeriesInstanceUID"
    if not series_uid:
        series_uid = _derived_series_key(ds, path, rows, cols, orientation, pixel_spacing)
        series_source = DERIVED_SERIES_SOURCE
    instance = ds.get("InstanceNumber")
    try:
        instance = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        instance = None
    return SliceHeader(
        path=path, series_uid=series_uid, series_id=pseudonym(series_uid, salt=salt, prefix="ser"),
        subject_id=subject, subject_source=source, modality=str(ds.get("Modality", "") or ""),
        sop_class=str(sop_name), transfer_syntax=ts, rows=rows, columns=cols,
        n_frames=int(_number(ds.get("NumberOfFrames")) or 1),
        position=_floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", path),
        orientation=orientation,
        pixel_spacing=None if pixel_spacing is None else (float(pixel_spacing[0]), float(pixel_spacing[1])),
        instance=instance, spacing_between_slices=_number(ds.get("SpacingBetweenSlices")),
        facts=_coded_facts(ds, identities), series_source=series_source,
    )


def scan_dicom_files(paths: Iterable[str | Path], *, salt: str | None = None
                     ) -> tuple[dict[str, list[SliceHeader]], list[tuple[str, str]]]:
    """Headers of the image files among `paths` grouped by series (raw SeriesInstanceUID ->
    headers, in first-seen order), and (path, reason) for every file that is not a DICOM image."""
    series: dict[str, list[SliceHeader]] = {}
    skipped: list[tuple[str, str]] = []
    for p in paths:
        try:
            h = read_header(p, salt=salt)
        except DicomSeriesError as e:
            skipped.append((str(p), _reason(e, p)))
            continue
        series.setdefault(h.series_uid, []).append(h)
    return series, skipped


def _reason(e: Exception, path) -> str:
    msg = str(e)
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def list_files(root: str | Path) -> list[Path]:
    """Every regular file under `root` (recursive, sorted, hidden files and folders excluded)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def decoder_problem(transfer_syntax: str) -> str | None:
    """None when pydicom can decode pixel data in `transfer_syntax` here; otherwise what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax)
    name = f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"pixel data in transfer syntax {name}: pydicom has no decoder for it"
    if decoder.is_available:
        return None
    needs = "; ".join(decoder.missing_dependencies) or "a pixel-data plugin"
    return f"pixel data in {name} needs a decoder plugin that is not installed: {needs}"


# ---------------------------------------------------------------- geometry

@dataclass
class SeriesReport:
    """What was found in one series and what was done about it (no identities)."""

    series_id: str
    subject_id: str
    modality: str
    n_files: int
    n_slices: int = 0
    spacing_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    duplicates: list[str] = field(default_factory=list)  # "dropped.dcm = kept.dcm"
    gaps: list[dict] = field(default_factory=list)  # {"after", "gap_mm", "missing"}
    uneven_steps: int = 0
    max_step_deviation_mm: float = 0.0
    interpolated_slices: int = 0
    shear_deg: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def missing_slices(self) -> int:
        return sum(int(g["missing"]) for g in self.gaps)

    def problems(self) -> list[str]:
        """One short phrase per problem found (empty when the series is regular)."""
        out = []
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicated slice(s) dropped")
        if self.gaps:
            out.append(f"{self.missing_slices} missing slice(s) in {len(self.gaps)} gap(s)"
                       + (f", {self.interpolated_slices} interpolated" if self.interpolated_slices else ""))
        if self.uneven_steps:
            out.append(f"{self.uneven_steps} uneven slice step(s) (up to {self.max_step_deviation_mm:.3g} mm "
                       f"off the median)")
        return out + list(self.notes)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SlicePlan:
    """Sorted slices of a series and the regular grid the volume is built on."""

    slices: list[SliceHeader]  # kept, sorted along the normal
    dropped: list[tuple[SliceHeader, SliceHeader]]  # (duplicate, the slice it duplicates)
    offsets: np.ndarray  # (n,) position of each kept slice along the normal, mm
    grid: np.ndarray  # (n_out,) positions of the output slices along the normal, mm
    step: np.ndarray  # (3,) LPS mm between output slices
    report: SeriesReport

    @property
    def regular(self) -> bool:
        return len(self.grid) == len(self.offsets) and np.allclose(self.grid, self.offsets, atol=1e-3)


def _check_policy(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")


def plan_series(headers: Sequence[SliceHeader], *, duplicates: str = "drop", missing: str = "error",
                uneven: str = "interpolate", gap_factor: float = 1.5) -> SlicePlan:
    """Order a series' slices along the normal, find duplicates, gaps and uneven steps, and decide
    the output grid, applying the policies (see the module docstring). Header-only: pixels are not
    read. Raises :class:`DicomSeriesError` for a refused or inconsistent series."""
    _check_policy("duplicates", duplicates, DUPLICATE_POLICIES)
    _check_policy("missing", missing, MISSING_POLICIES)
    _check_policy("uneven", uneven, UNEVEN_POLICIES)
    if not headers:
        raise DicomSeriesError("empty series")
    first = headers[0]
    sid = first.series_id
    report = SeriesReport(series_id=sid, subject_id=first.subject_id, modality=first.modality, n_files=len(headers))
    for h in headers:
        if h.n_frames > 1:
            raise DicomSeriesError(f"{h.path}: multi-frame image ({h.n_frames} frames, {h.sop_class}); "
                                   f"multi-frame DICOM is not supported")
        for what, value in (("ImagePositionPatient", h.position), ("ImageOrientationPatient", h.orientation),
                            ("PixelSpacing", h.pixel_spacing)):
            if value is None:
                raise DicomSeriesError(f"{h.path}: no {what}; cannot place the slice in space")
        if (h.rows, h.columns) != (first.rows, first.columns):
            raise DicomSeriesError(f"{h.path}: {h.rows}x{h.columns} pixels, but {first.path.name} of the same "
                                   f"series has {first.rows}x{first.columns}")
        if not np.allclose(h.orientation, first.orientation, atol=1e-3):
            raise DicomSeriesError(f"{h.path}: ImageOrientationPatient differs from {first.path.name} of the "
                                   f"same series (localizer or several stacks in one series?)")
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):
            raise DicomSeriesError(f"{h.path}: PixelSpacing {h.pixel_spacing} differs from "
                                   f"{first.pixel_spacing} in {first.path.name} of the same series")
    row, col = first.orientation[:3], first.orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2 or abs(row @ col) > 1e-2:
        raise DicomSeriesError(f"{first.path}: ImageOrientationPatient rows/columns are not orthonormal")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    key = [(float(h.position @ normal), h.instance if h.instance is not None else 0, h.path.name) for h in headers]
    order = sorted(range(len(headers)), key=lambda i: key[i])
    kept: list[SliceHeader] = []
    dropped: list[tuple[SliceHeader, SliceHeader]] = []
    for i in order:
        h = headers[i]
        if kept and abs(key[i][0] - float(kept[-1].position @ normal)) < DUPLICATE_TOL_MM:
            dropped.append((h, kept[-1]))
            continue
        kept.append(h)
    if dropped:
        report.duplicates = [f"{d.path.name} = {k.path.name}" for d, k in dropped]
        if duplicates == "error":
            raise DicomSeriesError(f"series {sid}: {len(dropped)} slice(s) share a position with another "
                                   f"({'; '.join(report.duplicates[:3])}); pass duplicates='drop' to drop them")
    offsets = np.array([float(h.position @ normal) for h in kept])
    positions = np.stack([h.position for h in kept])
    n = len(kept)
    if n == 1:
        step_len = first.spacing_between_slices or first.facts.get("slice_thickness_mm")
        if not step_len:
            step_len = 1.0
            report.notes.append("single slice without SliceThickness: 1 mm assumed")
        report.n_slices = 1
        report.spacing_mm = (first.pixel_spacing[1], first.pixel_spacing[0], float(step_len))
        return SlicePlan(kept, dropped, offsets, offsets.copy(), normal * float(step_len), report)

    # Slices must lie on one line (a straight or sheared stack), else they are several stacks.
    direction = (positions[-1] - positions[0]) / (offsets[-1] - offsets[0])
    residual = np.linalg.norm(positions - (positions[0] + np.outer(offsets - offsets[0], direction)), axis=1)
    if residual.max() > COLLINEAR_TOL_MM:
        worst = kept[int(residual.argmax())]
        raise DicomSeriesError(f"series {sid}: slice {worst.path.name} is {residual.max():.2f} mm off the line "
                               f"through the other slices' positions (several stacks in one series?)")
    shear = float(np.degrees(np.arccos(np.clip(1.0 / np.linalg.norm(direction), -1, 1))))
    if shear > 0.01:
        report.shear_deg = shear
        report.notes.append(f"slices stacked at {shear:.2f} deg to the normal (gantry tilt, or positions off "
                            f"the normal): sheared affine")
    steps = np.diff(offsets)
    median = float(np.median(steps))
    gap_mask = steps > gap_factor * median
    for i in np.flatnonzero(gap_mask):
        report.gaps.append({"after": kept[i].path.name, "gap_mm": round(float(steps[i]), 4),
                            "missing": max(1, int(round(steps[i] / median)) - 1)})
    regular_steps = steps[~gap_mask]
    dev = np.abs(regular_steps - median)
    tol = max(0.01 * median, 0.01)
    report.uneven_steps = int((dev > tol).sum())
    report.max_step_deviation_mm = float(dev.max()) if dev.size else 0.0
    if report.gaps and missing == "error":
        g = report.gaps[0]
        raise DicomSeriesError(
            f"series {sid}: {report.missing_slices} slice(s) missing ({len(report.gaps)} gap(s); {g['gap_mm']:g} mm "
            f"after {g['after']} where the median step is {median:.4g} mm); pass missing='interpolate' to fill "
            f"them by linear interpolation")
    if report.uneven_steps and uneven == "error":
        raise DicomSeriesError(f"series {sid}: {report.uneven_steps} slice step(s) differ from the median "
                               f"{median:.4g} mm by up to {report.max_step_deviation_mm:.3g} mm; pass "
                               f"uneven='interpolate' to resample onto a regular grid")
    span = offsets[-1] - offsets[0]
    if report.gaps or report.uneven_steps:
        n_out = int(round(span / median)) + 1
        grid = offsets[0] + np.arange(n_out) * (span / (n_out - 1))
        report.interpolated_slices = int(sum(np.min(np.abs(offsets - g)) > 1e-3 for g in grid))
    else:
        grid = offsets.copy()
    step = direction * (span / (len(grid) - 1))
    report.n_slices = len(grid)
    report.spacing_mm = (first.pixel_spacing[1], first.pixel_spacing[0], float(span / (len(grid) - 1)))
    return SlicePlan(kept, dropped, offsets, grid, step, report)


def plan_affine(plan: SlicePlan) -> np.ndarray:
    """(4, 4) voxel (X, Y, Z) -> RAS+ mm affine of the plan's output grid."""
    h = plan.slices[0]
    row, col = h.orientation[:3], h.orientation[3:]
    lps = np.eye(4)
    lps[:3, 0] = row * h.pixel_spacing[1]
    lps[:3, 1] = col * h.pixel_spacing[0]
    lps[:3, 2] = plan.step
    lps[:3, 3] = h.position
    return LPS_TO_RAS @ lps


# ---------------------------------------------------------------- pixels

def read_slice_pixels(path: str | Path) -> np.ndarray:
    """(Rows, Columns) float64 physical values of one single-frame file (modality LUT applied:
    RescaleSlope/RescaleIntercept or a Modality LUT Sequence). Raises :class:`DicomDecodeError`
    naming the file and the plugin it needs when its pixel data cannot be decoded."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    with quiet_pydicom():  # pydicom's warnings and logs can quote header values (names)
        try:
            ds = pydicom.dcmread(path)
        except Exception as e:
            raise DicomSeriesError(f"{path}: unreadable DICOM file ({type(e).__name__})") from None
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
        problem = decoder_problem(ts)
        if problem:
            raise DicomDecodeError(f"{path}: {problem}")
        try:
            raw = ds.pixel_array
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DicomDecodeError(f"{path}: pixel data could not be decoded ({first_line})") from None
        values = apply_modality_lut(raw, ds)
    if raw.ndim != 2:
        raise DicomSeriesError(f"{path}: expected one greyscale frame, got pixel array of shape {raw.shape}")
    return np.asarray(values, dtype=np.float64)


def _interpolate_slices(stack: np.ndarray, offsets: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis from slice positions `offsets` onto `grid`."""
    idx = np.clip(np.searchsorted(offsets, grid, side="right") - 1, 0, len(offsets) - 2)
    t = np.clip((grid - offsets[idx]) / (offsets[idx + 1] - offsets[idx]), 0.0, 1.0)
    return stack[..., idx] * (1 - t) + stack[..., idx + 1] * t


def _resolve_source(source, salt) -> tuple[dict[str, list[SliceHeader]], list[tuple[str, str]], str]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            files = list_files(p)
            if not files:
                raise DicomSeriesError(f"{p}: empty folder")
        elif p.is_file():
            files = [p]
        else:
            raise DicomSeriesError(f"{p}: no such file or folder")
        where = str(p)
    else:
        files = [Path(f) for f in source]
        if not files:
            raise DicomSeriesError("no files given")
        where = f"{files[0].parent} ({len(files)} files)"
    series, skipped = scan_dicom_files(files, salt=salt)
    return series, skipped, where


def select_series(series: dict[str, list[SliceHeader]], wanted: str | None, where: str) -> list[SliceHeader]:
    """The headers of series `wanted` (a pseudonymous ``ser-...`` id or a raw SeriesInstanceUID);
    with `wanted` None, the only series there is."""
    if not series:
        raise DicomSeriesError(f"{where}: no DICOM image files")
    if wanted is None:
        if len(series) > 1:
            listing = ", ".join(f"{hs[0].series_id} ({hs[0].modality}, {len(hs)} files)" for hs in series.values())
            raise DicomSeriesError(f"{where}: {len(series)} series found ({listing}); choose one with series=")
        return next(iter(series.values()))
    for uid, hs in series.items():
        if wanted in (uid, hs[0].series_id):
            return hs
    found = ", ".join(h[0].series_id for h in series.values())
    raise DicomSeriesError(f"{where}: no series {wanted!r} (found {found}); "
                           f"a pseudonymous id only matches under the salt it was made with")


def read_dicom_series(
    source: str | Path | Sequence[str | Path],
    *,
    series: str | None = None,
    salt: str | None = None,
    duplicates: str = "drop",
    missing: str = "error",
    uneven: str = "interpolate",
    gap_factor: float = 1.5,
) -> Volume:
    """Read one DICOM series as a Volume: array (X, Y, Z) float32 physical values (CT: HU), affine
    voxel -> RAS+ mm, meta with the pseudonymous ``series_id``/``subject_id``, ``modality``,
    ``spacing_mm``, acquisition facts and ``report`` (a :class:`SeriesReport`).

    source: a folder (searched recursively), one file, or a list of files. series: which series
    when there are several (pseudonymous id or SeriesInstanceUID). Policies: module docstring.
    """
    series_map, skipped, where = _resolve_source(source, salt)
    warn_derived_series(series_map, where, once_per_process=True)
    if not series_map and skipped:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise DicomSeriesError(f"{where}: no DICOM image files ({reasons})")
    headers = select_series(series_map, series, where)
    plan = plan_series(headers, duplicates=duplicates, missing=missing, uneven=uneven, gap_factor=gap_factor)
    slices = [read_slice_pixels(h.path) for h in plan.slices]
    if duplicates == "drop" and plan.dropped:
        pos = {id(h): i for i, h in enumerate(plan.slices)}
        for dup, kept in plan.dropped:
            if not np.array_equal(read_slice_pixels(dup.path), slices[pos[id(kept)]]):
                raise DicomSeriesError(
                    f"series {plan.report.series_id}: {dup.path.name} and {kept.path.name} are different images at "
                    f"the same position (echoes, phases or repeats in one series?); pass duplicates='keep_first' "
                    f"to keep one of each")
    stack = np.stack([s.T for s in slices], axis=-1)  # (Rows, Cols) -> (X, Y), slices last
    if not plan.regular:
        stack = _interpolate_slices(stack, plan.offsets, plan.grid)
    report = plan.report
    if report.problems():
        warnings.warn(DicomSeriesWarning(f"series {report.series_id} ({where}): " + "; ".join(report.problems())),
                      stacklevel=2)
    first = plan.slices[0]
    meta = {
        "source": "dicom", "modality": first.modality, "series_id": first.series_id, "subject_id": first.subject_id,
        "subject_id_source": first.subject_source, "series_id_source": first.series_source,
        "n_slices": int(stack.shape[-1]),
        "spacing_mm": tuple(float(v) for v in report.spacing_mm),
        "transfer_syntaxes": sorted({h.transfer_syntax for h in plan.slices}),
        **first.facts, "report": report,
    }
    return Volume(stack.astype(np.float32), plan_affine(plan), meta)
