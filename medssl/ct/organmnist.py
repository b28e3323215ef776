"""OrganMNIST3D (MedMNIST v2) from a user-provided .npz: arrays, manifest rows, items.

The file (organmnist3d.npz, or organmnist3d_64.npz from MedMNIST+) holds
  {train,val,test}_images  (N, S, S, S) uint8, S = 28 (or 64)
  {train,val,test}_labels  (N, 1) integer class index 0..10
Classes, in MedMNIST v2's order: liver, kidney-right, kidney-left, femur-right, femur-left,
bladder, heart, lung-right, lung-left, spleen, pancreas. The images are organ crops from LiTS CT
scans, converted to grey levels with an abdominal window by MedMNIST and resized to S^3: they are
not Hounsfield units and have no physical voxel size.

OrganMNIST3D has no subject or scan IDs. medssl gives each image its own pseudo-subject
("organmnist3d-<split>-<index>") and keeps the published splits, which MedMNIST made by source
scan (115 + 16 training scans for train/val, 70 for test). Several images of one split can come
from the same scan, so subject-level leakage inside a split cannot be checked: use the given
splits, never re-split, and treat few-shot draws within a split as image-level.

A manifest path for one image is "<file.npz>#<split>/<index>".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

ORGANMNIST3D_CLASSES: tuple[str, ...] = (
    "liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart", "lung-right",
    "lung-left", "spleen", "pancreas",
)
SPLITS = ("train", "val", "test")
FILE_NAMES = ("organmnist3d.npz", "organmnist3d_64.npz", "organmnist3d_28.npz")


class OrganMNISTError(ValueError):
    """The .npz file is not an OrganMNIST3D file; the message names the file and the problem."""


def read_organmnist3d(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, S, S, S) uint8, labels (N,) int64)} of an OrganMNIST3D .npz, checked."""
    path = Path(path)
    if not path.is_file():
        raise OrganMNISTError(f"{path}: not found")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile/ValueError on a corrupt or non-npz file
        raise OrganMNISTError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    with z:
        keys = set(z.files)
        need = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in need if k not in keys]
        if missing:
            raise OrganMNISTError(f"{path}: missing key(s) {', '.join(missing)} (found: {', '.join(sorted(keys))})")
        out = {}
        size = None
        for s in SPLITS:
            images, labels = z[f"{s}_images"], z[f"{s}_labels"]
            if images.ndim == 5 and images.shape[-1] == 1:
                images = images[..., 0]
            if images.ndim != 4 or len(set(images.shape[1:])) != 1:
                raise OrganMNISTError(f"{path}: {s}_images has shape {images.shape}, expected (N, S, S, S)")
            if size is None:
                size = images.shape[1]
            elif images.shape[1] != size:
                raise OrganMNISTError(f"{path}: {s}_images are {images.shape[1]}^3 but others {size}^3")
            if images.dtype != np.uint8:
                raise OrganMNISTError(f"{path}: {s}_images are {images.dtype}, expected uint8")
            labels = np.asarray(labels)
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images):
                raise OrganMNISTError(f"{path}: {s}_labels has shape {labels.shape}, expected ({len(images)}, 1)")
            if not np.issubdtype(labels.dtype, np.integer):
                raise OrganMNISTError(f"{path}: {s}_labels are {labels.dtype}, expected integers")
            bad = labels[(labels < 0) | (labels >= len(ORGANMNIST3D_CLASSES))]
            if bad.size:
                raise OrganMNISTError(f"{path}: {s}_labels holds {int(bad[0])}, outside "
                                      f"0..{len(ORGANMNIST3D_CLASSES) - 1}")
            out[s] = (images, labels.astype(np.int64))
    return out


def find_npz(root: str | Path, file: str | None = None) -> Path:
    """The OrganMNIST3D file in folder `root` (or `root` itself when it is the file)."""
    root = Path(root)
    if root.is_file():
        return root
    if file:
        p = root / file
        if not p.is_file():
            raise OrganMNISTError(f"{p}: not found")
        return p
    found = [root / n for n in FILE_NAMES if (root / n).is_file()]
    if not found:
        raise OrganMNISTError(f"{root}: no {' or '.join(FILE_NAMES)}; give file=NAME")
    if len(found) > 1:
        raise OrganMNISTError(f"{root}: several OrganMNIST3D files ({', '.join(p.name for p in found)}); "
                              f"give file=NAME")
    return found[0]


def index_organmnist3d(root: str | Path, *, file: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows, one per image: record_id = subject_id = "organmnist3d[_S]-<split>-<index>"
    (no subject IDs exist: see the module docstring), path "<npz>#<split>/<index>", split as
    published, labels the organ name, modality "CT", image_size S, intensity "uint8 abdominal window"."""
    path = find_npz(root, file)
    data = read_organmnist3d(path)
    rows = []
    for split, (images, labels) in data.items():
        size = images.shape[1]
        tag = "organmnist3d" if size == 28 else f"organmnist3d_{size}"
        for i, y in enumerate(labels):
            rid = f"{tag}-{split}-{i:05d}"
            rows.append({"record_id": rid, "subject_id": rid, "path": f"{path}#{split}/{i}", "split": split,
                         "labels": ORGANMNIST3D_CLASSES[int(y)], "modality": "CT", "image_size": str(size),
                         "intensity": "uint8 abdominal window", "subject_id_source": "none (image index)"})
    return rows, []


def parse_item_path(path: str) -> tuple[Path, str, int] | None:
    """'<file.npz>#<split>/<index>' -> (file, split, index); None for other paths."""
    base, sep, frag = str(path).partition("#")
    if not sep or not base.lower().endswith(".npz"):
        return None
    split, _, index = frag.partition("/")
    if split not in SPLITS or not index.isdigit():
        raise OrganMNISTError(f"{path}: expected <file.npz>#<train|val|test>/<index>")
    return Path(base), split, int(index)


@lru_cache(maxsize=2)
def _split_images(path: str, mtime_ns: int, split: str) -> np.ndarray:
    return read_organmnist3d(path)[split][0]


def load_item(path: str) -> np.ndarray:
    """(S, S, S) float32 in [0, 1] (the stored grey level / 255) of one manifest path."""
    parsed = parse_item_path(path)
    if parsed is None:
        raise OrganMNISTError(f"{path}: not an OrganMNIST3D item path")
    file, split, index = parsed
    if not file.is_file():
        raise OrganMNISTError(f"{file}: not found")
    images = _split_images(str(file), file.stat().st_mtime_ns, split)
    if index >= len(images):
        raise OrganMNISTError(f"{path}: index {index} beyond the {len(images)} {split} images")
    return images[index].astype(np.float32) / 255.0
