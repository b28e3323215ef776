"""Tests of the SimCLR and TS2Vec methods on ECG (medssl.ssl.simclr, medssl.ssl.ts2vec) and
their recipe builders (medssl.ecg.methods_contrastive)."""

from __future__ import annotations

import pytest
import torch

from medssl.ecg.augment import Compose, RandomResizedCrop, RandomTimeCrop, TimeOut
from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.registry import create_encoder
from medssl.ssl.contrastive import HierarchicalContrastiveLoss, NTXentLoss, ProjectionHead
from medssl.ssl.simclr import SimCLR
from medssl.ssl.ts2vec import TS2Vec, sample_crops, take_windows


def _batch(b: int = 8, t: int = 200) -> torch.Tensor:
    return torch.randn(b, 12, t, generator=torch.Generator().manual_seed(5))


def _simclr(seed: int = 0) -> SimCLR:
    torch.manual_seed(seed)
    enc = create_encoder("ecg_resnet1d_tiny", num_samples=200)
    aug = Compose([RandomTimeCrop(128), RandomResizedCrop((0.5, 1.0)), TimeOut((0.2, 0.4))])
    return SimCLR(enc, ProjectionHead(enc.spec.embed_dim, 32, 16), aug, NTXentLoss(0.5), seed=seed)


def _ts2vec(swa: bool = True) -> TS2Vec:
    torch.manual_seed(0)
    enc = create_encoder("ecg_ts2vec_tiny", num_samples=200)
    return TS2Vec(enc, HierarchicalContrastiveLoss(0.5), swa=swa)


def _fixed_view_training_lowers_the_loss(method, x, steps: int, lr: float) -> tuple[float, float]:
    """Loss on the step-0 views (crops, masks) before and after `steps` Adam steps on them."""
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    before = method(x, step=0, rank=0)
    for i in range(steps):
        loss = before if i == 0 else method(x, step=0, rank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = method(x, step=0, rank=0)
    return before.item(), after.item()


def test_simclr_loss_is_finite_and_reaches_encoder_and_projector():
    m = _simclr()
    loss = m(_batch(), step=0, rank=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for part in (m.encoder, m.projector):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters())
        assert any(p.grad.abs().sum() > 0 for p in part.parameters())


def test_simclr_views_are_a_function_of_seed_step_and_rank():
    m, x = _simclr(), _batch()
    a1, a2 = m.views(x, step=3, rank=0)
    b1, b2 = m.views(x, step=3, rank=0)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    assert not torch.equal(a1, m.views(x, step=4, rank=0)[0])
    assert not torch.equal(a1, m.views(x, step=3, rank=1)[0])
    assert a1.shape == (8, 12, 128)


def test_simclr_a_few_steps_on_a_fixed_batch_lower_the_loss():
    before, after = _fixed_view_training_lowers_the_loss(_simclr(), _batch(8, 160), steps=4, lr=3e-3)
    assert after < before - 0.1


def test_ts2vec_crops_overlap_and_stay_inside_the_series():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        c = sample_crops(60, 4, g)
        l = c["overlap"]
        assert 2 <= l <= c["len1"] and l <= c["len2"]
        assert (c["start1"] >= 0).all() and (c["start1"] + c["len1"] <= 60).all()
        assert (c["start2"] >= 0).all() and (c["start2"] + c["len2"] <= 60).all()
        # crop 1 ends with the overlap, crop 2 starts with it, at the same timestamps.
        assert torch.equal(c["start1"] + c["len1"] - l, c["start2"])
    x = torch.arange(60.0).expand(4, 2, 60)
    w = take_windows(x, torch.tensor([0, 5, 10, 20]), 7)
    assert torch.equal(w[:, 0, 0], torch.tensor([0.0, 5, 10, 20])) and w.shape == (4, 2, 7)


def test_ts2vec_masks_in_training_only():
    m = _ts2vec()
    x = _batch(2)
    enc = m.encoder.eval()
    keep_all = torch.ones(2, 200, dtype=torch.bool)
    torch.testing.assert_close(enc.forward_features(x), enc.forward_features(x, mask=keep_all))
    assert not torch.allclose(enc.forward_features(x), enc.forward_features(x, mask=m.binomial_mask(2, 200, torch.Generator())))
    mask = m.binomial_mask(64, 200, torch.Generator().manual_seed(0))
    assert 0.45 < mask.float().mean() < 0.55


def test_ts2vec_loss_is_finite_deterministic_and_reaches_the_encoder():
    m = _ts2vec()
    m.encoder.repr_dropout.p = 0.0  # dropout aside, the step's draws fix the loss
    x = _batch(4)
    loss = m(x, step=2, rank=0)
    assert torch.isfinite(loss) and loss.item() > 0
    assert m(x, step=2, rank=0).item() == pytest.approx(loss.item(), rel=1e-5)
    assert m(x, step=3, rank=0).item() != pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.encoder.parameters())
    assert all(not p.requires_grad and p.grad is None for p in m.averaged_encoder.parameters())


def test_ts2vec_a_few_steps_on_a_fixed_batch_lower_the_loss():
    m = _ts2vec(swa=False)
    m.encoder.repr_dropout.p = 0.0
    before, after = _fixed_view_training_lowers_the_loss(m, _batch(8, 64), steps=5, lr=3e-3)
    assert after < before - 0.2


def test_ts2vec_swa_is_the_running_mean_of_all_iterates():
    m = _ts2vec()
    iterates = [[p.detach().clone() for p in m.encoder.parameters()]]
    for _ in range(3):
        with torch.no_grad():
            for p in m.encoder.parameters():
                p.add_(torch.randn_like(p))
        m.update_target(0.99)
        iterates.append([p.detach().clone() for p in m.encoder.parameters()])
    assert int(m.n_averaged) == 4
    for i, avg in enumerate(m.averaged_encoder.parameters()):
        torch.testing.assert_close(avg, torch.stack([it[i] for it in iterates]).mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("recipe", ["simclr_ecg", "ts2vec_ecg"])
def test_builders_make_the_recipe_methods(recipe):
    cfg = resolve_recipe(recipe, ["variant=cpu"])
    encoder, method = build_method(cfg)
    assert encoder.spec.name == cfg["encoder"]["name"]
    if recipe == "ts2vec_ecg":
        assert isinstance(method, TS2Vec) and encoder is method.averaged_encoder
        assert build_method(resolve_recipe(recipe, ["variant=cpu", "swa=false"]))[0] is not None
    else:
        assert isinstance(method, SimCLR) and encoder is method.encoder
        assert method.projector.net[-1].out_features == cfg["projector"]["out_dim"]
        assert method.loss.temperature == cfg["loss"]["temperature"]
    loss = method(torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(0))[:, :, :300], step=0, rank=0)
    assert torch.isfinite(loss)
