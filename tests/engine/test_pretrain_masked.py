"""Pretraining the masked-modelling recipes (mae_ecg, core_ecg) end to end on a tiny cohort."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.checkpoint import load_encoder
from medssl.data.layouts import index_layout
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

TINY = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
    "encoder.overrides.num_heads=2", "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2",
    "data.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=0", "trainer.checkpoint_every_n_steps=2",
]
EXTRA = {"mae_ecg": [], "core_ecg": ["projector.hidden_dim=16", "projector.out_dim=8"]}


@pytest.fixture(scope="module")
def rows(tiny_cohort_dir):
    rows, skipped = index_layout("synthetic", tiny_cohort_dir)
    assert not skipped
    return rows


@pytest.mark.parametrize("recipe", ["mae_ecg", "core_ecg"])
def test_cpu_variant_writes_a_loadable_checkpoint(recipe, rows, tmp_path):
    cfg = resolve_recipe(recipe, [*TINY, *EXTRA[recipe]])
    assert cfg["encoder"]["name"] == "ecg_mae_vit_tiny"
    folder = pretrain(cfg, rows, tmp_path / "run", progress_bar=False)
    card = json.loads((folder / "card.json").read_text())
    assert card["encoder"]["name"] == "ecg_mae_vit_tiny"
    assert card["encoder"]["hparams"]["embed_dim"] == 32
    assert card["training_metrics"]["steps"] == 4  # 16 records, batches of 4, one epoch
    assert np.isfinite(card["training_metrics"]["train/loss_epoch"])
    encoder = load_encoder(folder).eval()
    x = torch.randn(2, 12, 2250)
    with torch.no_grad():
        assert encoder(x).shape == (2, 32)
        assert encoder.forward_features(x).shape == (2, 12 * 30, 32)


def test_masked_recipes_reject_encoders_without_visible_token_encoding():
    from medssl.engine.methods import build_method

    cfg = resolve_recipe("mae_ecg", [*TINY, "encoder.name=ecg_jepa_tiny"])
    with pytest.raises(ValueError, match="ecg_mae_vit"):
        build_method(cfg)
