"""Progress bars with time estimates (tqdm) for medssl's long loops, quiet when not a terminal.

``progress(iterable, desc=..., total=..., unit=...)`` wraps an iterable in a tqdm bar on stderr
(elapsed, rate, time left). The bar is shown when stderr is a terminal, never in a pipe, a log
file or a test; ``set_progress(False)`` (``medssl -q``) turns bars off, ``set_progress(True)`` or
``MEDSSL_PROGRESS=1`` forces them on, ``MEDSSL_PROGRESS=0`` off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "progress_enabled", "set_progress"]

T = TypeVar("T")
_ENABLED: bool | None = None  # None: follow $MEDSSL_PROGRESS, else whether stderr is a terminal


def set_progress(enabled: bool | None) -> None:
    """True: always show bars; False: never; None: when stderr is a terminal (the default)."""
    global _ENABLED
    _ENABLED = enabled


def progress_enabled() -> bool:
    import sys

    if _ENABLED is not None:
        return _ENABLED
    env = os.environ.get("MEDSSL_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
             leave: bool = False) -> Iterator[T] | Iterable[T]:
    """``iterable`` with a tqdm bar (description, count, elapsed, time left) when enabled, else as is."""
    if not progress_enabled():
        return iterable
    from tqdm.auto import tqdm

    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True)
