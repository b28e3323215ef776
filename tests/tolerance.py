"""Tolerances of tests that compare numbers, per compute precision.

`make test` runs the suite at medssl's default precision (fp32 on a CPU) and then the tests marked
``precision`` again with ``MEDSSL_PRECISION=bf16``, so the bf16 path is checked on any CPU. A test
that compares floats states both tolerances: ``close(fp32=1e-5, bf16=2e-2)``.
"""

from __future__ import annotations

from medssl.engine.hardware import default_precision


def running_bf16() -> bool:
    """True when medssl's default precision here is bf16 (``MEDSSL_PRECISION=bf16`` on a CPU)."""
    return default_precision("cpu") == "bf16"


def close(fp32: float, bf16: float) -> float:
    """The tolerance for the precision in force."""
    return bf16 if running_bf16() else fp32
