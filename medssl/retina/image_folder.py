"""A folder of 2-D images (and optional masks) described by one CSV: the `image-folder` layout.

For fundus photographs, fluorescein angiograms, OCTA sets other than OCTA-500, and anything
else stored as ordinary image files. The CSV (default `<root>/images.csv`, else
`<root>/labels.csv`) has one row per image:

    image        path of the image, relative to the root (or absolute)            required
    mask         path of its segmentation mask (binary; any non-zero pixel is 1)   optional
    fov          path of its field-of-view mask (non-zero: inside the camera's     optional
                 field of view); segmentation metrics are computed inside it
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

Without a CSV (none in the root and no `labels` given) the folder is read as public vessel
datasets ship it (DRIVE, HRF, CHASE_DB1-like), with the rows a CSV would have given:

    <root>/[training|train|test|testing|val|validation/]
        images/      the images                         (folder names: IMAGE_DIRS, or option images=)
        1st_manual/  the segmentation masks              (MASK_DIRS, or option masks=)
        mask/        the field-of-view masks             (FOV_DIRS, or option fov=)

Split folders (training -> train, test -> test, ...) give the split; without them the root holds
the role folders and splits are drawn per subject. A mask or field-of-view file belongs to the
image with the same *key*: the file stem, lower-cased, cut at "_", "-", "." and spaces, with
role words (training, test, manual1, mask, fov, gt, 1stHO...; ROLE_TOKENS) dropped and numbers
read as integers, so DRIVE's images/21_training.tif, 1st_manual/21_manual1.gif and
mask/21_training_mask.gif all have the key "21". When keys do not match, the first number in
the stem is used if it is unique on both sides. Two candidate masks for one image are refused
(the row is skipped, naming both). DRIVE's 2nd_manual (a second observer) is not read unless
named with masks=2nd_manual. Subjects: the image stem (option subject=number: the first number
in the stem, e.g. CHASE_DB1's Image_01L and Image_01R are both subject 1).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from medssl.data.manifest import join_labels, split_labels

SPLITS: tuple[str, ...] = ("train", "val", "test", "")
_CORE = ("image", "mask", "fov", "subject_id", "labels", "split", "site")
CSV_NAMES: tuple[str, ...] = ("images.csv", "labels.csv")
IMAGE_DIRS: tuple[str, ...] = ("images", "image", "imgs", "img", "original", "originals")
MASK_DIRS: tuple[str, ...] = ("1st_manual", "manual1", "manual", "labels", "label", "annotations", "annotation",
                              "groundtruth", "ground_truth", "gt", "vessels", "vessel", "segmentations",
                              "segmentation", "masks")
FOV_DIRS: tuple[str, ...] = ("mask", "fov", "fov_masks", "fov_mask", "fovs", "roi")
SPLIT_DIRS: dict[str, str] = {"training": "train", "train": "train", "test": "test", "testing": "test",
                              "val": "val", "validation": "val"}
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".ppm", ".pgm", ".bmp")
ROLE_TOKENS = frozenset({
    "training", "train", "test", "testing", "val", "validation", "manual", "manual1", "manual2", "mask", "masks",
    "fov", "roi", "gt", "label", "labels", "seg", "segmentation", "vessel", "vessels", "annotation", "1stho",
    "2ndho", "ah", "vk", "image", "img", "im",
})


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


def mask_size_problem(mask: Path, image_hw: tuple[int, int], what: str = "mask") -> str | None:
    """Why a mask cannot go with its image (unreadable, or another size: never stretched), or None."""
    try:
        mh, mw = _header(mask)
    except ValueError as e:
        return f"{what} {mask}: {e}"
    if (mh, mw) != tuple(image_hw):
        return f"{what} {mask} is {mh} x {mw} px, its image {image_hw[0]} x {image_hw[1]}; not stretched to fit"
    return None


def file_key(path: str | Path) -> str:
    """The key that pairs an image with its masks: the stem's tokens without role words, numbers as
    integers ("21_training" -> "21", "Image_01L_1stHO" -> "01l", "im0001.ah" -> "im0001"); the whole
    lower-cased stem when nothing else is left."""
    stem = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    tokens = [t for t in re.split(r"[_\-.\s]+", stem.lower()) if t]
    kept = [str(int(t)) if t.isdigit() else t for t in tokens if t not in ROLE_TOKENS]
    return "_".join(kept) or stem.lower()


def _first_number(path: Path) -> int | None:
    found = re.search(r"\d+", path.stem)
    return int(found.group()) if found else None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _role_dir(base: Path, names: tuple[str, ...], chosen: str | None, role: str) -> Path | None:
    if chosen:
        d = base / chosen
        if not d.is_dir():
            raise ImageFolderError(f"{d}: {role} folder not found")
        return d
    present = {p.name.lower(): p for p in base.iterdir() if p.is_dir()}
    return next((present[n] for n in names if n in present), None)


def _pair(images: list[Path], others: list[Path], role: str) -> tuple[dict[Path, Path], dict[Path, str]]:
    """image -> its file among `others` (by key, else by a number unique on both sides), and
    image -> why it has none when there are several candidates."""
    by_key: dict[str, list[Path]] = {}
    for p in others:
        by_key.setdefault(file_key(p), []).append(p)
    numbers_img = [_first_number(p) for p in images]
    numbers_other: dict[int | None, list[Path]] = {}
    for p in others:
        numbers_other.setdefault(_first_number(p), []).append(p)
    found: dict[Path, Path] = {}
    problems: dict[Path, str] = {}
    for img, num in zip(images, numbers_img):
        cands = by_key.get(file_key(img), [])
        if not cands and num is not None and numbers_img.count(num) == 1:
            cands = numbers_other.get(num, [])
        if len(cands) == 1:
            found[img] = cands[0]
        elif len(cands) > 1:
            problems[img] = f"several {role} files match: {', '.join(str(c) for c in cands)}"
    return found, problems


def discover_records(root: Path, *, images: str | None = None, masks: str | None = None,
                     fov: str | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """CSV-like records {image, mask, fov, split} (absolute paths as strings; split "" when the
    folder does not say) of a folder laid out as the module docstring describes, and the images
    skipped (ambiguous masks). Raises ImageFolderError when no image folder is found."""
    splits = [(d, SPLIT_DIRS[d.name.lower()]) for d in sorted(root.iterdir())
              if d.is_dir() and d.name.lower() in SPLIT_DIRS]
    bases = [(b, sp) for b, sp in splits if _role_dir(b, IMAGE_DIRS, None, "image") or images] or [(root, "")]
    records: list[dict] = []
    skipped: list[tuple[str, str]] = []
    for base, split in bases:
        image_dir = _role_dir(base, IMAGE_DIRS, images, "image")
        if image_dir is None:
            raise ImageFolderError(
                f"{base}: no CSV ({' or '.join(CSV_NAMES)}) and no image folder ({', '.join(IMAGE_DIRS)}) to read; "
                f"write a CSV (columns image, [mask], [fov], [subject_id], [labels], [split], [site]) or name the "
                f"folders with --option images=... masks=... fov=...")
        mask_dir = _role_dir(base, MASK_DIRS, masks, "mask")
        fov_dir = _role_dir(base, FOV_DIRS, fov, "field-of-view")
        if mask_dir is not None and fov_dir is not None and mask_dir == fov_dir:
            fov_dir = None
        files = _image_files(image_dir)
        mask_of, mask_problems = _pair(files, _image_files(mask_dir), "mask") if mask_dir else ({}, {})
        fov_of, fov_problems = _pair(files, _image_files(fov_dir), "field-of-view") if fov_dir else ({}, {})
        for img in files:
            problem = mask_problems.get(img) or fov_problems.get(img)
            if problem:
                skipped.append((str(img), problem))
                continue
            records.append({"image": str(img), "mask": str(mask_of.get(img, "")), "fov": str(fov_of.get(img, "")),
                            "split": split})
    return records, skipped


def index_image_folder(
    root: str | Path, labels: str | Path | None = None, task: str | None = None, *,
    split_seed: int = 0, split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    images: str | None = None, masks: str | None = None, fov: str | None = None, subject: str = "stem",
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of the images listed in the CSV `labels` (default images.csv or labels.csv in
    `root`), and the (path, reason) pairs skipped.

    task: None (labels from the `labels` column), "segmentation" (rows need a mask; labels "")
    or the name of another CSV column whose values become the labels (rows without one are
    skipped).

    Without a CSV the folder is discovered (module docstring; `images`, `masks`, `fov` name the
    role folders, `subject` is "stem" or "number").

    Row: record_id (the image path relative to the root), subject_id, path
    (absolute), split, labels, mask_path (absolute or ""), fov_path (absolute or ""), site,
    height, width (px, from the header), task, then the CSV's other columns. Rows keep the CSV's
    order (discovered folders: split folder, then file name).

    Skipped: missing or unreadable images, missing or unreadable masks or field-of-view masks, masks
    of another size than their image (never stretched), rows without the task's label, images with
    two candidate masks.
    Raises ImageFolderError for a missing CSV or `image` column, an unknown task column, a bad
    split name, a repeated image, or a subject put in two splits.
    """
    from medssl.data.manifest import subject_split

    root = Path(root).resolve()
    if not root.is_dir():
        raise ImageFolderError(f"{root}: folder not found")
    if subject not in ("stem", "number"):
        raise ImageFolderError(f"{root}: option subject={subject!r}; use stem or number")
    if labels:
        table = Path(labels)
    else:
        table = next((root / n for n in CSV_NAMES if (root / n).is_file()), root / CSV_NAMES[0])
    skipped: list[tuple[str, str]] = []
    if table.is_file():
        with table.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            records = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    elif labels or not any(d.is_dir() for d in root.iterdir()):
        raise ImageFolderError(f"{table}: CSV not found (columns image, [mask], [fov], [subject_id], [labels], "
                               f"[split], [site]; name it {' or '.join(CSV_NAMES)} or pass --labels), and no "
                               f"images/ folder to discover")
    else:
        records, skipped = discover_records(root, images=images, masks=masks, fov=fov)
        table = root
        columns = ["image", "mask", "fov", "split"]
        if task == "segmentation" and not any(r["mask"] for r in records) and not skipped:
            raise ImageFolderError(f"{root}: task segmentation needs masks, and no mask folder was found "
                                   f"({', '.join(MASK_DIRS)}); name it with --option masks=FOLDER")
        if subject == "number":
            for r in records:
                num = _first_number(Path(r["image"]))
                r["subject_id"] = str(num) if num is not None else ""
        else:
            for r in records:
                r["subject_id"] = file_key(r["image"])
    if "image" not in columns:
        raise ImageFolderError(f"{table}: no 'image' column (found: {', '.join(columns) or 'none'})")
    if task not in (None, "segmentation") and task not in columns:
        raise ImageFolderError(f"{table}: task {task!r} is neither 'segmentation' nor a column "
                               f"(columns: {', '.join(columns)})")
    if task == "segmentation" and "mask" not in columns:
        raise ImageFolderError(f"{table}: task segmentation needs a 'mask' column")

    rows: list[dict] = []
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
            problem = mask_size_problem(mask, (height, width), "mask")
            if problem:
                skipped.append((str(path), problem))
                continue
            mask_path = str(mask)
        fov_path = ""
        if rec.get("fov"):
            fov_file = _resolve(root, rec["fov"])
            if not fov_file.is_file():
                skipped.append((str(path), f"field-of-view mask {fov_file} missing"))
                continue
            problem = mask_size_problem(fov_file, (height, width), "field-of-view mask")
            if problem:
                skipped.append((str(path), problem))
                continue
            fov_path = str(fov_file)
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
               "labels": label_value, "mask_path": mask_path, "fov_path": fov_path, "site": rec.get("site", ""),
               "height": str(height), "width": str(width), "task": task or ""}
        for key, value in rec.items():
            if key and key not in _CORE and key not in row:
                row[key] = value
        rows.append(row)
    return rows, skipped
