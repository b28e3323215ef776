"""NIfTI-1/2 files -> :class:`medssl.imaging.volume.Volume`, and back.

The affine is the one NIfTI says is authoritative: the sform when its code is non-zero, else the
qform when its code is non-zero, else a plain scaling by the voxel sizes (no orientation known;
recorded in ``meta["affine_source"] = "zooms"``). NIfTI's world space is RAS+ millimetres, the
convention of :class:`Volume`, so the affine is used as stored. Intensities are scaled by the
header's scl_slope/scl_inter and returned as float32.

Header fields that may carry identities (``descrip``, ``aux_file``, ``db_name``, intent names)
are never copied into ``meta``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from medssl.imaging.volume import Volume
from medssl.io import atomic_write

_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError, HeaderDataError, WrapStructError,
                IndexError)


class NiftiReadError(ValueError):
    """A NIfTI file is missing, corrupt, truncated or not a single 3-D volume."""


def _load(path: Path):
    """nibabel image of `path`; a plain NIfTI that was misnamed `.gz` is read anyway."""
    if path.name.endswith(".gz"):
        with path.open("rb") as f:
            magic = f.read(2)
        if magic and magic != _GZIP_MAGIC:
            data = path.read_bytes()
            for cls in (nib.Nifti1Image, nib.Nifti2Image):
                try:
                    return cls.from_bytes(data), "uncompressed data in a file named .gz"
                except _READ_ERRORS:
                    continue
            raise NiftiReadError(f"{path}: not a gzip file and not a NIfTI file (starts with {magic!r})")
    return nib.load(str(path)), None


def _affine(img, path: Path) -> tuple[np.ndarray, str]:
    header = img.header
    if not hasattr(header, "get_sform"):
        raise NiftiReadError(f"{path}: {type(img).__name__} is not a NIfTI image")
    sform, scode = header.get_sform(coded=True)
    if sform is not None and int(scode) > 0:
        return np.asarray(sform, dtype=np.float64), "sform"
    qform, qcode = header.get_qform(coded=True)
    if qform is not None and int(qcode) > 0:
        return np.asarray(qform, dtype=np.float64), "qform"
    zooms = [float(z) for z in header.get_zooms()[:3]] + [1.0] * (3 - min(3, len(header.get_zooms())))
    return np.diag([*zooms, 1.0]), "zooms"


def read_nifti(path: str | Path, *, volume_index: int | None = None) -> Volume:
    """Read one 3-D volume from a `.nii` / `.nii.gz` file.

    path: the file. volume_index: for a 4-D file (X, Y, Z, T) the volume to take; 4-D files are
    refused without it, since silently taking the first volume of a diffusion or fMRI series is
    rarely what is meant. Trailing singleton dimensions ((X, Y, Z, 1)) are dropped.
    Returns a Volume with array (X, Y, Z) float32 and a RAS+ mm affine; meta holds
    path, affine_source (sform / qform / zooms), orientation (e.g. "LAS"), original_shape,
    spacing_mm, dtype and, for 4-D files, volume_index and n_volumes.
    Raises NiftiReadError naming the file for a missing, empty, corrupt or truncated file, a 2-D
    or 5-D image, a bad volume_index or a singular affine.
    """
    path = Path(path)
    if not path.is_file():
        raise NiftiReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise NiftiReadError(f"{path}: empty file")
    try:
        img, note = _load(path)
    except NiftiReadError:
        raise
    except _READ_ERRORS as e:
        raise NiftiReadError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    affine, source = _affine(img, path)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiReadError(f"{path}: the {source} affine is singular or not finite")

    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    meta: dict = {"path": str(path), "affine_source": source, "original_shape": list(img.shape),
                  "dtype": str(img.get_data_dtype())}
    if note:
        meta["note"] = note
    try:
        if len(shape) == 3:
            if volume_index not in (None, 0):
                raise NiftiReadError(f"{path}: a 3-D volume has no volume {volume_index}")
            data = np.asanyarray(img.dataobj).reshape(shape)
        elif len(shape) == 4:
            if volume_index is None:
                raise NiftiReadError(f"{path}: 4-D image of {shape[3]} volumes {shape[:3]}; pass volume_index "
                                     f"(0..{shape[3] - 1}) to take one")
            if not 0 <= volume_index < shape[3]:
                raise NiftiReadError(f"{path}: volume_index {volume_index} outside 0..{shape[3] - 1}")
            data = np.asanyarray(img.dataobj[..., volume_index])
            meta.update(volume_index=int(volume_index), n_volumes=shape[3])
        else:
            raise NiftiReadError(f"{path}: {len(shape)}-D image of shape {shape}; expected a 3-D volume")
    except NiftiReadError:
        raise
    except _READ_ERRORS as e:
        raise NiftiReadError(f"{path}: truncated or corrupt image data ({type(e).__name__}: {e})") from e
    array = np.asarray(data, dtype=np.float32)
    meta["orientation"] = "".join(nib.aff2axcodes(affine))
    meta["spacing_mm"] = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    return Volume(array, affine, meta)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, *, dtype=None) -> Path:
    """Write a 3-D (X, Y, Z) array with a RAS+ affine as NIfTI-1 (gzipped when the name ends in
    .gz), atomically. Both sform and qform are set (code 1, scanner) to `affine`; `dtype` is the
    on-disk type (default: the array's)."""
    array = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"

    def write(tmp: Path) -> None:
        # nibabel picks compression from the name, so write under a name it recognises.
        target = tmp.with_name(tmp.name + suffix)
        nib.save(img, str(target))
        target.replace(tmp)

    return atomic_write(path, write)
