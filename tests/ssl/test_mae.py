"""Tests of medssl.ssl.mae: ST-MEM masking, the masked-patch loss, the decoder and the MAE method."""

from __future__ import annotations

import pytest
import torch

from medssl.registry import create_encoder
from medssl.ssl.mae import MaskedAutoencoder, PatchDecoder, RandomLeadPatchMasker, masked_patch_loss

TINY = dict(depth=1, embed_dim=32, num_heads=2, num_samples=750)  # 12 leads x 10 patches of 75


def _mae(seed: int = 0, norm_target: bool = False, leads=None) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    enc = create_encoder("ecg_mae_vit_tiny", **TINY, **({"leads": leads} if leads else {}))
    dec = PatchDecoder(n_leads=enc.n_leads, n_time=enc.n_time, patch_size=enc.patch_size, embed_dim=32,
                       decoder_dim=32, depth=1, num_heads=2)
    return MaskedAutoencoder(enc, dec, RandomLeadPatchMasker(0.75), norm_target=norm_target, seed=seed)


def _batch(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 12, 750, generator=torch.Generator().manual_seed(5))


def _waves(b: int = 4, leads: int = 12) -> torch.Tensor:
    """Predictable signals: per sample and lead a 1.5 Hz sine (250 Hz) of random phase and gain."""
    g = torch.Generator().manual_seed(6)
    t = torch.arange(750) / 250.0
    phase = 6.28 * torch.rand(b, 1, 1, generator=g)
    gain = 0.5 + torch.rand(b, leads, 1, generator=g)
    return gain * torch.sin(2 * torch.pi * 1.5 * t + phase)


def test_masker_hides_the_ratio_in_every_lead_independently():
    mask = RandomLeadPatchMasker(0.75)(8, 12, 30, torch.Generator().manual_seed(0))
    assert mask.masked.shape == (8, 12, 30)
    assert (mask.masked.sum(dim=2) == 23).all()  # ST-MEM keeps int(30 * 0.25) = 7 per lead
    assert mask.keep_time.shape == (8, 12, 7)
    assert (mask.keep_leads == torch.arange(12)).all()
    # keep_time is exactly the complement of the mask
    visible = torch.zeros_like(mask.masked).scatter_(2, mask.keep_time, True)
    assert torch.equal(visible, ~mask.masked)
    # positions are drawn per lead: leads of one sample do not share one pattern
    assert any(not torch.equal(mask.masked[0, 0], mask.masked[0, j]) for j in range(1, 12))


def test_masker_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio"):
        RandomLeadPatchMasker(1.0)


def test_loss_ignores_predictions_of_visible_patches():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 3, 5, 4, generator=g)
    pred = torch.randn(2, 3, 5, 4, generator=g)
    masked = torch.rand(2, 3, 5, generator=g) < 0.5
    for norm_target in (False, True):
        base = masked_patch_loss(pred, target, masked, norm_target=norm_target)
        changed_visible = torch.where(masked[..., None], pred, pred + 10.0)
        assert torch.equal(masked_patch_loss(changed_visible, target, masked, norm_target=norm_target), base)
        changed_masked = torch.where(masked[..., None], pred + 10.0, pred)
        assert masked_patch_loss(changed_masked, target, masked, norm_target=norm_target) > base + 1.0


def test_loss_is_the_mean_over_masked_patches():
    target = torch.zeros(1, 1, 4, 2)
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4, 1).expand(1, 1, 4, 2)
    masked = torch.tensor([[[True, False, True, False]]])
    assert masked_patch_loss(pred, target, masked).item() == pytest.approx((1 + 9) / 2)


def test_predictions_do_not_see_hidden_patches():
    model = _mae().eval()
    x = _batch()
    mask = model.sample_mask(x.shape[0])
    hidden = mask.masked.repeat_interleave(75, dim=2)  # (B, L, samples)
    x_changed = torch.where(hidden, torch.randn_like(x), x)
    with torch.no_grad():
        assert torch.allclose(model.predict(x, mask), model.predict(x_changed, mask), atol=1e-6)
        assert not torch.allclose(model.predict(x, mask), model.predict(x + 1.0, mask))


def test_masks_are_a_function_of_seed_step_and_rank():
    model = _mae()
    a, b = model.sample_mask(4, step=3, rank=0), model.sample_mask(4, step=3, rank=0)
    assert torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, model.sample_mask(4, step=4, rank=0).masked)
    assert not torch.equal(a.masked, model.sample_mask(4, step=3, rank=1).masked)


def test_gradients_reach_encoder_and_decoder():
    model = _mae()
    loss = model(_batch(), step=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("norm_target", [False, True])
def test_a_few_steps_lower_the_loss(norm_target):
    model = _mae(norm_target=norm_target, leads=["I", "II", "V1", "V2"])
    x = _waves(leads=4)
    mask = model.sample_mask(x.shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model(x, mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.92 * losses[0]


def test_joint_decoder_with_condition_tokens_uses_them():
    torch.manual_seed(0)
    dec = PatchDecoder(n_leads=3, n_time=4, patch_size=5, embed_dim=8, decoder_dim=8, depth=1, num_heads=2,
                       lead_wise=False, cond_dim=6)
    tokens = torch.randn(2, 2, 2 + 2, 8)
    keep_leads = torch.tensor([[0, 2], [1, 2]])
    keep_time = torch.tensor([[1, 3], [0, 2]]).view(2, 1, 2).expand(2, 2, 2)
    a = dec(tokens, keep_leads, keep_time, cond=torch.zeros(2, 1, 6))
    b = dec(tokens, keep_leads, keep_time, cond=torch.ones(2, 1, 6))
    assert a.shape == (2, 3, 4, 5)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="cond_dim"):
        PatchDecoder(n_leads=3, n_time=4, patch_size=5, embed_dim=8, decoder_dim=8, depth=1,
                     num_heads=2)(tokens, keep_leads, keep_time, cond=torch.zeros(2, 1, 6))
