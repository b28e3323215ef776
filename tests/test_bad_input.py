"""Issue 17: bad input and faults end in exit code 2 with one line naming the file or key (or
the bad records are skipped and listed), through the `medssl` command run in-process.

Each test uses the exact input of the issue: corrupt checkpoint files, recipe values out of range,
an encoder of another modality, masks of the wrong size, bad arguments, records that break the
encoder's contract.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from medssl.cli import main

ERROR_PREFIX = "medssl: error: "
TINY_JEPA = {"depth": 1, "embed_dim": 32, "num_heads": 2}
TINY_RECIPE = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32", "encoder.overrides.num_heads=2",
    "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=4", "optim.epochs=1",
    "optim.warmup_epochs=0",
]


def one_error_line(stderr: str, *fragments: str) -> str:
    """stderr holds exactly one `medssl: error:` line, containing every fragment, and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    """39 synthetic subjects (one record each) as WFDB + a manifest; members (20) / non-members (19)."""
    from medssl.data.layouts import index_layout
    from medssl.data.manifest import write_manifest
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    root = tmp_path_factory.mktemp("bad-input-cohort")
    write_wfdb_cohort(generate_cohort(39, records_per_subject=1, seed=7), root / "wfdb")
    rows, skipped = index_layout("synthetic", root / "wfdb")
    assert not skipped
    subjects = sorted({r["subject_id"] for r in rows})
    members = [r for r in rows if r["subject_id"] in subjects[:20]]
    return {"root": root, "rows": rows, "manifest": write_manifest(rows, root / "manifest.csv"),
            "members": write_manifest(members, root / "members.csv"),
            "nonmembers": write_manifest([r for r in rows if r not in members], root / "nonmembers.csv")}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny ECG-JEPA checkpoint folder with its recipe and method state, as `medssl pretrain` writes."""
    from medssl.checkpoint import save_checkpoint
    from medssl.engine.config import resolve_recipe
    from medssl.engine.methods import build_method
    from medssl.engine.pretrain import save_method_state

    cfg = resolve_recipe("ecg_jepa", TINY_RECIPE)
    encoder, method = build_method(cfg)
    folder = save_checkpoint(encoder, tmp_path_factory.mktemp("ckpt") / "checkpoint", recipe=cfg)
    save_method_state(method, folder)
    return folder


def bench_config(folder: Path, manifest: Path, encoders: list[dict], **changes) -> Path:
    """A small benchmark config (JSON is YAML) on `manifest`: one multilabel task, a kNN probe."""
    cfg = {"encoders": encoders, "n_bootstrap": 20, "datasets": {"syn": {"path": str(manifest)}},
           "tasks": [{"name": "t", "dataset": "syn", "kind": "multilabel", "labels": ["NORM", "STTC"],
                      "train": {"split": "train"}, "eval": {"test": {"split": ["val", "test"]}}}],
           "protocols": [{"kind": "knn", "k": 3, "shots": ["all"]}], **changes}
    path = folder / "bench.yaml"
    path.write_text(json.dumps(cfg))
    return path


# --- 1. corrupt weights files -----------------------------------------------------------------------


def _corrupt(path: Path, kind: str) -> None:
    good = path.read_bytes()
    path.unlink()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "20 bytes":
        path.write_bytes(good[:20])
    elif kind == "link to text":
        text = path.parent / "notes.txt"
        text.write_text("these are not weights\n" * 20)
        os.symlink(text.name, path)
    elif kind == "pickle":
        with path.open("wb") as f:
            pickle.dump({"weights": [1, 2, 3]}, f)
    else:
        raise AssertionError(kind)


CORRUPTIONS = ["truncated", "20 bytes", "link to text", "pickle"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_model_safetensors_in_embed_bench_and_audit_exits_2_naming_it(kind, checkpoint, cohort, tmp_path,
                                                                                 capsys):
    bad = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, bad)
    weights = bad / "model.safetensors"
    _corrupt(weights, kind)

    assert main(["embed", "--checkpoint", str(bad), "--data", str(cohort["manifest"]),
                 "--out", str(tmp_path / "e.npz")]) == 2
    one_error_line(capsys.readouterr().err, str(weights), "not a readable safetensors file")
    assert not (tmp_path / "e.npz").exists()

    config = bench_config(tmp_path, cohort["manifest"], [{"name": "mine", "ref": str(bad)}])
    assert main(["bench", str(config), "--out", str(tmp_path / "bench")]) == 2
    one_error_line(capsys.readouterr().err, str(weights), "not a readable safetensors file")

    assert main(["audit", "--checkpoint", str(bad), "--members", str(cohort["members"]), "--nonmembers",
                 str(cohort["nonmembers"]), "--permutations", "100", "--out", str(tmp_path / "audit")]) == 2
    one_error_line(capsys.readouterr().err, str(weights), "not a readable safetensors file")


def test_corrupt_method_safetensors_in_audit_exits_2_naming_it(checkpoint, cohort, tmp_path, capsys):
    bad = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, bad)
    _corrupt(bad / "method.safetensors", "truncated")
    assert main(["audit", "--checkpoint", str(bad), "--members", str(cohort["members"]), "--nonmembers",
                 str(cohort["nonmembers"]), "--permutations", "100", "--out", str(tmp_path / "audit")]) == 2
    one_error_line(capsys.readouterr().err, str(bad / "method.safetensors"), "not a readable safetensors file")


def test_read_safetensors_reads_a_good_file(checkpoint):
    from safetensors.torch import load_file

    from medssl.checkpoint import read_safetensors

    got = read_safetensors(checkpoint / "model.safetensors")
    want = load_file(str(checkpoint / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_truncated_last_ckpt_on_resume_exits_2_naming_it(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain", "ecg_jepa", *TINY_RECIPE, "trainer.checkpoint_every_n_steps=1", "--data", str(cohort["manifest"]),
            "--split", "train,val,test",
            "--out", str(out)]
    assert main(args) == 0
    last = out / "lightning" / "last.ckpt"
    assert last.is_file()
    capsys.readouterr()
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    assert main(args) == 2
    one_error_line(capsys.readouterr().err, str(last), "cannot resume")
    # --no-resume starts afresh and writes a whole checkpoint again
    assert main([*args, "--no-resume"]) == 0
    from medssl.engine.pretrain import check_resumable

    assert check_resumable(last) == str(last)
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # replaced, no last-v1.ckpt beside it


# --- 2. recipe values ---------------------------------------------------------------------------------


def test_pretrain_with_negative_epochs_exits_2_naming_the_key(cohort, tmp_path, capsys):
    assert main(["pretrain", "ecg_jepa", "variant=cpu", "optim.epochs=-1", "--data", str(cohort["manifest"]),
                 "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, "'optim.epochs' must be >= 1, got -1")
    assert not (tmp_path / "run").exists()


# --- 3. an encoder of another modality in a recipe ----------------------------------------------------


@pytest.mark.parametrize("recipe, encoder, message", [
    ("ecg_jepa", "mri_unet_tiny", "encoder.name='mri_unet_tiny' is of modality mri, but method 'ecg_jepa' trains ecg"),
    ("amaes_mri", "ecg_jepa_tiny", "encoder.name='ecg_jepa_tiny' is of modality ecg, but method 'amaes' trains mri"),
    ("vamae_octa", "ct_swin_tiny", "encoder.name='ct_swin_tiny' is of modality ct, but method 'vamae' trains retina"),
])
def test_recipe_with_an_encoder_of_another_modality_exits_2_naming_both(recipe, encoder, message, cohort, tmp_path,
                                                                       capsys):
    assert main(["pretrain", recipe, f"encoder.name={encoder}", "--data", str(cohort["manifest"]),
                 "--out", str(tmp_path / "run")]) == 2
    one_error_line(capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()


def test_every_method_knows_its_modality_and_its_recipes_pass_the_check():
    from medssl.engine.config import packaged_yaml, resolve_recipe
    from medssl.engine.methods import _MODALITY, _ensure_builtin_methods, check_encoder_modality

    _ensure_builtin_methods()
    assert all(_MODALITY.values()), _MODALITY
    for name in packaged_yaml(exclude_prefix="bench_"):
        cfg = resolve_recipe(name)
        check_encoder_modality(cfg["method"], cfg["encoder"]["name"])


# --- 8. arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["-3", "0"])
def test_embed_batch_size_below_1_exits_2_naming_the_option(size, cohort, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["embed", "--checkpoint", "random:ecg_jepa_tiny:0", "--data", str(cohort["manifest"]),
              "--batch-size", size, "--out", str(tmp_path / "e.npz")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --batch-size: must be >= 1, got {size}" in err and "Traceback" not in err
    assert not (tmp_path / "e.npz").exists()


def test_bench_encoder_override_of_the_wrong_type_names_the_key(cohort, tmp_path, capsys):
    config = bench_config(tmp_path, cohort["manifest"],
                          [{"name": "r", "ref": "random:ecg_jepa_tiny:0", "overrides": {"depth": "deep"}}])
    assert main(["bench", str(config), "--out", str(tmp_path / "b")]) == 2
    one_error_line(capsys.readouterr().err, "encoder 'r'", "override 'depth' takes an integer (default 4), got 'deep'")


def test_mistyped_override_names_the_key_for_every_modality():
    from medssl.registry import create_encoder

    for name, key, value, words in [("ecg_jepa_tiny", "depth", "deep", "an integer"),
                                    ("retina_vit_tiny", "depth", "deep", "an integer"),
                                    ("mri_unet_tiny", "widths", "wide", "a list"),
                                    ("ct_swin_tiny", "feature_size", "big", "an integer")]:
        with pytest.raises(TypeError, match=rf"^{name}: override '{key}' takes {words} \(default "):
            create_encoder(name, **{key: value})


# --- 4. masks of the wrong size ---------------------------------------------------------------------


def _save_png(path: Path, height: int, width: int, value: int = 255) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((height, width), np.uint8)
    a[height // 4: height // 2, :] = value
    Image.fromarray(a).save(path)


@pytest.fixture(scope="module")
def octa_replica(tmp_path_factory) -> Path:
    """OCTA-500 (3 mm) of 64 x 64 maps; subject 10302's large-vessel ground truth is 32 x 48."""
    from PIL import Image

    from medssl.retina.synthetic import generate_octa_cohort, write_octa500_replica

    root = tmp_path_factory.mktemp("octa500")
    ids = [10301, 10302, 10303, 10304]
    write_octa500_replica(root, generate_octa_cohort(len(ids), 64, seed=1), ids, fov="3mm", projections=("OCTA(FULL)",))
    gt = next(root.rglob("GT_LargeVessel/10302.bmp"))
    with Image.open(gt) as im:
        small = im.convert("L").resize((48, 32))
    small.save(gt)
    return root


def test_octa500_readme_option_task_runs_and_lists_the_wrong_size_mask(octa_replica, tmp_path, capsys):
    # the README's spelling: --fov 3mm --option task=vessel
    out = tmp_path / "m.csv"
    assert main(["data", "index", "--layout", "octa500", "--root", str(octa_replica), "--fov", "3mm",
                 "--option", "task=vessel", "--out", str(out)]) == 0
    from medssl.data.manifest import read_manifest

    rows = read_manifest(out)
    assert [r["record_id"] for r in rows] == ["octa500-10301", "octa500-10303", "octa500-10304"]
    assert all(r["task"] == "vessel" and r["mask_path"] for r in rows)
    skipped = out.with_suffix(".skipped.csv").read_text()
    assert "GT_LargeVessel/10302.bmp is 32 x 48 px, its image 64 x 64; not stretched to fit" in skipped
    assert "not stretched to fit" in capsys.readouterr().err  # listed on the terminal too
    # --task and --option task= agree or are refused
    assert main(["data", "index", "--layout", "octa500", "--root", str(octa_replica), "--task", "vessel",
                 "--option", "task=vessel", "--out", str(out)]) == 0
    assert main(["data", "index", "--layout", "octa500", "--root", str(octa_replica), "--task", "faz",
                 "--option", "task=vessel", "--out", str(out)]) == 2
    one_error_line(capsys.readouterr().err, "--task faz and --option task=vessel disagree")


def test_image_folder_skips_and_lists_masks_of_another_size(tmp_path, capsys):
    root = tmp_path / "drive_like"
    for name in ("01", "02", "03"):
        _save_png(root / "images" / f"{name}.png", 64, 64, 120)
        _save_png(root / "1st_manual" / f"{name}.png", *((32, 48) if name == "02" else (64, 64)))
    _save_png(root / "mask" / "03.png", 60, 64)  # a field-of-view mask of the wrong size
    _save_png(root / "mask" / "01.png", 64, 64)
    out = tmp_path / "m.csv"
    assert main(["data", "index", "--layout", "image-folder", "--root", str(root), "--task", "segmentation",
                 "--out", str(out)]) == 0
    from medssl.data.manifest import read_manifest

    assert [r["record_id"] for r in read_manifest(out)] == ["images/01.png"]
    skipped = out.with_suffix(".skipped.csv").read_text()
    assert f"mask {root / '1st_manual' / '02.png'} is 32 x 48 px, its image 64 x 64; not stretched" in skipped
    assert f"field-of-view mask {root / 'mask' / '03.png'} is 60 x 64 px, its image 64 x 64" in skipped


def test_retina_masks_of_another_size_are_skipped_not_stretched_in_a_hand_made_manifest(tmp_path):
    """A manifest written by hand (no height/width columns): the mask hook reads the image header."""
    from medssl.data.modalities import segmentation_masks
    from medssl.registry import create_encoder

    rows = []
    for name in ("a", "b"):
        _save_png(tmp_path / f"{name}.png", 64, 64, 120)
        _save_png(tmp_path / f"{name}_gt.png", *((32, 48) if name == "b" else (64, 64)))
        rows.append({"record_id": name, "subject_id": name, "path": str(tmp_path / f"{name}.png"), "split": "train",
                     "labels": "", "mask_path": str(tmp_path / f"{name}_gt.png")})
    got = segmentation_masks(rows, create_encoder("retina_vit_tiny").spec, cache_root=tmp_path / "cache")
    assert [r["record_id"] for r in got.rows] == ["a"]
    assert len(got.skipped) == 1 and "mask is 32 x 48 px, its image" in got.skipped[0][1]
    assert "not stretched to fit" in got.skipped[0][1]


# --- 6, 7 and 8. records that break the encoder's contract: one policy for bench and embed ------------------


def _manifest_with(cohort, tmp_path, **changes) -> tuple[Path, dict]:
    """The 39-record manifest with the first training record changed (column -> value)."""
    from medssl.data.manifest import write_manifest

    rows = [dict(r) for r in cohort["rows"]]
    bad = next(r for r in rows if r["split"] == "train")
    bad.update(changes)
    return write_manifest(rows, tmp_path / "manifest.csv"), bad


JEPA = [{"name": "jepa", "ref": "random:ecg_jepa_tiny:0", "overrides": TINY_JEPA}]


def test_bench_skips_and_lists_a_2_lead_record_and_goes_on(cohort, tmp_path, capsys):
    manifest, bad = _manifest_with(cohort, tmp_path, leads="I;II")
    out = tmp_path / "b"
    assert main(["bench", str(bench_config(tmp_path, manifest, JEPA)), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["skipped"] == [{"dataset": "syn", "encoder": "jepa", "stage": "contract", "record": bad["path"],
                               "reason": "missing lead(s) V1, V2, V3, V4, V5, V6; the record has I, II"}]
    assert doc["datasets"]["syn"]["n_records"] == 39 and doc["datasets"]["syn"]["n_embedded"] == 38
    assert doc["records"] and not doc["errors"]
    html = (out / "report.html").read_text()
    assert "Skipped records (1)" in html and bad["path"] in html


def test_bench_lists_records_that_cannot_be_preprocessed(cohort, tmp_path, capsys):
    manifest, bad = _manifest_with(cohort, tmp_path, path=str(tmp_path / "gone" / "rec_missing"))
    out = tmp_path / "b"
    assert main(["bench", str(bench_config(tmp_path, manifest, JEPA)), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [(x["stage"], x["record"]) for x in doc["skipped"]] == [("preprocess", bad["path"])]
    assert doc["skipped"][0]["reason"]  # the reader's reason, not only a count
    assert bad["path"] in (out / "report.html").read_text()


@pytest.mark.parametrize("command", ["bench", "embed"])
def test_an_implausible_sampling_rate_is_refused_naming_the_record(command, cohort, tmp_path, capsys):
    manifest, bad = _manifest_with(cohort, tmp_path, sampling_rate="7")
    if command == "bench":
        args = ["bench", str(bench_config(tmp_path, manifest, JEPA)), "--out", str(tmp_path / "b")]
    else:
        args = ["embed", "--checkpoint", "random:ecg_jepa_tiny:0", "--data", str(manifest), "--out",
                str(tmp_path / "e.npz")]
    assert main(args) == 2
    one_error_line(capsys.readouterr().err, f"{bad['path']}: sampling rate 7 Hz is implausible for an ECG")
    assert not (tmp_path / "e.npz").exists() and not (tmp_path / "b" / "embeddings").exists()


def test_embed_skips_and_lists_the_2_lead_record_like_bench(cohort, tmp_path, capsys):
    import numpy as np

    manifest, bad = _manifest_with(cohort, tmp_path, leads="I;II")
    assert main(["embed", "--checkpoint", "random:ecg_jepa_tiny:0", "--data", str(manifest), "--out",
                 str(tmp_path / "e.npz")]) == 0
    out = capsys.readouterr()
    assert f"skipped {bad['path']}: missing lead(s) V1, V2, V3, V4, V5, V6; the record has I, II" in out.err
    assert "(1 records skipped)" in out.out
    with np.load(tmp_path / "e.npz") as z:
        assert len(z["record_id"]) == 38 and bad["record_id"] not in set(z["record_id"].tolist())


def test_no_record_fitting_the_contract_refuses_the_run_in_bench_and_embed(cohort, tmp_path, capsys):
    from medssl.data.manifest import write_manifest

    rows = [dict(r, leads="I;II", sampling_rate="100") for r in cohort["rows"]]
    manifest = write_manifest(rows, tmp_path / "manifest.csv")
    assert main(["bench", str(bench_config(tmp_path, manifest, JEPA)), "--out", str(tmp_path / "b")]) == 2
    one_error_line(capsys.readouterr().err, "encoder 'jepa' cannot read dataset 'syn': leads: 39 of 39 records lack",
                   "rate: 39 of 39 records sampled at 100 Hz, below the encoder's 250 Hz")
    assert main(["embed", "--checkpoint", "random:ecg_jepa_tiny:0", "--data", str(manifest), "--out",
                 str(tmp_path / "e.npz")]) == 2
    one_error_line(capsys.readouterr().err, f"{manifest}: encoder ecg_jepa_tiny cannot read these records: leads: 39")


def test_retina_encoder_on_an_ecg_manifest_is_refused_up_front_in_one_short_line(cohort, tmp_path, capsys):
    encoders = [{"name": "retina", "ref": "random:retina_vit_tiny:0"}]
    assert main(["bench", str(bench_config(tmp_path, cohort["manifest"], encoders)), "--out",
                 str(tmp_path / "b")]) == 2
    line = one_error_line(capsys.readouterr().err, "encoder 'retina' cannot read dataset 'syn': records: 39 of 39 rows "
                                                   "are not 2-D image files")
    assert len(line) < 250, line
    assert not (tmp_path / "b" / "embeddings").exists()


def test_ecg_encoder_on_an_image_manifest_is_refused_up_front(tmp_path, capsys):
    from medssl.data.manifest import write_manifest

    rows = []
    for i in range(4):
        _save_png(tmp_path / f"img{i}.png", 64, 64, 100)
        rows.append({"record_id": f"img{i}", "subject_id": f"s{i}", "path": str(tmp_path / f"img{i}.png"),
                     "split": "train", "labels": "NORM"})
    manifest = write_manifest(rows, tmp_path / "images.csv")
    assert main(["embed", "--checkpoint", "random:ecg_jepa_tiny:0", "--data", str(manifest), "--out",
                 str(tmp_path / "e.npz")]) == 2
    one_error_line(capsys.readouterr().err, "records: 4 of 4 rows are not ECG records (e.g. img0.png")
