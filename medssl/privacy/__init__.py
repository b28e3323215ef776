"""Membership-inference audits for medssl encoders.

Membership is a property of a *subject*: attacks score record windows
(:mod:`medssl.privacy.signals`, :mod:`medssl.privacy.attacks`), scores are aggregated per
subject (:mod:`medssl.privacy.aggregate`) and evaluated at low false-positive rates with
subject-level confidence intervals (:mod:`medssl.privacy.metrics`). Context: Wang et al. 2026,
"Membership Inference Attacks Expose Participation Privacy in ECG Foundation Encoders".
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_audit"]


def __getattr__(name: str) -> Any:
    """``load_audit`` (:mod:`medssl.privacy.tables`) is imported on first use (no pandas import before)."""
    if name == "load_audit":
        from medssl.privacy.tables import load_audit

        return load_audit
    raise AttributeError(f"module 'medssl.privacy' has no attribute {name!r}")
