"""The benchmark on synthetic FOMO25 task datasets: classification, segmentation and regression,
in-domain vs out-of-domain site, a random and a (stand-in) pretrained single-channel encoder."""

from __future__ import annotations

import json

import pytest

from medssl.bench.inputs import ContractError, check_contract
from medssl.checkpoint import clone_random_encoder, read_card, save_checkpoint
from medssl.mri.fomo_bench import run_fomo_benchmark
from medssl.mri.fomo_task import index_fomo_task

SMALL = {"widths": [4, 8], "shape": [32, 32, 32]}


def test_a_single_channel_encoder_cannot_read_a_task_dataset_as_it_is(fomo_task_root):
    """What `medssl bench` alone does with a FOMO60K-style encoder on a task: refuses, naming channels."""
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    spec = clone_random_encoder("mri_unet_tiny", seed=0, **SMALL).spec
    with pytest.raises(ContractError, match="cannot fill the encoder's channels any"):
        check_contract(spec.input, rows, encoder="pretrained", dataset="task1", modality="mri")


def _synthetic(task: int) -> dict:
    return {"synthetic": {"modality": "mri", "task": task, "subjects_per_site": 4, "seed": 0, "shape": [32, 32, 32]}}


def test_fomo_bench_runs_all_three_task_kinds_with_adapted_encoders(tmp_path):
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
    summary = run_fomo_benchmark(config, tmp_path / "out", progress=False)
    assert summary["errors"] == []
    expected = {"infarct": {"auroc_macro"}, "meningioma": {"dice", "nsd", "hd95", "iou"},
                "brain age": {"mae", "pearson_r"}}
    for task, metrics in expected.items():
        for encoder in ("random", "pretrained"):
            for domain in ("in", "out"):
                got = {a["metric"] for a in summary["aggregates"]
                       if (a["task"], a["encoder"], a["domain"]) == (task, encoder, domain)}
                assert got == metrics, (task, encoder, domain)
    assert {g["metric"] for g in summary["gaps"] if g["task"] == "brain age"} == {"mae", "pearson_r"}
    for ds, task, channels in (("task1", 1, 4), ("task2", 2, 3), ("task3", 3, 2)):
        run = summary["runs"][ds]
        assert run["task"] == task and len(run["sequences"]) == channels
        assert "divided by" in run["input_adaptations"]["pretrained"]
        for key in ("json", "csv", "html"):
            assert (tmp_path / "out" / ds / f"results.{key}" if key != "html" else
                    tmp_path / "out" / ds / "report.html").is_file()
        card = read_card(tmp_path / "out" / "adapted" / f"pretrained__{ds}")
        assert card["encoder"]["input"]["channels"] == run["sequences"]
        assert card["recipe"]["adapted_from"] == str(pretrained)
        results = json.loads((tmp_path / "out" / ds / "results.json").read_text())
        assert results["encoders"]["random"]["spec"]["input"]["channels"] == run["sequences"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runs"].keys() == {"task1", "task2", "task3"}
