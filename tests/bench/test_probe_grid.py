"""The batched probe grid solves scikit-learn's logistic regression, and the probe built on it
agrees with the one-model-at-a-time path."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from medssl.bench import fewshot
from medssl.bench.probe_grid import fit_logistic_heads


def test_heads_match_sklearn_for_every_C_and_row_subset():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 12))
    y = X[:, 0] + 0.7 * rng.normal(size=50) > 0
    Cs = np.array([0.01, 1.0, 100.0, 1.0])
    w = np.ones((4, 50))
    w[3, 30:] = 0  # the last head trains on the first 30 rows only
    coef, b = fit_logistic_heads(X, np.repeat(y[None], 4, axis=0), w, Cs)
    for h, C in enumerate(Cs):
        rows = w[h] > 0
        ref = LogisticRegression(C=C, max_iter=10_000, tol=1e-12).fit(X[rows], y[rows])
        np.testing.assert_allclose(coef[h], ref.coef_[0], atol=1e-4)
        assert b[h] == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_separable_data_stays_finite():
    X = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    coef, b = fit_logistic_heads(X, np.array([[False, False, True, True]]), np.ones((1, 4)), np.array([1e4]))
    assert np.isfinite(coef).all() and coef[0, 0] > 0


@pytest.mark.parametrize("groups", [None, "subjects"])
def test_batched_probe_equals_the_sklearn_path(monkeypatch, groups):
    rng = np.random.default_rng(1)
    n, d = 90, 16
    subjects = np.repeat(np.arange(45), 2)
    X = rng.normal(size=(n, d))
    Y = np.stack([X[:, 0] + rng.normal(size=n) > 0.5, X[:, 1] - X[:, 2] + rng.normal(size=n) > 0,
                  np.zeros(n, bool)], axis=1)  # not separable: lbfgs at its default tolerance is then exact enough
    Xte = rng.normal(size=(20, d))
    g = subjects if groups else None
    batched = fewshot.linear_probe(X, Y, Xte, seed=3, groups=g)
    monkeypatch.setattr(fewshot, "MAX_BATCHED_DIM", 0)
    reference = fewshot.linear_probe(X, Y, Xte, seed=3, groups=g)
    np.testing.assert_allclose(batched, reference, atol=2e-3)
    assert (batched[:, 2] == 0.5).all()  # a class with one value in training is not fitted
