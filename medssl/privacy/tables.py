"""Membership-inference audits as pandas DataFrames (for notebooks).

:func:`load_audit` reads one or several ``audit.json`` files of :func:`medssl.privacy.audit.run_audit`
(or the folders holding them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["load_audit"]

TABLES = ("summary", "tpr", "roc", "scores")


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "audit.json"
    if not p.is_file():
        raise FileNotFoundError(f"no audit.json at {path}")
    return p


def _read(p: Path) -> dict:
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{p} is not JSON: {err}") from None
    if not isinstance(doc, dict) or "auc" not in doc or "attack" not in doc:
        raise ValueError(f"{p} is not a medssl audit.json (no 'auc' or 'attack')")
    return doc


def _f(v):
    """A number, or NaN for null (so rate columns stay numeric)."""
    return float("nan") if v is None else v


def _pair(v) -> tuple:
    return (_f(v[0]), _f(v[1])) if isinstance(v, (list, tuple)) and len(v) == 2 else (_f(None), _f(None))


def _summary(doc: dict) -> dict:
    row = {k: doc.get(k) for k in ("encoder", "method", "threat", "attack", "mode", "aggregate", "n_members",
                                   "n_nonmembers", "n_reference_models", "membership_verified", "auc")}
    row["auc_ci_low"], row["auc_ci_high"] = _pair(doc.get("auc_ci"))
    row["null_low"], row["null_high"] = _pair(doc.get("null_band"))
    row["p_value"] = doc.get("p_value")
    for fpr, t in (doc.get("tpr_at_fpr") or {}).items():
        row[f"tpr@{fpr}"] = _f(t.get("value"))
    m = doc.get("tpr_at_min_fpr") or {}
    row["min_fpr"], row["tpr@min_fpr"] = _f(m.get("fpr")), _f(m.get("value"))
    c = doc.get("control") or {}
    row["control_source"], row["control_auc"] = c.get("source"), c.get("auc")
    d = c.get("difference") or {}
    row["auc_minus_control"], row["diff_ci_low"], row["diff_ci_high"] = d.get("value"), d.get("ci_low"), d.get("ci_high")
    row["split_half_auc"] = (doc.get("null_check") or {}).get("auc")
    row["conclusion"] = doc.get("conclusion")
    row["n_warnings"] = len(doc.get("warnings") or [])
    row["created"] = doc.get("created")
    return row


def load_audit(path: str | Path | Iterable[str | Path], table: str = "summary"):
    """A :class:`pandas.DataFrame` of one or several audits.

    ``path``: an ``audit.json``, its folder, or an iterable of them. ``table``:

    * ``summary`` (default): one row per audit: encoder, method, threat, attack, mode, counts, ``auc``
      with ``auc_ci_low``/``auc_ci_high``, the permutation null band (``null_low``/``null_high``),
      ``p_value``, ``tpr@<fpr>`` (NaN where not estimable), ``tpr@min_fpr`` at ``min_fpr`` = 1/n,
      the control's AUC and ``auc_minus_control`` with its interval, ``split_half_auc``, ``conclusion``;
    * ``tpr``: one row per audit x FPR (the fixed FPRs and the smallest measurable one), with both
      intervals, ``achievable`` and the ``reason`` when it is not;
    * ``roc``: one row per ROC point (``curve``: target, or control where the audit stored it);
    * ``scores``: the per-subject scores (``subject_scores.csv`` beside each audit.json).

    Every row carries ``path`` (the audit.json it came from).
    """
    import pandas as pd

    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise ValueError("no audit given")
    frames, rows = [], []
    for p in map(_resolve, paths):
        doc = _read(p)
        if table == "summary":
            rows.append({"path": str(p), **_summary(doc)})
        elif table == "tpr":
            entries = list((doc.get("tpr_at_fpr") or {}).items())
            if doc.get("tpr_at_min_fpr"):
                entries.append(("min", doc["tpr_at_min_fpr"]))
            for name, t in entries:
                fpr = t.get("fpr") if name == "min" else float(name)
                rows.append({"path": str(p), "fpr": fpr, "smallest_measurable": name == "min",
                             **{k: _f(t.get(k)) for k in ("value", "ci_low", "ci_high", "cp_ci_low", "cp_ci_high")},
                             **{k: t.get(k) for k in ("achievable", "n_false_positives", "reason")}})
        elif table == "roc":
            curves = [("target", doc.get("roc") or {})]
            if (doc.get("control") or {}).get("roc"):
                curves.append(("control", doc["control"]["roc"]))
            for name, roc in curves:
                for f, t in zip(roc.get("fpr", []), roc.get("tpr", [])):
                    rows.append({"path": str(p), "curve": name, "fpr": f, "tpr": t})
        else:
            scores = p.parent / (doc.get("scores_file") or "subject_scores.csv")
            if not scores.is_file():
                raise FileNotFoundError(f"{scores} (the per-subject scores of {p}) is missing")
            frames.append(pd.read_csv(scores).assign(path=str(p)))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame.from_records(rows)
    frame.attrs.update({"table": table})
    return frame
