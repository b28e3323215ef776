"""Nodule (finding) lists in world coordinates, LIDC-IDRI-style malignancy labels, and patches.

A nodule list is a CSV with one row per nodule:
  subject_id, series_id, x_mm, y_mm, z_mm, diameter_mm, malignancy[, frame]
coordinates in millimetres in DICOM patient coordinates (LPS+, as ImagePositionPatient and
LUNA16's annotations.csv) unless a `frame` column (or the reader's `frame` argument) says "RAS".
LUNA16's column names (seriesuid, coordX, coordY, coordZ, diameter_mm) are accepted too.
`series_id` is the pseudonymous series id of :mod:`medssl.imaging.dicom` or the raw
SeriesInstanceUID (matched under the salt in force, then dropped).

Labels from radiologists' malignancy ratings (1 highly unlikely ... 5 highly suspicious) follow
the convention common in the LIDC-IDRI literature, NOT an official LIDC rule: nodules of at least
3 mm, the median rating over readers > 3 -> "malignant", < 3 -> benign, exactly 3 -> excluded
as indeterminate.

Manifest rows carry a finding as columns center_x_mm, center_y_mm, center_z_mm (RAS+ unless
center_frame is "LPS"), diameter_mm and malignancy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.imaging.volume import Volume
from medssl.io import atomic_write_text

LPS_RAS_FLIP = np.array([-1.0, -1.0, 1.0])
MIN_DIAMETER_MM = 3.0
NODULE_COLUMNS = ("subject_id", "series_id", "x_mm", "y_mm", "z_mm", "frame", "diameter_mm", "malignancy")
_ALIASES = {
    "series_id": ("series_id", "series", "seriesuid", "SeriesInstanceUID"),
    "subject_id": ("subject_id", "subject", "patient"),
    "x_mm": ("x_mm", "x", "coordX"),
    "y_mm": ("y_mm", "y", "coordY"),
    "z_mm": ("z_mm", "z", "coordZ"),
    "diameter_mm": ("diameter_mm", "diameter"),
    "malignancy": ("malignancy", "malignancy_median", "rating"),
    "frame": ("frame", "coordinate_frame"),
}


def lps_to_ras(points: np.ndarray) -> np.ndarray:
    """(..., 3) LPS+ mm -> RAS+ mm (and back: the map is its own inverse)."""
    return np.asarray(points, dtype=np.float64) * LPS_RAS_FLIP


def malignancy_label(rating: float | None, diameter_mm: float | None = None) -> str | None:
    """"malignant" (median rating > 3), "" (benign, < 3) or None (excluded: rating 3, no rating,
    or a nodule under 3 mm) under the common LIDC-IDRI convention."""
    if rating is None or not np.isfinite(rating):
        return None
    if diameter_mm is not None and diameter_mm < MIN_DIAMETER_MM:
        return None
    if rating > 3:
        return "malignant"
    if rating < 3:
        return ""
    return None


@dataclass
class Nodule:
    """One finding: centre in RAS+ mm, diameter mm, malignancy rating (median over readers) or None."""

    series_id: str
    centre_ras: np.ndarray
    diameter_mm: float | None = None
    malignancy: float | None = None
    subject_id: str = ""

    @property
    def centre_lps(self) -> np.ndarray:
        return lps_to_ras(self.centre_ras)


def _column(fields: Sequence[str], key: str) -> str | None:
    lower = {f.lower(): f for f in fields}
    for alias in _ALIASES[key]:
        if alias.lower() in lower:
            return lower[alias.lower()]
    return None


def _float(value, what: str, where: str, required: bool) -> float | None:
    if value is None or str(value).strip() == "":
        if required:
            raise ValueError(f"{where}: no {what}")
        return None
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"{where}: {what} {value!r} is not a number") from None
    if not np.isfinite(v):
        raise ValueError(f"{where}: {what} is not finite")
    return v


def read_nodule_csv(path: str | Path, *, frame: str = "LPS") -> list[Nodule]:
    """Nodules of a nodule-list CSV (module docstring); coordinates converted to RAS+.
    frame: the coordinates' frame where the file has no `frame` column ("LPS" or "RAS")."""
    path = Path(path)
    if frame not in ("LPS", "RAS"):
        raise ValueError(f"frame {frame!r}: expected LPS or RAS")
    if not path.is_file():
        raise ValueError(f"{path}: nodule list not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        cols = {k: _column(fields, k) for k in _ALIASES}
        missing = [k for k in ("series_id", "x_mm", "y_mm", "z_mm") if cols[k] is None]
        if missing:
            raise ValueError(f"{path}: nodule list lacks column(s) {', '.join(missing)} (has {', '.join(fields)})")
        out = []
        for i, row in enumerate(reader, start=2):
            where = f"{path}, line {i}"
            xyz = np.array([_float(row[cols[k]], k, where, True) for k in ("x_mm", "y_mm", "z_mm")])
            row_frame = (row.get(cols["frame"]) or frame).strip().upper() if cols["frame"] else frame
            if row_frame not in ("LPS", "RAS"):
                raise ValueError(f"{where}: frame {row_frame!r}: expected LPS or RAS")
            series = (row[cols["series_id"]] or "").strip()
            if not series:
                raise ValueError(f"{where}: no series id")
            rating = _float(row.get(cols["malignancy"]), "malignancy", where, False) if cols["malignancy"] else None
            if rating is not None and not 1 <= rating <= 5:
                raise ValueError(f"{where}: malignancy {rating:g} outside 1-5")
            diameter = _float(row.get(cols["diameter_mm"]), "diameter", where, False) if cols["diameter_mm"] else None
            subject = (row.get(cols["subject_id"]) or "").strip() if cols["subject_id"] else ""
            out.append(Nodule(series_id=series, centre_ras=lps_to_ras(xyz) if row_frame == "LPS" else xyz,
                              diameter_mm=diameter, malignancy=rating, subject_id=subject))
    return out


def write_nodule_csv(path: str | Path, nodules: Sequence[Nodule], *, frame: str = "LPS") -> Path:
    """Write nodules (atomically) with coordinates in `frame` (LPS by default, like DICOM)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NODULE_COLUMNS)
    for n in nodules:
        xyz = n.centre_lps if frame == "LPS" else np.asarray(n.centre_ras)
        w.writerow([n.subject_id, n.series_id, *(f"{v:.4f}" for v in xyz), frame,
                    "" if n.diameter_mm is None else f"{n.diameter_mm:.3f}",
                    "" if n.malignancy is None else f"{n.malignancy:g}"])
    return atomic_write_text(path, buf.getvalue())


def nodule_row_columns(nodule: Nodule) -> dict[str, str]:
    """The manifest columns of a finding (centre in RAS+)."""
    x, y, z = (float(v) for v in nodule.centre_ras)
    return {"center_x_mm": f"{x:.4f}", "center_y_mm": f"{y:.4f}", "center_z_mm": f"{z:.4f}", "center_frame": "RAS",
            "diameter_mm": "" if nodule.diameter_mm is None else f"{nodule.diameter_mm:.3f}",
            "malignancy": "" if nodule.malignancy is None else f"{nodule.malignancy:g}"}


def row_centre(row: Mapping[str, str]) -> np.ndarray | None:
    """(3,) RAS+ mm centre of a manifest row's finding, or None when the row has none."""
    values = [row.get(f"center_{a}_mm") for a in "xyz"]
    if all(v in (None, "") for v in values):
        return None
    where = f"{row.get('path', '?')}"
    xyz = np.array([_float(v, f"center_{a}_mm", where, True) for v, a in zip(values, "xyz")])
    frame = (row.get("center_frame") or "RAS").strip().upper()
    if frame not in ("RAS", "LPS"):
        raise ValueError(f"{where}: center_frame {frame!r}: expected RAS or LPS")
    return lps_to_ras(xyz) if frame == "LPS" else xyz


def voxel_patch(volume: Volume, centre_ras: Sequence[float], size: Sequence[int], *, fill: float = -1000.0
                ) -> np.ndarray:
    """A patch of `size` voxels cut from the volume's own grid (no resampling) around the voxel
    nearest to `centre_ras` (RAS mm -> voxel through the inverse affine); that voxel sits at index
    n // 2 of each axis. Outside the scan: `fill` (air)."""
    from medssl.ct.preprocess import world_to_voxel

    size = tuple(int(n) for n in size)
    centre = np.round(world_to_voxel(volume.affine, np.asarray(centre_ras))).astype(int)
    out = np.full(size, fill, dtype=np.float32)
    src, dst = [], []
    for c, n, dim in zip(centre, size, volume.spatial_shape):
        lo = c - n // 2
        a, b = max(lo, 0), min(lo + n, dim)
        if a >= b:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = volume.array[tuple(src)]
    return out
