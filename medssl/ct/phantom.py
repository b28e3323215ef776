"""A synthetic chest CT phantom with lung nodules, written as real DICOM series, with ground truth.

Anatomy (analytic, in patient millimetres around the scan centre, evaluated at every voxel's
world position so any slice orientation images the same body): air outside; a body ellipse with
a subcutaneous fat layer (-100 HU) around muscle (40 HU); two lungs (ellipsoids, about -850 HU)
with vessel-like texture (tubes where two smooth random fields are both near zero); a mediastinum
with fat (-90 HU), heart (40 HU) and aorta (45 HU); a vertebra (cancellous 250 HU, cortex 700 HU)
with its posterior arch, sternum and ribs (bone). Nodules sit inside the lungs.

Nodule malignancy (1-5, as LIDC-IDRI's ratings) drives, through probabilities, the nodule's
size (diameter ~ 4 + 3.5 x rating mm), margin (smooth, lobulated, spiculated: spiculation grows
with the rating) and density (solid, part-solid, ground-glass at about -550 HU: solid grows with
the rating), so a classifier can learn it from patches, not from one cue alone.

The scanner: Gaussian blur (reconstruction kernel, sigma in mm), white noise (HU), rounding to
integers, clipping to [-1024, 3071] HU; stored as uint16 (or int16) with RescaleSlope/Intercept.
Two default sites differ in slice spacing, field of view, noise and kernel (a domain shift).

Ground truth (:class:`ChestPhantom`): HU array (X, Y, Z) exactly as a reader should return it,
the RAS+ affine, a nodule label mask (0 background, k + 1 inside nodule k), and each nodule's
centre (world mm), diameter, malignancy, margin and density. Patient IDs are fake
("PHANTOM-0007"), file and folder names never contain them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.imaging.dicom import LPS_TO_RAS
from medssl.io import atomic_write_json, make_temp_dir

HU_MIN, HU_MAX = -1024.0, 3071.0
MARGINS = ("smooth", "lobulated", "spiculated")
DENSITIES = ("solid", "part-solid", "ground-glass")
# P(margin), P(density) per malignancy rating 1..5
_MARGIN_P = np.array([[0.88, 0.10, 0.02], [0.80, 0.15, 0.05], [0.50, 0.30, 0.20], [0.25, 0.30, 0.45],
                      [0.10, 0.20, 0.70]])
_DENSITY_P = np.array([[0.35, 0.05, 0.60], [0.45, 0.10, 0.45], [0.60, 0.15, 0.25], [0.75, 0.15, 0.10],
                       [0.85, 0.10, 0.05]])
_RATING_P = np.array([0.22, 0.25, 0.16, 0.20, 0.17])
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class ScannerSite:
    """Acquisition settings of one synthetic scanner site."""

    name: str
    slice_mm: float = 2.5
    fov_mm: float = 340.0
    noise_hu: float = 15.0
    blur_mm: float = 0.8
    kernel: str = "STANDARD"
    manufacturer: str = "medssl phantom"


DEFAULT_SITES = (
    ScannerSite("A", slice_mm=2.0, fov_mm=340.0, noise_hu=25.0, blur_mm=0.6, kernel="SHARP"),
    ScannerSite("B", slice_mm=3.0, fov_mm=360.0, noise_hu=10.0, blur_mm=1.6, kernel="SOFT"),
)


@dataclass
class PhantomNodule:
    centre_lps: np.ndarray  # (3,) mm, DICOM patient coordinates
    diameter_mm: float
    malignancy: int  # 1..5
    margin: str
    density: str

    @property
    def centre_ras(self) -> np.ndarray:
        return self.centre_lps * np.array([-1.0, -1.0, 1.0])


@dataclass
class ChestPhantom:
    """hu, mask: (X, Y, Z) (X along image rows, Y down columns, Z slices in order along the normal:
    the reader's layout). lps_affine / affine: voxel -> LPS / RAS+ mm."""

    hu: np.ndarray
    mask: np.ndarray
    lps_affine: np.ndarray
    nodules: list[PhantomNodule]
    pixel_mm: tuple[float, float]  # (along rows = DICOM column spacing, along columns = row spacing)
    slice_mm: float
    site: ScannerSite = field(default_factory=lambda: DEFAULT_SITES[0])

    @property
    def affine(self) -> np.ndarray:
        return LPS_TO_RAS @ self.lps_affine

    @property
    def orientation(self) -> np.ndarray:
        """ImageOrientationPatient: row direction then column direction (LPS unit vectors)."""
        a = self.lps_affine[:3, :3]
        return np.concatenate([a[:, 0] / self.pixel_mm[0], a[:, 1] / self.pixel_mm[1]])

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k (LPS mm of its first voxel)."""
        return self.lps_affine[:3, 3] + k * self.lps_affine[:3, 2]


def _orientation(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines (LPS): axial when tilt is 0, else rotated by `tilt_deg`
    about the left-right axis and by a third of it about the head-foot axis (a general oblique)."""
    t, y = np.radians(tilt_deg), np.radians(tilt_deg / 3.0)
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    rot = rz @ rx
    return rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 1.0, 0])


def _inside(q: np.ndarray, centre, semi) -> np.ndarray:
    """Points of q (..., 3) inside the ellipse (2 semi-axes: a cylinder along z) or ellipsoid."""
    acc = None
    for a in range(len(semi)):
        term = ((q[..., a] - np.float32(centre[a])) / np.float32(semi[a])) ** 2
        acc = term if acc is None else acc + term
    return acc <= 1.0


def _smooth_field(shape, sigma_vox, rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return f / (f.std() + 1e-6)


_LUNGS = (((72.0, -5.0, 10.0), (58.0, 72.0, 120.0)), ((-72.0, -5.0, 10.0), (58.0, 72.0, 120.0)))


def _anatomy(q: np.ndarray, spacing: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """HU at relative LPS points q (X, Y, Z, 3) and the lung mask."""
    hu = np.full(q.shape[:-1], -1000.0, dtype=np.float32)
    body = _inside(q, (0, 0), (155, 110))
    hu[body] = -100.0
    hu[_inside(q, (0, 0), (141, 96))] = 40.0
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    # ribs: a ring inside the body wall, interrupted along z and near the spine and sternum
    ring = _inside(q, (0, 0), (136, 92)) & ~_inside(q, (0, 0), (128, 84))
    angle = np.arctan2(y, x)
    ribs = ring & (np.cos(2 * np.pi * (z - 12 * np.abs(angle)) / 26.0) > 0.45) & (np.abs(x) > 25)
    hu[ribs] = 600.0
    hu[_inside(q, (0, -40), (24, 34))] = -90.0  # anterior mediastinal fat
    hu[_inside(q, (20, -20, -30), (55, 45, 70))] = 40.0  # heart
    hu[_inside(q, (12, 22), (14, 14))] = 45.0  # descending aorta
    lungs = np.zeros(hu.shape, dtype=bool)
    for centre, semi in _LUNGS:
        lungs |= _inside(q, centre, semi)
    lungs &= body
    sigma = 5.0 / spacing  # vessel-like tubes: both fields near zero
    f1, f2 = _smooth_field(hu.shape, sigma, rng), _smooth_field(hu.shape, sigma, rng)
    vessels = np.exp(-(f1 ** 2 + f2 ** 2) / (2 * 0.18 ** 2))
    hu[lungs] = (-850.0 + 820.0 * vessels + 12.0 * rng.standard_normal(hu.shape).astype(np.float32))[lungs]
    hu[_inside(q, (0, -98), (16, 7))] = 400.0  # sternum
    hu[_inside(q, (0, 70), (17, 15))] = 700.0  # vertebral body cortex
    hu[_inside(q, (0, 70), (14, 12))] = 250.0  # cancellous bone
    hu[_inside(q, (0, 93), (8, 10))] = 500.0  # posterior arch
    return hu, lungs


def _nodule_shape(q: np.ndarray, n: PhantomNodule, rng) -> tuple[np.ndarray, np.ndarray]:
    """(inside mask, HU) of a nodule at relative-to-centre points q (..., 3) mm."""
    radius = n.diameter_mm / 2.0
    r = np.linalg.norm(q, axis=-1)
    u = q / np.maximum(r, 1e-6)[..., None]
    dirs = rng.standard_normal((12, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    if n.margin == "smooth":
        axes = rng.uniform(0.9, 1.1, 3)
        inside = (((q / (radius * axes)) ** 2).sum(-1)) <= 1.0
    elif n.margin == "lobulated":
        weights = rng.uniform(0.2, 0.45, 4)
        rho = radius * (0.8 + (np.clip(u @ dirs[:4].T, 0, None) ** 4 * weights).sum(-1))
        inside = r <= rho
    else:  # spiculated: a core with tapering spikes
        core = 0.8 * radius
        inside = r <= core
        for d in dirs[: rng.integers(6, 12)]:
            length = core + radius * rng.uniform(0.8, 1.6)
            t = q @ d
            perp = np.linalg.norm(q - t[..., None] * d, axis=-1)
            inside |= (t > 0) & (t < length) & (perp < 0.3 * radius * (1 - t / length) + 0.4)
    solid = 30.0 + 15.0 * rng.standard_normal(q.shape[:-1])
    ggo = -550.0 + 40.0 * rng.standard_normal(q.shape[:-1])
    if n.density == "solid":
        hu = solid
    elif n.density == "ground-glass":
        hu = ggo
    else:
        hu = np.where(r <= 0.5 * radius, solid, ggo)
    return inside, hu.astype(np.float32)


def _draw_nodules(n_nodules, q_lps_centre, grid_points, lungs, spacing, rng, malignancy=None) -> list[PhantomNodule]:
    out: list[PhantomNodule] = []
    lung_pts = grid_points[lungs]
    if len(lung_pts) == 0:
        return out
    for i in range(n_nodules):
        rating = int(malignancy[i]) if malignancy is not None else int(rng.choice(5, p=_RATING_P)) + 1
        diameter = float(np.clip(rng.normal(4.0 + 3.5 * rating, 2.5), 3.5, 30.0))
        margin = MARGINS[rng.choice(3, p=_MARGIN_P[rating - 1])]
        density = DENSITIES[rng.choice(3, p=_DENSITY_P[rating - 1])]
        for _ in range(200):
            c = lung_pts[rng.integers(len(lung_pts))]
            # well inside a lung and away from other nodules
            ok = any(_inside(c[None], ctr, np.asarray(semi) - diameter / 2 - 6.0)[0] for ctr, semi in _LUNGS)
            ok &= all(np.linalg.norm(c - (o.centre_lps - q_lps_centre)) > (o.diameter_mm + diameter) / 2 + 8
                      for o in out)
            if ok:
                break
        else:
            continue
        out.append(PhantomNodule(c + q_lps_centre, diameter, rating, margin, density))
    return out


def make_chest_phantom(
    shape: Sequence[int] = (64, 64, 48),
    *,
    site: ScannerSite = DEFAULT_SITES[0],
    pixel_mm: float | Sequence[float] | None = None,
    slice_mm: float | None = None,
    n_nodules: int = 2,
    malignancy: Sequence[int] | None = None,
    tilt_deg: float = 0.0,
    centre_lps: Sequence[float] = (-4.0, 22.0, -160.0),
    seed: int = 0,
) -> ChestPhantom:
    """A chest phantom of `shape` (X, Y, Z) voxels imaged by `site`.

    pixel_mm: in-plane spacing (one value, or (along rows, along columns)); default the site's
    field of view / shape. slice_mm: slice spacing (default the site's). malignancy: force the
    nodules' ratings (len n_nodules). tilt_deg: an oblique orientation (0 = axial).
    centre_lps: the scan centre in patient coordinates (table position)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 2:
        raise ValueError(f"shape {shape}: expected three sizes of at least 2")
    if pixel_mm is None:
        pixel = (site.fov_mm / shape[0], site.fov_mm / shape[1])
    else:
        pixel = tuple(float(v) for v in np.broadcast_to(np.asarray(pixel_mm, dtype=float), (2,)))
    dz = float(slice_mm or site.slice_mm)
    row, col = _orientation(tilt_deg)
    normal = np.cross(row, col)
    centre = np.asarray(centre_lps, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * pixel[0], col * pixel[1], normal * dz
    lps[:3, 3] = centre - lps[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), axis=-1)
    q = (idx @ lps[:3, :3].T + (lps[:3, 3] - centre)).astype(np.float32)  # relative LPS mm of every voxel
    spacing = np.array([pixel[0], pixel[1], dz])
    hu, lungs = _anatomy(q, spacing, rng)
    nodules = _draw_nodules(n_nodules, centre, q, lungs, spacing, rng, malignancy)
    mask = np.zeros(shape, dtype=np.uint8)
    inv = np.linalg.inv(lps)
    for k, n in enumerate(nodules):
        c = inv[:3, :3] @ n.centre_lps + inv[:3, 3]
        reach = (n.diameter_mm * 1.5 + 2.0) / spacing
        box = tuple(slice(max(int(np.floor(ci - ri)), 0), min(int(np.ceil(ci + ri)) + 1, s))
                    for ci, ri, s in zip(c, reach, shape))
        inside, values = _nodule_shape(q[box] - (n.centre_lps - centre), n, rng)
        inside &= lungs[box]
        hu[box][inside] = values[inside]
        mask[box][inside] = k + 1
    sigma = np.array([site.blur_mm / pixel[0], site.blur_mm / pixel[1], max(site.blur_mm, 0.4 * dz) / dz])
    hu = gaussian_filter(hu, sigma, mode="nearest")
    hu += site.noise_hu * rng.standard_normal(shape).astype(np.float32)
    hu = np.clip(np.round(hu), HU_MIN, HU_MAX).astype(np.float32)
    return ChestPhantom(hu, mask, lps, nodules, pixel, dz, site)


def write_dicom_series(
    phantom: ChestPhantom,
    folder: str | Path,
    *,
    patient_id: str = "PHANTOM-0000",
    shuffle: bool = False,
    drop_slice: int | None = None,
    duplicate_slice: int | None = None,
    rescale: tuple[float, float] = (1.0, -1024.0),
    signed: bool = False,
    compress: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write the phantom as a CT Image Storage series (one file per slice) into the new folder
    `folder` (written in a temporary folder, then renamed). Returns the files written.

    shuffle: random file names and InstanceNumbers (readers must sort by position).
    drop_slice: leave slice k out (a missing slice). duplicate_slice: write slice k twice.
    rescale: (RescaleSlope, RescaleIntercept); values stored as uint16, or int16 when `signed`.
    compress: None (Explicit VR Little Endian) or "rle" (RLE Lossless, pydicom's own encoder).
    UIDs are generated from `patient_id` and `seed`, so reruns give the same series.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        RLELossless,
        generate_uid,
    )

    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder}: already exists; write each series to a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    n_slices = phantom.hu.shape[2]
    slope, intercept = (float(v) for v in rescale)
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    stored = np.clip(np.round((phantom.hu - intercept) / slope), info.min, info.max).astype(dtype)

    def uid(*parts) -> str:
        return generate_uid(entropy_srcs=["medssl-phantom", patient_id, str(seed), *map(str, parts)])

    study, series, frame = uid("study"), uid("series"), uid("frame")
    ks = [k for k in range(n_slices) if k != drop_slice]
    if duplicate_slice is not None:
        ks.append(duplicate_slice)
    instance = rng.permutation(len(ks)) + 1 if shuffle else np.arange(len(ks)) + 1
    names = [f"{rng.integers(16 ** 8):08x}.dcm" for _ in ks] if shuffle else [f"IM{i + 1:04d}.dcm" for i in
                                                                              range(len(ks))]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()  # one dataset, its per-slice elements changed for each file
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.PatientName = f"Doe^Jane{patient_id.split('-')[-1]}"  # fake, to check no reader output carries it
    ds.PatientBirthDate = "19000101"
    ds.Manufacturer, ds.ConvolutionKernel = phantom.site.manufacturer, phantom.site.kernel
    ds.SeriesDescription, ds.KVP, ds.SeriesNumber = f"synthetic chest {patient_id}", 120, 1
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in phantom.orientation]
    ds.PixelSpacing = [f"{phantom.pixel_mm[1]:.6f}", f"{phantom.pixel_mm[0]:.6f}"]  # between rows, columns
    ds.SliceThickness = f"{phantom.slice_mm:.4f}"
    ds.Rows, ds.Columns = phantom.hu.shape[1], phantom.hu.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    if compress not in (None, "rle"):
        raise ValueError(f"compress={compress!r}: expected None or 'rle'")
    tmp = make_temp_dir(folder)
    paths = []
    try:
        for j, k in enumerate(ks):
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid("sop", j)
            ds.InstanceNumber = int(instance[j])
            pos = phantom.slice_position(k)
            ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
            ds.SliceLocation = f"{pos[2]:.6f}"
            pixels = np.ascontiguousarray(stored[:, :, k].T)  # (Rows, Columns)
            if compress == "rle":
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.compress(RLELossless, pixels, generate_instance_uid=False)
            else:
                ds.PixelData = pixels.tobytes()
            pydicom.dcmwrite(tmp / names[j], ds, enforce_file_format=True)
            paths.append(folder / names[j])
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return paths


def write_mask_nifti(phantom: ChestPhantom, path: str | Path) -> Path:
    """The nodule label mask (0, k + 1 for nodule k) as NIfTI (.nii or .nii.gz) with the phantom's
    RAS+ affine, written atomically (gzip without a timestamp: reruns give identical files)."""
    import gzip

    import nibabel as nib

    from medssl.io import atomic_write

    img = nib.Nifti1Image(phantom.mask, phantom.affine)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, lambda p: p.write_bytes(data))


def _write_case(folder: Path, site_index: int, i: int, subjects_per_site: int, seed: int, shape, z_extent_mm: float,
                nodules_per_subject) -> tuple[str, str, list]:
    """Generate and write subject i of site `site_index` (deterministic; an existing series folder,
    written atomically by an earlier run, is kept). Returns (case, site name, ground-truth Nodules)."""
    from pydicom.uid import generate_uid

    from medssl.ct.nodules import Nodule
    from medssl.imaging.dicom import pseudonym

    site = DEFAULT_SITES[site_index]
    number = site_index * subjects_per_site + i
    case, patient = f"case{number:04d}", f"PHANTOM-{number:04d}"
    rng = np.random.default_rng([seed, site_index, i])
    n_z = max(2, int(round(z_extent_mm / site.slice_mm)))
    ph = make_chest_phantom((shape[0], shape[1], n_z), site=site,
                            n_nodules=int(rng.integers(nodules_per_subject[0], nodules_per_subject[1] + 1)),
                            seed=int(rng.integers(2 ** 31)),
                            centre_lps=(rng.uniform(-10, 10), rng.uniform(10, 40), rng.uniform(-200, -100)))
    if not (folder / "series" / case).exists():
        write_dicom_series(ph, folder / "series" / case, patient_id=patient, seed=seed)
    write_mask_nifti(ph, folder / "masks" / f"{case}.nii.gz")
    series_id = pseudonym(generate_uid(entropy_srcs=["medssl-phantom", patient, str(seed), "series"]), prefix="ser")
    nodules = [Nodule(series_id=series_id, centre_ras=n.centre_ras, diameter_mm=round(n.diameter_mm, 3),
                      malignancy=float(n.malignancy), subject_id=pseudonym(patient, prefix="sub")) for n in ph.nodules]
    return case, site.name, nodules


def write_synthetic(
    folder: str | Path,
    *,
    subjects_per_site: int = 20,
    seed: int = 0,
    nodules_per_subject: tuple[int, int] = (1, 3),
    shape: tuple[int, int] = (64, 64),
    z_extent_mm: float = 120.0,
    workers: int | None = None,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """A two-site synthetic chest CT cohort for nodule malignancy classification, indexed.

    Writes under `folder`: series/<case>/*.dcm (one DICOM series per subject, sites A and B of
    DEFAULT_SITES), masks/<case>.nii.gz (nodule label masks aligned with the series), nodules.csv
    (LIDC-style list, LPS mm), sites.csv, manifest.csv and phantom.json (the settings, written
    last: a folder made with other settings is refused, one made with the same settings is
    re-indexed, an interrupted one completed). Subjects are generated in `workers` processes
    (default: one per core). Returns (rows, skipped): one row per nodule with a label under the
    LIDC convention (rating-3 nodules are skipped and listed), the `dicom` layout's columns plus
    center_*_mm, diameter_mm, malignancy, site, split (by subject, 70/15/15) and mask_path."""
    import os
    from concurrent.futures import ProcessPoolExecutor

    from medssl.ct.dicom_folder import index_dicom_folder
    from medssl.ct.nodules import write_nodule_csv
    from medssl.data.manifest import write_manifest
    from medssl.data.manifest import subject_split
    from medssl.io import atomic_write_text

    folder = Path(folder)
    settings = {"subjects_per_site": int(subjects_per_site), "seed": int(seed),
                "nodules_per_subject": list(nodules_per_subject), "shape": list(shape), "z_extent_mm": z_extent_mm}
    stamp = folder / "phantom.json"
    nodule_csv = folder / "nodules.csv"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != settings:
            raise ValueError(f"{folder}: holds a synthetic CT cohort made with other settings ({stamp})")
    else:
        jobs = [(folder, s, i, subjects_per_site, seed, tuple(shape), z_extent_mm, tuple(nodules_per_subject))
                for s in range(len(DEFAULT_SITES)) for i in range(subjects_per_site)]
        workers = min(workers or os.cpu_count() or 1, max(1, len(jobs) // 4))
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(_write_case, *zip(*jobs), chunksize=4))
        else:
            results = [_write_case(*job) for job in jobs]
        write_nodule_csv(nodule_csv, [n for _, _, ns in results for n in ns])
        atomic_write_text(folder / "sites.csv", "case,site\n" + "".join(f"{c},{s}\n" for c, s, _ in results))
        atomic_write_json(stamp, settings)
    sites = dict(line.split(",") for line in (folder / "sites.csv").read_text().splitlines()[1:])
    rows, skipped = index_dicom_folder(folder / "series", nodules=nodule_csv)
    for row in rows:
        case = Path(row["path"]).name
        row["site"] = sites.get(case, "")
        row["split"] = subject_split(row["subject_id"], seed=seed)
        row["mask_path"] = str(folder / "masks" / f"{case}.nii.gz")
    write_manifest(rows, folder / "manifest.csv")
    return rows, skipped
