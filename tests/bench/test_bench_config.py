"""The benchmark YAML schema: parsing, defaults, and one-line errors naming the path and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medssl.bench.config import BenchConfigError, load_bench_config

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "bench_ecg_demo.yaml"


def _cfg(**changes) -> dict:
    cfg = {
        "encoders": [{"name": "a", "ref": "random:ecg_jepa_tiny:0"}],
        "datasets": {"d": {"path": "data/manifest.csv"}},
        "tasks": [{"name": "t", "dataset": "d", "kind": "multilabel", "labels": ["NORM", "MI"],
                   "train": {"site": "site_a", "split": "train"},
                   "eval": {"in": {"site": "site_a", "split": "test"}, "out": {"site": ["site_b", "site_c"]}}}],
        "protocols": [{"kind": "linear_probe", "shots": [1, 5, "all"], "seeds": 3},
                      {"kind": "knn", "label_fractions": [0.1, 1], "seeds": [4, 7]}],
    }
    cfg.update(changes)
    return cfg


def _write(tmp_path, cfg) -> Path:
    p = tmp_path / "bench.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_valid_config_defaults_and_relative_paths(tmp_path):
    c = load_bench_config(_write(tmp_path, _cfg()))
    assert c.n_bootstrap == 1000 and c.title == "medssl benchmark" and c.cache_dir is None
    assert c.datasets["d"].path == tmp_path.resolve() / "data" / "manifest.csv"
    t = c.tasks[0]
    assert t.metrics == ("auroc_macro",) and t.labels == ("NORM", "MI") and t.column is None
    assert t.train == {"site": ("site_a",), "split": ("train",)}
    assert list(t.eval) == ["in", "out"] and t.eval["out"] == {"site": ("site_b", "site_c")}
    lp, knn = c.protocols
    assert lp.name == "linear_probe" and lp.seeds == (0, 1, 2) and lp.settings == [("shots", 1), ("shots", 5),
                                                                                    ("shots", "all")]
    assert knn.k == 10 and knn.seeds == (4, 7) and knn.settings == [("label_fraction", 0.1), ("label_fraction", 1.0)]


def test_regression_defaults_and_synthetic_dataset():
    c = load_bench_config(_cfg(
        datasets={"s": {"synthetic": {"subjects_per_site": 20}}},
        tasks=[{"name": "age", "dataset": "s", "kind": "regression", "column": "age", "train": {"split": "train"},
                "eval": {"test": {"split": "test"}}}]))
    assert c.datasets["s"].synthetic == {"modality": "ecg", "subjects_per_site": 20, "seed": 0}
    assert c.tasks[0].metrics == ("mae", "pearson_r") and c.tasks[0].column == "age"
    assert c.datasets["s"].data == {}


def test_image_dataset_settings_pass_through():
    c = load_bench_config(_cfg(
        datasets={"v": {"synthetic": {"modality": "mri", "task": 2, "shape": [32, 32, 32]}, "data": {"shape": [48] * 3}}},
        tasks=[{"name": "seg", "dataset": "v", "kind": "segmentation", "train": {"split": "train"},
                "eval": {"test": {"split": "test"}}, "tolerance_mm": 2}],
        protocols=[{"kind": "segmentation", "label_fractions": [0.5, 1.0], "decoder": "pyramid"}]))
    assert c.datasets["v"].synthetic == {"modality": "mri", "task": 2, "shape": [32, 32, 32]}
    assert c.datasets["v"].data == {"shape": [48, 48, 48]}
    assert c.tasks[0].metrics == ("dice", "nsd", "hd95", "iou") and c.tasks[0].tolerance_mm == 2.0
    assert c.protocols[0].finetune["mode"] == "frozen" and c.protocols[0].applies_to("segmentation")
    with pytest.raises(BenchConfigError, match="shots need classes"):
        load_bench_config(_cfg(protocols=[{"kind": "segmentation", "shots": [1]}]))
    with pytest.raises(BenchConfigError, match=r"datasets.d.data: expected a mapping"):
        load_bench_config(_cfg(datasets={"d": {"path": "m.csv", "data": [1]}}))


@pytest.mark.parametrize("change, message", [
    ({"encoder": []}, r"unknown key 'encoder'; known: title, n_bootstrap"),
    ({"encoders": [{"name": "a", "ref": "x", "weights": 1}]}, r"encoders\[0\]: unknown key 'weights'"),
    ({"encoders": [{"name": "a", "ref": "x"}, {"name": "a", "ref": "y"}]}, r"encoders: duplicate encoder name 'a'"),
    ({"datasets": {"d": {"path": "p", "synthetic": {}}}}, r"datasets.d: give exactly one of path or synthetic"),
    ({"datasets": {"d": {"synthetic": {"subjects": 3}}}}, r"datasets.d.synthetic: unknown key 'subjects'"),
    ({"protocols": [{"kind": "svm", "shots": [1]}]}, r"protocols\[0\].kind: unknown protocol 'svm'"),
    ({"protocols": [{"kind": "knn", "shots": [1], "label_fractions": [0.5]}]},
     r"protocols\[0\]: give exactly one of shots or label_fractions"),
    ({"protocols": [{"kind": "linear_probe", "shots": [0]}]}, r"protocols\[0\].shots: expected an integer >= 1"),
    ({"protocols": [{"kind": "linear_probe", "label_fractions": [1.5]}]}, r"protocols\[0\].label_fractions: expected fractions in \(0, 1\]"),
    ({"protocols": [{"kind": "linear_probe", "shots": [1], "k": 3}]}, r"protocols\[0\].k: only the knn protocol"),
    ({"protocols": [{"kind": "knn", "shots": [1]}, {"kind": "knn", "shots": [5]}]}, r"protocols: duplicate protocol name 'knn'; set `name:`"),
    ({"n_bootstrap": 0}, r"n_bootstrap: expected an integer >= 1"),
])
def test_errors_start_with_the_path_and_name_the_key(tmp_path, change, message):
    path = _write(tmp_path, _cfg(**change))
    with pytest.raises(BenchConfigError, match=f"^{path}: {message}") as info:
        load_bench_config(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task_change, message", [
    ({"kind": "ordinal"}, r"tasks\[0\].kind: unknown kind 'ordinal'"),
    ({"dataset": "nope"}, r"tasks\[0\].dataset: unknown dataset 'nope'; known: d"),
    ({"metrics": ["mae"]}, r"tasks\[0\].metrics: unknown metric 'mae' for a multilabel task"),
    ({"kind": "binary"}, r"tasks\[0\].labels: a binary task takes one class name, got 2"),
    ({"kind": "regression"}, r"tasks\[0\].labels: a regression task takes `column`"),
    ({"labels": []}, r"tasks\[0\].labels: expected a non-empty list"),
    ({"train": {}}, r"tasks\[0\].train: expected a non-empty mapping"),
    ({"eval": {"in": {"site": {"a": 1}}}}, r"tasks\[0\].eval.in.site: expected a value or a list of values"),
    ({"split": "test"}, r"tasks\[0\]: unknown key 'split'"),
])
def test_task_errors(task_change, message):
    cfg = _cfg()
    cfg["tasks"][0].update(task_change)
    with pytest.raises(BenchConfigError, match=f"^<config>: {message}"):
        load_bench_config(cfg)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(BenchConfigError, match=r"nope.yaml: config file not found"):
        load_bench_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoders: [\n")
    with pytest.raises(BenchConfigError, match=rf"^{bad}: not valid YAML"):
        load_bench_config(bad)


def test_the_demo_recipe_is_valid():
    c = load_bench_config(RECIPE)
    assert [e.ref for e in c.encoders] == ["random:ecg_jepa_tiny:0", "random:ecg_jepa_tiny:1"]
    assert c.tasks[0].labels == ("NORM", "MI", "STTC", "CD", "HYP", "AF")
    assert [p.kind for p in c.protocols] == ["linear_probe", "knn"] and c.protocols[1].k == 10
    assert c.protocols[0].shots == (1, 5, 10, 50, "all") and c.protocols[0].seeds == tuple(range(5))
