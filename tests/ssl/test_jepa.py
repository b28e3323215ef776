"""Tests of medssl.ssl.jepa: the JEPA loss, its gradients, the EMA target and the masks."""

from __future__ import annotations

import pytest
import torch

from medssl.ecg.encoders import JepaPredictor
from medssl.registry import create_encoder
from medssl.ssl.jepa import JEPA
from medssl.ssl.masking import MultiBlockPatchMasker, RandomPatchMasker


def _jepa(seed: int = 0, masker=None, jepa_seed: int = 0) -> JEPA:
    torch.manual_seed(seed)
    enc = create_encoder("ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=500)
    pred = JepaPredictor(n_leads=enc.n_leads, n_time=enc.n_time, embed_dim=32, predictor_dim=32, depth=1, num_heads=2)
    return JEPA(enc, pred, masker or RandomPatchMasker((0.6, 0.7)), seed=jepa_seed)


def _batch(model: JEPA, b: int = 4) -> torch.Tensor:
    return torch.randn(b, model.encoder.n_leads, model.encoder.n_time * model.encoder.patch_size,
                       generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("masker", [RandomPatchMasker(), MultiBlockPatchMasker(2, (0.2, 0.3))], ids=["random", "multiblock"])
def test_loss_is_finite_positive_scalar(masker):
    model = _jepa(masker=masker)
    loss = model(_batch(model))
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0


def test_gradients_reach_encoder_and_predictor_not_target():
    model = _jepa()
    model(_batch(model)).backward()
    for part in (model.encoder, model.predictor):
        for name, p in part.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for p in part.parameters())
    for p in model.target_encoder.parameters():
        assert not p.requires_grad and p.grad is None
    # The target is a separate copy, not the encoder itself.
    assert all(
        a.data_ptr() != b.data_ptr()
        for a, b in zip(model.encoder.parameters(), model.target_encoder.parameters())
    )


def test_target_starts_equal_and_follows_the_momentum_rule():
    model = _jepa()
    for a, b in zip(model.encoder.parameters(), model.target_encoder.parameters()):
        assert torch.equal(a, b)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    old_target = [p.clone() for p in model.target_encoder.parameters()]
    enc = [p.clone() for p in model.encoder.parameters()]
    model.update_target(0.9)
    for t, t0, e in zip(model.target_encoder.parameters(), old_target, enc):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * e, atol=1e-6, rtol=1e-6)
    for p, e in zip(model.encoder.parameters(), enc):
        assert torch.equal(p, e)


def test_masks_are_a_pure_function_of_seed_step_rank():
    a, b = _jepa(seed=0, jepa_seed=1), _jepa(seed=5, jepa_seed=1)
    torch.manual_seed(0)
    m1 = a.sample_masks(4, step=7, rank=1)
    torch.manual_seed(99)  # neither the global RNG nor the weights matter
    m2 = b.sample_masks(4, step=7, rank=1)
    assert torch.equal(m1[0], m2[0]) and torch.equal(m1[1], m2[1])
    state = torch.random.get_rng_state()
    a.sample_masks(4, step=7, rank=1)
    assert torch.equal(torch.random.get_rng_state(), state), "sampling masks consumed the global RNG"

    def differs(other):
        return not (other[1].shape == m1[1].shape and torch.equal(other[1], m1[1]))

    assert differs(a.sample_masks(4, step=8, rank=1))
    assert differs(a.sample_masks(4, step=7, rank=0))
    assert differs(_jepa(jepa_seed=2).sample_masks(4, step=7, rank=1))


def test_forward_with_given_masks_is_deterministic():
    model = _jepa().eval()
    x = _batch(model)
    masks = model.sample_masks(x.shape[0], step=3)
    with torch.no_grad():
        assert torch.equal(model(x, masks), model(x, step=3))
        assert not torch.equal(model(x, masks), model(x, step=4))


def test_a_few_steps_lower_the_loss():
    model = _jepa()
    x = _batch(model)
    masks = model.sample_masks(x.shape[0], step=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    with torch.no_grad():
        before = model(x, masks).item()
    for _ in range(15):
        opt.zero_grad()
        loss = model(x, masks)
        loss.backward()
        opt.step()
        model.update_target(0.996)
    with torch.no_grad():
        after = model(x, masks).item()
    assert after < 0.8 * before, (before, after)

