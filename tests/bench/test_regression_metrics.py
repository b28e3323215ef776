"""The benchmark's regression metrics (column kernels of :mod:`medssl.bench.column_metrics`, as
``medssl bench`` scores regression tasks): MAE and Pearson r against scikit-learn and scipy."""

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error

from medssl.bench.column_metrics import METRICS, column_mae, column_pearson_r


def _mae(t, p) -> float:
    return float(column_mae(np.asarray(t, float).reshape(-1, 1), np.asarray(p, float).reshape(-1, 1))[0])


def _r(t, p) -> float:
    return float(column_pearson_r(np.asarray(t, float).reshape(-1, 1), np.asarray(p, float).reshape(-1, 1))[0])


def test_mae_and_pearson_match_sklearn_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 257):
        t = rng.normal(50, 10, n)
        p = t + rng.normal(0, 5, n)
        assert _mae(t, p) == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
        assert _r(t, p) == pytest.approx(pearsonr(t, p).statistic, abs=1e-12)
    assert _mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert _r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_columns_are_scored_independently():
    rng = np.random.default_rng(2)
    T = rng.normal(size=(40, 3))
    P = T + rng.normal(0, 0.5, size=(40, 3))
    for k in range(3):
        assert column_mae(T, P)[k] == pytest.approx(mean_absolute_error(T[:, k], P[:, k]))
        assert column_pearson_r(T, P)[k] == pytest.approx(pearsonr(T[:, k], P[:, k]).statistic)


def test_pearson_nan_for_constant_or_tiny_input():
    assert np.isnan(_r([1, 2, 3], [0.1, 0.1, 0.1]))  # constant prediction
    assert np.isnan(_r([0.3] * 7, np.arange(7)))  # constant truth (mean residues ~1e-17)
    assert np.isnan(_r([1.0], [2.0]))
    assert np.isnan(_mae(np.zeros(0), np.zeros(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(pearsonr([1, 2, 3], [0.1, 0.1, 0.1]).statistic)  # same convention as scipy


def test_directions():
    assert METRICS["mae"].higher_is_better is False and METRICS["pearson_r"].higher_is_better is True


def test_mismatched_rows_raise():
    with pytest.raises(ValueError):
        column_mae(np.ones((2, 1)), np.ones((3, 1)))
