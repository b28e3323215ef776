"""A folder of 3-D volumes (brain MRI, CT...) described by one table: the `volume-folder` layout.

The volume counterpart of the retina `image-folder` layout, for NIfTI files and DICOM series that
come with a spreadsheet rather than a challenge's folder structure. Two ways to describe them:

1. A CSV with an `image` column (default `<root>/volumes.csv`, else `<root>/labels.csv`; another
   name with `--option csv=NAME` or `--labels PATH`), one row per volume:

       image        a NIfTI file (.nii / .nii.gz) or a folder holding one DICOM series,
                    relative to the root (or absolute); `folder#ser-...` picks one series of
                    a folder (CT), by the id the `dicom` layout gives it               required
       mask         its segmentation mask (NIfTI; any label > 0 is foreground)         optional
       subject_id   the person the volume belongs to                                  optional
       labels       class names joined by ";"                                         optional
       split        train / val / test (empty: drawn from the subject)                optional
       site         acquisition site or scanner                                       optional
       sequence     MRI sequence (t1, t2, flair...; default: from the file name)      optional
       ...          anything else (age, sex...) is copied into the rows, for `column:` tasks

2. A folder of NIfTI files and a participants table with one row per subject and no `image`
   column (IXI's `MRID,Age,Sex`, BIDS's `participants.tsv`): files under the root (recursive;
   `--option pattern=*_T1.nii.gz` narrows them) are matched to the table's ID column
   (`--option id_column=MRID`; by default the first of subject_id, participant_id, mrid, ixi_id,
   id, subject, eid present). A file matches the ID it starts with at a separator
   (`IXI012-HH-1211_T1.nii.gz` <- `IXI012-HH-1211`; `sub-01_T1w.nii.gz` <- `sub-01`; the longest
   such ID wins), or, for a purely numeric ID, the number after the file name's letter prefix
   (`IXI012-HH-1211_T1.nii.gz` <- `12`, as in IXI's own spreadsheet). Each matched file is one row
   whose subject is the ID; a subject may have several files (sequences, visits). Files with no
   row and rows with no file are skipped and listed.

3. No table at all: every NIfTI file under the root (`pattern` applies) is one unlabelled volume,
   its own subject (e.g. CT or MRI pretraining data).

Table files are read as CSV, or as TSV when named `.tsv`. Column names are matched without regard
to case, spaces or dashes and written in snake_case (`Age` -> `age`, `Scanner Type` ->
`scanner_type`). Without a subject, each volume is its own subject (the file stem): give
`subject_id` whenever a person may have more than one volume, or splits leak.

`--option modality=mri|ct` (default mri) says which modality's encoders will read the rows; MRI
rows get a `sequence` (the `sequence` column, else `--option sequence=t1`, else guessed from the
last token of the file name: `_T1` -> t1, `_FLAIR` -> flair, else "other"). Every row carries the
volume's grid from its header (no voxel data is read when indexing): `shape` / `spacing_mm`
("XxYxZ", mm) as the MRI hooks read them and `dim_x..z` / `spacing_x_mm..z` as the CT hooks do.
The layout only reads under the root. Split: the `split` column, else
`medssl.ecg.layouts.subject_split` of the subject (70/15/15), so a subject's volumes share one.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medssl.data.layouts import register_layout
from medssl.data.manifest import join_labels, split_labels

CSV_NAMES: tuple[str, ...] = ("volumes.csv", "labels.csv")
PARTICIPANT_TABLES: tuple[str, ...] = ("participants.csv", "participants.tsv")
ID_COLUMNS: tuple[str, ...] = ("subject_id", "participant_id", "mrid", "ixi_id", "id", "subject", "eid")
MODALITIES: tuple[str, ...] = ("mri", "ct")
SPLITS: tuple[str, ...] = ("train", "val", "test", "")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
_CORE = ("image", "mask", "subject_id", "labels", "split", "site", "sequence")


class VolumeFolderError(ValueError):
    """The folder or its table cannot be indexed; the message starts with the offending path."""


def snake(name: str) -> str:
    """A column name in snake_case: `Age` -> age, `Scanner Type` -> scanner_type, `IXI_ID` -> ixi_id."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _stem(path: str | Path) -> str:
    name = Path(str(path).partition("#")[0]).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, records) of a CSV (or a `.tsv`) table, names in snake_case, values stripped.
    Raises VolumeFolderError naming the file when it is unreadable or two columns collide."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, [])
            body = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VolumeFolderError(f"{path}: unreadable table ({type(e).__name__})") from None
    columns = [snake(c) for c in header]
    dup = sorted({c for c in columns if c and columns.count(c) > 1})
    if dup:
        raise VolumeFolderError(f"{path}: columns {', '.join(dup)} appear twice (names are compared in snake_case)")
    records = []
    for values in body:
        if not any(v.strip() for v in values):
            continue
        records.append({c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(columns) if c})
    return [c for c in columns if c], records


def _find_table(root: Path, labels: str | Path | None, csv_name: str | None) -> Path | None:
    if labels and csv_name:
        raise VolumeFolderError(f"{root}: give the table once, with --labels or with --option csv=, not both")
    if labels:
        return Path(labels)
    if csv_name:
        p = Path(csv_name)
        return p if p.is_absolute() else root / p
    for name in CSV_NAMES + PARTICIPANT_TABLES:
        if (root / name).is_file():
            return root / name
    return None


def volume_grid(path: str | Path, *, salt: str | None = None) -> dict[str, str]:
    """The grid of a volume from its header only: {shape, spacing_mm, dim_x..z, spacing_x_mm..z}
    (voxel counts; mm; axes as the readers return them). NIfTI: the authoritative affine; DICOM:
    the planned series (a folder holding one series, or `folder#ser-...`). Raises ValueError with
    the reason (unreadable header, 4-D image, several series in the folder...)."""
    base, _, series = str(path).partition("#")
    if _is_nifti(base):
        from medssl.imaging.nifti import _affine, _load

        p = Path(base)
        try:
            img, _ = _load(p)
            affine, _src = _affine(img, p)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - nibabel raises assorted errors on bad headers
            raise ValueError(f"unreadable NIfTI header ({type(e).__name__})") from None
        shape = tuple(int(s) for s in img.shape)
        if len(shape) > 3 and int(np.prod(shape[3:])) > 1:
            raise ValueError(f"{len(shape)}-D image of shape {'x'.join(map(str, shape))}; one 3-D volume per "
                             f"row (split the time series or pick a volume first)")
        shape = (shape + (1, 1, 1))[:3]
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    else:
        from medssl.imaging.dicom import DicomSeriesError, list_files, plan_series, scan_dicom_files, select_series

        p = Path(base)
        if not p.exists():
            raise ValueError("not found")
        files = list_files(p) if p.is_dir() else [p]
        try:
            found, bad = scan_dicom_files(files, salt=salt)
            if not found:
                why = f" ({bad[0][1]})" if bad else ""
                raise ValueError(f"neither a NIfTI file nor a DICOM series{why}")
            plan = plan_series(select_series(found, series or None, str(p)), missing="interpolate")
        except DicomSeriesError as e:
            msg = str(e)
            raise ValueError(msg[len(f"{p}: "):] if msg.startswith(f"{p}: ") else msg) from None
        h = plan.slices[0]
        shape = (int(h.columns), int(h.rows), int(plan.report.n_slices))
        spacing = tuple(float(v) for v in plan.report.spacing_mm)
    return {
        "shape": "x".join(str(s) for s in shape), "spacing_mm": "x".join(f"{s:.4g}" for s in spacing),
        "dim_x": str(shape[0]), "dim_y": str(shape[1]), "dim_z": str(shape[2]),
        "spacing_x_mm": f"{spacing[0]:.6g}", "spacing_y_mm": f"{spacing[1]:.6g}", "spacing_z_mm": f"{spacing[2]:.6g}",
    }


def guess_sequence(path: str | Path) -> str:
    """The MRI sequence a file name states in its last token (`IXI012-HH-1211_T1` -> t1, `sub-01_FLAIR`
    -> flair, `scan_t2w` -> t2), else the whole stem's guess, else "other"."""
    from medssl.imaging.sequences import normalise_sequence

    stem = _stem(path)
    token = re.split(r"[_\-.\s]+", stem)[-1] if stem else ""
    guess = normalise_sequence(token) if token else "other"
    return guess if guess != "other" else normalise_sequence(stem)


def _file_keys(stem: str) -> list[str]:
    """Prefixes of a file stem at separators, longest first (`IXI012-HH-1211_T1`, `IXI012-HH-1211`,
    `IXI012-HH`, `IXI012`), lower-cased."""
    cuts = [m.start() for m in re.finditer(r"[_\-.]", stem)]
    keys = [stem] + [stem[:c] for c in reversed(cuts)]
    return [k.lower() for k in keys if k]


def _numeric_key(stem: str) -> int | None:
    m = re.match(r"^[A-Za-z]*[_\-]?0*(\d+)", stem)
    return int(m.group(1)) if m else None


def match_files_to_ids(files: Sequence[Path], ids: Sequence[str]) -> tuple[dict[Path, str], list[Path]]:
    """(file -> the ID it belongs to, files matching none): the longest ID a file's stem starts with at
    a separator, else a numeric ID equal to the number after the stem's letter prefix (module
    docstring). Comparisons ignore case."""
    by_text = {i.strip().lower(): i for i in ids if i.strip()}
    by_number: dict[int, str] = {}
    for i in ids:
        if i.strip().isdigit():
            by_number.setdefault(int(i), i)
    matched: dict[Path, str] = {}
    unmatched: list[Path] = []
    for f in files:
        stem = _stem(f)
        hit = next((by_text[k] for k in _file_keys(stem) if k in by_text), None)
        if hit is None and by_number:
            n = _numeric_key(stem)
            hit = by_number.get(n) if n is not None else None
        if hit is None:
            unmatched.append(f)
        else:
            matched[f] = hit
    return matched, unmatched


def _nifti_files(root: Path, pattern: str | None) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or not _is_nifti(p):
            continue
        if pattern and not (fnmatch.fnmatch(p.name, pattern) or fnmatch.fnmatch(rel.as_posix(), pattern)):
            continue
        out.append(p)
    return out


def index_volume_folder(
    root: str | Path, labels: str | Path | None = None, task: str | None = None, *,
    csv_name: str | None = None, modality: str = "mri", id_column: str | None = None, pattern: str | None = None,
    sequence: str | None = None, split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Manifest rows of the volumes under `root` described by a table (module docstring), and the
    (path, reason) pairs skipped.

    task: None (labels from the `labels` column), "segmentation" (rows need a mask; labels "") or the
    name of another column whose values become the labels (rows without one are skipped).

    Row: record_id (the volume's path relative to the root), subject_id, path (absolute; DICOM:
    the series folder, or `folder#ser-...`), split, labels, mask_path (absolute or ""), site,
    modality, sequence (MRI), task, shape, spacing_mm, dim_x..z, spacing_x_mm..z, then the
    table's other columns in snake_case. Rows keep the table's order (folder mode: file order).

    Skipped: missing or unreadable volumes (4-D images, folders holding several DICOM series),
    missing masks, rows without the task's label, files with no row in the table and table rows
    with no file. Raises VolumeFolderError for a missing table, no `image` and no ID column, an
    unknown task column or modality, a bad split name, a repeated volume, or a subject put in two
    splits.
    """
    from medssl.data.manifest import subject_split

    root = Path(root).resolve()
    if not root.is_dir():
        raise VolumeFolderError(f"{root}: folder not found")
    modality = str(modality).lower()
    if modality not in MODALITIES:
        raise VolumeFolderError(f"{root}: modality {modality!r} is not one of {', '.join(MODALITIES)}")
    table = _find_table(root, labels, csv_name)
    if table is None:  # no table: every NIfTI file is one unlabelled volume, its own subject
        files = _nifti_files(root, pattern)
        if not files:
            raise VolumeFolderError(f"{root}: no table ({', '.join(CSV_NAMES + PARTICIPANT_TABLES)}) and no NIfTI "
                                    f"files{f' matching {pattern!r}' if pattern else ''}; give a table with "
                                    f"--option csv=NAME (columns image, [mask], [subject_id], [labels], [split], "
                                    f"[site], or an ID column matched to the files' names)")
        if task not in (None, ""):
            raise VolumeFolderError(f"{root}: task {task!r} needs a table (none found: "
                                    f"{', '.join(CSV_NAMES + PARTICIPANT_TABLES)}; or --option csv=NAME)")
        table = root / "(no table)"
        columns, records = ["image"], [{"image": str(f)} for f in files]
    elif not table.is_file():
        raise VolumeFolderError(f"{table}: table not found")
    else:
        columns, records = read_table(table)
    task_col = snake(task) if task not in (None, "", "segmentation") else task or None
    if task_col not in (None, "segmentation") and task_col not in columns:
        raise VolumeFolderError(f"{table}: task {task!r} is neither 'segmentation' nor a column "
                                f"(columns: {', '.join(columns)})")
    if task_col == "segmentation" and "mask" not in columns:
        raise VolumeFolderError(f"{table}: task segmentation needs a 'mask' column")

    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, Path | str, dict[str, str]]] = []  # (where, volume path, table record)
    if "image" in columns:
        if (id_column or pattern) and table.is_file():
            raise VolumeFolderError(f"{table}: has an 'image' column; id_column= and pattern= are for a "
                                    f"participants table matched to the files' names")
        for line, rec in enumerate(records, start=2):
            if not rec.get("image"):
                skipped.append((f"{table}:{line}", "empty image path"))
                continue
            base, sep, frag = rec["image"].partition("#")
            p = Path(base)
            p = p if p.is_absolute() else root / p
            entries.append((f"{table}:{line}", f"{p}{sep}{frag}", rec))
    else:
        id_col = snake(id_column) if id_column else next((c for c in ID_COLUMNS if c in columns), None)
        if id_col is None or id_col not in columns:
            wanted = f"column {id_column!r}" if id_column else f"an ID column ({', '.join(ID_COLUMNS)})"
            raise VolumeFolderError(f"{table}: no 'image' column and no {wanted} (found: {', '.join(columns) or 'none'}"
                                    f"); name the ID column with --option id_column=NAME")
        by_id: dict[str, tuple[int, dict]] = {}
        for line, rec in enumerate(records, start=2):
            key = rec.get(id_col, "")
            if not key:
                skipped.append((f"{table}:{line}", f"empty {id_col}"))
                continue
            if key in by_id:
                raise VolumeFolderError(f"{table}:{line}: {id_col} {key} already on line {by_id[key][0]}")
            by_id[key] = (line, rec)
        files = _nifti_files(root, pattern)
        if not files:
            raise VolumeFolderError(f"{root}: no NIfTI files{f' matching {pattern!r}' if pattern else ''} to match "
                                    f"to {table.name}")
        matched, unmatched = match_files_to_ids(files, list(by_id))
        skipped += [(str(f), f"no row for it in {table.name} (column {id_col})") for f in unmatched]
        used = set(matched.values())
        skipped += [(f"{table}:{by_id[k][0]}", f"{id_col} {k}: no NIfTI file matches it under {root}")
                    for k in by_id if k not in used]
        for f in files:
            if f in matched:
                line, rec = by_id[matched[f]]
                rec = {**rec, "subject_id": rec.get("subject_id") or matched[f]}
                entries.append((f"{table}:{line}", str(f), rec))

    rows: list[dict] = []
    seen: dict[str, str] = {}
    split_of: dict[str, tuple[str, str]] = {}
    for where, path_text, rec in entries:
        base = path_text.partition("#")[0]
        try:
            record_id = Path(base).resolve().relative_to(root).as_posix()
        except ValueError:
            record_id = Path(base).as_posix()
        if "#" in path_text:
            record_id += "#" + path_text.partition("#")[2]
        if record_id in seen:
            raise VolumeFolderError(f"{where}: volume {record_id} already listed ({seen[record_id]})")
        seen[record_id] = where
        subject = rec.get("subject_id") or _stem(base)
        split = rec.get("split", "").lower()
        if split not in SPLITS:
            raise VolumeFolderError(f"{where}: split {rec['split']!r} is not train, val or test")
        if not split:
            split = subject_split(subject, split_seed, split_fractions)
        first = split_of.setdefault(subject, (split, where))
        if first[0] != split:
            raise VolumeFolderError(f"{where}: subject {subject} is in split {split} here and {first[0]} at {first[1]}")
        if not Path(base).exists():
            skipped.append((path_text, "volume not found"))
            continue
        try:
            grid = volume_grid(path_text)
        except ValueError as e:
            skipped.append((path_text, str(e)))
            continue
        mask_path = ""
        if rec.get("mask"):
            mask = Path(rec["mask"])
            mask = mask if mask.is_absolute() else root / mask
            if not mask.is_file():
                skipped.append((path_text, f"mask {mask} missing"))
                continue
            try:
                volume_grid(mask)
            except ValueError as e:
                skipped.append((path_text, f"mask {mask.name}: {e}"))
                continue
            mask_path = str(mask)
        if task_col == "segmentation":
            if not mask_path:
                skipped.append((path_text, "no mask"))
                continue
            label_value = ""
        elif task_col is not None:
            label_value = join_labels(split_labels(rec.get(task_col, "")))
            if not label_value:
                skipped.append((path_text, f"no {task_col} value"))
                continue
        else:
            label_value = join_labels(split_labels(rec.get("labels", "")))
        row = {"record_id": record_id, "subject_id": subject, "path": path_text, "split": split,
               "labels": label_value, "mask_path": mask_path, "site": rec.get("site", ""), "modality": modality}
        if modality == "mri":
            row["sequence"] = (rec.get("sequence") or sequence or guess_sequence(base)).lower()
        row["task"] = task_col or ""
        row.update(grid)
        for key, value in rec.items():
            if key and key not in _CORE and key not in row:
                row[key] = value
        rows.append(row)
    return rows, skipped


def _volume_folder_layout(root: Path, labels: str | None = None, task: str | None = None, *, csv: str | None = None,
                   modality: str = "mri", id_column: str | None = None, pattern: str | None = None,
                   sequence: str | None = None, split_seed: int | str = 0):
    """NIfTI volumes / DICOM series (MRI or CT) listed in a CSV with an `image` column, or matched by name
    to a participants table's ID column (`medssl.imaging.volume_folder`)."""
    try:
        seed = int(split_seed)
    except (TypeError, ValueError):
        raise ValueError(f"layout volume-folder: split_seed={split_seed!r} is not an integer") from None
    return index_volume_folder(root, labels, task, csv_name=csv, modality=modality, id_column=id_column,
                               pattern=pattern, sequence=sequence, split_seed=seed)


register_layout("volume-folder", _volume_folder_layout)
