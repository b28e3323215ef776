"""The FOMO25 container as the organisers use it, without building an image: the .def's layout
(/app/predict.py, /app, /input, /output), then `python /app/predict.py` called with the organisers'
argument list (every sequence file they recognise, the output as /output/sub_X.*, never --task),
then `medssl fomo validate` on what it wrote."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl.cli import main
from medssl.imaging.nifti import write_nifti
from medssl.mri import fomo_app

DEF_FILE = Path(__file__).resolve().parents[2] / "recipes" / "fomo25_container.def"
# The organisers' validator: the sequence names it looks for in each task (a file matches when the
# name is in its file name) and the paths it requires in the image.
ORGANISER_SEQUENCES = {1: ("adc", "dwi_b1000", "flair", "t2s", "swi"), 2: ("dwi_b1000", "flair", "t2s", "swi"),
                       3: ("t1", "t2")}
REQUIRED_DIRS, REQUIRED_FILE = ("/app", "/input", "/output"), "/app/predict.py"


def def_sections(path: Path = DEF_FILE) -> dict[str, list[str]]:
    """{"header": [...], "%post": [...], ...}: the non-empty, non-comment lines of each section."""
    sections: dict[str, list[str]] = {"header": []}
    current = "header"
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("%"):
            current = line.split()[0]
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def _in_root(text: str, root: Path) -> str:
    """Container paths /app, /input, /output, /opt -> under `root`."""
    return re.sub(r"(?<![\w./])/(app|input|output|opt)\b", lambda m: f"{root}/{m.group(1)}", text)


def build_layout(root: Path, checkpoint: Path) -> Path:
    """Play the .def's %files (the task checkpoint) and the %post lines that shape the image's
    file system (mkdir, the predict.py install) under `root`; pip lines are skipped. Returns root."""
    s = def_sections()
    for line in s["%files"]:
        src, dst = line.split()
        if src == "task_checkpoint":
            shutil.copytree(checkpoint, _in_root(dst, root))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for line in s["%post"]:
        if line.startswith("mkdir") or line.startswith("python -m medssl.mri.fomo_app"):
            subprocess.run(["bash", "-c", _in_root(line, root)], check=True, env=env, capture_output=True)
    return root


def organiser_call(task: int, subject_dir: Path, out_dir: Path, app: Path) -> list[str]:
    """The argument list of `python /app/predict.py` for one subject, as the organisers build it
    (/input bound to the subject folder, paths inside it; /output/sub_X.txt|.nii.gz)."""
    args = []
    for f in sorted((subject_dir / "ses_1").glob("*.nii.gz")):
        seq = next((s for s in ORGANISER_SEQUENCES[task] if s in f.name.lower()), None)
        if seq:
            args += [f"--{seq}", str(f)]
    suffix = ".nii.gz" if task == 2 else ".txt"
    return [*args, "--output", str(out_dir / f"{subject_dir.name}{suffix}")]


def test_the_definition_builds_the_layout_the_organisers_check(checkpoints, tmp_path, monkeypatch):
    monkeypatch.delenv(fomo_app.CHECKPOINT_ENV, raising=False)
    s = def_sections()
    root = build_layout(tmp_path / "image", checkpoints[2])
    for d in REQUIRED_DIRS:
        assert Path(_in_root(d, root)).is_dir(), d
    predict_py = Path(_in_root(REQUIRED_FILE, root))
    assert predict_py.is_file() and os.access(predict_py, os.X_OK)
    assert predict_py.read_text() == fomo_app.PREDICT_PY
    # the checkpoint the entry point looks for is the one %files put in the image
    env = dict(line.removeprefix("export ").split("=", 1) for line in s["%environment"] if "=" in line)
    assert env["MEDSSL_FOMO_CHECKPOINT"] in [line.split()[1] for line in s["%files"]]
    assert fomo_app.default_checkpoint(predict_py) == Path(_in_root(env["MEDSSL_FOMO_CHECKPOINT"], root))
    assert (Path(_in_root(env["MEDSSL_FOMO_CHECKPOINT"], root)) / "card.json").is_file()
    assert s["%runscript"] == ['exec python /app/predict.py "$@"']
    assert any("/app/predict.py" in line for line in s["%test"])
    # the installer refuses what is not an install
    r = subprocess.run([sys.executable, "-m", "medssl.mri.fomo_app", "--flair", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


@pytest.mark.parametrize("task", [1, 2, 3])
def test_organisers_call_without_task_then_validate(task, checkpoints, fomo_task_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(fomo_app.CHECKPOINT_ENV, raising=False)
    root = build_layout(tmp_path / "image", checkpoints[task])
    app = root / "app" / "predict.py"
    data = fomo_task_root(task)
    out = tmp_path / "output"
    subjects = sorted((data / "preprocessed").iterdir())
    # the first subject exactly as the organisers run it: a new python process on /app/predict.py
    argv = organiser_call(task, subjects[0], out, app)
    assert "--task" not in argv
    r = subprocess.run([sys.executable, str(app), *argv], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != fomo_app.CHECKPOINT_ENV})
    assert r.returncode == 0, r.stderr
    # the others through the same entry point, in this process (to keep the test fast)
    for subject in subjects[1:]:
        assert fomo_app.main(organiser_call(task, subject, out, app), script=app) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{s.name}{'.nii.gz' if task == 2 else '.txt'}" for s in subjects)
    capsys.readouterr()
    assert main(["fomo", "validate", "--task", str(task), "--input", str(data), "--output", str(out)]) == 0
    assert f"{len(subjects)} of {len(subjects)} expected prediction(s) valid" in capsys.readouterr().out
    if task == 2:
        for subject in subjects:
            mask, flair = nib.load(str(out / f"{subject.name}.nii.gz")), nib.load(str(subject / "ses_1/flair.nii.gz"))
            assert mask.shape == flair.shape and np.allclose(mask.affine, flair.affine, atol=1e-4)
    # a wrong --task, when someone gives one, is refused with one line
    bad = [*organiser_call(task, subjects[0], tmp_path / "bad", app), "--task", str(task % 3 + 1)]
    assert fomo_app.main(bad, script=app) == 2
    assert f"is a task {task} model" in capsys.readouterr().err


def _session_on_three_grids(subject_dir: Path) -> dict[str, tuple]:
    """A task 2 session whose sequences lie on different grids (FLAIR LPS 1 x 1 x 3 mm; DWI RAS
    2 mm; SWI LAS 1.5 mm), all showing the same ellipsoid brain with a lesion."""
    grids = {"flair": ((1.0, 1.0, 3.0), (-1, -1, 1)), "dwi_b1000": ((2.0, 2.0, 2.0), (1, 1, 1)),
             "swi": ((1.5, 1.5, 1.5), (-1, 1, 1))}
    out = {}
    for name, (spacing, flip) in grids.items():
        shape = tuple(round(48 / s) for s in spacing)
        affine = np.diag([f * s for f, s in zip(flip, spacing)] + [1.0])
        affine[:3, 3] = [-f * s * n / 2 for f, s, n in zip(flip, spacing, shape)]
        world = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1) @ affine[:3, :3].T \
            + affine[:3, 3]
        brain = ((world / [20.0, 22.0, 18.0]) ** 2).sum(-1) < 1
        lesion = (((world - [8.0, -6.0, 5.0]) / 6.0) ** 2).sum(-1) < 1
        write_nifti(subject_dir / "ses_1" / f"{name}.nii.gz", np.where(brain, 100.0 + 50 * lesion, 0.0), affine)
        out[name] = (shape, affine)
    return out


def test_task2_mask_is_on_the_grid_of_the_flair_when_sequences_differ(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(fomo_app.CHECKPOINT_ENV, raising=False)
    app = build_layout(tmp_path / "image", checkpoints[2]) / "app" / "predict.py"
    data = tmp_path / "task2"
    grids = _session_on_three_grids(data / "preprocessed" / "sub_1")
    assert len({g[0] for g in grids.values()}) == 3
    out = tmp_path / "output"
    assert fomo_app.main(organiser_call(2, data / "preprocessed" / "sub_1", out, app), script=app) == 0
    mask = nib.load(str(out / "sub_1.nii.gz"))
    assert mask.shape == grids["flair"][0] and np.allclose(mask.affine, grids["flair"][1], atol=1e-4)
    assert mask.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    capsys.readouterr()
    assert main(["fomo", "validate", "--task", "2", "--input", str(data), "--output", str(out)]) == 0
    # a mask written on the DWI's grid (what a predictor keyed to another sequence would do) fails
    write_nifti(out / "sub_1.nii.gz", np.zeros(grids["dwi_b1000"][0], np.uint8), grids["dwi_b1000"][1])
    assert main(["fomo", "validate", "--task", "2", "--input", str(data), "--output", str(out)]) == 2
    assert "differs from the input's" in capsys.readouterr().out


def test_predict_py_without_a_checkpoint_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(fomo_app.CHECKPOINT_ENV, raising=False)
    app = fomo_app.install(tmp_path / "app" / "predict.py")
    assert fomo_app.main(["--t1", "a.nii.gz", "--t2", "b.nii.gz", "--output", str(tmp_path / "o.txt")],
                         script=app) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "app" / "task_checkpoint") in err
