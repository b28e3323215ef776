"""`medssl fomo predict` and `validate`: phantom task folder -> tiny fine-tuned model -> predictions
in the input's space -> the organisers'-style sanity check; corrupted outputs fail it clearly."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import main
from medssl.imaging.nifti import read_nifti, write_nifti
from medssl.mri.fomo_task import index_fomo_task
from medssl.mri.predict import FomoPredictor, output_name, predict_folder
from medssl.mri.preprocess import to_model_space
from medssl.mri.validate import validate_outputs

FLAGS = {"flair": "flair", "adc": "adc", "dwi_b1000": "dwi_b1000", "t1": "t1", "t2": "t2"}


def _cli_files(row) -> list[str]:
    args = []
    for key, value in row.items():
        if key == "seq_swi_or_t2s":
            args += [f"--{row['swi_or_t2s']}", value]
        elif key.startswith("seq_"):
            args += [f"--{FLAGS[key[4:]]}", value]
    return args


@pytest.mark.parametrize("task", [1, 2, 3])
def test_round_trip_predict_then_validate(task, checkpoints, fomo_task_root, tmp_path, capsys):
    root = fomo_task_root(task)
    written, skipped = predict_folder(checkpoints[task], root, tmp_path / "out", device="cpu")
    rows, _ = index_fomo_task(root, task, require_labels=False)
    assert skipped == [] and len(written) == len(rows) == 12
    report = validate_outputs(task, root, tmp_path / "out")
    assert report.ok and report.n_valid == 12, report.format()
    assert main(["fomo", "validate", "--task", str(task), "--input", str(root), "--output", str(tmp_path / "out"),
                 "--json", str(tmp_path / "report.json")]) == 0
    assert "12 of 12 expected prediction(s) valid" in capsys.readouterr().out

    # one session through the FOMO25 argument names: the same value or mask as the folder run
    row = next(r for r in rows if r["site"] == "siteB")  # LPS, 3 mm slices: the mapping back matters
    single = tmp_path / ("single.nii.gz" if task == 2 else "single.txt")
    assert main(["fomo", "predict", "--task", str(task), *_cli_files(row), "--output", str(single),
                 "--checkpoint", str(checkpoints[task]), "--device", "cpu"]) == 0
    batch = tmp_path / "out" / output_name(row, task)
    if task == 2:
        img, ref = nib.load(str(single)), nib.load(row["seq_flair"])
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
        assert img.get_data_dtype() == np.uint8 and set(np.unique(img.get_fdata())) <= {0.0, 1.0}
        np.testing.assert_array_equal(img.get_fdata(), nib.load(str(batch)).get_fdata())
    else:
        text = single.read_text().strip()
        assert "." in text and float(text) == float(batch.read_text())
        assert (0.0 <= float(text) <= 1.0) if task == 1 else (0.0 < float(text) < 130.0)


@pytest.mark.parametrize("spacing,flip", [((1.0, 1.0, 1.0), (1, 1, 1)), ((1.0, 1.0, 3.0), (-1, -1, 1)),
                                          ((1.2, 1.2, 1.5), (-1, 1, 1))])
def test_masks_map_back_onto_the_input_grid(spacing, flip, checkpoints, tmp_path):
    """A perfect model-grid prediction (the true mask put on the model grid) comes back onto the
    input's own grid (RAS 1 mm; LPS with 3 mm slices; LAS 1.2 x 1.2 x 1.5 mm) where the true mask is."""
    from medssl.bench.segmentation_metrics import dice
    from medssl.mri.modality import preprocess_row
    from medssl.mri.preprocess import MriPreprocess

    predictor = FomoPredictor(checkpoints[2], "cpu")
    shape = tuple(round(48 / s) for s in spacing)
    affine = np.diag([f * s for f, s in zip(flip, spacing)] + [1.0])
    affine[:3, 3] = [-f * s * n / 2 for f, s, n in zip(flip, spacing, shape)]
    world = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) @ affine[:3, :3].T + affine[:3, 3]
    brain = ((world / [20.0, 22.0, 18.0]) ** 2).sum(-1) < 1
    lesion = (((world - [8.0, -6.0, 5.0]) / 6.0) ** 2).sum(-1) < 1  # off-centre, so a flip would miss it
    image = np.where(brain, 100.0 + 50 * lesion, 0.0).astype(np.float32)
    write_nifti(tmp_path / "flair.nii.gz", image, affine)
    write_nifti(tmp_path / "seg.nii.gz", lesion.astype(np.uint8), affine)
    row = {"task": "2", "seq_flair": str(tmp_path / "flair.nii.gz"), "seq_dwi_b1000": str(tmp_path / "flair.nii.gz"),
           "seq_swi_or_t2s": str(tmp_path / "flair.nii.gz"), "swi_or_t2s": "swi"}
    _, geometry = preprocess_row(row, MriPreprocess(predictor.preprocess.channels, shape=(64, 64, 64)))
    truth = read_nifti(tmp_path / "seg.nii.gz")
    back = predictor.to_input_mask(to_model_space(truth, geometry, order=1), geometry)
    assert back.shape == shape and back.dtype == np.uint8
    assert dice(back > 0, lesion) > 0.85


def _fake_outputs(task: int, root, out) -> list[dict]:
    """A valid prediction for every session, written without a model."""
    rows, _ = index_fomo_task(root, task, require_labels=False)
    for r in rows:
        if task == 2:
            ref = read_nifti(r["seq_flair"])
            write_nifti(out / output_name(r, task), np.zeros(ref.array.shape, np.uint8), ref.affine)
        else:
            (out / output_name(r, task)).parent.mkdir(parents=True, exist_ok=True)
            (out / output_name(r, task)).write_text("0.25\n" if task == 1 else "63.5\n")
    return rows


def test_validate_reports_each_kind_of_bad_output(fomo_task_root, tmp_path, capsys):
    root2 = fomo_task_root(2)
    good = tmp_path / "good2"
    rows = _fake_outputs(2, root2, good)
    assert validate_outputs(2, root2, good).ok
    bad = tmp_path / "bad2"
    shutil.copytree(good, bad)
    names = [output_name(r, 2) for r in rows]
    ref = read_nifti(rows[1]["seq_flair"])
    shifted = ref.affine.copy()
    shifted[:3, 3] += 2.0
    write_nifti(bad / names[1], np.zeros(ref.array.shape, np.uint8), shifted)
    write_nifti(bad / names[2], np.zeros(ref.array.shape[:2] + (5,), np.uint8), read_nifti(rows[2]["seq_flair"]).affine)
    ref3 = read_nifti(rows[3]["seq_flair"])
    write_nifti(bad / names[3], np.full(ref3.array.shape, 0.7, np.float32), ref3.affine)
    (bad / names[4]).unlink()
    (bad / names[5]).write_bytes(b"not a nifti")
    (bad / "notes.txt").write_text("hello")
    report = validate_outputs(2, root2, bad)
    problems = dict(report.problems)
    assert not report.ok and report.n_valid == len(rows) - 5
    assert "affine differs" in problems[names[1]] and "shape" in problems[names[2]]
    assert "not binary: values 0.7" in problems[names[3]] and problems[names[4]].startswith("missing")
    assert "not a readable NIfTI" in problems[names[5]]
    assert any("notes.txt" in n for n in report.notes)
    assert main(["fomo", "validate", "--task", "2", "--input", str(root2), "--output", str(bad)]) == 2
    out = capsys.readouterr().out
    assert f"PROBLEM {names[4]}: missing" in out and "5 problem(s)" in out

    root3 = fomo_task_root(3)
    out3 = tmp_path / "out3"
    rows3 = _fake_outputs(3, root3, out3)
    names3 = [output_name(r, 3) for r in rows3]
    (out3 / names3[0]).write_text("63\n")  # an integer is a valid float (medssl never writes one)
    (out3 / names3[1]).write_text("sixty\n")
    (out3 / names3[2]).write_text("nan\n")
    (out3 / names3[3]).write_text("150.0\n")
    problems = dict(validate_outputs(3, root3, out3).problems)
    assert names3[0] not in problems
    assert "not a number" in problems[names3[1]] and "not a finite number" in problems[names3[2]]
    assert "outside the plausible range" in problems[names3[3]]

    root1 = fomo_task_root(1)
    out1 = tmp_path / "out1"
    rows1 = _fake_outputs(1, root1, out1)
    (out1 / output_name(rows1[0], 1)).write_text("1.2\n")
    (out1 / output_name(rows1[1], 1)).write_text("0.1 0.9\n")
    problems = dict(validate_outputs(1, root1, out1).problems)
    assert "outside [0, 1]" in problems[output_name(rows1[0], 1)]
    assert "expected one number" in problems[output_name(rows1[1], 1)]
    assert main(["fomo", "validate", "--task", "1", "--input", str(root1), "--output", str(tmp_path / "none")]) == 2


def test_predict_cli_errors_name_the_problem(checkpoints, fomo_task_root, tmp_path, capsys):
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    row = rows[0]
    ck = str(checkpoints[1])
    args = ["fomo", "predict", "--task", "1", "--flair", row["seq_flair"], "--dwi_b1000", row["seq_dwi_b1000"],
            "--swi", row["seq_swi_or_t2s"], "--checkpoint", ck]
    assert main([*args, "--output", str(tmp_path / "p.txt")]) == 2
    assert "needs --adc" in capsys.readouterr().err
    full = [*args, "--adc", row["seq_adc"]]
    assert main([*full, "--output", str(tmp_path / "p.nii.gz")]) == 2
    assert "writes a .txt file" in capsys.readouterr().err
    assert main(["fomo", "predict", "--task", "3", "--t1", row["seq_flair"], "--t2", row["seq_flair"],
                 "--output", str(tmp_path / "p.txt"), "--checkpoint", ck]) == 2
    assert "is a task 1 model" in capsys.readouterr().err
    assert main(["fomo", "predict", "--task", "1", "--input-dir", "x", "--output-dir", "y", "--flair", "f",
                 "--checkpoint", ck]) == 2
    assert "folder mode" in capsys.readouterr().err
    assert main(["fomo", "predict", "--task", "1", "--flair", "f", "--output", "o.txt",
                 "--checkpoint", str(tmp_path)]) == 2
    assert "card missing" in capsys.readouterr().err
    assert main([*full, "--output", str(tmp_path / "p.txt")]) == 0
    assert 0.0 <= float((tmp_path / "p.txt").read_text()) <= 1.0


def test_precision_is_chosen_and_said(checkpoints, fomo_task_root, tmp_path, capsys):
    """--precision bf16 predicts under bf16 autocast (near the fp32 value, not equal), and the CLI
    says which precision it used."""
    root = fomo_task_root(1)
    row = index_fomo_task(root, 1, require_labels=False)[0][0]
    fp32 = FomoPredictor(checkpoints[1], "cpu", precision="32")
    bf16 = FomoPredictor(checkpoints[1], "cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("32", "bf16")
    a, b = fp32.predict_row(row), bf16.predict_row(row)
    assert a != b and abs(a - b) < 0.05
    out = tmp_path / "p.txt"
    assert main(["fomo", "predict", *_cli_files(row), "--output", str(out), "--checkpoint", str(checkpoints[1]),
                 "--device", "cpu", "--precision", "bf16"]) == 0
    assert "precision bf16" in capsys.readouterr().out
