"""VAMAE and the plain-MAE baseline: vessel-aware masking, multi-target loss, seeding, training,
recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.registry import create_encoder
from medssl.retina.mae2d import (
    MaskedImageDecoder,
    UniformPatchMasker,
    masked_mse,
    n_masked,
    patchify,
    split_from_scores,
    unpatchify,
)
from medssl.retina.vamae import VesselAwareMAE, VesselAwareMasker, gumbel_top_k

TINY = dict(embed_dim=32, depth=1, num_heads=2, image_size=[32, 32])  # 4 x 4 grid of 8-px patches


def planted_priors(batch: int = 1, size: int = 32, patch: int = 8, rich=(0, 1, 4, 5)):
    """Vesselness 1 and a skeleton line inside the `rich` patches (row-major), 0 elsewhere."""
    v = torch.zeros(batch, size, size)
    s = torch.zeros(batch, size, size)
    g = size // patch
    for i in rich:
        r, c = divmod(i, g)
        v[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 1.0
        s[:, r * patch + patch // 2, c * patch:(c + 1) * patch] = 1.0
    return {"vesselness": v, "skeleton": s}


def tiny_method(targets=("intensity", "vesselness", "skeleton"), weights=None, masker=None, seed=0):
    torch.manual_seed(0)
    enc = create_encoder("retina_vit_tiny", **TINY)
    dec = MaskedImageDecoder(grid=enc.grid, patch_size=8, embed_dim=32, n_prefix=1, n_targets=len(targets),
                             decoder_dim=16, depth=1, num_heads=2)
    masker = masker or VesselAwareMasker(0.75, patch_size=8)
    weights = weights or {t: 1.0 for t in targets}
    return VesselAwareMAE(enc, dec, masker, targets=targets, weights=weights,
                          priors=("vesselness", "skeleton"), seed=seed)


def tiny_batch(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 1, 32, 32, generator=g)
    pri = planted_priors(batch)
    image[:, 0] += 2.0 * pri["vesselness"]  # bright vessels where the priors say so
    return torch.cat([image, pri["vesselness"][:, None], pri["skeleton"][:, None]], dim=1)


def test_patchify_is_row_major_and_inverted_by_unpatchify():
    x = torch.arange(4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    p = patchify(x, 8)
    assert p.shape == (1, 16, 1, 64)
    assert torch.equal(p[0, :, 0, 0], torch.arange(16.0))  # patch n holds value n
    y = torch.randn(2, 3, 16, 24)
    assert torch.equal(unpatchify(patchify(y, 8), (2, 3), 8), y)


def test_masks_exactly_the_ratio_disjoint_and_complete():
    masker = VesselAwareMasker(0.75, patch_size=8)
    pri = planted_priors(5, size=64)
    split = masker(5, 64, torch.Generator().manual_seed(0), pri)
    assert n_masked(64, 0.75) == 48
    assert split.mask_idx.shape == (5, 48) and split.keep_idx.shape == (5, 16)
    assert split.masked.sum(1).tolist() == [48] * 5
    for i in range(5):
        assert sorted(split.mask_idx[i].tolist() + split.keep_idx[i].tolist()) == list(range(64))
        assert split.masked[i, split.mask_idx[i]].all() and not split.masked[i, split.keep_idx[i]].any()
    uniform = UniformPatchMasker(0.75)(5, 64, torch.Generator().manual_seed(0))
    assert uniform.masked.sum(1).tolist() == [48] * 5


def test_probabilities_match_the_data_layer_numpy_formula():
    from medssl.retina.vessel_prior import masking_probabilities, patch_importance

    rng = np.random.default_rng(0)
    v, s = rng.random((32, 32)).astype(np.float32), (rng.random((32, 32)) > 0.9).astype(np.float32)
    masker = VesselAwareMasker(0.75, patch_size=8, temperature=0.3, floor=0.2, weights=(0.7, 0.3))
    ours = masker.probabilities({"vesselness": torch.from_numpy(v)[None], "skeleton": torch.from_numpy(s)[None]})
    ref = masking_probabilities(patch_importance(v, s, 8, weights=(0.7, 0.3)), 0.3, 0.2)
    np.testing.assert_allclose(ours[0].numpy(), ref, rtol=1e-5, atol=1e-7)
    assert abs(float(ours.sum()) - 1.0) < 1e-5


def test_gumbel_top_k_draws_with_the_given_probabilities():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.1]]).expand(20000, -1)
    first = gumbel_top_k(probs, 1, torch.Generator().manual_seed(0)).mask_idx[:, 0]
    freq = torch.bincount(first, minlength=4).float() / len(first)
    assert torch.allclose(freq, probs[0], atol=0.015)


def masked_frequency(masker, pri, draws: int = 200) -> torch.Tensor:
    b = pri["vesselness"].shape[0]
    n = (pri["vesselness"].shape[-1] // 8) ** 2
    total = torch.zeros(n)
    for k in range(draws):
        total += masker(b, n, torch.Generator().manual_seed(k), pri).masked.float().sum(0)
    return total / (draws * b)


def test_vessel_rich_patches_are_masked_more_often():
    rich = (0, 1, 4, 5)  # 4 of 16 patches; 12 of 16 are masked each draw
    pri = planted_priors(4, rich=rich)
    freq = masked_frequency(VesselAwareMasker(0.5, patch_size=8, temperature=0.25, floor=0.1), pri)
    poor = [i for i in range(16) if i not in rich]
    assert freq[list(rich)].min() > 0.9 and freq[poor].max() < 0.5
    assert abs(float(freq.mean()) - 0.5) < 1e-6  # exactly half masked on average
    uniform = masked_frequency(UniformPatchMasker(0.5), pri)
    assert (uniform - 0.5).abs().max() < 0.1


def test_a_floor_lets_every_patch_be_masked_and_no_floor_can_starve_background():
    rich = tuple(range(12))  # as many vessel-rich patches as masked ones
    pri = planted_priors(2, rich=rich)
    starved = masked_frequency(VesselAwareMasker(0.75, patch_size=8, temperature=0.01, floor=0.0), pri, draws=50)
    assert starved[12:].max() == 0.0  # background never masked without a floor
    floored = masked_frequency(VesselAwareMasker(0.75, patch_size=8, temperature=0.01, floor=0.3), pri, draws=100)
    assert floored.min() > 0.0  # every patch masked sometimes
    assert floored[:12].mean() > floored[12:].mean()


def test_high_temperature_tends_to_uniform_masking():
    pri = planted_priors(1)
    probs = VesselAwareMasker(0.75, patch_size=8, temperature=1e6, floor=0.0).probabilities(pri)
    assert torch.allclose(probs, torch.full((1, 16), 1 / 16), atol=1e-6)
    sharp = VesselAwareMasker(0.75, patch_size=8, temperature=0.1, floor=0.0).probabilities(pri)
    assert sharp[0, 0] > 100 * sharp[0, 15]


def test_loss_is_the_weighted_sum_of_target_losses_on_masked_patches():
    x = tiny_batch()
    method = tiny_method(weights={"intensity": 1.0, "vesselness": 0.5, "skeleton": 0.25})
    mask = method.sample_mask(method.split_batch(x)[1], 4, step=3)
    parts = method.target_losses(x, mask)
    assert set(parts) == {"intensity", "vesselness", "skeleton"}
    total = method(x, mask)
    assert torch.allclose(total, parts["intensity"] + 0.5 * parts["vesselness"] + 0.25 * parts["skeleton"])
    # The intensity part is MAE's norm-pix MSE over exactly the masked patches.
    pred = method.predict(x[:, :1], mask)
    target = patchify(x[:, :1], 8)
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (pred[:, :, :1] - t).pow(2).flatten(2).mean(-1)
    assert torch.allclose(parts["intensity"], per_patch[mask.masked].mean(), atol=1e-6)
    # Visible patches do not enter the loss: change the targets there only, same loss.
    y = x.clone()
    for i in range(4):
        for j in mask.keep_idx[i].tolist():
            r, c = divmod(j, 4)
            y[i, 1, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0.123
    assert torch.allclose(method.target_losses(y, mask)["vesselness"], parts["vesselness"])


def test_a_zero_weight_removes_a_target_from_the_loss():
    x = tiny_batch()
    method = tiny_method(weights={"intensity": 1.0, "vesselness": 1.0, "skeleton": 0.0})
    mask = method.sample_mask(method.split_batch(x)[1], 4)
    y = x.clone()
    y[:, 2] = 1.0 - y[:, 2]  # a different skeleton, same mask
    assert torch.allclose(method(x, mask), method(y, mask))
    assert not torch.allclose(method.target_losses(x, mask)["skeleton"], method.target_losses(y, mask)["skeleton"])


def test_same_seed_step_rank_same_loss_and_mask():
    x = tiny_batch()
    method = tiny_method()
    assert torch.equal(method(x, step=5, rank=1), method(x, step=5, rank=1))
    pri = method.split_batch(x)[1]
    a, b = method.sample_mask(pri, 4, 5, 1), method.sample_mask(pri, 4, 6, 1)
    assert torch.equal(a.masked, method.sample_mask(pri, 4, 5, 1).masked)
    assert not torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, method.sample_mask(pri, 4, 5, 0).masked)


def test_a_few_steps_reduce_the_loss():
    x = tiny_batch(8)
    method = tiny_method()
    opt = torch.optim.AdamW(method.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss = method(x, step=step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_bad_batches_and_settings_are_named():
    method = tiny_method()
    with pytest.raises(ValueError, match=r"1 image channel\(s\) \+ 2 prior\(s\)"):
        method(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="must name exactly the targets"):
        tiny_method(weights={"intensity": 1.0})
    enc = create_encoder("retina_vit_tiny", **TINY)
    dec = MaskedImageDecoder(grid=enc.grid, patch_size=8, embed_dim=32, n_targets=1, decoder_dim=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="masker needs prior"):
        VesselAwareMAE(enc, dec, VesselAwareMasker(patch_size=8), targets=["intensity"], weights={"intensity": 1}, priors=[])
    with pytest.raises(ValueError, match="temperature"):
        VesselAwareMasker(patch_size=8, temperature=0)


def test_masked_mse_ignores_visible_patches_and_split_from_scores_takes_the_top():
    split = split_from_scores(torch.tensor([[0.1, 0.9, 0.5, 0.7]]), 2)
    assert split.mask_idx.tolist() == [[1, 3]] and split.keep_idx.tolist() == [[0, 2]]
    pred = torch.zeros(1, 4, 1, 4)
    target = torch.tensor([0.0, 1.0, 100.0, 2.0])[None, :, None, None].expand(1, 4, 1, 4)
    assert masked_mse(pred, target, split.masked).item() == pytest.approx((1.0 + 4.0) / 2)


@pytest.mark.parametrize("recipe", ["vamae_octa", "mae_octa"])
def test_recipes_build_and_run_their_cpu_variant(recipe):
    cfg = resolve_recipe(recipe, ["variant=cpu", "encoder.overrides.depth=1", "decoder.depth=1"])
    encoder, method = build_method(cfg)
    assert encoder.spec.input["shape"] == [64, 64] and encoder.spec.name == "retina_vit_tiny"
    n_priors = len(cfg["data"]["priors"])
    assert n_priors == (2 if recipe == "vamae_octa" else 0)
    x = torch.rand(2, 1 + n_priors, 64, 64)
    if n_priors:
        x[:, 2] = (x[:, 2] > 0.95).float()
    loss = method(x, step=0, rank=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert encoder.patch_embed.weight.grad is not None
    full = resolve_recipe(recipe)
    assert full["encoder"]["name"] == "retina_vit_base" and full["data"]["shape"] == [224, 224]
    assert full["masking"]["ratio"] == 0.75 and full["loss"]["norm_pix"] is True
    assert full["optim"]["weight_decay"] == 0.05


def test_recipe_shape_and_encoder_size_must_agree():
    cfg = resolve_recipe("mae_octa", ["variant=cpu", "encoder.overrides={image_size: [32, 32]}"])
    with pytest.raises(ValueError, match="differs from data.shape"):
        build_method(cfg)


def test_masks_prefer_the_vessel_patches_of_a_synthetic_octa_image():
    """VAMAE's claim, end to end: priors computed from the image (Frangi + skeleton, as the data
    layer caches them), the default masker, and the ground-truth vessels of a synthetic OCTA image
    with known vasculature (not the priors) to score it. The vessel-richest quarter of the patches is
    masked far more often than the 75 % a uniform mask gives each patch, and the masked area holds
    more vessel than the image does; a uniform masker on the same images shows neither."""
    from medssl.retina.synthetic import generate_octa
    from medssl.retina.vessel_prior import vessel_priors

    p, grid, draws = 16, 8, 64
    for seed in range(3):
        octa = generate_octa(128, seed=seed)
        density = torch.from_numpy(octa.vessel_mask.astype(np.float32)).reshape(grid, p, grid, p).mean((1, 3)).reshape(-1)
        rich = density >= density.quantile(0.75)
        priors = {k: torch.from_numpy(v.astype(np.float32))[None].expand(draws, -1, -1)
                  for k, v in vessel_priors(octa.image).items()}
        for masker, expect_preference in ((VesselAwareMasker(0.75, patch_size=p), True), (UniformPatchMasker(0.75), False)):
            masked = masker(draws, grid * grid, torch.Generator().manual_seed(seed), priors).masked.float()
            rich_masked = float(masked[:, rich].mean())               # P(masked | vessel-rich patch)
            enrichment = float((masked * density).sum(1).div(masked.sum(1)).mean() / density.mean())
            if expect_preference:
                assert rich_masked > 0.75 + 0.1, (seed, rich_masked)  # measured 0.91-0.92
                assert enrichment > 1.08, (seed, enrichment)           # measured 1.13-1.18
            else:
                assert abs(rich_masked - 0.75) < 0.05 and abs(enrichment - 1.0) < 0.04, (seed, rich_masked, enrichment)
