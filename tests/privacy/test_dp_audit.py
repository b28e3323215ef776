"""The one-run empirical epsilon lower bound (Steinke, Nasr, Jagielski 2023) on simulations of known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medssl.privacy.dp_audit import dp_check, empirical_epsilon_lower_bound, epsilon_from_guesses


def test_epsilon_from_guesses_inverts_the_binomial_tail():
    eps = epsilon_from_guesses(100, 90, beta=0.05)
    p = 1 / (1 + math.exp(-eps))
    assert stats.binom.sf(89, 100, p) == pytest.approx(0.05, abs=1e-6)
    assert epsilon_from_guesses(100, 50) == 0.0  # chance accuracy: no evidence
    assert epsilon_from_guesses(100, 100) > epsilon_from_guesses(100, 90) > epsilon_from_guesses(100, 70) > 0
    assert epsilon_from_guesses(20, 20) < math.log(20) + 1  # few guesses cannot show a large epsilon


def _randomised_response(rng, eps, n):
    """An eps-DP 'training' of n subjects: each member's score says 'member' with prob e^eps/(1+e^eps)."""
    member = rng.random(n) < 0.5
    p = 1 / (1 + math.exp(-eps))
    says = np.where(rng.random(n) < p, member, ~member)
    return says + 0.01 * rng.random(n), member  # ties broken at random


def test_the_bound_stays_below_the_true_epsilon_and_grows_with_it():
    rng = np.random.default_rng(0)
    for eps in (0.5, 2.0, 4.0):
        bounds = [empirical_epsilon_lower_bound(*_randomised_response(rng, eps, 1000))["epsilon_lower"]
                  for _ in range(40)]
        # a (1 - beta) lower bound: above the truth in at most ~beta of the runs
        assert np.mean(np.array(bounds) > eps) <= 0.1, (eps, bounds)
    weak = np.median([empirical_epsilon_lower_bound(*_randomised_response(rng, 0.5, 1000))["epsilon_lower"]
                      for _ in range(10)])
    strong = np.median([empirical_epsilon_lower_bound(*_randomised_response(rng, 4.0, 1000))["epsilon_lower"]
                        for _ in range(10)])
    assert strong > 2.0 > weak


def test_dp_check_reads_the_card_and_flags_a_bound_above_the_accountant():
    rng = np.random.default_rng(1)
    scores, member = _randomised_response(rng, 5.0, 2000)  # a model leaking like epsilon 5
    assert dp_check({"privacy": []}, scores, member) is None
    card = {"privacy": [{"kind": "dp_sgd", "epsilon": 1.0, "delta": 1e-5}]}  # ... that claims epsilon 1
    check = dp_check(card, scores, member)
    assert check["empirical"]["epsilon_lower"] > 1.0 and "EXCEEDS" in check["verdict"]
    honest = dp_check({"privacy": [{"kind": "dp_sgd", "epsilon": 8.0, "delta": 1e-5}]}, scores, member)
    assert "below the accountant" in honest["verdict"]
