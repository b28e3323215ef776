"""The benchmark on synthetic FOMO25 task datasets: classification, segmentation and regression,
in-domain vs out-of-domain site, a random and a (stand-in) pretrained single-channel encoder."""

from __future__ import annotations

import pytest

from medssl.bench.inputs import ContractError, check_contract
from medssl.bench.runner import run_benchmark
from medssl.checkpoint import clone_random_encoder, save_checkpoint
from medssl.mri.fomo_task import index_fomo_task

SMALL = {"widths": [4, 8], "shape": [32, 32, 32]}


def test_a_single_channel_encoder_cannot_read_a_task_dataset_as_it_is(fomo_task_root):
    """Without the MRI modality's fit_encoder hook, a FOMO60K-style encoder is refused, naming channels."""
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    spec = clone_random_encoder("mri_unet_tiny", seed=0, **SMALL).spec
    with pytest.raises(ContractError, match="cannot fill the encoder's channels any"):
        check_contract(spec.input, rows, encoder="pretrained", dataset="task1", modality="mri")


def _synthetic(task: int) -> dict:
    return {"synthetic": {"modality": "mri", "task": task, "subjects_per_site": 4, "seed": 0, "shape": [32, 32, 32]}}


def test_bench_runs_all_three_task_kinds_with_encoders_adapted_per_task(tmp_path):
    pretrained = tmp_path / "pretrained"
    save_checkpoint(clone_random_encoder("mri_unet_tiny", seed=5, **SMALL), pretrained)
    site_a = {"site": "siteA", "subject": ["sub_1", "sub_2"]}  # sub_2 has an infarct, sub_1 not
    evals = {"in": {"site": "siteA", "subject": ["sub_3", "sub_4"]}, "out": {"site": "siteB"}}
    config = {
        "title": "FOMO tiny", "n_bootstrap": 20, "cache_dir": str(tmp_path / "cache"),
        "encoders": [{"name": "random", "ref": "random:mri_unet_tiny:0", "overrides": SMALL},
                     {"name": "pretrained", "ref": str(pretrained)}],
        "datasets": {"task1": _synthetic(1), "task2": _synthetic(2), "task3": _synthetic(3)},
        "tasks": [
            {"name": "infarct", "dataset": "task1", "kind": "binary", "labels": ["infarct"], "train": site_a,
             "eval": evals},
            {"name": "meningioma", "dataset": "task2", "kind": "segmentation", "train": site_a, "eval": evals},
            {"name": "brain age", "dataset": "task3", "kind": "regression", "column": "age", "train": site_a,
             "eval": evals},
        ],
        "protocols": [{"kind": "linear_probe", "label_fractions": [1.0], "seeds": 1},
                      {"kind": "segmentation", "label_fractions": [1.0], "seeds": 1, "epochs": 1, "width": 4,
                       "batch_size": 2, "mode": "frozen"}],
    }
    doc = run_benchmark(config, tmp_path / "out", progress=False)
    assert doc["errors"] == []
    expected = {"infarct": {"auroc_macro"}, "meningioma": {"dice", "nsd", "hd95", "iou"},
                "brain age": {"mae", "pearson_r"}}
    for task, metrics in expected.items():
        for encoder in ("random", "pretrained"):
            for domain in ("in", "out"):
                got = {a["metric"] for a in doc["aggregates"]
                       if (a["task"], a["encoder"], a["domain"]) == (task, encoder, domain)}
                assert got == metrics, (task, encoder, domain)
    assert {g["metric"] for g in doc["gaps"] if g["task"] == "brain age"} == {"mae", "pearson_r"}
    for ds, channels in (("task1", 4), ("task2", 3), ("task3", 2)):
        notes = [n for n in doc["notes"] if n.startswith(f"pretrained on {ds}: input layer adapted")]
        assert len(notes) == 1 and "divided by" in notes[0] and f"{channels} channels" in notes[0]
    assert {r["metric"] for r in doc["records"]} >= {"auroc_macro", "dice", "mae"}
    assert (tmp_path / "out" / "report.html").is_file()
