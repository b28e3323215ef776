"""The MRI pretraining recipes resolve, build through the method registry, and train a step."""

from __future__ import annotations

import pytest
import torch

from medssl.engine.config import ConfigError, resolve_recipe
from medssl.engine.methods import build_method

RECIPES = {"amaes_mri": "amaes", "amaes_hybrid_mri": "amaes_hybrid", "mae3d_vit_mri": "mae3d_vit"}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_builds_and_trains_a_step_on_cpu(recipe):
    cfg = resolve_recipe(recipe, ["variant=cpu"])
    assert cfg["method"] == RECIPES[recipe]
    d = cfg["data"]
    assert d["patch_size"] == [32, 32, 32] and d["shape"] == [40, 48, 40] and d["spacing_mm"] == [1.0, 1.0, 1.0]
    assert {"batch_size", "num_workers", "cache_dir"} <= set(d)
    torch.manual_seed(0)
    encoder, method = build_method(cfg)
    assert encoder is method.encoder
    assert encoder.spec.input["shape"] == d["patch_size"]  # the card states the trained patch
    x = torch.randn(d["batch_size"], *encoder.spec.input["input_shape"][:1], *d["shape"])
    loss = method(x, step=0, rank=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in encoder.parameters())
    assert torch.equal(method(x, step=0, rank=0).detach(), loss.detach())


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_gpu_variant_matches_the_papers_geometry(recipe):
    cfg = resolve_recipe(recipe, ["variant=gpu"])
    assert cfg["data"]["patch_size"] == [96, 96, 96] and cfg["data"]["shape"] == [160, 192, 160]
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["compile"] is True
    if recipe.startswith("amaes"):
        assert cfg["encoder"]["name"] == "mri_unet_base"
        assert cfg["masking"] == {"ratio": 0.6, "token_size": 4, "fill_value": 0.0}
        assert cfg["decoder"] == {"skips": False, "convs_per_stage": 1}
        assert cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["epochs"] == 100 and cfg["optim"]["warmup_epochs"] == 5
    else:
        assert cfg["encoder"]["name"] == "mri_vit3d_base" and cfg["masking"]["ratio"] == 0.75


def test_amaes_recipe_rejects_a_vit_and_overrides_are_checked():
    cfg = resolve_recipe("amaes_mri", ["variant=cpu", "encoder.name=mri_vit3d_tiny"])
    with pytest.raises(ValueError, match="U-Net"):
        build_method(cfg)
    with pytest.raises(ConfigError, match="masking.ratoi"):
        resolve_recipe("amaes_mri", ["masking.ratoi=0.5"])
    with pytest.raises(ConfigError, match="p_rotate"):
        resolve_recipe("amaes_mri", ["augment.spatial.p_rotate=0.3"])
    cfg = resolve_recipe("amaes_mri", ["variant=cpu"])
    cfg["augment"]["intensity"]["p_gama"] = 0.3  # a hand-built config is checked by the builder
    with pytest.raises(ValueError, match="p_gama"):
        build_method(cfg)
