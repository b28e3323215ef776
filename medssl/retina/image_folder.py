"""A folder of 2-D images (and optional masks) described by one CSV: the `image-folder` layout.

For fundus photographs, fluorescein angiograms, OCTA sets other than OCTA-500, and anything
else stored as ordinary image files. The CSV (default `<root>/images.csv`, else
`<root>/labels.csv`) has one row per image:

    image        path of the image, relative to the root (or absolute)            required
    mask         path of its segmentation mask (binary; any non-zero pixel is 1)   optional
    subject_id   the person the image belongs to                                  optional
    labels       class names joined by ";"                                        optional
    split        train / val / test (empty: drawn from the subject)                optional
    site         acquisition site or device                                       optional
    ...          anything else (image_type, eye, age...) is copied into the rows

Without a `subject_id` column each image counts as its own subject (the image's file stem).
Splits are then drawn per IMAGE: if a person has several images (two eyes, follow-up visits)
they can land in different splits, and a test score leaks. Give `subject_id` whenever a
subject may have more than one image.

Splits missing from the CSV are drawn per subject with `medssl.ecg.layouts.subject_split`
(a SHA-256 of seed:subject_id, 70/15/15 by default), so a subject's images share a split.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medssl.data.manifest import join_labels, split_labels

SPLITS: tuple[str, ...] = ("train", "val", "test", "")
_CORE = ("image", "mask", "subject_id", "labels", "split", "site")
CSV_NAMES: tuple[str, ...] = ("images.csv", "labels.csv")


class ImageFolderError(ValueError):
    """The folder or its CSV cannot be indexed; the message starts with the offending path."""


def _resolve(root: Path, value: str) -> Path:
    p = Path(value.strip())
    return p if p.is_absolute() else root / p


def _header(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # the header only
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image ({e})") from None


def index_image_folder(
    root: str | Path, labels: str | Path | None = None, task: str | None = None, *,
    split_seed: int = 0, split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of the images listed in the CSV `labels` (default images.csv or labels.csv in
    `root`), and the (path, reason) pairs skipped.

    task: None (labels from the `labels` column), "segmentation" (rows need a mask; labels "")
    or the name of another CSV column whose values become the labels (rows without one are
    skipped).

    Row: record_id (the image path relative to the root), subject_id, path
    (absolute), split, labels, mask_path (absolute or ""), site, height, width (px, from the
    header), task, then the CSV's other columns. Rows keep the CSV's order.

    Skipped: missing or unreadable images, missing masks, rows without the task's label.
    Raises ImageFolderError for a missing CSV or `image` column, an unknown task column, a bad
    split name, a repeated image, or a subject put in two splits.
    """
    from medssl.ecg.layouts import subject_split

    root = Path(root).resolve()
    if not root.is_dir():
        raise ImageFolderError(f"{root}: folder not found")
    if labels:
        table = Path(labels)
    else:
        table = next((root / n for n in CSV_NAMES if (root / n).is_file()), root / CSV_NAMES[0])
    if not table.is_file():
        raise ImageFolderError(f"{table}: CSV not found (columns image, [mask], [subject_id], [labels], [split], "
                               f"[site]; name it {' or '.join(CSV_NAMES)} or pass --labels)")
    with table.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        records = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if "image" not in columns:
        raise ImageFolderError(f"{table}: no 'image' column (found: {', '.join(columns) or 'none'})")
    if task not in (None, "segmentation") and task not in columns:
        raise ImageFolderError(f"{table}: task {task!r} is neither 'segmentation' nor a column "
                               f"(columns: {', '.join(columns)})")
    if task == "segmentation" and "mask" not in columns:
        raise ImageFolderError(f"{table}: task segmentation needs a 'mask' column")

    rows: list[dict] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    split_of: dict[str, tuple[str, int]] = {}
    for line, rec in enumerate(records, start=2):
        if not rec.get("image"):
            skipped.append((f"{table}:{line}", "empty image path"))
            continue
        path = _resolve(root, rec["image"])
        try:
            rel = path.resolve().relative_to(root)
        except ValueError:
            rel = Path(rec["image"])
        record_id = rel.as_posix()
        if record_id in seen:
            raise ImageFolderError(f"{table}:{line}: image {rec['image']} already listed on line {seen[record_id]}")
        seen[record_id] = line
        subject = rec.get("subject_id") or path.stem
        split = rec.get("split", "").lower()
        if split not in SPLITS:
            raise ImageFolderError(f"{table}:{line}: split {rec['split']!r} is not train, val or test")
        if not split:
            split = subject_split(subject, split_seed, split_fractions)
        first = split_of.setdefault(subject, (split, line))
        if first[0] != split:
            raise ImageFolderError(f"{table}:{line}: subject {subject} is in split {split} here and "
                                   f"{first[0]} on line {first[1]}")
        if not path.is_file():
            skipped.append((str(path), "image file missing"))
            continue
        try:
            height, width = _header(path)
        except ValueError as e:
            skipped.append((str(path), str(e)))
            continue
        mask_path = ""
        if rec.get("mask"):
            mask = _resolve(root, rec["mask"])
            if not mask.is_file():
                skipped.append((str(path), f"mask {mask} missing"))
                continue
            mask_path = str(mask)
        if task == "segmentation":
            if not mask_path:
                skipped.append((str(path), "no mask"))
                continue
            label_value = ""
        elif task is not None:
            label_value = join_labels(split_labels(rec.get(task, "")))
            if not label_value:
                skipped.append((str(path), f"no {task} value"))
                continue
        else:
            label_value = join_labels(split_labels(rec.get("labels", "")))
        row = {"record_id": record_id, "subject_id": subject, "path": str(path), "split": split,
               "labels": label_value, "mask_path": mask_path, "site": rec.get("site", ""),
               "height": str(height), "width": str(width), "task": task or ""}
        for key, value in rec.items():
            if key and key not in _CORE and key not in row:
                row[key] = value
        rows.append(row)
    return rows, skipped
