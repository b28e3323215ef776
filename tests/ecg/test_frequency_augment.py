"""Tests of medssl.ecg.frequency_augment: importance-weighted spectral perturbation (CoRe-ECG FDA)."""

from __future__ import annotations

import pytest
import torch

from medssl.ecg.frequency_augment import FrequencyDynamicAugment, spectral_importance

T = 1000  # 4 s at 250 Hz: rFFT bin k is k / 4 Hz


def _two_band_signal(b: int = 32, leads: int = 3) -> torch.Tensor:
    """A strong component at bin 8 (2 Hz) and weak ones at bins 120 and 160, per lead gains."""
    t = torch.arange(T) / T
    gain = torch.linspace(0.5, 1.5, leads).view(1, leads, 1)
    x = (5.0 * torch.sin(2 * torch.pi * 8 * t) + 0.2 * torch.sin(2 * torch.pi * 120 * t)
         + 0.2 * torch.cos(2 * torch.pi * 160 * t))
    return (gain * x).expand(b, leads, T).clone()


def _band_change(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Relative change of rFFT bin k, per sample and lead."""
    fx, fy = torch.fft.rfft(x, dim=-1)[..., k], torch.fft.rfft(y, dim=-1)[..., k]
    return (fy - fx).abs() / fx.abs()


def test_importance_is_normalised_magnitude():
    imp = spectral_importance(_two_band_signal(2))
    assert imp.shape == (2, 1, T // 2 + 1)
    assert imp[..., 8].allclose(torch.ones(2, 1))
    assert (imp[..., 120] < 0.1).all() and (imp[..., 120] > 0.01).all()
    assert spectral_importance(_two_band_signal(2), shared_across_leads=False).shape == (2, 3, T // 2 + 1)


def test_important_bands_are_preserved_more_than_unimportant_ones():
    x = _two_band_signal()
    y = FrequencyDynamicAugment(p_max=1.0, strength=0.5, phase_strength=0.25)(x, torch.Generator().manual_seed(0))
    strong = _band_change(x, y, 8)
    weak = torch.cat([_band_change(x, y, 120), _band_change(x, y, 160)])
    assert strong.max() < 1e-3          # importance 1: never perturbed
    assert weak.mean() > 0.1            # importance ~0.04: perturbed by up to ~48 % in gain, ~0.24 pi in phase
    assert weak.mean() > 100 * strong.mean()


def test_perturbation_probability_follows_importance():
    x = _two_band_signal(b=400, leads=1)
    y = FrequencyDynamicAugment(p_max=0.5, strength=0.5, phase_strength=0.0)(x, torch.Generator().manual_seed(1))
    touched = (_band_change(x, y, 120) > 1e-4).float().mean().item()
    assert touched == pytest.approx(0.5 * (1 - 0.04), abs=0.08)


def test_determinism_under_generator_and_input_untouched():
    x = _two_band_signal(4)
    before = x.clone()
    fda = FrequencyDynamicAugment()
    a = fda(x, torch.Generator().manual_seed(3))
    b = fda(x, torch.Generator().manual_seed(3))
    c = fda(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(x, before)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_shared_filter_keeps_the_lead_algebra():
    g = torch.Generator().manual_seed(5)
    lead_i, lead_ii = torch.randn(8, 1, T, generator=g), torch.randn(8, 1, T, generator=g)
    x = torch.cat([lead_i, lead_ii, lead_ii - lead_i], dim=1)  # I, II, III = II - I
    y = FrequencyDynamicAugment(p_max=1.0)(x, torch.Generator().manual_seed(6))
    assert not torch.allclose(y, x, atol=1e-2)
    assert torch.allclose(y[:, 2], y[:, 1] - y[:, 0], atol=1e-4)
    # per-lead perturbation (the guard) breaks it
    z = FrequencyDynamicAugment(p_max=1.0, shared_across_leads=False)(x, torch.Generator().manual_seed(6))
    assert not torch.allclose(z[:, 2], z[:, 1] - z[:, 0], atol=1e-2)


def test_zero_probability_is_identity_and_bad_settings_raise():
    x = _two_band_signal(2)
    assert torch.allclose(FrequencyDynamicAugment(p_max=0.0)(x, torch.Generator().manual_seed(0)), x, atol=1e-4)
    with pytest.raises(ValueError, match="strength"):
        FrequencyDynamicAugment(strength=1.5)
    with pytest.raises(ValueError, match="batch"):
        FrequencyDynamicAugment()(x[0], torch.Generator())
