"""OCTA-500 (Li et al., "OCTA-500: A retinal dataset for optical coherence tomography angiography
study", Medical Image Analysis 2024; arXiv 2012.07261): index its 2-D projection maps.

Layout read (folder names matched case-insensitively; see data_cards/octa500.md):

    <root>/OCTA_3mm/Projection Maps/OCTA(FULL)/10301.bmp ...   also OCTA(ILM_OPL), OCTA(OPL_BM),
    <root>/OCTA_6mm/Projection Maps/...                          OCT(FULL), OCT(ILM_OPL), OCT(OPL_BM)
    <root>/Label/GT_LargeVessel/10301.bmp ...                    GT_Capillary, GT_Artery, GT_Vein,
                                                                 GT_FAZ, GT_CAVF (one bitmap per subject)
    Text labels.xlsx (or an export: .csv, .tsv, .txt)            ID, Gender/Sex, OS/OD, Age, Disease

The field-of-view folder may also be `OCTA_3M` / `OCTA_6M` (the first release), sit one level
down (`OCTA_3mm_part3/OCTA_3mm`, as the download's parts unpack) or be the root itself. Ground
truth folders are looked for in the field-of-view folder, its `GroundTruth/` or `Label/`, then
`<root>/Label/` and `<root>`. The text-label file is looked for in the field-of-view folder,
`<root>/Label/` and `<root>` (or given as `labels`); a shared file is filtered to the field of
view's IDs (6 mm: up to 10300, 3 mm: from 10301).

Subjects: 3 mm, 200 eyes, IDs 10301-10500, 304 x 304 px; 6 mm, 300 eyes, IDs 10001-10300,
400 x 400 px. Each ID is one eye of one subject, so subject_id = record_id = "octa500-<ID>".

Splits (`splits`):
- "official" (default): the paper's, as in the authors' IPN-V2 code (chaosallen/IPNV2_pytorch,
  options train_ids [0, 180], val_ids [180, 200], test_ids [200, 300] of the 6 mm set):
  3 mm train 10301-10440, val 10441-10450, test 10451-10500; 6 mm train 10001-10180,
  val 10181-10200, test 10201-10300. IDs outside the ranges get "".
- "proportional": the official proportions (3 mm 140/10/50, 6 mm 180/20/100) applied to the
  sorted IDs found, for subsets and replicas with other IDs.
- "none": every split "".
- explicit ranges, e.g. "train=10301-10440;val=10441-10450;test=10451-10500" (several ranges
  or single IDs of one split joined by "+": "test=10451-10490+10499"); IDs in none get "".
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

from medssl.data.manifest import join_labels
from medssl.retina.image_folder import mask_size_problem

FOVS: dict[str, dict] = {
    "3mm": {"ids": (10301, 10500), "size_px": 304, "fov_mm": 3.0,
            "official": {"train": (10301, 10440), "val": (10441, 10450), "test": (10451, 10500)},
            "counts": (140, 10, 50)},
    "6mm": {"ids": (10001, 10300), "size_px": 400, "fov_mm": 6.0,
            "official": {"train": (10001, 10180), "val": (10181, 10200), "test": (10201, 10300)},
            "counts": (180, 20, 100)},
}
PROJECTIONS: tuple[str, ...] = ("OCTA(FULL)", "OCTA(ILM_OPL)", "OCTA(OPL_BM)", "OCT(FULL)", "OCT(ILM_OPL)",
                                "OCT(OPL_BM)")
# task -> ground-truth folder (None: a classification task)
TASKS: dict[str, str | None] = {
    "disease": None, "vessel": "GT_LargeVessel", "capillary": "GT_Capillary", "artery": "GT_Artery",
    "vein": "GT_Vein", "faz": "GT_FAZ", "cavf": "GT_CAVF",
}
DISEASES: tuple[str, ...] = ("NORMAL", "AMD", "CNV", "CSC", "DR", "RVO", "OTHERS")
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".png", ".tif", ".tiff", ".jpg", ".jpeg")
SPLITS: tuple[str, ...] = ("train", "val", "test")


class Octa500Error(ValueError):
    """The folder or a label file cannot be indexed; the message starts with the offending path."""


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-/]+", "", name).lower()


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder of `folder` whose name matches `name` ignoring case, spaces and underscores."""
    if not folder.is_dir():
        return None
    exact = folder / name
    if exact.is_dir():
        return exact
    want = _norm(name)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and _norm(entry.name) == want:
            return entry
    return None


def find_fov_dir(root: Path, fov: str) -> Path | None:
    """The field-of-view folder (`OCTA_3mm`, `OCTA_3M`, ...) under `root`, one level below, or `root`."""
    names = (f"OCTA_{fov}", f"OCTA_{fov[:-2].upper()}M")
    if _norm(root.name) in {_norm(n) for n in names}:
        return root
    for name in names:
        hit = _child(root, name)
        if hit:
            return hit
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for name in names:
            hit = _child(sub, name)
            if hit:
                return hit
    return None


def find_gt_dir(root: Path, fov_dir: Path, name: str) -> Path | None:
    for base in (fov_dir, fov_dir / "GroundTruth", fov_dir / "Label", root / "Label", root):
        hit = _child(base, name)
        if hit:
            return hit
    return None


def find_label_files(root: Path, fov_dir: Path) -> list[tuple[Path, bool]]:
    """(file, shared) of each `Text labels.*` file found (one per folder, an exported .csv/.tsv/
    .txt preferred to the .xlsx); a shared file, outside the field-of-view folder, may also hold
    the other field of view's subjects."""
    found: list[tuple[Path, bool]] = []
    for base in (fov_dir, root / "Label", root):
        if not base.is_dir() or any(f.parent.resolve() == base.resolve() for f, _ in found):
            continue
        files = [p for p in sorted(base.iterdir()) if p.is_file() and _norm(p.stem) == "textlabels"]
        files.sort(key=lambda p: p.suffix.lower() not in (".csv", ".tsv", ".txt"))
        if files:
            found.append((files[0], base.resolve() != fov_dir.resolve()))
    return found


# ---------------------------------------------------------------------------------------------
# Text labels

_COLUMNS = {
    "id": "id", "subjectid": "id", "gender": "sex", "sex": "sex", "age": "age", "osod": "eye", "eye": "eye",
    "laterality": "eye", "disease": "disease", "diagnosis": "disease", "site": "site", "device": "site",
}


def _table_rows(path: Path) -> list[list[str]]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError:
            raise Octa500Error(f"{path}: reading .xlsx needs openpyxl, which is not installed; export the sheet "
                               f"to CSV ('{path.with_suffix('.csv').name}' next to it) or pass --labels FILE.csv") from None
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
            sheet = book.worksheets[0]
            rows = [["" if v is None else str(v) for v in r] for r in sheet.iter_rows(values_only=True)]
            book.close()
        except Exception as e:  # openpyxl raises many types for a corrupt workbook
            raise Octa500Error(f"{path}: cannot read the workbook ({e})") from None
        return rows
    if suffix == ".xls":
        raise Octa500Error(f"{path}: old Excel .xls is not read; export the sheet to CSV and pass --labels FILE.csv")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise Octa500Error(f"{path}: empty label file")
    head = lines[0]
    delimiter = next((d for d in ("\t", ",", ";") if d in head), None)
    if delimiter is None:  # whitespace-separated text
        return [ln.split() for ln in lines]
    return [r for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)]


def _int_id(value: str) -> int | None:
    v = value.strip()
    if re.fullmatch(r"\d+(\.0+)?", v):
        return int(float(v))
    return None


def _sex(value: str) -> str:
    v = value.strip().upper()
    return {"MALE": "M", "FEMALE": "F", "M": "M", "F": "F"}.get(v, v)


def _diseases(value: str) -> list[str]:
    return [d.strip().upper() for d in re.split(r"[,;/+&]", value or "") if d.strip()]


def read_text_labels(path: str | Path) -> tuple[dict[int, dict], list[tuple[str, str]]]:
    """OCTA-500's text labels: ({ID: {"sex", "age", "eye", "disease" (";"-joined), ["site"]}},
    skipped rows as (file:line, reason)).

    Reads .csv, .tsv, whitespace- or tab-separated .txt, and .xlsx when openpyxl is installed.
    Column names are matched ignoring case, spaces and "/" (ID; Gender or Sex; Age; OS/OD or
    Eye; Disease or Diagnosis; Site or Device). Raises Octa500Error for a file without an ID
    column or with one ID given two different rows.
    """
    path = Path(path)
    if not path.is_file():
        raise Octa500Error(f"{path}: label file not found")
    rows = _table_rows(path)
    header = [_COLUMNS.get(_norm(h)) for h in rows[0]]
    if "id" not in header:
        raise Octa500Error(f"{path}: no ID column in the header {rows[0]}")
    out: dict[int, dict] = {}
    skipped: list[tuple[str, str]] = []
    for line, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):
            continue
        rec = {key: values[i].strip() for i, key in enumerate(header) if key and i < len(values)}
        sid = _int_id(rec.get("id", ""))
        if sid is None:
            skipped.append((f"{path}:{line}", f"ID {rec.get('id', '')!r} is not an integer"))
            continue
        entry = {"sex": _sex(rec.get("sex", "")), "age": rec.get("age", "").removesuffix(".0"),
                 "eye": rec.get("eye", "").upper(), "disease": join_labels(_diseases(rec.get("disease", "")))}
        if rec.get("site"):
            entry["site"] = rec["site"]
        if sid in out and out[sid] != entry:
            raise Octa500Error(f"{path}:{line}: ID {sid} appears twice with different labels")
        out[sid] = entry
    return out, skipped


# ---------------------------------------------------------------------------------------------
# Splits


def parse_splits(splits: str | dict, fov: str, ids: Iterable[int]) -> dict[int, str]:
    """Split of every ID under a `splits` setting (see the module docstring)."""
    ids = sorted(set(ids))
    if isinstance(splits, dict):
        ranges = {k: [tuple(r) for r in (v if isinstance(v[0], (list, tuple)) else [v])] for k, v in splits.items()}
    elif splits == "official":
        ranges = {k: [v] for k, v in FOVS[fov]["official"].items()}
    elif splits == "none":
        return {i: "" for i in ids}
    elif splits == "proportional":
        counts = FOVS[fov]["counts"]
        n, total = len(ids), sum(counts)
        b1 = round(n * counts[0] / total)
        b2 = round(n * (counts[0] + counts[1]) / total)
        if n >= 3:  # keep each split non-empty
            b1 = min(max(b1, 1), n - 2)
            b2 = min(max(b2, b1 + 1), n - 1)
        return {i: "train" if k < b1 else "val" if k < b2 else "test" for k, i in enumerate(ids)}
    else:
        ranges = {}
        for part in re.split(r"[;,]", str(splits)):
            if not part.strip():
                continue
            name, _, spans = part.partition("=")
            name = name.strip()
            try:
                bounds = [[int(x) for x in s.split("-")] for s in spans.split("+")]
                if any(len(b) not in (1, 2) for b in bounds):
                    raise ValueError
                ranges[name] = [(b[0], b[-1]) for b in bounds]
            except ValueError:
                raise Octa500Error(f"splits {splits!r}: expected 'official', 'proportional', 'none' or "
                                   f"'train=LO-HI[+ID];val=LO-HI;test=LO-HI'") from None
    bad = [k for k in ranges if k not in SPLITS]
    if bad:
        raise Octa500Error(f"splits {splits!r}: unknown split name(s) {', '.join(bad)}; use train, val, test")
    out = {}
    for i in ids:
        hits = [k for k, spans in ranges.items() if any(lo <= i <= hi for lo, hi in spans)]
        if len(hits) > 1:
            raise Octa500Error(f"splits {splits!r}: ID {i} falls in {' and '.join(hits)}")
        out[i] = hits[0] if hits else ""
    return out


# ---------------------------------------------------------------------------------------------
# Indexing


def _image_files(folder: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            sid = _int_id(p.stem)
            if sid is not None and (sid not in files or p.suffix.lower() == ".bmp"):
                files[sid] = p
    return files


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image ({e})") from None


def index_octa500(
    root: str | Path, labels: str | Path | None = None, task: str | None = None, fov: str = "3mm",
    projection: str = "OCTA(FULL)", splits: str | dict = "official",
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of one field of view of OCTA-500, and the (path, reason) pairs skipped.

    task: None (every projection map; labels = disease when known), "disease" (labels = the
    Disease column; subjects without one are skipped) or a segmentation task - vessel
    (GT_LargeVessel), capillary, artery, vein, faz, cavf - whose ground-truth bitmap becomes
    `mask_path` (labels ""; subjects without the bitmap are skipped). fov: "3mm" or "6mm";
    projection: one of PROJECTIONS; splits: see the module docstring; labels: a text-label file
    to use instead of the one found.

    Row: record_id = subject_id = "octa500-<ID>", path (absolute), split, labels, mask_path,
    task, fov, fov_mm, projection, image_type ("octa" or "oct"), height, width (px, from the
    header), pixel_size_mm (fov_mm / width), site ("octa500_<fov>", or the label file's Site
    column), sex, age, eye, disease. Rows sorted by ID.

    Skipped: subjects of the label file without a projection map, images that are not readable
    (header), subjects without the task's label or ground truth, ground truth of another size than
    its image (never stretched), label rows with a bad ID.
    Raises Octa500Error for an unknown task, fov or projection, a missing field-of-view,
    projection or ground-truth folder, or a missing label file for the disease task.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise Octa500Error(f"{root}: folder not found")
    if fov not in FOVS:
        raise Octa500Error(f"{root}: fov must be one of {', '.join(FOVS)}, got {fov!r}")
    if task is not None and task not in TASKS:
        raise Octa500Error(f"{root}: unknown OCTA-500 task {task!r}; tasks: {', '.join(TASKS)}")
    proj_name = next((p for p in PROJECTIONS if _norm(p) == _norm(projection)), None)
    if proj_name is None:
        raise Octa500Error(f"{root}: unknown projection {projection!r}; projections: {', '.join(PROJECTIONS)}")
    fov_dir = find_fov_dir(root, fov)
    if fov_dir is None:
        raise Octa500Error(f"{root}: no OCTA_{fov} folder (nor OCTA_{fov[:-2]}M) here or one level down")
    maps_dir = _child(fov_dir, "Projection Maps")
    proj_dir = _child(maps_dir, proj_name) if maps_dir else None
    if proj_dir is None:
        have = sorted(p.name for p in maps_dir.iterdir() if p.is_dir()) if maps_dir else []
        raise Octa500Error(f"{fov_dir}: no 'Projection Maps/{proj_name}' folder"
                           + (f"; found: {', '.join(have)}" if have else ""))
    gt_dir = None
    if task and TASKS[task]:
        gt_dir = find_gt_dir(root, fov_dir, TASKS[task])
        if gt_dir is None:
            raise Octa500Error(f"{root}: no {TASKS[task]} folder (looked in {fov_dir.name}/, "
                               f"{fov_dir.name}/Label/, {fov_dir.name}/GroundTruth/, Label/ and the root)")

    skipped: list[tuple[str, str]] = []
    table: dict[int, dict] = {}
    label_files = [(Path(labels), False)] if labels else find_label_files(root, fov_dir)
    for file, shared in label_files:
        entries, bad = read_text_labels(file)
        skipped += bad
        for sid, entry in entries.items():
            in_fov = (sid <= FOVS["6mm"]["ids"][1]) if fov == "6mm" else (sid >= FOVS["3mm"]["ids"][0])
            if not shared or in_fov:
                table.setdefault(sid, entry)
    if task == "disease" and not label_files:
        raise Octa500Error(f"{root}: no 'Text labels' file (.csv/.tsv/.txt/.xlsx) in {fov_dir.name}/, Label/ or "
                           f"the root; pass --labels FILE")

    images = _image_files(proj_dir)
    for sid in sorted(set(table) - set(images)):
        skipped.append((str(proj_dir / f"{sid}.bmp"), "projection map missing"))
    split_of = parse_splits(splits, fov, images)
    fov_mm = FOVS[fov]["fov_mm"]
    rows: list[dict] = []
    for sid, path in sorted(images.items()):
        info = table.get(sid, {})
        try:
            height, width = _image_size(path)
        except ValueError as e:
            skipped.append((str(path), str(e)))
            continue
        mask_path, labels_value = "", info.get("disease", "")
        if task == "disease" and not labels_value:
            skipped.append((str(path), f"no disease label for ID {sid}"
                            + (f" in {', '.join(str(f) for f, _ in label_files)}" if label_files else "")))
            continue
        if gt_dir is not None:
            mask = _image_files_for(gt_dir, sid)
            if mask is None:
                skipped.append((str(path), f"{gt_dir.name}/{sid}.bmp missing"))
                continue
            problem = mask_size_problem(mask, (height, width))
            if problem:
                skipped.append((str(path), problem))
                continue
            mask_path, labels_value = str(mask), ""
        rows.append({
            "record_id": f"octa500-{sid}", "subject_id": f"octa500-{sid}", "path": str(path),
            "split": split_of[sid], "labels": labels_value, "mask_path": mask_path, "task": task or "",
            "fov": fov, "fov_mm": f"{fov_mm:g}", "projection": proj_name,
            "image_type": "oct" if proj_name.startswith("OCT(") else "octa", "height": str(height),
            "width": str(width), "pixel_size_mm": f"{fov_mm / width:.6g}",
            "site": info.get("site") or f"octa500_{fov}", "sex": info.get("sex", ""), "age": info.get("age", ""),
            "eye": info.get("eye", ""), "disease": info.get("disease", ""),
        })
    return rows, skipped


def _image_files_for(folder: Path, sid: int) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for name in (f"{sid}{suffix}", f"{sid}{suffix.upper()}"):
            p = folder / name
            if p.is_file():
                return p
    return None
