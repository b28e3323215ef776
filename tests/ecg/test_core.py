"""Tests of medssl.ecg.core: the CoRe-ECG loss, its two terms, gradients and determinism."""

from __future__ import annotations

import pytest
import torch

from medssl.ecg.core import CoReECG
from medssl.ecg.dual_masking import SpatioTemporalDualMasker
from medssl.ecg.frequency_augment import FrequencyDynamicAugment
from medssl.registry import create_encoder
from medssl.ssl.contrastive import ProjectionHead
from medssl.ssl.mae import PatchDecoder


def _core(w_con: float = 1.0, w_rec: float = 1.0, cross_condition: bool = True, seed: int = 0) -> CoReECG:
    torch.manual_seed(0)
    enc = create_encoder("ecg_mae_vit_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=750)
    dec = PatchDecoder(n_leads=12, n_time=enc.n_time, patch_size=75, embed_dim=32, decoder_dim=32, depth=1,
                       num_heads=2, lead_wise=False, cond_dim=32)
    return CoReECG(enc, dec, ProjectionHead(32, 32, 16), FrequencyDynamicAugment(),
                   SpatioTemporalDualMasker(enc.leads), w_con=w_con, w_rec=w_rec,
                   cross_condition=cross_condition, seed=seed)


def _batch(b: int = 6) -> torch.Tensor:
    return torch.randn(b, 12, 750, generator=torch.Generator().manual_seed(2))


def test_loss_is_finite_and_the_weighted_sum_of_its_terms():
    model = _core(w_con=0.3, w_rec=2.0)
    out = model.losses(_batch())
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    assert out["contrastive"] > 0 and out["reconstruction"] > 0
    expected = 0.3 * out["contrastive"].item() + 2.0 * out["reconstruction"].item()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(model(_batch()), out["loss"])


def _grads(model: CoReECG, term: str) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model.losses(_batch(), step=1)[term].backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def test_both_terms_contribute_gradients_to_the_encoder():
    model = _core()
    con, rec = _grads(model, "contrastive"), _grads(model, "reconstruction")
    enc = [n for n in con if n.startswith("encoder.")]
    assert sum(con[n].abs().sum() for n in enc) > 0
    assert sum(rec[n].abs().sum() for n in enc) > 0
    # each head is trained by its own term only
    assert all(con[n].abs().sum() == 0 for n in con if n.startswith("decoder."))
    assert all(rec[n].abs().sum() == 0 for n in rec if n.startswith("projector."))
    assert any(con[n].abs().sum() > 0 for n in con if n.startswith("projector."))
    # the cross-view conditioning token reaches the decoder
    assert rec["decoder.cond_embed.weight"].abs().sum() > 0


def test_gradients_flow_everywhere_and_are_finite():
    model = _core()
    model(_batch(), step=2).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_weights_switch_terms_off():
    x = _batch()
    only_rec = _core(w_con=0.0).losses(x)
    only_con = _core(w_rec=0.0).losses(x)
    assert only_rec["loss"].item() == pytest.approx(only_rec["reconstruction"].item())
    assert only_con["loss"].item() == pytest.approx(only_con["contrastive"].item())
    with pytest.raises(ValueError, match="weights"):
        _core(w_con=0.0, w_rec=0.0)


def test_views_and_masks_are_a_function_of_seed_step_and_rank():
    model = _core()
    x = _batch()
    v1, v2, m1, m2 = model.sample(x, step=5)
    again = model.sample(x, step=5)
    assert torch.equal(v1, again[0]) and torch.equal(m2.masked, again[3].masked)
    assert not torch.allclose(v1, v2)                       # two different views
    assert not torch.equal(m1.masked, m2.masked)            # two different masks
    assert not torch.equal(m1.masked, model.sample(x, step=6)[2].masked)
    assert model(x, step=5).item() == model(x, step=5).item()


def test_each_view_is_reconstructed_conditioned_on_the_other_views_global_representation():
    """CoRe-ECG's claim that global representations are aligned during reconstruction, in the form
    core.py states it: view 1's decoder gets view 2's global representation as its conditioning
    token and vice versa (computed here independently from the views and masks of the step), and
    with cross_condition=False each view gets its own. A decoder that ignored `cond`, or an
    implementation that passed the same view's representation, fails this."""
    x = _batch()
    for cross in (True, False):
        model = _core(cross_condition=cross)
        seen = []
        hook = model.decoder.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs["cond"]),
                                                   with_kwargs=True)
        with torch.no_grad():
            model.losses(x, step=3)
            v1, v2, m1, m2 = model.sample(x, step=3)
            g1 = model.encoder.pool(model.encoder.encode(v1, m1.keep_leads, m1.keep_time))
            g2 = model.encoder.pool(model.encoder.encode(v2, m2.keep_leads, m2.keep_time))
        hook.remove()
        assert len(seen) == 2
        first, second = (g2, g1) if cross else (g1, g2)
        torch.testing.assert_close(seen[0][:, 0], first)
        torch.testing.assert_close(seen[1][:, 0], second)
        assert not torch.allclose(g1, g2)  # the two views' representations differ, so the check bites
    # and the token matters: another instance's representation changes view 1's reconstruction
    with torch.no_grad():
        h1 = model.encoder.encode(v1, m1.keep_leads, m1.keep_time)
        own = model.decoder(model.encoder.norm(h1), m1.keep_leads, m1.keep_time, cond=g2[:, None])
        other = model.decoder(model.encoder.norm(h1), m1.keep_leads, m1.keep_time, cond=g2.roll(1, 0)[:, None])
    assert not torch.allclose(own[m1.masked], other[m1.masked])
