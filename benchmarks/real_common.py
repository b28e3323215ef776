"""Shared parts of the real-data benchmark scripts (`real_*.py`): timing, the training/evaluation
cohorts as one manifest, merging several `run_benchmark` results into one results.json +
report.html, and the summary table. Nothing here knows a data set's names, counts or IDs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from stopwatch import Stopwatch, cpu_seconds  # noqa: F401  (re-exported for the real_* scripts)

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real"
PART = "bench_part"  # manifest column written by these scripts: train | held-out | eval-data

def machine_line() -> str:
    """The summary's machine line: CPU, cores, torch and its threads, and the precision (every arm
    of these scripts runs in float32)."""
    import os
    import platform

    import torch

    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), float32")


def logger(tag: str):
    def log(msg: str) -> None:
        print(f"[{tag}] {msg}", file=sys.stderr, flush=True)
    return log


def heldout_split(rows: list[dict], target: str | None, fraction: float, seed: int,
                  regression: bool = False, label_names: list[str] | None = None) -> set[str]:
    """Subject ids of the training part: ``1 - fraction`` of the subjects, stratified on the target
    (regression: quintile bins of ``target``; classification: each subject's rarest label of
    ``label_names``) with :func:`medssl.bench.protocols.label_fraction_draw`; subjects without a
    target are spread by the same draw as their own stratum."""
    from medssl.bench.protocols import label_fraction_draw
    from medssl.data.manifest import split_labels

    subjects = np.array([r["subject_id"] for r in rows])
    if regression:
        y = np.array([_float(r.get(target)) for r in rows])
        have = np.isfinite(y)
        train = set()
        if have.any():
            d = label_fraction_draw(subjects[have], y[have], 1 - fraction, seed, regression=True)
            train |= set(d.subjects.tolist())
        if (~have).any():
            d = label_fraction_draw(subjects[~have], np.zeros(int((~have).sum())), 1 - fraction, seed, regression=True)
            train |= set(d.subjects.tolist())
        return train
    names = list(label_names or [])
    Y = np.array([[lab in split_labels(r.get("labels", "")) for lab in names] for r in rows], dtype=bool)
    Y = Y.reshape(len(rows), len(names))
    return set(label_fraction_draw(subjects, Y, 1 - fraction, seed).subjects.tolist())


def budget_fractions(budgets: str, n_train: int, log=print) -> list[tuple[str, float]]:
    """``"10,25,all"`` -> [(budget, label fraction of the ``n_train`` training subjects)]; a budget
    of at least ``n_train`` is covered by "all" (said through ``log``)."""
    out = []
    for b in (x.strip() for x in budgets.split(",") if x.strip()):
        if b == "all":
            out.append(("all", 1.0))
        elif int(b) < n_train:
            out.append((b, int(b) / n_train))
        else:
            log(f"budget {b} >= the {n_train} labelled training subjects: covered by 'all'")
    return out


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def tag_cohorts(data_rows: list[dict], eval_rows: list[dict] | None, train_subjects: set[str] | None) -> list[dict]:
    """One manifest: the --data rows (PART "train", or "held-out" for subjects outside
    ``train_subjects``) and the --eval-data rows (PART "eval-data", record ids prefixed so they
    cannot collide). A subject id present in both cohorts is refused: it would leak."""
    out = []
    for r in data_rows:
        part = "train" if train_subjects is None or r["subject_id"] in train_subjects else "held-out"
        out.append({**r, PART: part})
    if eval_rows:
        shared = {r["subject_id"] for r in data_rows} & {r["subject_id"] for r in eval_rows}
        if shared:
            raise SystemExit(f"--eval-data shares {len(shared)} subject id(s) with --data: the evaluation cohort must "
                             f"hold other subjects")
        out += [{**r, "record_id": f"eval-data/{r['record_id']}", PART: "eval-data"} for r in eval_rows]
    return out


def merge_results(docs: dict[str, dict], out: Path, title: str, extra: dict | None = None) -> dict:
    """One results.json (the `medssl bench` schema) + report.html from several `run_benchmark`
    results of the same task on the same draws (``docs``: run name -> results dict): records,
    aggregates, gaps, comparisons, errors and notes concatenated, Holm's adjustment redone over
    every comparison of every run, configs under ``config`` by run name, rankings dropped (they are
    per run, in each run's own results.json)."""
    from medssl.bench.report import _jsonable, adjust_comparisons, make_report, render_html
    from medssl.io import atomic_write_text

    first = next(iter(docs.values()))
    merged = {"schema_version": first["schema_version"], "title": title, "created": first["created"],
              "machine": first["machine"], "config": {name: d["config"] for name, d in docs.items()},
              "encoders": {}, "datasets": first["datasets"]}
    for key in ("records", "aggregates", "gaps", "comparisons", "errors", "notes"):
        merged[key] = [x for d in docs.values() for x in d[key]]
    for d in docs.values():
        merged["encoders"].update(d["encoders"])
    adjust_comparisons(merged["comparisons"])
    merged["p_adjustment"] = ("Holm (family: all comparisons of every run merged here: "
                              + ", ".join(docs) + "); p_holm beside each raw p_value")
    merged["ranking"] = []
    merged["timings_s"] = {f"{name}.{k}": v for name, d in docs.items() for k, v in d["timings_s"].items()}
    merged["runs"] = {name: str(Path(d["paths"]["json"]).relative_to(out)) if "paths" in d else name
                      for name, d in docs.items()}
    if extra:
        merged.update(extra)
    merged = _jsonable(merged)
    atomic_write_text(out / "results.json", json.dumps(merged, indent=2, allow_nan=False, default=str) + "\n")
    report = make_report(merged["records"] + merged["aggregates"] + merged["comparisons"], title=title,
                         config={"runs": merged["config"], "timings_s": merged["timings_s"],
                                 **({"pipeline": extra} if extra else {})}, notes=merged["notes"])
    atomic_write_text(out / "report.html", render_html(report))
    return merged


def _f(v, digits=3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _p(v) -> str:
    return "n/a" if v is None else ("<0.001" if v < 0.001 else f"{v:.3f}")


def _setting(a: dict, n_train: dict) -> str:
    if a.get("shots") is not None:
        return f"k={a['shots']}"
    return f"{a['label_fraction']:.3g} ({n_train.get((a['protocol'], a['label_fraction']), '?')} subj.)"


def summary_markdown(doc: dict, metric: str, digits: int = 3, task: str | None = None,
                     comparisons: bool = True) -> str:
    """Markdown: one line per protocol x setting x domain x encoder (``metric``: mean [95% CI],
    seeds), then every comparison of that metric with its raw and Holm-adjusted p-values (only
    ``task``'s rows when given)."""
    n_train = {}
    for r in doc["records"]:
        key = (r["protocol"], r["label_fraction"])
        if task is not None and r["task"] != task:
            continue
        n_train[key] = r["n_train_subjects"] if key not in n_train else n_train[key]
    lines = ["| protocol | setting | domain | arm | " + metric + " mean [95% CI] | seeds | eval subjects |",
             "|---|---|---|---|---|---|---|"]
    for a in doc["aggregates"]:
        if a["metric"] != metric or (task is not None and a["task"] != task):
            continue
        lines.append(f"| {a['protocol']} | {_setting(a, n_train)} | {a['domain']} | {a['encoder']} | "
                     f"{_f(a['mean'], digits)} [{_f(a['ci_low'], digits)}, {_f(a['ci_high'], digits)}] | "
                     f"{a['n_seeds']} | {a['n_test_subjects']} |")
    if not comparisons:
        return "\n".join(lines)
    lines += ["", "| protocol | setting | domain | a vs b | delta (a - b) [95% CI] | p | p (Holm) |",
              "|---|---|---|---|---|---|---|"]
    for c in doc["comparisons"]:
        if c["metric"] != metric or (task is not None and c["task"] != task):
            continue
        lines.append(f"| {c['protocol']} | {_setting(c, n_train)} | {c['domain']} | {c['encoder_a']} vs "
                     f"{c['encoder_b']} | {_f(c['delta'], digits)} [{_f(c['ci_low'], digits)}, "
                     f"{_f(c['ci_high'], digits)}] | {_p(c['p_value'])} | {_p(c.get('p_holm'))} |")
    return "\n".join(lines)
