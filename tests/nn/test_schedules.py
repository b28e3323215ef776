"""Tests of medssl.nn.schedules."""

from __future__ import annotations

import math

import pytest

from medssl.nn.schedules import cosine_schedule, momentum_schedule


def test_cosine_schedule_warmup_peak_and_final():
    total, warm, base, final = 100, 10, 1e-3, 1e-5
    lrs = [cosine_schedule(s, total, base, warm, final) for s in range(total + 5)]
    # Linear warm-up, strictly increasing, reaching base at the end of warm-up.
    assert lrs[0] == pytest.approx(base / warm)
    assert all(a < b for a, b in zip(lrs[:warm], lrs[1:warm]))
    assert lrs[warm - 1] == pytest.approx(base)
    assert lrs[warm] == pytest.approx(base)
    assert max(lrs) == pytest.approx(base)
    # Cosine decay: monotone, half way at the middle, `final` at and beyond the end.
    decay = lrs[warm:total + 1]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(final + 0.5 * (base - final) * (1 + math.cos(math.pi * 0.5)))
    assert lrs[total] == pytest.approx(final)
    assert lrs[-1] == pytest.approx(final)
    assert min(lrs) >= final - 1e-15


def test_cosine_schedule_without_warmup():
    assert cosine_schedule(0, 10, 2.0) == pytest.approx(2.0)
    assert cosine_schedule(10, 10, 2.0) == pytest.approx(0.0)
    assert cosine_schedule(5, 10, 2.0) == pytest.approx(1.0)


def test_momentum_schedule_endpoints_and_linearity():
    total = 11
    ms = [momentum_schedule(s, total, 0.996, 1.0) for s in range(total)]
    assert ms[0] == pytest.approx(0.996)
    assert ms[-1] == pytest.approx(1.0)
    assert ms[5] == pytest.approx(0.998)
    assert all(a < b for a, b in zip(ms, ms[1:]))
    assert momentum_schedule(50, total) == pytest.approx(1.0)  # clamped past the end
    assert momentum_schedule(-3, total) == pytest.approx(0.996)
    assert momentum_schedule(0, 1) == 1.0
