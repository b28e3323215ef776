import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error

from medssl.bench.metrics import bootstrap_ci
from medssl.bench.regression_metrics import mae, pearson_r


def test_mae_and_pearson_match_sklearn_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 257):
        t = rng.normal(50, 10, n)
        p = t + rng.normal(0, 5, n)
        assert mae(t, p) == pytest.approx(mean_absolute_error(t, p), abs=1e-12)
        assert pearson_r(t, p) == pytest.approx(pearsonr(t, p).statistic, abs=1e-12)
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_column_vectors_accepted():
    t = np.arange(5.0)
    assert mae(t[:, None], (t + 2)[:, None]) == pytest.approx(2.0)
    assert pearson_r(t[:, None], 2 * t) == pytest.approx(1.0)


def test_pearson_nan_for_constant_or_tiny_input():
    assert np.isnan(pearson_r([1, 2, 3], [0.1, 0.1, 0.1]))  # constant prediction
    assert np.isnan(pearson_r([0.3] * 7, np.arange(7)))  # constant truth (mean residues ~1e-17)
    assert np.isnan(pearson_r([1.0], [2.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(pearsonr([1, 2, 3], [0.1, 0.1, 0.1]).statistic)  # same convention as scipy


def test_bad_input_raises():
    with pytest.raises(ValueError):
        mae([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        pearson_r([1, np.nan], [1, 2])
    with pytest.raises(ValueError):
        mae(np.ones((3, 2)), np.ones((3, 2)))


def test_usable_with_bootstrap_ci():
    rng = np.random.default_rng(1)
    n = 120
    t = rng.normal(60, 8, n)
    p = t + rng.normal(0, 4, n)
    groups = np.arange(n)
    point, lo, hi = bootstrap_ci(mae, t, p, groups, n_resamples=300, seed=0)
    assert point == pytest.approx(mae(t, p))
    assert lo < point < hi
    point, lo, hi = bootstrap_ci(pearson_r, t, p, groups, n_resamples=300, seed=0)
    assert 0.0 < lo < point < hi <= 1.0
    # constant predictions: every resample is NaN and dropped -> NaN interval, no crash
    point, lo, hi = bootstrap_ci(pearson_r, t, np.full(n, 3.0), groups, n_resamples=50, seed=0)
    assert np.isnan(point) and np.isnan(lo) and np.isnan(hi)
