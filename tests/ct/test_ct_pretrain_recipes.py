"""The CT recipes pretrain end to end through `pretrain()` on synthetic phantom rows (DICOM series
read through the CT data hook), save a checkpoint that reloads and embeds, and log the methods'
diagnostics (DAGMaN's attention-head diversity, SimMIM's mask fraction) in the CSV log."""

from __future__ import annotations

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch

from medssl.checkpoint import load_encoder
from medssl.data.modalities import encoder_inputs
from medssl.engine.config import resolve_recipe
from medssl.engine.embed import embed_arrays
from medssl.engine.methods import build_method
from medssl.engine.pretrain import pretrain

# A two-step run of each cpu variant, batch 2; DAGMaN's distillation head made small.
TINY = {
    "dagman_ct": ["head.out_dim=64", "head.hidden_dim=32", "head.bottleneck_dim=16"],
    "simmim_ct": [],
}


@pytest.fixture(scope="module")
def phantom_rows(tmp_path_factory):
    """Nodule rows of a 2 x 2-subject synthetic chest CT cohort (64 x 64 x 30 slices)."""
    from medssl.ct.phantom import write_synthetic

    rows, _ = write_synthetic(tmp_path_factory.mktemp("ct-pretrain-phantoms"), subjects_per_site=2, seed=3,
                              z_extent_mm=60.0, workers=1)
    assert len(rows) >= 4
    return rows


@pytest.fixture(scope="module")
def runs(phantom_rows, tmp_path_factory):
    """recipe -> (resolved config, checkpoint folder, cache folder) of a two-step run of each."""
    out = {}
    for recipe in TINY:
        folder = tmp_path_factory.mktemp(recipe)
        cfg = resolve_recipe(recipe, ["variant=cpu", "optim.epochs=1", "trainer.max_steps=2",
                                      "optim.warmup_epochs=0", "trainer.log_every_n_steps=1", "data.batch_size=2",
                                      f"data.cache_dir={folder / 'cache'}", *TINY[recipe]])
        out[recipe] = (cfg, pretrain(cfg, phantom_rows, folder / "run", resume=False, progress_bar=False),
                       folder / "cache")
    return out


def _log_columns(out) -> dict[str, list[float]]:
    with (out / "logs" / "metrics.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in table if r.get(k) not in (None, "")] for k in table[0]}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_recipe_pretrains_reloads_and_embeds(recipe, runs, phantom_rows):
    cfg, ckpt, cache_dir = runs[recipe]

    card = json.loads((ckpt / "card.json").read_text())
    assert card["training_metrics"]["steps"] == 2 and card["training_metrics"]["n_records"] == len(phantom_rows)
    assert card["recipe"]["method"] == cfg["method"]

    encoder = load_encoder(ckpt)
    spec = encoder.spec
    assert spec.name == "ct_swin_tiny" and spec.modality == "ct"
    # The recipe's data section is the checkpoint's input contract.
    assert spec.input["shape"] == [32, 32, 32] and spec.input["spacing_mm"] == [1.5, 1.5, 2.0]
    assert spec.input["windows"] == ["lung"]

    # Training moved the weights: rebuild the initial encoder as pretrain() seeded it.
    L.seed_everything(cfg["seed"], verbose=False)
    initial, _ = build_method(cfg)
    trained, start = encoder.state_dict(), initial.state_dict()
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)

    cache = encoder_inputs(phantom_rows, spec, cache_root=cache_dir)
    assert cache.signals.shape == (len(phantom_rows), 1, 32, 32, 32) and cache.skipped == []
    z = embed_arrays(encoder, cache.signals)
    assert z.shape == (len(phantom_rows), spec.embed_dim) and np.isfinite(z).all()
    assert np.ptp(z, axis=0).max() > 0  # different patches, different embeddings


def test_dagman_logs_head_diversity_and_simmim_its_mask_fraction(runs):
    cols = _log_columns(runs["dagman_ct"][1].parent)
    steps = cols["train/head_diversity_step"]
    assert len(steps) == 2 and all(np.isfinite(steps)) and min(steps) >= 0
    assert len(cols["train/teacher_head_diversity_step"]) == 2
    for term in ("loss_mip", "loss_patch", "loss_global"):
        assert all(v > 0 for v in cols[f"train/{term}_step"])
    assert all(0 < v <= 1 + 1e-6 for v in cols["train/mask_attention_step"])  # teacher attention under the mask

    cols = _log_columns(runs["simmim_ct"][1].parent)
    assert cols["train/mask_fraction_step"] == pytest.approx([0.6] * 2, abs=0.05)
    assert "train/head_diversity_step" not in cols
