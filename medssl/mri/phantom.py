"""Synthetic brain MRI phantoms with ground truth, and writers for FOMO60K / FOMO25-task replicas.

Anatomy (on a 1 mm grid in RAS voxel order, `make_anatomy`): a head ellipsoid with scalp and
skull, an intracranial space whose outline is deformed by a smooth random field, cortex (GM) with
a gyral pattern over white matter, sulcal CSF, and lateral ventricles. Age drives atrophy: the
brain shrinks away from the skull, the cortex thins and the ventricles grow (volume roughly
doubles from 20 to 80 years), so brain age is learnable. Optional lesions: an infarct (a blob in
one hemisphere's parenchyma) and an extra-axial meningioma-like mass (a sphere on the brain
surface, inside the skull, displacing brain) whose voxels are the segmentation ground truth.

Rendering (`render`): each tissue class gets a sequence-specific intensity (`CONTRASTS`; relative
values after typical T1/T2/FLAIR/DWI/ADC/SWI/T2* appearances: infarct bright on DWI and FLAIR,
dark on ADC; CSF dark on FLAIR and DWI), a little texture, partial-volume blurring, then the
scanner site's acquisition: voxel size / slice thickness (anti-aliased downsampling), a smooth
multiplicative bias field, Rician noise and skull stripping (intracranial voxels kept, zero
outside, as in the FOMO releases). The array is stored in the site's orientation (e.g. LPS) with
the matching affine, so readers must reorient. Everything is vectorised numpy/scipy: a 64^3
phantom takes milliseconds, a 180x220x180 one about a second per sequence.

Writers: `write_fomo60k_replica` (the pretraining layout, with per-source participants.tsv and
mri_info.tsv in differing column spellings, colliding `sub_` names across sources, raw sequence
names such as `mprage` and repeats `t1_2`) and `write_fomo_task_replica` (task folders 1-3 with
labels, some sites with labels lacking the `ses_1/` level, SWI at some sites and T2* at others).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    ornt_transform,
)
from scipy import ndimage

from medssl.imaging.nifti import write_nifti
from medssl.imaging.volume import Volume
from medssl.io import atomic_write_text

BACKGROUND, SCALP, SKULL, CSF, GM, WM, VENTRICLE, INFARCT, MENINGIOMA = range(9)
INTRACRANIAL = (CSF, GM, WM, VENTRICLE, INFARCT, MENINGIOMA)

# label -> relative intensity per sequence (BACKGROUND, SCALP, SKULL, CSF, GM, WM, VENTRICLE, INFARCT, MENINGIOMA)
CONTRASTS: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.90, 0.10, 0.20, 0.55, 0.80, 0.20, 0.38, 0.50),
    "t1c": (0.0, 0.90, 0.10, 0.22, 0.56, 0.80, 0.22, 0.40, 1.00),
    "t2": (0.0, 0.60, 0.05, 1.00, 0.62, 0.45, 1.00, 0.85, 0.66),
    "flair": (0.0, 0.55, 0.05, 0.08, 0.62, 0.45, 0.06, 0.95, 0.68),
    "dwi": (0.0, 0.20, 0.02, 0.08, 0.55, 0.50, 0.08, 1.80, 0.60),
    "adc": (0.0, 0.10, 0.02, 1.00, 0.28, 0.24, 1.00, 0.10, 0.30),
    "swi": (0.0, 0.70, 0.05, 0.80, 0.55, 0.62, 0.80, 0.50, 0.48),
    "t2s": (0.0, 0.65, 0.05, 0.85, 0.50, 0.45, 0.85, 0.55, 0.50),
    "pd": (0.0, 0.85, 0.05, 0.90, 0.76, 0.66, 0.90, 0.85, 0.74),
}
SEQUENCE_ALIASES = {"dwi_b1000": "dwi", "mprage": "t1", "t1w": "t1", "t2w": "t2", "t2star": "t2s", "t1ce": "t1c"}
_STORED_SCALE = 1000.0  # on-disk values: intensity x 1000 as int16 (ADC then reads as 1e-6 mm^2/s)


@dataclass(frozen=True)
class ScannerSite:
    """How one (synthetic) site acquires and stores images."""

    name: str
    spacing_mm: tuple[float, float, float]  # voxel size along R, A, S before reorientation
    orientation: str  # axis codes of the stored array, e.g. "RAS", "LPS"
    noise: float  # Rician noise sd, relative to white matter on T1
    bias: float  # amplitude of the log bias field
    field_strength: str
    vendor: str
    susceptibility: str = "swi"  # "swi" or "t2s": which one the site acquires


DEFAULT_SITES: tuple[ScannerSite, ...] = (
    ScannerSite("siteA", (1.0, 1.0, 1.0), "RAS", 0.02, 0.10, "3", "Siemens", "swi"),
    ScannerSite("siteB", (1.0, 1.0, 3.0), "LPS", 0.05, 0.25, "1.5", "Philips", "t2s"),
    ScannerSite("siteC", (1.2, 1.2, 1.5), "LAS", 0.03, 0.15, "3", "GE", "swi"),
)


@dataclass
class BrainAnatomy:
    """labels: (X, Y, Z) uint8 tissue classes on a 1 mm grid in RAS voxel order; age in years."""

    labels: np.ndarray
    age: float
    infarct: bool
    meningioma: bool

    @property
    def ventricle_volume_ml(self) -> float:
        return float((self.labels == VENTRICLE).sum()) / 1000.0

    @property
    def brain_volume_ml(self) -> float:
        return float(np.isin(self.labels, (GM, WM, VENTRICLE, INFARCT)).sum()) / 1000.0

    def mask(self, *labels: int) -> np.ndarray:
        return np.isin(self.labels, labels)


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised coordinates in [-1, 1] along each axis, as broadcastable float32 arrays."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _smooth_field(x, y, z, rng: np.random.Generator, n_waves: int, freq: tuple[float, float],
                  amplitude: float) -> np.ndarray:
    """A smooth random field: a sum of `n_waves` plane cosines of random direction and phase,
    computed separably (exp(i k.r) = exp(i kx x) exp(i ky y) exp(i kz z)) in complex64."""
    total = None
    for _ in range(n_waves):
        direction = rng.normal(size=3)
        direction *= rng.uniform(*freq) * np.pi / np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        ex = np.exp(1j * (direction[0] * x + phase)).astype(np.complex64)
        ey = np.exp(1j * direction[1] * y).astype(np.complex64)
        ez = np.exp(1j * direction[2] * z).astype(np.complex64)
        wave = (ex * ey) * ez
        total = wave if total is None else total + wave
    return total.real * np.float32(amplitude / np.sqrt(n_waves))


def make_anatomy(shape: tuple[int, int, int], rng: np.random.Generator, *, age: float,
                 infarct: bool = False, meningioma: bool = False) -> BrainAnatomy:
    """A random brain of `age` years on a 1 mm grid of `shape` voxels (the field of view)."""
    x, y, z = _grid(shape)
    atrophy = float(np.clip((age - 20.0) / 60.0, 0.0, 1.3))
    axes = [float(a) for a in np.array([0.92, 0.92, 0.88]) * rng.uniform(0.95, 1.03, size=3)]
    warp = _smooth_field(x, y, z, rng, 4, (0.6, 1.4), 0.035)
    rho = np.sqrt((x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2) + warp
    labels = np.zeros(shape, dtype=np.uint8)
    labels[rho < 1.0] = SCALP
    labels[rho < 0.93] = SKULL
    inner = rho < 0.87
    labels[inner] = CSF
    # Folded cortex: sulci are where the folding field is high; GM is a ribbon of fixed depth
    # under the folded surface, WM beneath it. Atrophy widens sulci and thins the ribbon.
    folded = rho + (0.10 + 0.03 * atrophy) * np.abs(_smooth_field(x, y, z, rng, 6, (5.0, 8.0), 1.0))
    brain_r = 0.85 - 0.05 * atrophy
    brain = inner & (folded < brain_r)
    labels[brain] = GM
    labels[brain & (folded < brain_r - (0.075 - 0.015 * atrophy))] = WM

    scale = float((1.0 + 1.1 * atrophy) * rng.uniform(0.88, 1.12))  # ventricle size; volume ~ scale^3
    for side in (-1.0, 1.0):
        cx, cy, cz = side * 0.10 * np.sqrt(scale), 0.02, 0.10
        v = (((x - cx) / (0.05 * scale)) ** 2 + ((y - cy) / (0.28 + 0.05 * float(atrophy))) ** 2
             + ((z - cz) / (0.08 * scale)) ** 2)
        labels[(v < 1.0) & brain] = VENTRICLE

    if infarct:
        side = rng.choice([-1.0, 1.0])
        centre = [float(side * rng.uniform(0.25, 0.45)), float(rng.uniform(-0.35, 0.35)),
                  float(rng.uniform(-0.15, 0.35))]
        radius = [float(r) for r in rng.uniform(0.08, 0.13, size=3)]
        d = (((x - centre[0]) / radius[0]) ** 2 + ((y - centre[1]) / radius[1]) ** 2
             + ((z - centre[2]) / radius[2]) ** 2) + 0.3 * _smooth_field(x, y, z, rng, 3, (6.0, 10.0), 1.0)
        labels[(d < 1.0) & np.isin(labels, (GM, WM))] = INFARCT

    if meningioma:  # on the convexity, touching the inner skull table, pushing into the brain
        theta = rng.uniform(0.15, 1.1)  # from the vertex
        phi = rng.uniform(0, 2 * np.pi)
        unit = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        centre = [float(c) for c in unit * np.array(axes) * 0.86]
        r = float(rng.uniform(0.10, 0.16))
        d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        labels[(d < r) & inner] = MENINGIOMA
    return BrainAnatomy(labels, float(age), bool(infarct), bool(meningioma))


def _resample_to_site(array: np.ndarray, spacing: tuple[float, float, float], order: int) -> np.ndarray:
    """1 mm grid -> the site's voxel size; thick slices average their slab (slice profile ~ Gaussian)."""
    factors = [1.0 / s for s in spacing]
    if order > 0 and any(s > 1.0 for s in spacing):
        array = ndimage.gaussian_filter(array, sigma=[max(0.0, (s - 1.0) / 2.355 * 1.5) for s in spacing])
    if all(abs(f - 1.0) < 1e-6 for f in factors):
        return array
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def _store(array: np.ndarray, site: ScannerSite) -> tuple[np.ndarray, np.ndarray]:
    """(array in the site's orientation, its RAS+ affine), centred on world (0, 0, 0)."""
    affine = np.diag([*site.spacing_mm, 1.0])
    affine[:3, 3] = -0.5 * (np.array(array.shape) - 1) * np.array(site.spacing_mm)
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(site.orientation)))
    return apply_orientation(array, ornt), affine @ inv_ornt_aff(ornt, array.shape)


def render(anatomy: BrainAnatomy, sequence: str, site: ScannerSite, rng: np.random.Generator, *,
           skull_strip: bool = True) -> Volume:
    """One sequence of `anatomy` as `site` acquires and stores it: a Volume (float32 intensities
    x1000, zero outside the intracranial mask when skull_strip) with the site's affine."""
    seq = SEQUENCE_ALIASES.get(sequence, sequence)
    if seq not in CONTRASTS:
        raise ValueError(f"no contrast for sequence {sequence!r}; known: {', '.join(CONTRASTS)}")
    lut = np.asarray(CONTRASTS[seq], dtype=np.float32)
    image = lut[anatomy.labels]
    x, y, z = _grid(anatomy.labels.shape)
    image *= 1.0 + _smooth_field(x, y, z, rng, 4, (8.0, 14.0), 0.04)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    image = _resample_to_site(image, site.spacing_mm, order=1)
    x, y, z = _grid(image.shape)
    bias = _smooth_field(x, y, z, rng, 3, (0.3, 0.8), site.bias)
    image *= np.exp(bias)
    sd = site.noise * CONTRASTS["t1"][WM]
    image = np.sqrt((image + rng.normal(0, sd, image.shape).astype(np.float32)) ** 2
                    + rng.normal(0, sd, image.shape).astype(np.float32) ** 2)
    if skull_strip:
        keep = _resample_to_site(anatomy.mask(*INTRACRANIAL).astype(np.uint8), site.spacing_mm, order=0)
        image *= keep
    stored, affine = _store(image.astype(np.float32) * np.float32(_STORED_SCALE), site)
    return Volume(np.ascontiguousarray(stored), affine, {"sequence": sequence, "site": site.name})


def render_mask(anatomy: BrainAnatomy, site: ScannerSite, *labels: int) -> Volume:
    """The voxels of `labels` on the site's grid (nearest neighbour), uint8, stored like `render`."""
    mask = _resample_to_site(anatomy.mask(*labels).astype(np.uint8), site.spacing_mm, order=0)
    stored, affine = _store(mask, site)
    return Volume(np.ascontiguousarray(stored), affine, {"site": site.name})


def _write_volume(path: Path, volume: Volume, dtype=np.int16) -> None:
    array = np.clip(np.rint(volume.array), -32768, 32767) if dtype == np.int16 else volume.array
    write_nifti(path, array, volume.affine, dtype=dtype)


def _tsv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# Per-site FOMO60K sequence files (raw names, as sources name them) and table column spellings.
_FOMO60K_SCANS = (("t1", "t2", "flair"), ("mprage", "flair", "t2s", "dwi", "adc"), ("t1", "t1_2", "swi", "pd"))
_PARTICIPANT_COLUMNS = (("participant_id", "age", "sex"), ("participant_id", "Age", "gender"),
                        ("subject", "age_at_scan", "Sex"))


def _subject_rng(seed: int, site_index: int, subject: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, site_index, subject, salt])


def write_fomo60k_replica(root: str | Path, *, subjects_per_site: int = 2, sites=DEFAULT_SITES, seed: int = 0,
                          shape: tuple[int, int, int] = (48, 48, 48)) -> Path:
    """A FOMO60K-layout folder: PT00k_<site>/sub_<i>/ses_<n>/<scan>.nii.gz for each site, subject
    numbers restarting at 1 in every source (as in the release), a second session (two years
    later) for every third subject, per-source participants.tsv and mri_info.tsv. Returns root."""
    root = Path(root)
    for si, site in enumerate(sites):
        source = root / f"PT{si + 1:03d}_{site.name}"
        scans = _FOMO60K_SCANS[si % len(_FOMO60K_SCANS)]
        cols = _PARTICIPANT_COLUMNS[si % len(_PARTICIPANT_COLUMNS)]
        participants, mri_info = [], []
        for k in range(1, subjects_per_site + 1):
            rng = _subject_rng(seed, si, k)
            age = float(rng.uniform(20, 85))
            sex = str(rng.choice(["M", "F"]))
            sessions = [1, 2] if k % 3 == 0 else [1]
            participants.append({cols[0]: f"sub_{k}", cols[1]: f"{age:.1f}", cols[2]: sex})
            for ses in sessions:
                anatomy = make_anatomy(shape, rng, age=age + 2.0 * (ses - 1))
                for scan in scans:
                    seq = scan.split("_")[0]
                    rel = f"sub_{k}/ses_{ses}/{scan}.nii.gz"
                    _write_volume(source / rel, render(anatomy, seq, site, rng))
                    mri_info.append({"participant_id": f"sub_{k}", "session_id": f"ses_{ses}", "filename": rel,
                                     "Manufacturer": site.vendor, "MagneticFieldStrength": site.field_strength})
        atomic_write_text(source / "participants.tsv", _tsv(participants))
        atomic_write_text(source / "mri_info.tsv", _tsv(mri_info))
    return root


def write_fomo_task_replica(root: str | Path, task: int, *, subjects_per_site: int = 4, sites=DEFAULT_SITES,
                            seed: int = 0, shape: tuple[int, int, int] = (48, 48, 48)) -> Path:
    """A FOMO25 task folder (preprocessed/ + labels/ + participants.tsv with a site column).

    task 1: half the subjects of each site have an infarct (label.txt 1/0); inputs flair, adc,
    dwi_b1000 and the site's swi or t2s. task 2: every subject has a meningioma (seg.nii.gz);
    inputs flair, dwi_b1000, swi or t2s. task 3: ages uniform in 20-85 (label.txt); inputs t1, t2.
    The second site's labels omit the `ses_1/` level. Returns root.
    """
    from medssl.mri.fomo_task import parse_task

    spec = parse_task(task)
    root = Path(root)
    participants = []
    k = 0
    for si, site in enumerate(sites):
        for j in range(subjects_per_site):
            k += 1
            rng = _subject_rng(seed, si, j, 100 + spec.number)
            subject = f"sub_{k}"
            age = float(rng.uniform(20, 85))
            anatomy = make_anatomy(shape, rng, age=age, infarct=spec.number == 1 and j % 2 == 1,
                                   meningioma=spec.number == 2)
            ses_dir = root / "preprocessed" / subject / "ses_1"
            for name in spec.inputs:
                file = site.susceptibility if name == "swi_or_t2s" else name
                _write_volume(ses_dir / f"{file}.nii.gz", render(anatomy, file, site, rng))
            label_dir = root / "labels" / subject / ("" if si == 1 else "ses_1")
            if spec.number == 1:
                atomic_write_text(label_dir / "label.txt", f"{int(anatomy.infarct)}\n")
            elif spec.number == 2:
                _write_volume(label_dir / "seg.nii.gz", render_mask(anatomy, site, MENINGIOMA), dtype=np.uint8)
            else:
                atomic_write_text(label_dir / "label.txt", f"{age:.2f}\n")
            participants.append({"participant_id": subject, "site": site.name})
    atomic_write_text(root / "participants.tsv", _tsv(participants))
    return root
