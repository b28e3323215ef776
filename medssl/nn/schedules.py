"""Per-step schedules: learning rate (warm-up + cosine) and EMA momentum."""

from __future__ import annotations

import math


def momentum_schedule(step: int, total_steps: int, start: float = 0.996, end: float = 1.0) -> float:
    """Linear increase from `start` to `end` over training (the I-JEPA / ECG-JEPA schedule)."""
    if total_steps <= 1:
        return end
    frac = min(max(step / (total_steps - 1), 0.0), 1.0)
    return start + (end - start) * frac


def cosine_schedule(step: int, total_steps: int, base: float, warmup_steps: int = 0, final: float = 0.0) -> float:
    """Linear warm-up to `base`, then cosine decay to `final`."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * progress))
