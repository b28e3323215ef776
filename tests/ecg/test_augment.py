"""Tests of medssl.ecg.augment: shapes, determinism under a generator, and what each does."""

from __future__ import annotations

import pytest
import torch

from medssl.ecg.augment import (
    AmplitudeScale,
    BaselineWander,
    Compose,
    GaussianNoise,
    LeadDropout,
    RandomResizedCrop,
    RandomTimeCrop,
    TimeOut,
    build_augment,
    paper_simclr_ecg_augment,
)

B, L, T = 6, 12, 400


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _signal(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, L, T, generator=_gen(100 + seed))


def _ramp() -> torch.Tensor:
    return torch.arange(T, dtype=torch.float32).expand(B, L, T).clone()


ALL = [
    RandomTimeCrop(100), RandomResizedCrop((0.5, 1.0)), RandomResizedCrop((0.5, 1.0), output_size=150),
    GaussianNoise(0.1), AmplitudeScale(), BaselineWander(100.0), TimeOut(), LeadDropout(0.3),
    paper_simclr_ecg_augment(250),
]


@pytest.mark.parametrize("aug", ALL, ids=lambda a: type(a).__name__)
def test_deterministic_under_the_generator_and_input_untouched(aug):
    x = _signal()
    before = x.clone()
    a, b, c = aug(x, _gen(1)), aug(x, _gen(1)), aug(x, _gen(2))
    assert torch.equal(x, before)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape[:2] == (B, L) and a.dtype == x.dtype and torch.isfinite(a).all()


def test_random_time_crop_takes_contiguous_windows_at_varied_starts():
    out = RandomTimeCrop(100)(_ramp(), _gen())
    assert out.shape == (B, L, 100)
    starts = out[:, 0, 0]
    torch.testing.assert_close(out, starts[:, None, None] + torch.arange(100.0).expand(B, L, 100))
    assert (starts >= 0).all() and (starts <= T - 100).all() and len(set(starts.tolist())) > 1
    assert torch.equal(RandomTimeCrop(T + 5)(_ramp(), _gen()), _ramp())


def test_random_resized_crop_stretches_a_span_of_the_asked_size():
    out = RandomResizedCrop((0.5, 0.8), output_size=200)(_ramp(), _gen())
    assert out.shape == (B, L, 200)
    span = out[:, 0, -1] - out[:, 0, 0]
    assert (span >= 0.5 * T - 2).all() and (span <= 0.8 * T).all()
    assert (out >= 0).all() and (out <= T - 1).all()
    # A linear ramp stays linear (linear interpolation), the same in every lead.
    diffs = out.diff(dim=2)
    torch.testing.assert_close(diffs, diffs[:, :, :1].expand_as(diffs), atol=1e-3, rtol=0)
    assert torch.equal(out[:, 0], out[:, 5])
    assert RandomResizedCrop()(_ramp(), _gen()).shape == (B, L, T)


def test_gaussian_noise_has_the_asked_std():
    x = _signal()
    d = GaussianNoise(0.2)(x, _gen()) - x
    assert d.std().item() == pytest.approx(0.2, rel=0.05)
    assert abs(d.mean().item()) < 0.01


def test_amplitude_scale_scales_each_lead_by_one_factor_in_range():
    x = _signal().abs() + 0.5
    ratio = AmplitudeScale((0.5, 2.0))(x, _gen()) / x
    torch.testing.assert_close(ratio, ratio[:, :, :1].expand_as(ratio))
    assert (ratio >= 0.5 - 1e-6).all() and (ratio <= 2.0 + 1e-6).all()
    assert ratio[:, :, 0].std() > 0.1  # leads get different factors


def test_baseline_wander_is_slow_bounded_and_shared_in_shape_across_leads():
    fs = 100.0
    x = torch.zeros(B, L, 1000)
    drift = BaselineWander(fs, max_amplitude=0.3, fc=0.5, fdelta=0.05)(x, _gen())
    assert drift.abs().max() <= 0.3 + 1e-6 and drift.abs().max() > 0.01
    spectrum = torch.fft.rfft(drift * torch.hann_window(1000), dim=2).abs() ** 2  # windowed: no leakage
    freqs = torch.fft.rfftfreq(1000, 1 / fs)
    assert spectrum[..., freqs > 1.0].sum() < 0.01 * spectrum.sum()
    # Every lead is the same waveform times a gain.
    lead0 = drift[:, :1]
    gain = (drift * lead0).sum(2, keepdim=True) / (lead0 * lead0).sum(2, keepdim=True)
    torch.testing.assert_close(drift, gain * lead0, atol=1e-5, rtol=0)


def test_time_out_zeroes_one_span_in_all_leads():
    x = _signal().abs() + 1.0  # no zeros of its own
    out = TimeOut((0.2, 0.4))(x, _gen())
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))
    for b in range(B):
        idx = zero[b, 0].nonzero().flatten()
        assert 0.2 * T - 1 <= len(idx) <= 0.4 * T
        assert torch.equal(idx, torch.arange(idx[0], idx[0] + len(idx)))
    torch.testing.assert_close(out[~zero], x[~zero])


def test_lead_dropout_zeroes_whole_leads_and_keeps_one():
    x = _signal().abs() + 1.0
    out = LeadDropout(0.5)(x, _gen())
    dropped = (out == 0).all(dim=2)
    assert torch.equal((out == 0).any(dim=2), dropped)
    assert 0.3 < dropped.float().mean() < 0.7
    assert (~dropped).any(dim=1).all()
    assert (~(LeadDropout(0.99)(x, _gen()) == 0).all(dim=2)).sum(dim=1).min() >= 1


def test_build_augment_from_recipe_entries():
    aug = build_augment([{"name": "time_out", "ratio": [0.1, 0.2]}, {"name": "baseline_wander"}], sampling_rate=250)
    assert isinstance(aug, Compose) and [type(a) for a in aug.augmentations] == [TimeOut, BaselineWander]
    assert aug.augmentations[1].sampling_rate == 250
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augment([{"name": "flip"}])
    with pytest.raises(ValueError, match="sampling_rate"):
        build_augment([{"name": "baseline_wander"}])
    with pytest.raises(ValueError, match="ratio"):
        TimeOut((0.5, 0.2))


def test_paper_pipeline_gives_2_5_s_views():
    x = torch.randn(2, 12, 1000)
    assert paper_simclr_ecg_augment(250)(x, _gen()).shape == (2, 12, 250)
