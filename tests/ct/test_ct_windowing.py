"""CT windows: preset bounds, clipping and mapping to [0, 1], windows as channels."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.ct.windowing import (
    apply_window,
    window_bounds,
    window_channels,
    window_name,
)


def test_preset_bounds():
    assert window_bounds("lung") == (-1350.0, 150.0)  # W1500 / L-600
    assert window_bounds("mediastinum") == (-125.0, 225.0)  # W350 / L50
    assert window_bounds("bone") == (-500.0, 1300.0)  # W1800 / L400
    assert window_bounds({"width": 400, "level": 40}) == (-160.0, 240.0)
    assert window_bounds([-1000, 400]) == (-1000.0, 400.0)
    assert window_name([-1000, 400]) == "hu[-1000,400]" and window_name("bone") == "bone"


def test_values_clip_and_scale():
    hu = np.array([-2000.0, -1350.0, -600.0, 150.0, 3000.0])
    np.testing.assert_allclose(apply_window(hu, "lung"), [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(apply_window(np.array([50.0, -125.0, 225.0]), "mediastinum"), [0.5, 0.0, 1.0])
    assert apply_window(hu, "lung").dtype == np.float32


def test_channels_in_order():
    hu = np.full((2, 3, 4), 400.0)
    ch = window_channels(hu, ["lung", "mediastinum", "bone"])
    assert ch.shape == (3, 2, 3, 4)
    np.testing.assert_allclose(ch[:, 0, 0, 0], [1.0, 1.0, 0.5])


def test_bad_windows_are_named():
    with pytest.raises(ValueError, match="unknown CT window 'lungs'"):
        window_bounds("lungs")
    with pytest.raises(ValueError, match="upper bound"):
        window_bounds([100, -100])
    with pytest.raises(ValueError, match="width"):
        window_bounds({"width": 0, "level": 0})
