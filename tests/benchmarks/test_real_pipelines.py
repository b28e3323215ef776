"""Smoke versions of the real-data benchmark scripts (benchmarks/real_*.py; full runs: `make bench-real`).

Each script runs end to end, in a subprocess (the scripts register non-learned feature extractors in
their process's encoder registry), on two disjoint cohorts made in a temporary folder from the real
sets in ../shared/data/real/ (links to the files, never copies into the repository): --data the
first, --eval-data the second, so the "another cohort of the same format" path is the one tested;
tiny budgets, coarse grids and one pretraining epoch keep each run to a few tens of seconds. The
held-out split of --data is tested without training, on the indexed rows.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def _run(script: str, args: list[str], tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = Path(args[args.index("--out") + 1])
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()
    return json.loads((out / "results.json").read_text())


def _ixi_cohorts(real: Path, tmp: Path, sizes=(16, 8)) -> list[Path]:
    src = real / "ixi_t1"
    with (src / "participants.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    ids = sorted(r["MRID"] for r in table)
    files = {p.name.split("_")[0]: p for p in (src / "t1").glob("*.nii.gz")}
    ids = [i for i in ids if i in files]
    folders, start = [], 0
    for k, n in enumerate(sizes):
        folder = tmp / f"cohort{k}"
        chosen = set(ids[start:start + n])
        start += n
        for i in chosen:
            _link(files[i], folder / "t1" / files[i].name)
        with (folder / "participants.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(r for r in table if r["MRID"] in chosen)
        folders.append(folder)
    return folders


def _ecg_cohorts(real: Path, tmp: Path, sizes=(18, 12)) -> list[Path]:
    src = real / "ecg_cinc2021"
    names = sorted(p.stem for p in src.glob("*.hea"))
    # interleave sources (the record-name prefixes) so both cohorts hold the common rhythms
    names = names[0::2] + names[1::2]
    folders, start = [], 0
    for k, n in enumerate(sizes):
        folder = tmp / f"ecg{k}"
        for name in names[start:start + n]:
            for ext in (".hea", ".mat"):
                _link(src / f"{name}{ext}", folder / f"{name}{ext}")
        start += n
        folders.append(folder)
    return folders


def _drive_cohorts(real: Path, tmp: Path, sizes=(4, 2)) -> list[Path]:
    src = real / "drive" / "training"
    numbers = sorted(p.name.split("_")[0] for p in (src / "images").glob("*.tif"))
    folders, start = [], 0
    for k, n in enumerate(sizes):
        folder = tmp / f"drive{k}"
        for num in numbers[start:start + n]:
            for sub, name in (("images", f"{num}_training.tif"), ("1st_manual", f"{num}_manual1.gif"),
                              ("mask", f"{num}_training_mask.gif")):
                _link(src / sub / name, folder / sub / name)
        start += n
        folders.append(folder)
    return folders


def _check(doc: dict, arms: set[str], domain: str) -> None:
    assert doc["schema_version"] == 1
    assert not doc["errors"], doc["errors"]
    assert {a["encoder"] for a in doc["aggregates"]} == arms
    assert {a["domain"] for a in doc["aggregates"]} == {domain}
    assert doc["comparisons"] and all("p_holm" in c for c in doc["comparisons"])
    assert doc["pipeline"]["eval_data"] is not None


def test_ixi_brain_age_smoke(real_data, tmp_path):
    data, other = _ixi_cohorts(real_data, tmp_path)
    out = tmp_path / "out"
    doc = _run("real_ixi_brain_age.py", [
        "--data", str(data), "--eval-data", str(other), "--out", str(out), "--spacing-mm", "10",
        "--max-voxels", "24", "--budgets", "6,all", "--probe-seeds", "2", "--pretrain-epochs", "1",
        "--finetune-samples", "8", "--n-bootstrap", "50"], tmp_path)
    _check(doc, {"AMAES (pretrained here)", "random init", "intensity histogram", "AMAES fine-tuned",
                 "3-D CNN from scratch (same U-Net, random init)"}, "eval-data")
    maes = [a["mean"] for a in doc["aggregates"] if a["metric"] == "mae"]
    assert maes and all(m is not None and 0 <= m < 100 for m in maes)
    sizes = {r["n_train_subjects"] for r in doc["records"]}
    assert max(sizes) == 16 and min(sizes) < 16
    assert doc["pipeline"]["mean_predictor_reference"]["n_eval"] == 8
    # the manifest holds paths and ages only; the images stay where they are
    assert not list(out.rglob("*.nii*"))


def test_ecg_cinc_smoke(real_data, tmp_path):
    data, other = _ecg_cohorts(real_data, tmp_path)
    out = tmp_path / "out"
    doc = _run("real_ecg_cinc.py", [
        "--data", str(data), "--eval-data", str(other), "--out", str(out), "--methods", "jepa",
        "--synthetic-subjects", "6", "--pretrain-epochs", "1", "--pretrain-max-steps", "2", "--min-positives", "3",
        "--shots", "1,all", "--seeds", "2", "--n-bootstrap", "50"], tmp_path)
    _check(doc, {"ECG-JEPA (synthetic)", "random init (ECG-JEPA arch.)", "NeuroKit2 features"}, "eval-data")
    labels = doc["pipeline"]["labels"]
    assert labels and {t["name"] for t in doc["config"]["tasks"]} == {"rhythm/conduction (macro)", *labels}
    aurocs = [a["mean"] for a in doc["aggregates"] if a["mean"] is not None]
    assert aurocs and all(0.0 <= v <= 1.0 for v in aurocs)


def test_drive_smoke(real_data, tmp_path):
    data, other = _drive_cohorts(real_data, tmp_path)
    out = tmp_path / "out"
    doc = _run("real_drive.py", [
        "--data", str(data), "--eval-data", str(other), "--out", str(out), "--budgets", "1,all", "--seeds", "1",
        "--steps", "3", "--batch", "4", "--width", "8", "--unet-widths", "8,16", "--pretrain-epochs", "1",
        "--pretrain-max-steps", "2", "--pretrain-stride", "160", "--n-bootstrap", "50"], tmp_path)
    _check(doc, {"U-Net from scratch", "MAE pretrained, fine-tuned", "ViT random init, fine-tuned"}, "eval-data")
    assert {a["metric"] for a in doc["aggregates"]} == {"dice", "sensitivity", "specificity", "auroc"}
    assert all(0.0 <= a["mean"] <= 1.0 for a in doc["aggregates"])
    assert {r["n_train_subjects"] for r in doc["records"]} == {1, 4}
    assert {r["n_eval_records"] for r in doc["records"]} == {2}
    # MAE saw tiles of the --data images only, at native resolution; the --eval-data images stay unseen
    pre = doc["pipeline"]["pretraining_metrics"]
    assert pre["n_records"] == 4 and pre["n_windows"] > 4
    assert not list(out.rglob("*.tif")) and not list(out.rglob("*.gif"))


def test_heldout_split_is_by_subject_stratified_and_refuses_shared_subjects(real_data):
    sys.path.insert(0, str(BENCH))
    try:
        from real_common import PART, heldout_split, tag_cohorts
    finally:
        sys.path.remove(str(BENCH))
    from medssl.data.layouts import index_layout

    rows, _ = index_layout("volume-folder", real_data / "ixi_t1")
    train = heldout_split(rows, "age", 0.3, seed=0, regression=True)
    again = heldout_split(list(reversed(rows)), "age", 0.3, seed=0, regression=True)
    assert train == again  # deterministic, independent of row order
    tagged = tag_cohorts(rows, None, train)
    held = [r for r in tagged if r[PART] == "held-out"]
    assert 0.2 < len(held) / len(rows) < 0.4
    assert not {r["subject_id"] for r in held} & train
    ages = sorted(float(r["age"]) for r in held)
    assert ages[0] < 35 and ages[-1] > 60  # stratified on age: the held-out part spans the range
    with pytest.raises(SystemExit, match="shares"):
        tag_cohorts(rows[:10], rows[5:15], None)
