"""Tests of medssl.ecg.dual_masking: Spatio-Temporal Dual Masking (CoRe-ECG STDM)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medssl.ecg.dual_masking import SpatioTemporalDualMasker, feasible_lead_masks, lead_vectors
from medssl.ecg.leads import INDEPENDENT_LEADS, STANDARD_LEADS


def _mask(masker, b: int = 16, seed: int = 0):
    return masker(b, len(masker.leads), 30, torch.Generator().manual_seed(seed))


def test_time_and_lead_masks_have_the_configured_sizes():
    m = _mask(SpatioTemporalDualMasker(STANDARD_LEADS, time_ratio=0.5, lead_ratio=0.5))
    assert m.keep_leads.shape == (16, 6) and m.keep_time.shape == (16, 6, 15)
    assert m.masked.shape == (16, 12, 30)
    assert m.masked.float().mean().item() == pytest.approx(0.75)


def test_masked_leads_are_fully_masked_and_visible_leads_share_the_time_mask():
    m = _mask(SpatioTemporalDualMasker(STANDARD_LEADS, time_ratio=0.4, lead_ratio=0.25))
    for s in range(16):
        visible = set(m.keep_leads[s].tolist())
        assert len(visible) == 9
        for lead in range(12):
            if lead not in visible:
                assert m.masked[s, lead].all()
        rows = m.masked[s, sorted(visible)]
        assert (rows == rows[0]).all()                 # the same time patches hidden in every lead
        assert rows[0].sum().item() == 12              # round(0.4 * 30)
        assert torch.equal(~rows[0], torch.zeros(30, dtype=torch.bool).index_fill(0, m.keep_time[s, 0], True))
    # hidden time positions differ between samples
    assert any(not torch.equal(m.keep_time[0, 0], m.keep_time[s, 0]) for s in range(1, 16))


def test_no_hidden_lead_is_a_linear_combination_of_the_visible_ones():
    vec = lead_vectors(STANDARD_LEADS)

    def recoverable(mask, s):
        visible = mask.keep_leads[s].tolist()
        hidden = [j for j in range(12) if j not in visible]
        base = np.linalg.matrix_rank(vec[visible])
        return any(np.linalg.matrix_rank(vec[[*visible, j]]) == base for j in hidden)

    m = _mask(SpatioTemporalDualMasker(STANDARD_LEADS, lead_ratio=0.5), b=64)
    assert not any(recoverable(m, s) for s in range(64))
    # guard: unconstrained lead choice often hides e.g. III while I and II are visible
    free = _mask(SpatioTemporalDualMasker(STANDARD_LEADS, lead_ratio=0.5, break_linear_dependence=False), b=64)
    assert any(recoverable(free, s) for s in range(64))


def test_feasible_sets_follow_the_limb_lead_algebra():
    # 6 hidden of 12: all six limb leads, five limb + one precordial, or all six precordial
    assert len(feasible_lead_masks(STANDARD_LEADS, 6)) == 1 + 6 * 6 + 1
    # limb leads can only be hidden five or six at a time; with 3 hidden, only precordial sets
    sets = feasible_lead_masks(STANDARD_LEADS, 3)
    assert len(sets) == 20 and not sets[:, :6].any()
    # the 8 independent leads: every subset is allowed
    assert len(feasible_lead_masks(INDEPENDENT_LEADS, 3)) == 56
    with pytest.raises(ValueError, match="span"):
        feasible_lead_masks(("I", "II", "III"), 1)


def test_masks_are_deterministic_under_the_generator():
    masker = SpatioTemporalDualMasker(STANDARD_LEADS)
    a, b, c = _mask(masker, seed=1), _mask(masker, seed=1), _mask(masker, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.masked, c.masked)


def test_independent_time_masks_per_lead_when_not_shared():
    m = _mask(SpatioTemporalDualMasker(STANDARD_LEADS, shared_time=False))
    assert any(not torch.equal(m.keep_time[0, 0], m.keep_time[0, j]) for j in range(1, 6))
    assert (m.masked.sum(dim=2)[torch.arange(16)[:, None], m.keep_leads] == 15).all()


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="time_ratio"):
        SpatioTemporalDualMasker(STANDARD_LEADS, time_ratio=1.0)
    with pytest.raises(ValueError, match="leads"):
        SpatioTemporalDualMasker(STANDARD_LEADS)(2, 8, 30, torch.Generator())


def _recoverable_share(tokens: np.ndarray, masked: np.ndarray) -> float:
    """Share of hidden (lead, time-patch) tokens that the visible tokens at the same time patch
    determine exactly: least squares of the hidden segment on the visible leads' segments leaves a
    relative residual under 1e-3. tokens (B, L, T, P); masked (B, L, T) bool."""
    recovered = total = 0
    for s, t in itertools.product(range(masked.shape[0]), range(masked.shape[2])):
        visible = np.flatnonzero(~masked[s, :, t])
        for j in np.flatnonzero(masked[s, :, t]):
            total += 1
            if visible.size:
                a, y = tokens[s, visible, t].T, tokens[s, j, t]
                coef = np.linalg.lstsq(a, y, rcond=None)[0]
                recovered += np.linalg.norm(a @ coef - y) < 1e-3 * np.linalg.norm(y)
    return recovered / total


def test_stdm_breaks_the_linear_lead_dependencies_of_a_real_12_lead_signal():
    """The claim: STDM hides what the visible leads determine, so no hidden token can be rebuilt by
    lead algebra. Checked on signals (the synthetic generator derives III, aVR, aVL, aVF from I and
    II as a real ECG does), not on `lead_vectors`: per-token random masking at the same 75 % and
    STDM without the span constraint leave many hidden tokens exactly recoverable; STDM none."""
    from medssl.ecg.synthetic import DEFAULT_SITES, generate_signals

    x, _ = generate_signals(6, DEFAULT_SITES[0], 0, duration_s=10.0)
    n_time = 20
    tokens = x[..., : n_time * (x.shape[-1] // n_time)].reshape(6, 12, n_time, -1).astype(np.float64)
    stdm = SpatioTemporalDualMasker(STANDARD_LEADS)(6, 12, n_time, torch.Generator().manual_seed(0)).masked.numpy()
    assert stdm.mean() == pytest.approx(0.75)
    assert _recoverable_share(tokens, stdm) == 0.0
    per_token = (torch.rand(6, 12 * n_time, generator=torch.Generator().manual_seed(0)).argsort(1)
                 < int(0.75 * 12 * n_time)).reshape(6, 12, n_time).numpy()
    assert _recoverable_share(tokens, per_token) > 0.1            # ST-MEM-style masking leaks (~18 %)
    free = SpatioTemporalDualMasker(STANDARD_LEADS, break_linear_dependence=False)
    assert _recoverable_share(tokens, free(6, 12, n_time, torch.Generator().manual_seed(0)).masked.numpy()) > 0.05


def test_stdm_hides_whole_leads_and_whole_time_spans_at_the_stated_ratios():
    """Over many draws: exactly round(lead_ratio * 12) whole leads and round(time_ratio * T) whole
    time patches (hidden in every lead) per sample, and every lead set the masker may draw is drawn
    about equally often (uniform over the feasible sets)."""
    masker = SpatioTemporalDualMasker(STANDARD_LEADS, time_ratio=0.3, lead_ratio=0.5)
    m = masker(4000, 12, 20, torch.Generator().manual_seed(3)).masked
    whole_leads, whole_times = m.all(dim=2), m.all(dim=1)
    assert (whole_leads.sum(1) == 6).all() and (whole_times.sum(1) == 6).all()
    # every hidden token is in a hidden lead or a hidden time patch: nothing else is masked
    assert torch.equal(m, whole_leads[:, :, None] | whole_times[:, None, :])
    sets = masker.lead_sets
    counts = (whole_leads[:, None, :] == sets[None]).all(-1).sum(0).float()
    assert counts.sum() == 4000 and counts.min() > 0
    assert (counts / counts.mean() - 1).abs().max() < 0.45          # 38 sets, ~105 draws each
    # time positions are uniform: each patch hidden in about 30 % of samples
    assert (whole_times.float().mean(0) - 0.3).abs().max() < 0.04
