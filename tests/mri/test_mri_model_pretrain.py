"""Every MRI pretraining recipe runs end to end from its CPU variant: synthetic FOMO60K-layout
phantoms -> the MRI data hook's cache (whole volumes of data.shape) -> random patches inside the
method -> a checkpoint whose card states the trained patch."""

from __future__ import annotations

import json

import pytest

from medssl.checkpoint import load_encoder
from medssl.data.modalities import modality_data
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

RECIPES = ["amaes_mri", "amaes_hybrid_mri", "mae3d_vit_mri"]


@pytest.fixture(scope="module")
def phantom_rows(tmp_path_factory):
    rows, skipped = modality_data("mri").write_synthetic(
        tmp_path_factory.mktemp("fomo60k"), task="fomo60k", subjects_per_site=1, shape=(48, 56, 48)
    )
    assert rows and not skipped
    return rows


@pytest.mark.parametrize("recipe", RECIPES)
def test_mri_recipe_pretrains_on_phantoms(recipe, phantom_rows, tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSSL_PRECISION")  # through the CPU precision probe, as users run it
    cfg = resolve_recipe(recipe, ["variant=cpu", "optim.epochs=1", "trainer.max_steps=2",
                                  f"data.cache_dir={tmp_path.parent / 'cache'}"])
    folder = pretrain(cfg, phantom_rows, tmp_path / recipe, progress_bar=False)
    card = json.loads((folder / "card.json").read_text())
    assert card["precision"] == card["recipe"]["trainer"]["precision_probe"]["chosen"]
    assert card["training_metrics"]["steps"] == 2
    assert card["training_metrics"]["n_records"] == len(phantom_rows)
    encoder = load_encoder(folder)
    assert encoder.spec.name == cfg["encoder"]["name"]
    assert encoder.spec.input["shape"] == cfg["data"]["patch_size"] == [32, 32, 32]
    assert (folder / "method.safetensors").is_file()
