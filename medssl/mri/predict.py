"""FOMO25 predictions from a fine-tuned task checkpoint: one session's NIfTI files -> one output.

`medssl fomo predict` takes the FOMO25 predict.py arguments (`--flair --adc --dwi_b1000 --swi |
--t2s --t1 --t2 --output`) plus `--checkpoint DIR` (a folder written by `medssl fomo finetune`);
`--task` is optional (the card says which task the checkpoint was fine-tuned for). The container's
`/app/predict.py` is `medssl.mri.fomo_app`. Outputs:

- task 1 (infarct): `--output X.txt`, one float, the infarct probability in [0, 1];
- task 2 (meningioma): `--output X.nii.gz`, a uint8 mask in {0, 1} with the shape and affine of
  the input (the first sequence of the task, FLAIR, whose grid preprocessing starts from);
- task 3 (brain age): `--output X.txt`, one float, the age in years (never truncated to an integer).

Preprocessing is `medssl.mri.modality.preprocess_row` with the `MriPreprocess` settings stored in
the card: the same function that filled the training cache. A task 2 prediction (lesion
probability on the model grid, from sliding windows) is mapped back to the input grid through the
kept `Geometry` (trilinear on the probability, then thresholded at the card's 0.5), so the mask
lies where the lesion is in the input's world coordinates whatever the orientation, voxel size or
cropping of the input.

`predict_folder` runs a whole task folder (fomo-task layout, labels not needed) and writes
`<out>/<subject>_<session>.txt|.nii.gz` (`output_name`); sessions that fail are skipped and listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medssl.io import atomic_write_text
from medssl.mri.fomo_task import parse_task

SEQUENCE_ARGS = ("flair", "adc", "dwi_b1000", "swi", "t2s", "t1", "t2")
_OUTPUT_SUFFIX = {1: (".txt",), 2: (".nii.gz", ".nii"), 3: (".txt",)}


def session_row(task, files: Mapping[str, str | Path | None]) -> dict:
    """A fomo-task style row of one session from FOMO25 argument names (`flair`, `adc`,
    `dwi_b1000`, `swi`, `t2s`, `t1`, `t2` -> file). SWI is taken when both SWI and T2* are given,
    as the layout does. Raises ValueError naming the missing argument(s) or file(s)."""
    spec = parse_task(task)
    given = {k: str(v) for k, v in files.items() if v}
    unknown = sorted(set(given) - set(SEQUENCE_ARGS))
    if unknown:
        raise ValueError(f"unknown sequence(s) {', '.join(unknown)}; known: {', '.join(SEQUENCE_ARGS)}")
    row: dict[str, Any] = {"record_id": "input", "subject_id": "input", "path": "", "task": str(spec.number)}
    missing = []
    for name in spec.inputs:
        if name == "swi_or_t2s":
            which = "swi" if "swi" in given else "t2s" if "t2s" in given else ""
            if not which:
                missing.append("--swi or --t2s")
                continue
            row["seq_swi_or_t2s"], row["swi_or_t2s"] = given[which], which
        elif name in given:
            row[f"seq_{name}"] = given[name]
        else:
            missing.append(f"--{name}")
    if missing:
        raise ValueError(f"task {spec.number} ({spec.name}) needs {', '.join(missing)}")
    absent = [p for k, p in row.items() if k.startswith("seq_") and not Path(p).exists()]
    if absent:
        raise ValueError(f"{absent[0]}: file not found")
    return row


def output_name(row: Mapping, task) -> str:
    """`<subject>_<session>` + `.txt` (tasks 1, 3) or `.nii.gz` (task 2): the file name
    `predict_folder` writes and `medssl fomo validate` expects for a fomo-task row."""
    number = parse_task(task).number
    return f"{row['subject']}_{row['session']}{_OUTPUT_SUFFIX[number][0]}"


def format_value(value: float) -> str:
    """A probability or an age as text: always a decimal float ("63.000000", never "63")."""
    return f"{float(value):.6f}\n"


class FomoPredictor:
    """A loaded task checkpoint; `predict_row(row)` -> float or (mask (X, Y, Z) uint8, affine)."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str | None = None):
        from medssl.engine.hardware import resolve_inference_precision
        from medssl.mri.preprocess import MriPreprocess
        from medssl.mri.task_model import load_task_checkpoint, resolve_device

        self.device = resolve_device(device)
        self.precision = resolve_inference_precision(precision, self.device.type)
        self.model, self.card = load_task_checkpoint(checkpoint)
        self.model.to(self.device)
        self.task = parse_task(self.card["task"]["number"])
        p = self.card["preprocess"]
        self.preprocess = MriPreprocess(channels=tuple(p["channels"]), shape=tuple(p["shape"]),
                                        spacing_mm=tuple(p["spacing_mm"]), crop_foreground=bool(p["crop_foreground"]))
        if int(p.get("version", self.preprocess.version)) != self.preprocess.version:
            raise ValueError(f"{checkpoint}: trained with preprocessing version {p.get('version')}, this medssl has "
                             f"version {self.preprocess.version}; fine-tune again with this version")

    def predict_row(self, row: Mapping) -> float | tuple[np.ndarray, np.ndarray]:
        from medssl.mri.modality import preprocess_row
        from medssl.mri.task_model import predict_array

        if str(row.get("task", self.task.number)) != str(self.task.number):
            raise ValueError(f"the checkpoint is a task {self.task.number} model, the input is task {row['task']}")
        x, geometry = preprocess_row(row, self.preprocess)
        out = predict_array(self.model, self.card, x, self.device, precision=self.precision)
        if self.task.kind != "segmentation":
            return float(out)
        return self.to_input_mask(out, geometry), np.asarray(geometry.original_affine)

    def to_input_mask(self, probability: np.ndarray, geometry) -> np.ndarray:
        """Model-grid lesion probability -> uint8 {0, 1} mask on the input's grid (`geometry`: the
        input's `medssl.mri.preprocess.Geometry`)."""
        from medssl.mri.preprocess import to_original_space

        on_input = to_original_space(probability, geometry, order=1)
        return (on_input >= float(self.card["target"].get("threshold", 0.5))).astype(np.uint8)

    def write(self, row: Mapping, output: str | Path) -> Path:
        """Predict one session and write `output` atomically (suffix checked first)."""
        from medssl.imaging.nifti import write_nifti

        output = Path(output)
        suffixes = _OUTPUT_SUFFIX[self.task.number]
        if not output.name.lower().endswith(suffixes):
            raise ValueError(f"{output}: task {self.task.number} writes a {' or '.join(suffixes)} file")
        result = self.predict_row(row)
        output.parent.mkdir(parents=True, exist_ok=True)
        if self.task.kind == "segmentation":
            mask, affine = result
            return write_nifti(output, mask, affine, dtype=np.uint8)
        if not np.isfinite(result):
            raise ValueError(f"the model gave a non-finite value ({result}) for {output.name}")
        return atomic_write_text(output, format_value(result))


def predict_files(checkpoint: str | Path, task, files: Mapping[str, str | Path | None], output: str | Path,
                  device: str = "auto", precision: str | None = None) -> Path:
    """One session: FOMO25 argument names -> files, written to `output`. `task` None: the task of
    the checkpoint's card (the organisers never pass --task); given, it must agree with the card."""
    predictor = FomoPredictor(checkpoint, device, precision)
    if task is not None and parse_task(task).number != predictor.task.number:
        raise ValueError(f"--task {parse_task(task).number} given, but {checkpoint} is a task "
                         f"{predictor.task.number} model")
    return predictor.write(session_row(predictor.task, files), output)


def predict_folder(checkpoint: str | Path, root: str | Path, out_dir: str | Path, device: str = "auto",
                   precision: str | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every session of a fomo-task folder -> `out_dir/<subject>_<session>.*`. Returns (written,
    skipped (path, reason)): sessions the layout skips or that fail to predict are listed, the
    others still written."""
    from medssl.mri.fomo_task import index_fomo_task
    from medssl.mri.modality import _ERRORS

    predictor = FomoPredictor(checkpoint, device, precision)
    rows, skipped = index_fomo_task(root, predictor.task.number, require_labels=False)
    written = []
    for row in rows:
        try:
            written.append(predictor.write(row, Path(out_dir) / output_name(row, predictor.task)))
        except _ERRORS as e:
            skipped.append((row["path"], str(e)))
    return written, skipped
