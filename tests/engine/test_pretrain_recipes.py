"""Every ECG pretraining recipe runs from its CPU variant on a PTB-XL-layout replica."""

from __future__ import annotations

import json

import pytest

from medssl.checkpoint import load_encoder
from medssl.data.layouts import index_layout
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain
from replicas import write_ptbxl_replica

COMMON = ["variant=cpu", "optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=4",
          "trainer.checkpoint_every_n_steps=1"]
VIT = ["encoder.overrides.depth=1", "encoder.overrides.embed_dim=32", "encoder.overrides.num_heads=2"]
TINY = {
    "ecg_jepa": [*VIT, "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2"],
    "mae_ecg": [*VIT, "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2"],
    "core_ecg": [*VIT, "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2",
                 "projector.hidden_dim=16", "projector.out_dim=8"],
    "simclr_ecg": ["encoder.overrides.num_samples=300", "projector.hidden_dim=16", "projector.out_dim=8"],
    "ts2vec_ecg": ["encoder.overrides.num_samples=128", "encoder.overrides.depth=2"],
}


@pytest.fixture(scope="module")
def ptbxl_train_rows(tmp_path_factory):
    root = write_ptbxl_replica(tmp_path_factory.mktemp("ptbxl"), seconds=10.0)
    rows, _ = index_layout("ptbxl", root, task="all", rate=500)
    return [r for r in rows if r["split"] == "train"]


def test_every_ecg_recipe_is_covered():
    from medssl.engine.config import RECIPES_DIR
    from medssl.registry import encoder_entry

    # bench_*/audit_* are `medssl bench`/`audit` configs, not pretraining recipes
    ecg = set()
    for p in RECIPES_DIR.glob("*.yaml"):
        if not p.stem.startswith(("bench_", "audit_")):
            cfg = resolve_recipe(p.stem, [])
            if encoder_entry(cfg["encoder"]["name"]).modality == "ecg":
                ecg.add(p.stem)
    assert ecg == set(TINY)


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_recipe_pretrains_on_a_ptbxl_replica(recipe, ptbxl_train_rows, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSSL_PRECISION")  # every method through the CPU precision probe, as users run it
    cfg = resolve_recipe(recipe, [*COMMON, *TINY[recipe]])
    folder = pretrain(cfg, ptbxl_train_rows, tmp_path / recipe, progress_bar=False)
    card = json.loads((folder / "card.json").read_text())
    probe = card["recipe"]["trainer"]["precision_probe"]
    assert card["precision"] == probe["chosen"] and probe["fp32_ms_per_step"] > 0
    assert card["training_metrics"]["n_records"] == len(ptbxl_train_rows)
    assert card["training_metrics"]["steps"] >= 1
    assert card["encoder"]["name"] == cfg["encoder"]["name"]
    assert load_encoder(folder).spec.hparams == card["encoder"]["hparams"]
