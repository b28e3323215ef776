"""A fifth modality added from outside medssl (tests/plugins/toy_eeg.py, found through the
``medssl.modalities`` entry-point group) goes through index -> pretrain -> bench like the four
built-in ones, without any change to medssl's files."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from medssl import plugins


@pytest.fixture
def toy_plugin(monkeypatch):
    """medssl's registries as they are, plus what discovery adds in this test only."""
    from medssl import registry
    from medssl.bench import segmentation
    from medssl.data import layouts
    from medssl.engine import methods

    plugins.modalities()
    registry.list_encoders()  # the built-in registrations, before the copies below
    monkeypatch.setattr(plugins, "_MODALITIES", dict(plugins._MODALITIES))
    monkeypatch.setattr(plugins, "_state", {"discovered": False, "registered": set(plugins._state["registered"]),
                                            "loading": set()})
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(layouts, "LAYOUTS", dict(layouts.LAYOUTS))
    monkeypatch.setattr(methods, "_BUILDERS", dict(methods._BUILDERS))
    monkeypatch.setattr(methods, "_MODALITY", dict(methods._MODALITY))
    monkeypatch.setattr(segmentation, "_DECODERS", dict(segmentation._DECODERS))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.delitem(__import__("sys").modules, "toy_eeg", raising=False)
    ep = EntryPoint(name="toy_eeg", value="toy_eeg:MODALITY", group=plugins.ENTRY_POINT_GROUP)

    monkeypatch.setattr(plugins, "entry_points", lambda group=None, **kw: [ep] if group == plugins.ENTRY_POINT_GROUP else [])
    yield
    __import__("sys").modules.pop("toy_eeg", None)


def test_a_fifth_modality_indexes_pretrains_and_benchmarks(toy_plugin, tmp_path):
    from medssl.bench.runner import run_benchmark
    from medssl.data.layouts import index_layout, known_layouts
    from medssl.data.manifest import write_manifest
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain
    from medssl.registry import list_encoders

    assert "toy_eeg" in plugins.modality_names() and "ecg" in plugins.modality_names()
    assert "toy-folder" in known_layouts() and "wfdb" in known_layouts()
    assert list_encoders(modality="toy_eeg") == ["toy_eeg_cnn"]

    import toy_eeg

    toy_eeg.write_toy_cohort(tmp_path / "cohort")
    rows, skipped = index_layout("toy-folder", tmp_path / "cohort")
    assert skipped == [] and len(rows) == 48
    for r in rows:
        r["split"] = "train" if int(r["subject_id"][1:]) < 16 else "test"
    write_manifest(rows, tmp_path / "manifest.csv")

    cfg = resolve_recipe("mae_ecg", ["variant=cpu"])
    cfg.update(method="toy_denoise", encoder={"name": "toy_eeg_cnn", "overrides": {}})
    cfg["data"].update(batch_size=8, cache_dir=str(tmp_path / "cache"))
    cfg["optim"].update(epochs=2, warmup_epochs=0)
    cfg["trainer"].update(max_steps=8, precision="32-true")
    ckpt = pretrain(cfg, [r for r in rows if r["split"] == "train"], tmp_path / "run", progress_bar=False)
    card = json.loads((ckpt / "card.json").read_text())
    assert card["encoder"]["modality"] == "toy_eeg" and card["training_metrics"]["steps"] == 8

    doc = run_benchmark({
        "n_bootstrap": 50, "cache_dir": str(tmp_path / "cache"),
        "encoders": [{"name": "denoiser", "ref": str(ckpt)}, {"name": "random", "ref": "random:toy_eeg_cnn:0"}],
        "datasets": {"toy": {"path": str(tmp_path / "manifest.csv")}},
        "tasks": [{"name": "rhythm", "dataset": "toy", "kind": "binary", "labels": ["fast"],
                   "train": {"split": "train"}, "eval": {"test": {"split": "test"}}}],
        "protocols": [{"kind": "linear_probe", "shots": ["all"], "seeds": 1}],
    }, tmp_path / "bench", progress=False)
    assert doc["errors"] == [], doc["errors"]
    assert doc["aggregates"], doc["notes"]
    auroc = {a["encoder"]: a["mean"] for a in doc["aggregates"] if a["metric"] == "auroc_macro"}
    assert set(auroc) == {"denoiser", "random"}
    assert auroc["denoiser"] > 0.9  # a sine's frequency is linearly separable from any conv embedding


def test_a_modality_is_refused_when_its_entry_point_is_not_a_modality(toy_plugin, monkeypatch):
    bad = EntryPoint(name="bad", value="json:dumps", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group=None, **kw: [bad])
    with pytest.raises(TypeError, match="bad = json:dumps .* is not a medssl.plugins.Modality"):
        plugins.modalities()
