"""CT volumes to model inputs: reading (DICOM series or NIfTI), resampling, world-space sampling.

Model inputs are sampled on grids aligned with the RAS+ world axes (array axis 0 = +x towards the
patient's Right, axis 1 = +y Anterior, axis 2 = +z Superior), whatever the scan's orientation, so
one function serves both input kinds:

  * a finding (e.g. a nodule centre in world mm): the patch centred on it;
  * a whole volume: the grid centred on the volume's centre, i.e. the volume resampled to the
    target spacing and centre-cropped or padded to the target shape in one step.

Voxels outside the scan are filled with air (-1000 HU). Linear interpolation for images,
nearest neighbour for masks. When the target spacing is coarser than the scan's, images are
first smoothed with a Gaussian of sigma (factor - 1) / 2 voxels per axis (anti-aliasing; the
rule scikit-image's `rescale` uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl.imaging.volume import Volume

AIR_HU = -1000.0
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti_volume(path: str | Path) -> Volume:
    """A 3D NIfTI image as a Volume with its RAS+ affine (:func:`medssl.imaging.nifti.read_nifti`:
    sform/qform, scl_slope applied; a missing, corrupt or 4-D file raises a ValueError naming it)."""
    from medssl.imaging.nifti import read_nifti

    vol = read_nifti(path)
    vol.meta["source"] = "nifti"
    return vol


def split_series_path(path: str) -> tuple[str, str | None]:
    """'folder#ser-...' -> ('folder', 'ser-...'); a plain path -> (path, None)."""
    base, sep, frag = str(path).partition("#")
    return base, (frag or None) if sep else None


def load_ct_volume(path: str | Path, *, salt: str | None = None, duplicates: str = "drop",
                   missing: str = "error", uneven: str = "interpolate") -> Volume:
    """The volume at a manifest path: a NIfTI file, a DICOM file or folder holding one series, or
    ``folder#ser-...`` naming one series of a folder by its pseudonymous id (made with `salt`).
    Values in HU for CT. DICOM slice policies: :mod:`medssl.imaging.dicom`."""
    from medssl.imaging.dicom import read_dicom_series

    base, series = split_series_path(str(path))
    if is_nifti(base):
        return read_nifti_volume(base)
    if not Path(base).exists():
        raise ValueError(f"{base}: not found")
    return read_dicom_series(base, series=series, salt=salt, duplicates=duplicates, missing=missing, uneven=uneven)


def volume_centre(volume: Volume) -> np.ndarray:
    """(3,) RAS mm of the centre of the voxel grid."""
    centre = (np.asarray(volume.spatial_shape, dtype=np.float64) - 1.0) / 2.0
    return (volume.affine @ np.append(centre, 1.0))[:3]


def world_to_voxel(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 3) world mm -> (..., 3) continuous voxel indices through the inverse affine."""
    points = np.asarray(points, dtype=np.float64)
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return points @ inv[:3, :3].T + inv[:3, 3]


def world_grid(centre: Sequence[float], shape: Sequence[int], spacing_mm: Sequence[float] | float) -> np.ndarray:
    """(*shape, 3) RAS mm of the world-aligned grid centred on `centre`: element (a, b, c) lies at
    centre + ((a - (n0-1)/2) s0, (b - (n1-1)/2) s1, (c - (n2-1)/2) s2)."""
    shape = tuple(int(n) for n in shape)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    axes = [(np.arange(n) - (n - 1) / 2.0) * s + c for n, s, c in zip(shape, spacing, centre)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def antialias_sigma(volume: Volume, spacing_mm: Sequence[float]) -> np.ndarray:
    """(3,) Gaussian sigma in voxels per voxel axis for sampling `volume` at `spacing_mm`:
    (factor - 1) / 2 where the target is `factor` times coarser, else 0."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    cols = volume.affine[:3, :3]
    vox = np.linalg.norm(cols, axis=0)
    # target spacing seen along each voxel axis (its direction weighted over the world axes)
    along = np.linalg.norm((cols / vox) * spacing[:, None], axis=0)
    return np.maximum(0.0, (along / vox - 1.0) / 2.0)


def smooth_for_spacing(volume: Volume, spacing_mm: Sequence[float]) -> Volume:
    """`volume` low-passed for sampling at `spacing_mm` (unchanged when not coarser)."""
    from scipy.ndimage import gaussian_filter

    sigma = antialias_sigma(volume, spacing_mm)
    if not np.any(sigma > 0.05):
        return volume
    arr = gaussian_filter(volume.array.astype(np.float32), sigma=sigma, mode="nearest")
    return Volume(arr, volume.affine, volume.meta)


def sample_world(volume: Volume, points: np.ndarray, *, order: int = 1, fill: float = AIR_HU) -> np.ndarray:
    """Values of `volume` (3D) at world points (..., 3) RAS mm; `fill` outside the scan.
    order 1: trilinear; order 0: nearest neighbour (masks)."""
    from scipy.ndimage import map_coordinates

    if volume.array.ndim != 3:
        raise ValueError(f"expected a 3D volume, got array shape {volume.array.shape}")
    vox = world_to_voxel(volume.affine, points)
    coords = np.moveaxis(vox, -1, 0).reshape(3, -1)
    if order not in (0, 1):
        raise ValueError(f"order {order}: 0 (nearest) or 1 (linear)")
    out = map_coordinates(volume.array, coords, order=order, mode="constant", cval=fill, prefilter=False)
    return out.reshape(points.shape[:-1]).astype(np.float32)


def sample_patch(volume: Volume, centre: Sequence[float], shape: Sequence[int], spacing_mm: Sequence[float] | float,
                 *, order: int = 1, fill: float = AIR_HU) -> np.ndarray:
    """`shape` (3 ints) float32 patch at `spacing_mm` on the world-aligned grid centred at `centre`
    (RAS mm). With odd sizes the centre is voxel n//2; with even ones it lies between the two middle
    voxels. Voxels outside the scan are `fill` (air for CT)."""
    return sample_world(volume, world_grid(centre, shape, spacing_mm), order=order, fill=fill)


def resample_volume(volume: Volume, spacing_mm: Sequence[float] | float, *, order: int = 1,
                    antialias: bool = True, fill: float = AIR_HU) -> Volume:
    """`volume` resampled to `spacing_mm` along its own voxel axes (orientation kept). Voxel
    (0, 0, 0) stays at the same world point; the extent is kept (shape rounded down)."""
    from scipy.ndimage import affine_transform

    new = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
    old = np.asarray(volume.spacing)
    scale = new / old
    shape = tuple(int(np.floor((n - 1) / f + 1e-6)) + 1 for n, f in zip(volume.spatial_shape, scale))
    src = volume
    if antialias and order > 0 and np.any(scale > 1.05):
        from scipy.ndimage import gaussian_filter

        src = Volume(gaussian_filter(volume.array.astype(np.float32), np.maximum(0.0, (scale - 1) / 2),
                                     mode="nearest"), volume.affine)
    arr = affine_transform(src.array.astype(np.float32), scale, output_shape=shape, order=order, mode="constant",
                           cval=fill, prefilter=order > 1)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * scale
    return Volume(arr.astype(np.float32), affine, dict(volume.meta))
