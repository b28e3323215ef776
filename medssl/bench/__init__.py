"""Few-shot and out-of-domain benchmarks: tasks, protocols, probes, metrics with intervals, reports.

``load_results`` (:mod:`medssl.bench.tables`) is imported on first use, so ``import medssl.bench``
does not import pandas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_results"]


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from medssl.bench.tables import load_results

        return load_results
    raise AttributeError(f"module 'medssl.bench' has no attribute {name!r}")
