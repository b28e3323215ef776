"""CT intensity windows: Hounsfield units -> [0, 1] display ranges, several windows as channels.

A window of width W and level (centre) L keeps [L - W/2, L + W/2] HU, clips outside and maps
linearly onto [0, 1]. The presets are the common radiology display settings listed in
Radiopaedia's "Windowing (CT)" article (radiopaedia.org/articles/windowing-ct); sites and papers
vary them by a few hundred HU, so give explicit bounds where a paper fixes its own.

  lung          W1500 / L-600   -> [-1350, 150] HU
  mediastinum   W350  / L50     -> [-125, 225] HU
  bone          W1800 / L400    -> [-500, 1300] HU
  soft_tissue   W400  / L40     -> [-160, 240] HU
  brain         W80   / L40     -> [0, 80] HU
  liver         W150  / L30     -> [-45, 105] HU
  abdomen       W350  / L50     (the mediastinum window under its abdominal name)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

WINDOWS: dict[str, tuple[float, float]] = {  # name -> (width, level) HU
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
    "soft_tissue": (400.0, 40.0),
    "brain": (80.0, 40.0),
    "liver": (150.0, 30.0),
    "abdomen": (350.0, 50.0),
}

# A window given as a preset name, (lower, upper) HU bounds, or {"width": W, "level": L}.
WindowSpec = Union[str, Sequence[float], Mapping[str, float]]


def window_bounds(window: WindowSpec) -> tuple[float, float]:
    """(lower, upper) HU of a window given by name, bounds or width/level."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; known: {', '.join(WINDOWS)} "
                             f"(or give [lower, upper] HU or {{width, level}})")
        width, level = WINDOWS[window]
    elif isinstance(window, Mapping):
        if set(window) != {"width", "level"}:
            raise ValueError(f"window {dict(window)!r}: expected keys width and level")
        width, level = float(window["width"]), float(window["level"])
    else:
        lower, upper = (float(v) for v in window)
        if not upper > lower:
            raise ValueError(f"window [{lower:g}, {upper:g}] HU: upper bound must exceed lower")
        return lower, upper
    if width <= 0:
        raise ValueError(f"window width {width:g} HU must be positive")
    return level - width / 2.0, level + width / 2.0


def window_name(window: WindowSpec) -> str:
    """A short name for a window: the preset name, or 'hu[lower,upper]'."""
    if isinstance(window, str):
        return window
    lower, upper = window_bounds(window)
    return f"hu[{lower:g},{upper:g}]"


def apply_window(hu: np.ndarray, window: WindowSpec) -> np.ndarray:
    """`hu` (any shape, HU) clipped to the window and mapped to [0, 1], float32."""
    lower, upper = window_bounds(window)
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lower)) / np.float32(upper - lower)
    return np.clip(out, 0.0, 1.0)


def window_channels(hu: np.ndarray, windows: Sequence[WindowSpec]) -> np.ndarray:
    """(C, *hu.shape) float32 in [0, 1]: one channel per window, in the order given."""
    if not windows:
        raise ValueError("no windows given")
    return np.stack([apply_window(hu, w) for w in windows])
