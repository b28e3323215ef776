"""Benchmark tasks: targets, training rows and evaluation domains, and the subject draws of the
few-shot and label-fraction settings (the same for every encoder, so comparisons are paired)."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from medssl.bench.config import BenchConfig, BenchConfigError, TaskEntry
from medssl.bench.fewshot import FewShotWarning, few_shot_draw
from medssl.bench.protocols import label_fraction_draw
from medssl.data.manifest import split_labels


@dataclass
class TaskData:
    task: TaskEntry
    record_ids: np.ndarray  # (N,)
    subjects: np.ndarray  # (N,)
    Y: np.ndarray  # (N, C) bool; (N, 1) float for regression; segmentation: (N, 1) float, 0 (the masks
    # are read with the inputs, by record, from the manifest's `mask_path`)
    class_names: list[str]
    train: np.ndarray  # (N,) bool
    domains: dict[str, np.ndarray]  # name -> (N,) bool


def matches(rows: list[dict], filt: dict[str, tuple[str, ...]]) -> np.ndarray:
    return np.array([all(str(r.get(c, "")) in vals for c, vals in filt.items()) for r in rows], dtype=bool)


def prepare_task(cfg: BenchConfig, i: int, t: TaskEntry, rows: list[dict], notes: list[str]) -> TaskData:
    where = f"{cfg.source}: tasks[{i}] ({t.name})"
    columns = set().union(*(r.keys() for r in rows))
    for part, filt in [("train", t.train)] + [(f"eval.{d}", f) for d, f in t.eval.items()]:
        for col in filt:
            if col not in columns:
                raise BenchConfigError(f"{where}.{part}: column {col!r} not in dataset {t.dataset!r} "
                                       f"(columns: {', '.join(sorted(columns))})")
    keep = np.ones(len(rows), dtype=bool)
    if t.kind == "segmentation":
        keep = np.array([bool(r.get("mask_path")) for r in rows])
        Y, names = np.zeros((len(rows), 1)), ["mask"]
        dropped = "without a mask_path"
    elif t.kind == "regression":
        if t.column not in columns:
            raise BenchConfigError(f"{where}.column: {t.column!r} not in dataset {t.dataset!r}")
        y = np.full(len(rows), np.nan)
        for j, r in enumerate(rows):
            try:
                y[j] = float(r.get(t.column))
            except (TypeError, ValueError):
                pass
        keep = np.isfinite(y)
        Y, names = y[:, None], [t.column]
        dropped = "without a numeric value"
    else:
        names = list(t.labels)
        index = {c: k for k, c in enumerate(names)}
        Y = np.zeros((len(rows), len(names)), dtype=bool)
        for j, r in enumerate(rows):
            for lab in split_labels(r.get("labels", "")):
                if lab in index:
                    Y[j, index[lab]] = True
        absent = [c for c, present in zip(names, Y.any(axis=0)) if not present]
        if absent:
            raise BenchConfigError(f"{where}.labels: {', '.join(map(repr, absent))} never occur(s) in the labels "
                                   f"of dataset {t.dataset!r}")
        if t.kind == "multiclass":
            keep = Y.sum(axis=1) == 1
        dropped = "without exactly one of the classes"
    train = matches(rows, t.train) & keep
    domains = {d: matches(rows, f) & keep for d, f in t.eval.items()}
    used = train | np.logical_or.reduce(list(domains.values()))
    n_drop = int((~keep & (matches(rows, t.train) | np.logical_or.reduce(
        [matches(rows, f) for f in t.eval.values()]))).sum())
    if n_drop:
        notes.append(f"task {t.name}: {n_drop} selected record(s) {dropped} left out")
    subjects = np.array([r["subject_id"] for r in rows])
    if not train.any():
        raise BenchConfigError(f"{where}.train: the filter selects no usable records")
    train_subjects = set(subjects[train].tolist())
    for d, m in domains.items():
        if not m.any():
            raise BenchConfigError(f"{where}.eval.{d}: the filter selects no usable records")
        leaked = train_subjects.intersection(subjects[m].tolist())
        if leaked:
            raise BenchConfigError(f"{where}.eval.{d}: {len(leaked)} subject(s) are also in the training rows")
    idx = np.flatnonzero(used)
    return TaskData(t, np.array([rows[j]["record_id"] for j in idx]), subjects[idx], Y[idx], names, train[idx],
                     {d: m[idx] for d, m in domains.items()})


def draw_hash(subjects: np.ndarray) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, subjects))).encode()).hexdigest()[:12]


def draw(td: TaskData, kind: str, setting, seed: int):
    """(row indices into the training rows, drawn subjects, warnings) or a skip message (str)."""
    train_rows = np.flatnonzero(td.train)
    subj, Y = td.subjects[train_rows], td.Y[train_rows]
    regression = td.task.kind in ("regression", "segmentation")
    if kind == "shots":
        if regression:
            return f"shots need classes; use label_fractions for a {td.task.kind} task"
        if setting != "all":
            # Only the task's classes count: a short no-finding pool is a warning of the draw.
            sizes = [len(set(subj[Y[:, c]].tolist())) for c in range(Y.shape[1])]
            short = [(c, n) for c, n in zip(td.class_names, sizes) if n < setting]
            if short:
                what = ", ".join(f"{c!r} has {n}" for c, n in short)
                return f"k={setting} skipped: fewer than {setting} training subjects per class ({what})"
        labels = Y.argmax(axis=1) if td.task.kind == "multiclass" else Y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewShotWarning)
            d = few_shot_draw(subj, labels, setting, seed)
        return d.indices, d.subjects, list(d.warnings)
    d = label_fraction_draw(subj, Y, setting, seed, regression=regression)
    return d.indices, d.subjects, list(d.warnings)
