"""CT in the benchmark harness: nodule malignancy (linear probe, k-NN) and nodule segmentation
(SwinUNETR's decoder) on tiny synthetic phantoms, OrganMNIST3D rows through the CT data hook, and
the `swin_unetr` segmentation decoder itself."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import medssl.ct.segmentation  # noqa: F401 - registers decoder swin_unetr
from medssl.bench.config import BenchConfigError
from medssl.bench.runner import run_benchmark
from medssl.bench.segmentation import build_segmenter
from medssl.checkpoint import clone_random_encoder
from medssl.data.manifest import write_manifest

ENCODERS = [{"name": "swin", "ref": "random:ct_swin_tiny:0"}, {"name": "vit", "ref": "random:ct_vit3d_tiny:0"}]


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Nodule rows of a 2 x 4-subject phantom cohort (48 x 48 pixels, 50 mm of slices); site A's
    subjects alternate between train and test so that both hold both classes."""
    from medssl.ct.phantom import write_synthetic

    folder = tmp_path_factory.mktemp("ct-bench-phantoms")
    rows, _ = write_synthetic(folder / "cohort", subjects_per_site=4, seed=3, shape=(48, 48), z_extent_mm=50.0,
                              workers=1)
    site_a = sorted({r["subject_id"] for r in rows if r["site"] == "A"})
    train = set(site_a[::2])
    for r in rows:
        r["split"] = "train" if r["subject_id"] in train else "test"
    for part in ({"site": "A", "split": "train"}, {"site": "A", "split": "test"}, {"site": "B"}):
        labels = {r["labels"] for r in rows if all(r[k] == v for k, v in part.items())}
        assert labels == {"malignant", ""}, (part, labels)  # the generator's draws for seed 3
    assert all(Path(r["mask_path"]).is_file() for r in rows)
    return write_manifest(rows, folder / "manifest.csv"), rows


def _filters():
    return {"train": {"site": "A", "split": "train"}, "eval": {"in": {"site": "A", "split": "test"},
                                                              "out": {"site": "B"}}}


def test_nodule_classification_and_segmentation(chest, tmp_path):
    manifest, rows = chest
    cfg = {
        "title": "tiny CT", "n_bootstrap": 50, "encoders": ENCODERS,
        "datasets": {"chest": {"path": str(manifest)}},
        "tasks": [
            {"name": "malignancy", "dataset": "chest", "kind": "binary", "labels": ["malignant"],
             "metrics": ["auroc_macro", "auprc"], **_filters()},
            {"name": "nodules", "dataset": "chest", "kind": "segmentation", "metrics": ["dice", "hd95"],
             "tolerance_mm": 1.5, **_filters()},
        ],
        "protocols": [
            {"kind": "linear_probe", "shots": [1, "all"], "seeds": 2},
            {"kind": "knn", "k": 3, "label_fractions": [1.0], "seeds": 1},
            {"kind": "segmentation", "label_fractions": [1.0], "seeds": 1, "epochs": 1, "batch_size": 4,
             "decoder": "swin_unetr"},
        ],
    }
    doc = run_benchmark(cfg, tmp_path / "b", progress=False)
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    assert data["datasets"]["chest"]["n_records"] == len(rows)

    # The ViT has no SwinUNETR decoder: its segmentation run fails with a clear, recorded error.
    assert [(e["encoder"], e["task"]) for e in data["errors"]] == [("vit", "nodules")]
    assert "needs a CT Swin encoder" in data["errors"][0]["error"]

    recs = [r for r in data["records"] if r["task"] == "malignancy"]
    assert {r["encoder"] for r in recs} == {"swin", "vit"} and {r["domain"] for r in recs} == {"in", "out"}
    lp = [r for r in recs if r["protocol"] == "linear_probe"]
    assert {r["seed"] for r in lp if r["shots"] == 1} == {0, 1} and {r["seed"] for r in lp if r["shots"] == "all"} == {0}
    # 2 encoders x (lp: 2 seeds + 1, knn: 1) x 2 domains x 2 metrics
    assert len(recs) == 2 * 4 * 2 * 2
    n_train = len({r["subject_id"] for r in rows if r["site"] == "A" and r["split"] == "train"})
    assert all(r["n_train_subjects"] == n_train for r in recs if r["shots"] == "all" or r["label_fraction"] == 1.0)
    assert all(r["n_train_subjects"] <= 2 for r in lp if r["shots"] == 1)  # one subject per class
    draws = defaultdict(set)  # paired: both encoders see the same subjects in every draw
    for r in recs:
        draws[(r["protocol"], r["shots"], r["label_fraction"], r["seed"])].add((r["encoder"], r["draw"]))
    assert all({e for e, _ in v} == {"swin", "vit"} and len({d for _, d in v}) == 1 for v in draws.values())
    n_out = sum(r["site"] == "B" for r in rows)
    assert all(r["n_eval_records"] == n_out for r in recs if r["domain"] == "out")

    aggs = [a for a in data["aggregates"] if a["task"] == "malignancy"]
    assert len(aggs) == 2 * 3 * 2 * 2
    for a in aggs:
        assert 0 <= a["mean"] <= 1 and a["ci_low"] <= a["ci_high"]
    comps = [c for c in data["comparisons"] if c["task"] == "malignancy"]
    assert len(comps) == 3 * 2 * 2 and all((c["encoder_a"], c["encoder_b"]) == ("swin", "vit") for c in comps)
    assert all(0 < c["p_value"] <= 1 for c in comps)

    seg = [r for r in data["records"] if r["task"] == "nodules"]
    assert {r["encoder"] for r in seg} == {"swin"} and {r["metric"] for r in seg} == {"dice", "hd95"}
    assert {r["domain"] for r in seg} == {"in", "out"}
    assert all(0 <= r["value"] <= 1 for r in seg if r["metric"] == "dice")
    assert all(r["value"] >= 0 for r in seg if r["metric"] == "hd95")
    assert not [c for c in data["comparisons"] if c["task"] == "nodules"]  # one encoder scored: nothing to pair

    ranking = {b["domain"]: b for b in data["ranking"]}
    assert set(ranking) == {"in", "out"}
    for block in ranking.values():
        assert {r["encoder"] for r in block["rows"]} == {"swin", "vit"}
        assert sorted(r["position"] for r in block["rows"]) in ([1, 2], [1, 1])
    assert Path(doc["paths"]["html"]).read_text().count("malignancy") >= 1


def _fake_organmnist(folder: Path, per_class=(4, 1, 3), seed: int = 0) -> dict:
    """An OrganMNIST3D-shaped .npz (28^3 uint8) whose three organs are bright cubes at three places."""
    rng = np.random.default_rng(seed)
    classes = (0, 6, 9)  # liver, heart, spleen
    corners = ((2, 2, 2), (14, 2, 14), (8, 16, 4))
    arrays = {}
    for split, k in zip(("train", "val", "test"), per_class):
        images, labels = [], []
        for c, (x, y, z) in zip(classes, corners):
            for _ in range(k):
                img = rng.integers(0, 40, (28, 28, 28)).astype(np.uint8)
                img[x:x + 10, y:y + 10, z:z + 10] = 220
                images.append(img)
                labels.append(c)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array(labels, dtype=np.uint8)[:, None]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "organmnist3d.npz", **arrays)
    return arrays


def test_organmnist3d_rows_through_the_ct_hook_into_the_bench(tmp_path):
    from medssl.ct.modality import ct_inputs
    from medssl.data.layouts import index_layout

    arrays = _fake_organmnist(tmp_path / "npz")
    rows, skipped = index_layout("organmnist3d", tmp_path / "npz")
    assert skipped == [] and len(rows) == 3 * (4 + 1 + 3)
    manifest = write_manifest(rows, tmp_path / "organmnist3d.csv")

    # The hook: 28^3 grey levels / 255, resized to the encoder's 32^3, one channel.
    spec = clone_random_encoder("ct_swin_tiny").spec
    cache = ct_inputs(rows, spec.input, {}, tmp_path / "cache")
    assert cache.signals.shape == (len(rows), 1, 32, 32, 32) and cache.skipped == []
    x = np.asarray(cache.signals)
    assert 0 <= x.min() and x.max() <= 1
    assert arrays["train_images"][0, 2:12, 2:12, 2:12].min() == 220  # a liver cube at voxels 2..11 of 28
    np.testing.assert_allclose(x[0, 0, 4:12, 4:12, 4:12], 220 / 255, atol=1e-5)  # its inside at 32^3
    assert x[0, 0, 18:, 18:, 18:].max() < 40 / 255  # the noise far from it

    organs = ["liver", "heart", "spleen"]
    cfg = {
        "n_bootstrap": 50, "encoders": ENCODERS, "datasets": {"organs": {"path": "organmnist3d.csv"}},
        "tasks": [{"name": "organ", "dataset": "organs", "kind": "multiclass", "labels": organs,
                   "metrics": ["auroc_macro", "balanced_accuracy"], "train": {"split": "train"},
                   "eval": {"test": {"split": "test"}}}],
        "protocols": [{"kind": "linear_probe", "shots": ["all"], "seeds": 1},
                      {"kind": "knn", "k": 3, "shots": [2], "seeds": 2}],
    }
    import os

    here = os.getcwd()
    os.chdir(tmp_path)  # a dict config's relative paths are relative to the current folder
    try:
        doc = run_benchmark(cfg, tmp_path / "b", progress=False)
    finally:
        os.chdir(here)
    assert not doc["errors"] and doc["datasets"]["organs"]["n_records"] == len(rows) == len(manifest.read_text()
                                                                                       .splitlines()) - 1
    recs = doc["records"]
    assert {r["n_eval_records"] for r in recs} == {9}
    lp = {(r["encoder"], r["metric"]): r["value"] for r in recs if r["protocol"] == "linear_probe"}
    # three organs at three places: separable from random-init features
    assert lp[("swin", "auroc_macro")] > 0.9 and lp[("vit", "auroc_macro")] > 0.9
    assert {r["n_train_subjects"] for r in recs if r["protocol"] == "knn"} == {6}  # 2 images per organ
    assert len(doc["comparisons"]) == 2 * 2  # (lp all, knn 2) x 2 metrics

    # Grey levels are not HU: an encoder with two windows is refused before anything is embedded.
    cfg["encoders"] = [{"name": "two windows", "ref": "random:ct_swin_tiny:0",
                        "overrides": {"windows": ["lung", "mediastinum"]}}]
    cfg["datasets"] = {"organs": {"path": str(manifest)}}
    with pytest.raises(BenchConfigError, match="OrganMNIST3D grey levels"):
        run_benchmark(cfg, tmp_path / "c", progress=False)


# ------------------------------------------------------------------ the swin_unetr decoder


def test_swin_unetr_decoder_is_monais_swinunetr_and_trains_what_the_mode_says():
    from medssl.ct.encoders import build_swin_unetr
    from medssl.ct.segmentation import SMALL_INPUT_NORM

    encoder = clone_random_encoder("ct_swin_tiny", 1)
    x = torch.rand(1, 1, 32, 32, 32)
    model = build_segmenter(encoder, (1, 32, 32, 32), mode="finetune", decoder="swin_unetr").eval()
    assert model.encoder is not encoder  # a private copy
    # The same numbers as MONAI's own SwinUNETR forward with these weights.
    reference = build_swin_unetr(model.encoder, 1, norm_name=SMALL_INPUT_NORM).eval()
    missing, unexpected = reference.load_state_dict(model.decoder.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("swinViT.") for k in missing)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1, 32, 32, 32)
        torch.testing.assert_close(out, reference(x))

    for mode in ("frozen", "finetune"):
        model = build_segmenter(encoder, (1, 32, 32, 32), mode=mode, decoder="swin_unetr").train()
        assert model.encoder.training == (mode == "finetune")
        model(x).square().mean().backward()
        enc_grads = [p.grad is not None for p in model.encoder.parameters()]
        assert all(enc_grads) if mode == "finetune" else not any(enc_grads)
        assert all(p.grad is not None for p in model.decoder.parameters())


def test_swin_unetr_decoder_norm_and_refusals():
    big = clone_random_encoder("ct_swin_tiny", 0, shape=[64, 64, 64])
    model = build_segmenter(big, (1, 64, 64, 64), decoder="swin_unetr")
    norms = {type(m).__name__ for m in model.decoder.modules() if "Norm" in type(m).__name__}
    assert norms == {"InstanceNorm3d"}  # SwinUNETR's own, once the stride-32 map has 2^3 voxels
    small = build_segmenter(clone_random_encoder("ct_swin_tiny", 0), (1, 32, 32, 32), decoder="swin_unetr")
    assert {type(m).__name__ for m in small.decoder.modules() if "Norm" in type(m).__name__} == {"GroupNorm"}
    with pytest.raises(ValueError, match="needs a CT Swin encoder.*ct_vit3d_tiny"):
        build_segmenter(clone_random_encoder("ct_vit3d_tiny", 0), (1, 32, 32, 32), decoder="swin_unetr")
    with pytest.raises(ValueError, match=r"does not match the encoder's \[1, 32, 32, 32\]"):
        build_segmenter(clone_random_encoder("ct_swin_tiny", 0), (2, 32, 32, 32), decoder="swin_unetr")


# ------------------------------------------------------------------ heavier: the demo pipeline


@pytest.mark.slow
def test_bench_ct_pipeline_end_to_end(tmp_path):
    """benchmarks/bench_ct_pipeline.py at toy size: cohort, both pretrainings, benchmark, summary."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ct_pipeline.py"
    spec = importlib.util.spec_from_file_location("bench_ct_pipeline", path)
    pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipeline)
    assert pipeline.main(["--out", str(tmp_path), "--subjects-per-site", "10", "--epochs", "1", "--crops", "0",
                          "--n-bootstrap", "50"]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| nodule malignancy | linear_probe | k=all | in | auroc_macro |" in summary
    assert "nodule segmentation" in summary and "report: " in summary
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {e for e in results["encoders"]} == {"DAGMaN", "SimMIM", "random init"}
    assert not results["errors"]
    for name in ("dagman", "simmim"):
        card = json.loads((tmp_path / name / "checkpoint" / "card.json").read_text())
        assert card["training_metrics"]["steps"] >= 1
