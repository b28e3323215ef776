"""Benchmark results as pandas DataFrames (for notebooks).

:func:`load_results` reads ``results.json`` of ``medssl bench`` and ``medssl demo``
(:mod:`medssl.bench.runner`), or the folder holding one, and returns one of its tables, one row
per entry, list-valued fields kept as Python lists.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["TABLES", "load_results"]

TABLES = ("aggregates", "records", "comparisons", "gaps", "errors", "ranking")  # keys of results.json
RESULTS_FILE = "results.json"


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        if (p / RESULTS_FILE).is_file():
            return p / RESULTS_FILE
        raise FileNotFoundError(f"{p} holds no {RESULTS_FILE}")
    if not p.is_file():
        raise FileNotFoundError(f"no such results file: {p}")
    return p


def load_results(path: str | Path, table: str = "aggregates"):
    """A :class:`pandas.DataFrame` of one table of a benchmark's results.

    ``path``: ``results.json`` or its folder. ``table``: ``aggregates`` (one row
    per encoder x task x protocol x setting x domain x metric: ``mean``, ``ci_low``, ``ci_high``, ...;
    the default), ``records`` (per seed), ``comparisons`` (paired, with ``p_value`` and ``p_holm``),
    ``gaps`` (reference domain minus each other, with its interval), ``errors``, or ``ranking``
    (one row per domain x encoder: ``position``, ``mean_rank``). A table the file lacks is an empty
    frame; an unknown table name is a ValueError listing the known ones. ``null`` values are NaN in
    numeric columns; ``shots`` keeps ``"all"`` beside integers (object column).
    """
    import pandas as pd

    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    p = _resolve(path)
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not JSON: {err}") from None
    if not isinstance(doc, dict) or "aggregates" not in doc:
        raise ValueError(f"{p} is not a medssl results.json (no 'aggregates')")
    rows = doc.get(table) or []
    if table == "ranking":
        rows = [{"domain": block.get("domain"), "n_tasks": block.get("n_tasks"), **r}
                for block in rows for r in block.get("rows", [])]
    frame = pd.DataFrame.from_records([{k: v for k, v in r.items() if k != "kind"} for r in rows])
    frame.attrs.update({"source": str(p), "table": table, "title": doc.get("title"), "created": doc.get("created")})
    return frame
