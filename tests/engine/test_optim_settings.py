"""Optimiser settings are the same keys in every pretraining recipe (betas, eps, weight-decay
exclusions), carry each paper's values, can be overridden, and reach the AdamW the engine builds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.engine.config import resolve_recipe
from medssl.engine.module import build_optimizer, param_groups

# recipe -> the AdamW betas of the paper / release it follows
PAPER_BETAS = {
    "ecg_jepa": (0.9, 0.999),        # ECG-JEPA release: torch.optim.AdamW defaults
    "mae_ecg": (0.9, 0.95),          # ST-MEM
    "core_ecg": (0.9, 0.95),         # the MAE schedule
    "simclr_ecg": (0.9, 0.999),      # Adam defaults
    "ts2vec_ecg": (0.9, 0.999),      # AdamW defaults
    "amaes_mri": (0.9, 0.999),       # AMAES: AdamW defaults
    "amaes_hybrid_mri": (0.9, 0.999),
    "mae3d_vit_mri": (0.9, 0.95),    # MAE
    "mae_octa": (0.9, 0.95),         # MAE
    "vamae_octa": (0.9, 0.95),       # MAE
    "simmim_ct": (0.9, 0.999),       # SimMIM
    "dagman_ct": (0.9, 0.999),       # chosen (DINO/iBOT)
}


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)


@pytest.mark.parametrize("recipe", sorted(PAPER_BETAS))
def test_every_recipe_states_its_papers_betas_and_accepts_overrides(recipe):
    cfg = resolve_recipe(recipe)
    o = cfg["optim"]
    assert tuple(o["betas"]) == PAPER_BETAS[recipe]
    assert o["no_weight_decay"] == []
    opt = build_optimizer(_Tiny(), o)
    assert opt.defaults["betas"] == PAPER_BETAS[recipe] and opt.defaults["lr"] == o["lr"]
    # the same override is accepted by every recipe
    over = resolve_recipe(recipe, ["optim.betas=[0.8, 0.9]", "optim.no_weight_decay=[pos_embed]"])
    opt = build_optimizer(_Tiny(), over["optim"])
    assert opt.defaults["betas"] == (0.8, 0.9)
    tiny = _Tiny()
    opt = build_optimizer(tiny, over["optim"])
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(tiny.proj.weight)}


def test_weight_decay_skips_biases_norms_and_named_parameters():
    tiny = _Tiny()
    decay, no_decay = param_groups(tiny, 0.05)
    assert {id(p) for p in decay["params"]} == {id(tiny.pos_embed), id(tiny.proj.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(tiny.proj.bias), id(tiny.norm.weight), id(tiny.norm.bias)}
    decay, _ = param_groups(tiny, 0.05, ["pos_embed"])
    assert {id(p) for p in decay["params"]} == {id(tiny.proj.weight)}


@pytest.mark.parametrize("bad", [{"betas": [0.9]}, {"betas": [0.9, 1.0]}, {"no_weight_decay": "pos_embed"}])
def test_bad_optimiser_settings_are_named(bad):
    with pytest.raises(ValueError, match="optim"):
        build_optimizer(_Tiny(), {"lr": 1e-3, "weight_decay": 0.0, **bad})
