"""Pretraining the contrastive ECG recipes (SimCLR, TS2Vec) end to end on a tiny cohort."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from medssl.checkpoint import load_encoder
from medssl.data.layouts import index_layout
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

COMMON = ["variant=cpu", "data.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
          "trainer.checkpoint_every_n_steps=1"]
TINY = {
    "simclr_ecg": [*COMMON, "encoder.overrides.num_samples=300", "projector.hidden_dim=16", "projector.out_dim=8"],
    "ts2vec_ecg": [*COMMON, "encoder.overrides.num_samples=128", "encoder.overrides.depth=2"],
}


@pytest.fixture(scope="module")
def rows(tiny_cohort_dir):
    rows, skipped = index_layout("synthetic", tiny_cohort_dir)
    assert not skipped
    return rows  # 16 records -> 2 batches of 8 per epoch


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_pretraining_writes_a_loadable_checkpoint(recipe, rows, tmp_path):
    cfg = resolve_recipe(recipe, TINY[recipe])
    folder = pretrain(cfg, rows, tmp_path / "run", progress_bar=False)
    encoder = load_encoder(folder)
    card = json.loads((folder / "card.json").read_text())
    assert card["encoder"]["name"] == cfg["encoder"]["name"]
    assert card["encoder"]["input"]["leads"][:2] == ["I", "II"] and len(card["encoder"]["input"]["leads"]) == 12
    assert card["recipe"]["method"] == recipe
    assert card["training_metrics"]["steps"] == 2
    assert card["training_metrics"]["n_records"] == len(rows)
    x = torch.randn(2, 12, cfg["encoder"]["overrides"]["num_samples"])
    with torch.no_grad():
        out = encoder.eval()(x)
    assert out.shape == (2, encoder.spec.embed_dim) and torch.isfinite(out).all()

    # The saved encoder is the method's: for TS2Vec the weight average, not the last iterate.
    state = torch.load(tmp_path / "run" / "lightning" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    saved = load_file(str(folder / "model.safetensors"))
    prefix = "method.averaged_encoder." if recipe == "ts2vec_ecg" else "method.encoder."
    for key, value in saved.items():
        torch.testing.assert_close(value, state[prefix + key], rtol=0, atol=0, msg=key)
    if recipe == "ts2vec_ecg":
        assert int(state["method.n_averaged"]) == 3  # initial weights + 2 steps
        assert any(not torch.equal(saved[k], state["method.encoder." + k]) for k in saved)
