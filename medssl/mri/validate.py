"""A sanity check of a folder of FOMO25 predictions against the task folder they were made from,
in the spirit of the organisers' check before a submission is scored.

For every session of the input folder (fomo-task layout, labels not needed) the output folder
must hold `<subject>_<session>.txt` (tasks 1, 3) or `<subject>_<session>.nii.gz` (task 2)
(`medssl.mri.predict.output_name`, what `medssl fomo predict --input-dir` writes) or, for a subject
with one session, `<subject>.txt|.nii.gz`: the name the organisers' validator gives `--output`
(`/output/sub_X.txt`). And:

- a `.txt` holds exactly one number that parses as a float and is finite; task 1: a probability
  in [0, 1]; task 3: an age in years within `age_range` (default 0-120). An integer such as `63`
  is a valid float (but medssl never writes one);
- a mask is a readable 3-D NIfTI with the shape of the session's reference input (the task's first
  sequence, FLAIR) and its affine (nibabel's best affine, within `atol_mm`), and binary values
  (0 and 1 only).

Files in the output folder that no session expects are listed as notes, not problems, and so are
masks without a lesion voxel: valid here (a session may have no lesion), but the organisers'
container validator wants both values 0 and 1 in each mask of its sample data.
`ValidationReport.ok` is False when any problem was found; the CLI then exits with code 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.mri.fomo_task import parse_task

AGE_RANGE = (0.0, 120.0)


@dataclass
class ValidationReport:
    task: int
    input_root: str
    output_dir: str
    n_expected: int = 0
    n_valid: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file, what is wrong)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.n_expected > 0

    def to_dict(self) -> dict:
        return {"task": self.task, "input_root": self.input_root, "output_dir": self.output_dir,
                "n_expected": self.n_expected, "n_valid": self.n_valid, "ok": self.ok,
                "problems": [{"file": f, "problem": p} for f, p in self.problems], "notes": self.notes}

    def format(self) -> str:
        head = (f"task {self.task}: {self.n_valid} of {self.n_expected} expected prediction(s) valid in "
                f"{self.output_dir}")
        lines = [head + (" - OK" if self.ok else f" - {len(self.problems)} problem(s)")]
        lines += [f"  PROBLEM {f}: {p}" for f, p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_value_file(path: str | Path, task) -> list[str]:
    """Problems of a task 1 or 3 `.txt` prediction (empty list: valid)."""
    number = parse_task(task).number
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError as e:
        return [f"cannot be read ({type(e).__name__})"]
    tokens = text.split()
    if len(tokens) != 1:
        return [f"holds {len(tokens)} values ({text[:30]!r}); expected one number"]
    try:
        value = float(tokens[0])
    except ValueError:
        return [f"holds {tokens[0][:30]!r}, which is not a number"]
    if not math.isfinite(value):
        return [f"holds {tokens[0]!r}, not a finite number"]
    if number == 1 and not 0.0 <= value <= 1.0:
        return [f"probability {value:g} outside [0, 1]"]
    if number == 3 and not AGE_RANGE[0] <= value <= AGE_RANGE[1]:
        return [f"age {value:g} years outside the plausible range {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}"]
    return []


def check_mask_file(path: str | Path, reference: str | Path, atol_mm: float = 1e-3) -> list[str]:
    """Problems of a task 2 mask against the input it was predicted from (empty list: valid)."""
    import nibabel as nib

    try:
        ref = nib.load(str(reference))
        ref_shape, ref_affine = tuple(ref.shape[:3]), ref.affine
    except Exception as e:  # noqa: BLE001 - any reader error is reported, not raised
        return [f"reference input {reference} cannot be read ({type(e).__name__})"]
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # noqa: BLE001
        return [f"not a readable NIfTI file ({type(e).__name__}: {str(e)[:80]})"]
    problems = []
    shape = tuple(data.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if shape != ref_shape:
        problems.append(f"shape {shape} differs from the input's {ref_shape}")
    if not np.allclose(img.affine, ref_affine, atol=atol_mm, rtol=0):
        worst = float(np.max(np.abs(img.affine - ref_affine)))
        problems.append(f"affine differs from the input's (largest difference {worst:.4g})")
    values = np.unique(np.asarray(data))
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        problems.append(f"not binary: values {shown}")
    return problems


def _has_foreground(path: Path) -> bool:
    import nibabel as nib

    return bool(np.any(np.asanyarray(nib.load(str(path)).dataobj)))


def validate_outputs(task, input_root: str | Path, output_dir: str | Path, *, atol_mm: float = 1e-3
                     ) -> ValidationReport:
    """Check `output_dir` against every session of the task folder `input_root`."""
    from medssl.mri.fomo_task import index_fomo_task
    from medssl.mri.predict import output_name

    spec = parse_task(task)
    output_dir = Path(output_dir)
    report = ValidationReport(spec.number, str(input_root), str(output_dir))
    if not output_dir.is_dir():
        report.problems.append((str(output_dir), "output folder not found"))
        return report
    rows, skipped = index_fomo_task(input_root, spec.number, require_labels=False)
    for path, reason in skipped:
        report.notes.append(f"input {path} not usable, no prediction expected: {reason}")
    if not rows:
        report.problems.append((str(input_root), f"no task {spec.number} session to check against"))
        return report
    sessions_of: dict[str, int] = {}
    for row in rows:
        sessions_of[row["subject"]] = sessions_of.get(row["subject"], 0) + 1
    expected = set()
    empty_masks = []
    for row in rows:
        name = output_name(row, spec)
        names = [name]
        if sessions_of[row["subject"]] == 1:  # the organisers' name: /output/sub_X.txt
            names.append(str(row["subject"]) + name[len(f"{row['subject']}_{row['session']}"):])
        expected.update(names)
        report.n_expected += 1
        found = [n for n in names if (output_dir / n).is_file()]
        if not found:
            report.problems.append((name, "missing" + "".join(f" (nor {n})" for n in names[1:])))
            continue
        name = found[0]
        if len(found) > 1:
            report.notes.append(f"{' and '.join(found)} are both there for one session; {name} was checked")
        path = output_dir / name
        if spec.kind == "segmentation":
            problems = check_mask_file(path, row[f"seq_{spec.inputs[0]}"], atol_mm)
            if not problems and not _has_foreground(path):
                empty_masks.append(name)
        else:
            problems = check_value_file(path, spec)
        report.problems += [(name, p) for p in problems]
        report.n_valid += not problems
    if empty_masks:
        report.notes.append(f"{len(empty_masks)} mask(s) without a lesion voxel ({', '.join(empty_masks[:3])}"
                            f"{', ...' if len(empty_masks) > 3 else ''}): valid, but the organisers' container "
                            "validator wants both 0 and 1 in each mask of its sample data")
    extra = sorted(p.name for p in output_dir.iterdir() if p.is_file() and p.name not in expected
                   and not p.name.startswith("."))
    if extra:
        report.notes.append(f"{len(extra)} file(s) no session expects: {', '.join(extra[:5])}"
                            + (", ..." if len(extra) > 5 else ""))
    return report
