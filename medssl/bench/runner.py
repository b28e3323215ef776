"""`medssl bench`: encoders x datasets x tasks x protocols on frozen embeddings, paired statistics.

:func:`run_benchmark` (config schema: :mod:`medssl.bench.config`)

1. loads every dataset's manifest (a synthetic cohort is generated into ``OUT/data/<name>/``),
   prepares each task's targets and row masks, and checks every encoder's input contract against
   each dataset it must read (manifest columns ``leads``, ``sampling_rate``, ``n_samples``;
   :func:`medssl.data.modalities.usable_records`): records with a missing lead (limb leads
   III/aVR/aVL/aVF count as present when I and II are), a lower sampling rate, a shorter length
   or of another modality are left out for every encoder and listed under ``skipped``; the run is
   refused with one line saying what differs when no record fits, and for an implausible value
   (an ECG at 7 Hz), naming the record;
2. embeds each (encoder, dataset) once through the preprocessed-array cache into
   ``OUT/embeddings/<encoder>__<dataset>.npz`` (``embeddings`` (N, D), ``record_id``,
   ``subject_id``, ``fingerprint``); a later run reuses a file whose fingerprint (encoder ref,
   architecture, weights file stamp, cache key of records + preprocessing) matches;
3. for each task x protocol x shots|label_fraction x seed draws the training subjects once
   (:func:`medssl.bench.fewshot.few_shot_draw` / :func:`medssl.bench.protocols.label_fraction_draw`,
   independent of embeddings) and fits every encoder on that same draw (paired); ``all`` shots and
   label fraction 1.0 are deterministic and run with the first seed only. A ``finetune`` protocol
   instead fine-tunes a copy of each encoder end to end on the drawn records' preprocessed windows
   (:mod:`medssl.bench.finetune`); a ``segmentation`` protocol (segmentation tasks only) trains a
   decoder on the encoder's feature maps, frozen or fine-tuned, and scores each evaluation record
   with Dice, NSD and HD95 (:mod:`medssl.bench.segmentation`; masks from the manifest's
   ``mask_path`` through the modality's mask hook; 2-D images larger than twice the encoder's input
   are segmented at native resolution in tiles and scored inside their field-of-view mask,
   :mod:`medssl.bench.tiling`; a non-segmentation task on such images is refused rather than
   shrunk). A k larger than some class's number of training subjects is
   skipped with a note; a probe or fine-tuning run that raises becomes an error row and the run
   goes on;
4. scores each eval domain, aggregates over seeds with the two-level (subjects x seeds) bootstrap
   of :func:`medssl.bench.fewshot.two_level_bootstrap`, with per-column metric kernels from
   :mod:`medssl.bench.column_metrics`, and writes ``results.json``, ``results.csv`` and
   ``report.html``.

``results.json`` (``schema_version`` 1)::

    {
      "schema_version": 1, "title": str, "created": ISO-8601 UTC, "config": {...},
      "machine": {..., "precision": {"embeddings": "32"|"bf16", "trained_protocols": "32"}},
      "encoders": {name: {"ref", "spec": {"name", "embed_dim", "input"}}},
      "datasets": {name: {"source", "n_records", "n_subjects", "n_embedded"}},
      "records": [   # one per encoder x task x protocol x setting x seed x domain x metric
        {"encoder", "task", "dataset", "task_kind", "protocol", "protocol_kind", "k" (knn neighbours or null),
         "shots" (int | "all" | null), "label_fraction" (float | null), "seed", "domain", "metric",
         "value" (null if undefined), "n_train_subjects", "n_train_records", "n_eval_subjects",
         "n_eval_records", "draw" (12-hex hash of the drawn subject ids: equal across encoders),
         "excluded_classes" [...], "warnings" [...]}],
      "aggregates": [   # one per encoder x task x protocol x setting x domain x metric
        {..., "mean" (over seeds), "std", "ci_low", "ci_high", "n_seeds", "n_test_subjects",
         "n_test_records", "higher_is_better"}],
      "gaps": [   # reference domain (the task's first eval domain) minus each other domain
        {..., "domain_ref", "domain", "gap", "ci_low", "ci_high"}],
      "comparisons": [   # every pair of encoders (config order), same draws and resamples
        {..., "encoder_a", "encoder_b", "delta" (mean a - mean b), "ci_low", "ci_high", "p_value",
         "p_holm" (Holm-adjusted over every comparison of the run), "n_seeds", "higher_is_better",
         "method"}],
      "p_adjustment": "Holm (...)",
      "errors": [{"encoder", "task", "protocol", "shots", "label_fraction", "seed", "error"}],
      "ranking": [   # per eval domain name, FOMO-style (medssl.bench.ranking.rank_table): each
                     # task x protocol x setting is one ranking task, ranked on its metrics' means
        {"domain", "n_tasks", "rows": [{"encoder", "position", "mean_rank", "task_ranks"}],
         "n_bootstrap", "position_frequencies": {encoder: [fraction of bootstrap replicates in
                                                          which it ends at position 1, 2, ...]}}],
      "skipped": [   # records left out, each once: while indexing (encoder null), by an encoder's
                     # input contract, or when their inputs or masks could not be read
        {"dataset", "encoder", "stage" ("index" | "contract" | "preprocess" | "mask"), "record" (path),
         "reason"}],
      "notes": [str], "timings_s": {...},
      "demo": {...}   # `medssl demo` only (medssl.demo): pretraining, precision, the packaged config
    }

Intervals are 95% percentile intervals of ``n_bootstrap`` replicates resampling the evaluation
subjects (all their records) and the seeds; p-values invert the paired percentile interval
(:func:`medssl.bench.metrics.bootstrap_p_value`). NaN/inf become ``null``. ``results.csv`` holds
the records, one row each, list fields joined by ";".
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.bench.column_metrics import metric_def
from medssl.bench.config import (
    BenchConfig,
    load_bench_config,
)
from medssl.bench.fewshot import (
    _shots_key,
    _std,
    percentile_interval,
    two_level_bootstrap,
)
from medssl.bench.inputs import (
    ContractError,
    build_encoder,
    check_contract,
    embed_dataset,
    fit_encoder,
    load_dataset,
    model_inputs,
    say,
    skipped_entries,
)
from medssl.bench.metrics import bootstrap_p_value
from medssl.bench.protocols import (
    knn_probe,
    linear_probe,
    ridge_probe,
)
from medssl.bench.report import (
    _jsonable,
    adjust_comparisons,
    machine_info,
    make_report,
    overlay_example,
    render_html,
)
from medssl.bench.tasks import TaskData, draw, draw_hash, prepare_task
from medssl.bench.tiling import TilingSettings

__all__ = ["run_benchmark", "results_doc", "write_results", "check_contract", "ContractError", "RECORD_FIELDS",
           "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
ALPHA = 0.05
BOOTSTRAP_SEED = 0
RECORD_FIELDS = (
    "encoder", "task", "dataset", "task_kind", "protocol", "protocol_kind", "k", "shots", "label_fraction",
    "seed", "domain", "metric", "value", "n_train_subjects", "n_train_records", "n_eval_subjects",
    "n_eval_records", "draw", "excluded_classes", "warnings",
)


def _probe(protocol, td: TaskData, Xtr, ytr, Xte, groups, seed) -> np.ndarray:
    if td.task.kind == "regression":
        if protocol.kind == "knn":
            s = knn_probe(Xtr, ytr[:, 0], Xte, protocol.k, regression=True)
        else:
            s = ridge_probe(Xtr, ytr[:, 0], Xte, groups=groups)
        return np.asarray(s, dtype=np.float64).reshape(-1, 1)
    if protocol.kind == "knn":
        return knn_probe(Xtr, ytr, Xte, protocol.k)
    return linear_probe(Xtr, ytr, Xte, seed=seed, groups=groups)


def _macro(values: np.ndarray, use: np.ndarray) -> float:
    v = values[use]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _finetune(protocol, td: TaskData, inputs, rows: np.ndarray, ytr: np.ndarray, eval_rows: np.ndarray,
              seed: int) -> np.ndarray:
    """Fine-tune ``inputs`` = (encoder, preprocessed signals, row -> signal index) on the drawn
    training rows; scores (n_eval, C) like the probes'."""
    from medssl.bench.finetune import finetune_classifier, predict

    encoder, signals, index = inputs
    tr, ev = index[rows], index[eval_rows]
    if (tr < 0).any() or (ev < 0).any():
        raise ValueError("some records have no preprocessed signal in the array cache")
    f = protocol.finetune
    model = finetune_classifier(encoder, signals[tr], ytr.astype(np.float32), kind=td.task.kind,
                                epochs=f["epochs"], batch_size=f["batch_size"], base_lr=f["lr"],
                                decay=f["layer_decay"], seed=int(seed), mode=f["mode"], n_last=f["n_last"])
    return predict(model, signals[ev])


def _segment(protocol, td: TaskData, inputs, rows: np.ndarray, eval_rows: np.ndarray, seed: int,
             examples: list | None, tiling=None, feature_cache=None, entry=None) -> np.ndarray:
    """Train a segmenter on the drawn rows of ``inputs`` = (encoder, images, row -> image index,
    masks, row -> mask index[, field-of-view masks, row -> their index]); per-record (n_eval, 7)
    scores (:data:`medssl.bench.segmentation.SCORE_COLUMNS`) on ``eval_rows``, inside the field of
    view where a record has one. Images held as an object array (one (C, H, W) array per record, at
    native resolution) are segmented in tiles of the encoder's input size
    (:mod:`medssl.bench.tiling`, ``tiling``: its :class:`~medssl.bench.tiling.TilingSettings`).
    When ``examples`` is a list, a few (eval position, image, truth, prediction) are appended to it.
    ``feature_cache`` (:class:`~medssl.bench.segmentation.FeatureMapCache`): a frozen encoder's
    feature maps of the (not tiled) images, computed once per run and reused by every draw and seed.
    ``entry`` (:class:`~medssl.bench.config.EncoderEntry`): its own ``decoder`` and
    ``encoder_lr_scale``, where set, replace the protocol's."""
    from medssl.bench.segmentation import (
        per_record_scores,
        predict_probabilities,
        train_segmenter,
    )
    from medssl.bench.tiling import (
        TilingSettings,
        encoder_tile,
        sliding_window_probabilities,
        train_tiled_segmenter,
    )

    encoder, images, index, masks, mask_index, *rest = inputs
    fovs, fov_index = (rest[0], rest[1]) if rest else (None, None)
    tr, ev = index[rows], index[eval_rows]
    mtr, mev = mask_index[rows], mask_index[eval_rows]
    if (tr < 0).any() or (ev < 0).any() or (mtr < 0).any() or (mev < 0).any():
        raise ValueError("some records have no preprocessed image or mask in the array cache")
    fev = fov_index[eval_rows] if fovs is not None else None
    f = protocol.finetune
    decoder = getattr(entry, "decoder", None) or f["decoder"]
    lr_scale = getattr(entry, "encoder_lr_scale", None) or f["encoder_lr_scale"]
    common = dict(mode=f["mode"], epochs=f["epochs"], lr=f["lr"], batch_size=f["batch_size"],
                  encoder_lr_scale=lr_scale, seed=int(seed), width=f["width"], decoder=decoder,
                  min_steps=f["min_steps"])
    eval_fovs = None if fovs is None else [fovs[j] for j in fev]
    if images.dtype == object:  # native resolution, in tiles
        tiling = tiling or TilingSettings()
        tile = encoder_tile(encoder.spec.input)
        train_fovs = None if fovs is None else [fovs[j] for j in fov_index[rows]]
        model = train_tiled_segmenter(encoder, [images[i] for i in tr], [masks[j] for j in mtr], train_fovs,
                                      tile=tile, **common)
        probs = [sliding_window_probabilities(model, images[i], tile, overlap=tiling.overlap, blend=tiling.blend,
                                              batch_size=max(f["batch_size"], 16),
                                              fov=None if eval_fovs is None else eval_fovs[k])[None]
                 for k, i in enumerate(ev)]
        truth = [np.asarray(masks[j]) for j in mev]
        shown = [images[i] for i in ev]
    else:
        maps = None if feature_cache is None else feature_cache.maps(
            encoder, images, mode=f["mode"], decoder=decoder, width=f["width"])
        model = train_segmenter(encoder, images[tr], masks[mtr], **common,
                                feature_maps=None if maps is None else [m[tr] for m in maps])
        probs = list(predict_probabilities(model, images[ev], batch_size=f["batch_size"],
                                           feature_maps=None if maps is None else [m[ev] for m in maps]))
        if eval_fovs is not None:
            probs = [np.where(fv, p, 0.0).astype(np.float32) if fv is not None else p
                     for p, fv in zip(probs, eval_fovs)]
        truth = list(np.asarray(masks[mev]))
        shown = None
    pred = [p >= 0.5 for p in probs]
    spec_input = encoder.spec.input
    spacing = spec_input.get("spacing_mm") or spec_input.get("pixel_size_mm")
    if examples is not None:
        sizes = np.array([float(np.asarray(t).sum()) for t in truth])
        for j in np.argsort(-sizes)[:2]:
            image = shown[j] if shown is not None else np.asarray(images[ev[j]])
            examples.append((int(j), np.asarray(image), truth[j], pred[j]))
    return per_record_scores(pred, truth, spacing, td.task.tolerance_mm, fovs=eval_fovs, probs=probs)


@dataclass(frozen=True)
class _Draw:
    """One seed's training draw: the task rows, the drawn subjects, the draw's warnings, and the
    class columns that have both label values in it (all columns for regression / segmentation)."""

    seed: int
    rows: np.ndarray
    subjects: np.ndarray
    warnings: list
    trainable: np.ndarray


@dataclass(frozen=True)
class _Setting:
    """One task x protocol x setting: its fields shared by every output row, and its seeds."""

    td: TaskData
    proto: Any
    kind: str  # "shots" | "label_fraction"
    value: Any
    seeds: tuple
    base: dict

    @property
    def label(self) -> str:
        return f"{self.td.task.name} / {self.proto.name} / {self.kind}={self.value}"

    def key(self, domain: str, metric: str) -> tuple:
        return (self.td.task.name, self.proto.name, str(self.value), domain, metric)


def _settings(cfg: BenchConfig, td: TaskData):
    """Every (protocol, setting) of a task, with its seeds: probes on the whole training set are
    deterministic, so one seed suffices; fine-tuning is not (initialisation of the head, batch
    order), so it keeps every seed."""
    task, kind = td.task, td.task.kind
    for proto in (p for p in cfg.protocols if p.applies_to(kind)):
        for skind, value in proto.settings:
            if skind == "shots":
                value = _shots_key(value)
            every_row = value == "all" or (skind == "label_fraction" and value >= 1.0)
            trains = proto.kind in ("finetune", "segmentation")
            seeds = proto.seeds[:1] if every_row and not trains else proto.seeds
            base = {"task": task.name, "dataset": task.dataset, "task_kind": kind, "protocol": proto.name,
                    "protocol_kind": proto.kind, "k": proto.k,
                    "shots": value if skind == "shots" else None,
                    "label_fraction": value if skind == "label_fraction" else None}
            yield _Setting(td, proto, skind, value, tuple(seeds), base)


def _draw(st: _Setting) -> list[_Draw] | str:
    """The training draw of every seed (shared by all encoders: paired), or why the setting is
    skipped."""
    td = st.td
    train_rows = np.flatnonzero(td.train)
    draws = []
    for seed in st.seeds:
        drawn = draw(td, st.kind, st.value, seed)
        if isinstance(drawn, str):
            return drawn
        idx, subj, warns = drawn
        rows = train_rows[idx]
        ytr = td.Y[rows]
        trainable = (np.ones(ytr.shape[1], bool) if td.task.kind in ("regression", "segmentation")
                     else ytr.any(axis=0) & ~ytr.all(axis=0))
        draws.append(_Draw(seed, rows, subj, warns, trainable))
    return draws


def _fit(cfg: BenchConfig, st: _Setting, draws: list[_Draw], X: dict, inputs: dict | None, feature_cache,
         all_eval: np.ndarray, out: dict, notes: list[str], progress: bool) -> dict[str, list]:
    """Scores of every encoder x seed on the evaluation rows ``all_eval``: scores[e][si] (n_eval, C),
    or None where the fit raised (an error row and a note; the benchmark goes on)."""
    td, proto = st.td, st.proto
    names = [e.name for e in cfg.encoders]
    entries = {e.name: e for e in cfg.encoders}

    def fit(e: str, si: int):
        seed, rows = draws[si].seed, draws[si].rows
        if proto.kind == "segmentation":
            shown = [] if si == 0 and st.value == proto.settings[-1][1] else None
            result = _segment(proto, td, inputs[e], rows, all_eval, seed, shown,
                              tiling=TilingSettings.from_data(cfg.datasets[td.task.dataset].data),
                              feature_cache=feature_cache, entry=entries[e])
            for j, image, truth, pred in shown or []:
                domain = next(d for d, m in td.domains.items() if m[all_eval[j]])
                out["examples"].append(overlay_example(
                    e, td.task.name, domain, str(td.record_ids[all_eval[j]]), image, truth, pred))
            return result
        if proto.kind == "finetune":
            return _finetune(proto, td, inputs[e], rows, td.Y[rows], all_eval, seed)
        return _probe(proto, td, X[e][rows], td.Y[rows], X[e][all_eval], td.subjects[rows], seed)

    jobs = [(e, si) for si in range(len(draws)) for e in names]
    # Probes on cached embeddings run in parallel over seeds x encoders, one core each;
    # trainings (finetune, segmentation) use torch's own threads, one at a time.
    trains = proto.kind in ("finetune", "segmentation")
    workers = 1 if trains else min(len(jobs), os.cpu_count() or 1)
    with _one_torch_thread(workers > 1), ThreadPoolExecutor(workers) as pool:
        futures = {job: pool.submit(fit, *job) for job in jobs}
        if progress:  # a bar (with time left) while the fits run; quiet when not a terminal
            from concurrent.futures import as_completed

            from medssl.progress import progress as bar

            for _ in bar(as_completed(futures.values()), desc=st.label, total=len(jobs), unit="fit"):
                pass
    scores: dict[str, list] = {e: [None] * len(draws) for e in names}
    for (e, si), fut in futures.items():
        try:
            scores[e][si] = fut.result()
        except Exception as ex:  # noqa: BLE001 - recorded, the benchmark goes on
            seed = draws[si].seed
            msg = f"{type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}"
            out["errors"].append({"kind": "error", "encoder": e, **st.base, "seed": int(seed), "error": msg})
            notes.append(f"{e} failed on {st.label}, seed {seed}: {msg}")
    return scores


def _score(st: _Setting, m, d: str, rd: np.ndarray, pos_d: np.ndarray, draws: list[_Draw], scores: dict,
           out: dict) -> tuple[dict, dict, list]:
    """One record per encoder x seed of metric ``m`` on domain ``d``; returns (per encoder the
    kernel inputs of each seed (None where the fit failed), per encoder the seeds' values, the
    class columns each seed is scored on)."""
    td, kind = st.td, st.td.task.kind
    Yd = td.Y[rd]
    n_subj = int(np.unique(td.subjects[rd]).size)
    defined = m.defined(Yd, kind)
    cols = [np.flatnonzero(dr.trainable & defined) for dr in draws]
    per_run, values = {}, {}
    for e, runs in scores.items():
        per_run[e], values[e] = [], []
        for si, dr in enumerate(draws):
            if runs[si] is None:
                per_run[e].append(None)
                continue
            arr = _as_kernel_input(m, runs[si][pos_d], kind)
            per_run[e].append(arr)
            use = np.zeros(Yd.shape[1], bool)
            use[cols[si]] = True
            value = _macro(m.kernel(Yd, arr), use)
            values[e].append(value)
            excluded = ([] if kind in ("regression", "segmentation")
                        else [td.class_names[c] for c in np.flatnonzero(~use)])
            out["records"].append({
                "kind": "run", "encoder": e, **st.base, "seed": int(dr.seed), "domain": d,
                "metric": m.name, "value": value, "n_train_subjects": len(dr.subjects),
                "n_train_records": int(dr.rows.size), "n_eval_subjects": n_subj,
                "n_eval_records": int(rd.size), "draw": draw_hash(dr.subjects),
                "excluded_classes": excluded, "warnings": list(dr.warnings),
            })
    return per_run, values, cols


def _aggregate(st: _Setting, m, d: str, rd: np.ndarray, stats: dict, values: dict, out: dict) -> None:
    """Per encoder: the mean over seeds, its spread and the bootstrap interval."""
    n_subj = int(np.unique(st.td.subjects[rd]).size)
    for e in values:
        v = np.asarray(values[e], dtype=np.float64)
        finite = v[~np.isnan(v)]
        lo, hi = (percentile_interval(stats[e], ALPHA) if stats.get(e) is not None
                  else (float("nan"), float("nan")))
        out["aggregates"].append({
            "kind": "aggregate", "encoder": e, **st.base, "domain": d, "metric": m.name,
            "mean": float(finite.mean()) if finite.size else float("nan"), "std": _std(finite),
            "ci_low": lo, "ci_high": hi, "n_seeds": int(finite.size), "n_test_subjects": n_subj,
            "n_test_records": int(rd.size), "higher_is_better": m.higher_is_better,
        })


def _compare(st: _Setting, m, d: str, per_run: dict, stats: dict, values: dict, out: dict) -> None:
    """Every pair of encoders that ran on every seed (config order), on the same replicates."""
    full = [e for e in per_run if all(a is not None for a in per_run[e])]
    for a_i, a in enumerate(full):
        for b in full[a_i + 1:]:
            deltas = stats[a] - stats[b]
            lo, hi = percentile_interval(deltas, ALPHA)
            out["comparisons"].append({
                "kind": "comparison", **st.base, "domain": d, "metric": m.name, "encoder_a": a,
                "encoder_b": b, "delta": _mean(values[a]) - _mean(values[b]), "ci_low": lo,
                "ci_high": hi, "p_value": bootstrap_p_value(deltas), "n_seeds": len(st.seeds),
                "higher_is_better": m.higher_is_better,
                "method": "paired two-level bootstrap (subjects, seeds)",
            })


def _gaps(st: _Setting, metrics: list, names: list[str], out: dict) -> None:
    """The reference domain (the task's first) minus each other domain, per encoder and metric."""
    domains = list(st.td.domains)
    ref = domains[0]
    for m in metrics:
        ref_stats, ref_vals = out["_stats"][st.key(ref, m.name)]
        for d in domains[1:]:
            stats, vals = out["_stats"][st.key(d, m.name)]
            for e in names:
                if ref_stats.get(e) is None or stats.get(e) is None:
                    continue
                lo, hi = percentile_interval(ref_stats[e] - stats[e], ALPHA)
                out["gaps"].append({
                    "kind": "gap", "encoder": e, **st.base, "metric": m.name, "domain_ref": ref,
                    "domain": d, "gap": _mean(ref_vals[e]) - _mean(vals[e]), "ci_low": lo, "ci_high": hi,
                })


def _run_task(cfg: BenchConfig, td: TaskData, X: dict[str, np.ndarray], out: dict[str, list],
              notes: list[str], progress: bool, inputs: dict | None = None, feature_cache=None) -> None:
    """Every protocol x setting of a task: draw, fit, score, aggregate, compare, gaps. ``inputs``
    (finetune and segmentation protocols): encoder name -> (encoder, inputs, td row -> input
    index[, masks, td row -> mask index])."""
    names = [e.name for e in cfg.encoders]
    all_eval = np.flatnonzero(np.logical_or.reduce(list(td.domains.values())))
    dom_rows = {d: np.flatnonzero(m) for d, m in td.domains.items()}
    metrics = [metric_def(m, td.task.kind) for m in td.task.metrics]
    for st in _settings(cfg, td):
        draws = _draw(st)
        if isinstance(draws, str):
            notes.append(f"task {td.task.name}, protocol {st.proto.name}: {draws}")
            say(progress, f"{st.label}: skipped ({draws})")
            continue
        say(progress, f"{st.label}: {len(st.seeds)} seed(s) x {len(names)} encoder(s)")
        scores = _fit(cfg, st, draws, X, inputs, feature_cache, all_eval, out, notes, progress)
        for d, rd in dom_rows.items():
            pos_d = np.searchsorted(all_eval, rd)
            for m in metrics:
                per_run, values, cols = _score(st, m, d, rd, pos_d, draws, scores, out)
                stats = _bootstrap_stats(m, td.Y[rd], per_run, cols, td.subjects[rd], cfg.n_bootstrap)
                out["_stats"][st.key(d, m.name)] = (stats, values)
                _aggregate(st, m, d, rd, stats, values, out)
                _compare(st, m, d, per_run, stats, values, out)
        _gaps(st, metrics, names, out)


@contextlib.contextmanager
def _one_torch_thread(active: bool):
    """torch on one intra-op thread while probes run in parallel threads (no oversubscription)."""
    import torch

    before = torch.get_num_threads()
    if active:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _as_kernel_input(m, scores: np.ndarray, kind: str) -> np.ndarray:
    from medssl.bench.column_metrics import hard_predictions

    if m.score_column is not None:
        return scores[:, [m.score_column]]
    return hard_predictions(scores, kind) if m.uses_predictions else scores


def _bootstrap_stats(m, Yd, per_run: dict[str, list], cols, groups, n_boot) -> dict[str, np.ndarray | None]:
    """Encoder -> (B,) two-level bootstrap replicates over its successful seeds (None if none).

    Encoders that succeeded on every seed share one call (paired: same resamples, same seed picks);
    an encoder with failed seeds gets its own call on the seeds it has.
    """
    out: dict[str, np.ndarray | None] = {}
    full = [e for e, runs in per_run.items() if all(a is not None for a in runs)]
    if full:
        stats = two_level_bootstrap(Yd, [per_run[e] for e in full], cols, groups, n_boot, BOOTSTRAP_SEED,
                                    column_stat=m.kernel)
        out.update({e: stats[i] for i, e in enumerate(full)})
    for e, runs in per_run.items():
        if e in out:
            continue
        ok = [i for i, a in enumerate(runs) if a is not None]
        out[e] = (two_level_bootstrap(Yd, [[runs[i] for i in ok]], [cols[i] for i in ok], groups, n_boot,
                                      BOOTSTRAP_SEED, column_stat=m.kernel)[0] if ok else None)
    return out


# --------------------------------------------------------------------------- outputs


def _rankings(aggregates: list[dict], stats: dict, encoders: list[str], n_boot: int) -> list[dict]:
    """Per eval domain, :func:`medssl.bench.ranking.rank_table` (FOMO-style mean rank) of the encoders,
    each task x protocol x setting counting as one ranking task scored on its metrics' means, and
    the rank stability: how often each encoder ends at each position when the ranking is redone
    on every replicate of the subject bootstrap (the replicates behind the intervals; paired
    within a task, independent across tasks, as the FOMO25 organisers resampled)."""
    from medssl.bench.ranking import average_ranks, rank_table

    out = []
    for d in dict.fromkeys(a["domain"] for a in aggregates):
        entries, direction = [], {}
        for a in aggregates:
            if a["domain"] != d:
                continue
            setting = f"shots={a['shots']}" if a["shots"] is not None else f"label_fraction={a['label_fraction']:g}"
            entries.append({"encoder": a["encoder"], "task": f"{a['task']} / {a['protocol']} / {setting}",
                            "metric": a["metric"], "value": a["mean"]})
            direction[a["metric"]] = a["higher_is_better"]
        if len({e["encoder"] for e in entries}) < 2:
            continue
        rows = rank_table(entries, direction)
        block = {"domain": d, "n_tasks": len({e["task"] for e in entries}),
                 "rows": [{k: r[k] for k in ("encoder", "position", "mean_rank", "task_ranks")} for r in rows]}
        task_ranks = {}
        for (task, proto, setting, dom, metric), (st, _) in stats.items():
            if dom != d:
                continue
            M = np.stack([st[e] if st.get(e) is not None else np.full(n_boot, np.nan) for e in encoders], axis=-1)
            task_ranks.setdefault((task, proto, setting), []).append(average_ranks(M, direction[metric]))
        if task_ranks:
            mean_rank = np.mean([np.mean(r, axis=0) for r in task_ranks.values()], axis=0).round(9)  # (B, E)
            positions = 1 + (mean_rank[:, None, :] < mean_rank[:, :, None]).sum(axis=2)  # competition ranking
            block["n_bootstrap"] = int(n_boot)
            block["position_frequencies"] = {
                e: [float(np.mean(positions[:, i] == p)) for p in range(1, len(encoders) + 1)]
                for i, e in enumerate(encoders)}
        out.append(block)
    return out


def _csv_text(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RECORD_FIELDS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in _jsonable(records):
        w.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else "" if v is None else v)
                    for k, v in r.items() if k in RECORD_FIELDS})
    return buf.getvalue()


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, a in enumerate(items):
        out[i] = a
    return out


def _resolution_plans(cfg: BenchConfig, tasks: list, rows: dict, fitted: dict, notes: list[str]) -> dict:
    """(encoder, dataset) -> "tiles" | "resize" (:func:`medssl.bench.tiling.plan_resolution`): a
    dataset read only by segmentation tasks, whose modality can give native-resolution images, is
    tiled when resizing would shrink its images more than its ``max_downscale``; any other use of
    such a dataset is refused (ResolutionError naming dataset, sizes and the setting that allows it)."""
    from medssl.bench.tiling import TilingSettings, downscale_factor, encoder_tile, plan_resolution
    from medssl.data.modalities import modality_data

    plans = {}
    for (name, ds), model in fitted.items():
        kinds = {td.task.kind for td in tasks if td.task.dataset == ds}
        spec = model.spec
        settings = TilingSettings.from_data(cfg.datasets[ds].data, f"{cfg.source}: datasets.{ds}.data")
        can_tile = modality_data(spec.modality).native is not None
        plan = plan_resolution(rows[ds], spec.input, settings, dataset=ds, encoder=name,
                               segmentation=kinds == {"segmentation"} and can_tile, source=cfg.source)
        plans[(name, ds)] = plan
        if plan == "tiles":
            tile = encoder_tile(spec.input)
            factor, (h, w), _ = downscale_factor(rows[ds], tile)
            fov = " (metrics inside each image's field-of-view mask)" if any(
                r.get("fov_path") for r in rows[ds]) else ""
            notes.append(f"{name} on {ds}: images up to {h} x {w} px ({factor:.1f}x the encoder's input) segmented "
                         f"at native resolution in {tile[0]} x {tile[1]} tiles: training on random tiles, "
                         f"sliding-window inference with overlap {settings.overlap:g} and {settings.blend} "
                         f"blending, float32{fov}")
    return plans


def _native_entry(cfg: BenchConfig, model, rows: list[dict], ds: str, shape, encoder: str, notes: list[str]) -> tuple:
    """(images, record -> index, masks, record -> index, field-of-view masks, record -> index) of
    a dataset at native resolution (``shape`` None) or resized to ``shape``, as object arrays of
    per-record arrays, from the modality's ``native`` hook."""
    from medssl.data.modalities import modality_data

    hook = modality_data(model.spec.modality).native
    got = hook(rows, model.spec.input, cfg.datasets[ds].data, shape)
    if got.skipped:
        notes.append(f"{encoder} on {ds}: {len(got.skipped)} record(s) could not be read at native resolution and "
                     f"are left out (first: {got.skipped[0][0]}: {got.skipped[0][1]})")
    row_of = {r["record_id"]: i for i, r in enumerate(got.rows)}
    return (_object_array(got.images), row_of, _object_array(got.masks), row_of, _object_array(got.fovs), row_of)


@dataclass
class _Loaded:
    """What the benchmark reads: every used dataset's rows (after the input contracts) and source,
    the encoders (built once, and as each reads each dataset), and the records left out."""

    used: list[str]
    rows: dict[str, list[dict]]
    sources: dict[str, str]
    n_loaded: dict[str, int]
    models: dict[str, tuple]
    fitted: dict[tuple[str, str], Any]
    skipped: list[dict]


def _load(cfg: BenchConfig, out: Path, notes: list[str], progress: bool) -> _Loaded:
    """Load every dataset a task reads, build the encoders, and keep the records every encoder's
    input contract accepts (the others are left out for every encoder: all are scored on the same
    records)."""
    used = list(dict.fromkeys(t.dataset for t in cfg.tasks))
    rows, sources = {}, {}
    skipped: list[dict] = []  # records left out, with the reason (results.json "skipped")
    for ds in used:
        say(progress, f"loading dataset {ds}")
        rows[ds], sources[ds] = load_dataset(cfg, ds, out, notes, skipped)
    n_loaded = {ds: len(rows[ds]) for ds in used}
    models = {e.name: build_encoder(cfg, e) for e in cfg.encoders}
    fitted = {}  # (encoder, dataset) -> the encoder as it reads that dataset
    for e in cfg.encoders:
        for ds in used:
            fitted[(e.name, ds)] = fit_encoder(models[e.name][0], rows[ds], e.name, ds, notes)
            spec = fitted[(e.name, ds)].spec
            usable, dropped = check_contract(spec.input, rows[ds], encoder=e.name, dataset=ds, source=cfg.source,
                                             modality=spec.modality)
            if dropped:
                skipped += skipped_entries(dropped, dataset=ds, encoder=e.name, stage="contract")
                notes.append(f"{e.name} on {ds}: {len(dropped)} record(s) break the encoder's input contract and "
                             f"are left out for every encoder (listed under skipped)")
                keep = {r["record_id"] for r in usable}
                rows[ds] = [r for r in rows[ds] if r["record_id"] in keep]
    return _Loaded(used, rows, sources, n_loaded, models, fitted, skipped)


def _datasets_of(cfg: BenchConfig, tasks: list[TaskData], kinds: tuple[str, ...]) -> set[str]:
    """The datasets of tasks that some protocol of ``kinds`` runs on."""
    return {td.task.dataset for td in tasks
            if any(p.applies_to(td.task.kind) and p.kind in kinds for p in cfg.protocols)}


def _trained_inputs(cfg: BenchConfig, ld: _Loaded, tasks: list[TaskData], plans: dict, notes: list[str]) -> dict:
    """(encoder, dataset) -> (inputs, record_id -> row[, masks, record_id -> row[, field-of-view
    masks, record_id -> row]]) for the protocols that train encoders (finetune, segmentation)."""
    trained = _datasets_of(cfg, tasks, ("finetune", "segmentation"))
    segmented = {td.task.dataset for td in tasks if td.task.kind == "segmentation"} & trained
    signals = {}
    for e in cfg.encoders:
        for ds in trained:
            model, rows = ld.fitted[(e.name, ds)], ld.rows[ds]
            if ds in segmented and plans[(e.name, ds)] == "tiles":
                signals[(e.name, ds)] = _native_entry(cfg, model, rows, ds, None, e.name, notes)
                continue
            cache = model_inputs(cfg, model, rows, ds)
            ld.skipped += skipped_entries(cache.skipped, dataset=ds, encoder=e.name, stage="preprocess")
            entry = (cache.signals, {r["record_id"]: i for i, r in enumerate(cache.rows)})
            if ds in segmented:
                from medssl.data.modalities import segmentation_masks

                m = segmentation_masks(rows, model.spec, cfg.datasets[ds].data, cache_root=cfg.cache_dir)
                ld.skipped += skipped_entries(m.skipped, dataset=ds, encoder=e.name, stage="mask")
                entry += (m.signals, {r["record_id"]: i for i, r in enumerate(m.rows)})
                if any(r.get("fov_path") for r in rows):
                    entry += _native_entry(cfg, model, rows, ds, model.spec.input["shape"], e.name, notes)[4:]
            signals[(e.name, ds)] = entry
    return signals


def _common_records(cfg: BenchConfig, td: TaskData, emb: dict, signals: dict, notes: list[str]) -> TaskData:
    """The task restricted to the records every encoder has inputs for (all encoders are scored on
    the same records)."""
    ds = td.task.dataset
    common = set(td.record_ids.tolist())
    for e in cfg.encoders:
        if (e.name, ds) in emb:
            common &= set(emb[(e.name, ds)]["record_id"].tolist())
        if (e.name, ds) in signals:
            for row_of in signals[(e.name, ds)][1::2]:
                common &= set(row_of)
    keep = np.array([r in common for r in td.record_ids])
    if not keep.all():
        notes.append(f"task {td.task.name}: {int((~keep).sum())} record(s) without the inputs of every "
                     f"encoder left out (all encoders are scored on the same records)")
    return TaskData(td.task, td.record_ids[keep], td.subjects[keep], td.Y[keep], td.class_names, td.train[keep],
                    {d: m[keep] for d, m in td.domains.items()})


def _task_inputs(cfg: BenchConfig, td: TaskData, ld: _Loaded, emb: dict, signals: dict) -> tuple[dict, dict]:
    """(encoder -> embeddings (n, D) of the task's rows, encoder -> (encoder, inputs, td row ->
    input row[, masks, td row -> mask row]...)) for the task's dataset."""
    ds = td.task.dataset
    X = {}
    for e in (e for e in cfg.encoders if (e.name, ds) in emb):
        z = emb[(e.name, ds)]
        where = {r: i for i, r in enumerate(z["record_id"].tolist())}
        X[e.name] = np.asarray(z["embeddings"], dtype=np.float64)[[where[r] for r in td.record_ids]]
    inputs = {}
    for e in (e for e in cfg.encoders if (e.name, ds) in signals):
        entry = signals[(e.name, ds)]
        parts = [ld.fitted[(e.name, ds)]]
        for array, row_of in zip(entry[0::2], entry[1::2]):
            parts += [array, np.array([row_of.get(r, -1) for r in td.record_ids], np.int64)]
        inputs[e.name] = tuple(parts)
    return X, inputs


def results_doc(rows, *, title: str, config: Mapping, machine: Mapping | None = None, encoders: Mapping | None = None,
                datasets: Mapping | None = None, ranking: list | None = None, skipped: list | None = None,
                notes=(), timings: Mapping | None = None) -> dict:
    """A results.json document (module docstring) from rows of every kind (``kind``: run,
    aggregate, gap, comparison, error), with p_holm added to the comparisons (Holm over all of
    them); NaN/inf become None."""
    rows = list(rows)
    by_kind = {k: [r for r in rows if r.get("kind") == k] for k in ("run", "aggregate", "gap", "comparison", "error")}
    adjust_comparisons(by_kind["comparison"])
    return _jsonable({
        "schema_version": SCHEMA_VERSION, "title": title,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": dict(machine_info() if machine is None else machine), "config": dict(config),
        "encoders": dict(encoders or {}), "datasets": dict(datasets or {}),
        "records": by_kind["run"], "aggregates": by_kind["aggregate"], "gaps": by_kind["gap"],
        "comparisons": by_kind["comparison"], "errors": by_kind["error"],
        "p_adjustment": "Holm (family: all comparisons of this run); p_holm beside each raw p_value",
        "ranking": list(ranking or []), "skipped": list(skipped or []), "notes": list(notes),
        "timings_s": {k: round(v, 2) for k, v in (timings or {}).items()},
    })


def _results_doc(cfg: BenchConfig, ld: _Loaded, results: dict, n_embedded: dict, notes: list[str],
                 timings: dict) -> dict:
    """results.json of a benchmark run."""
    spec = {name: m[0].spec for name, m in ld.models.items()}
    return results_doc(
        [r for k in ("records", "aggregates", "gaps", "comparisons", "errors") for r in results[k]],
        title=cfg.title, config=cfg.raw,
        machine={**machine_info(), "precision": {"embeddings": cfg.precision, "trained_protocols": "32"}},
        encoders={e.name: {"ref": e.ref, "spec": {"name": spec[e.name].name, "embed_dim": spec[e.name].embed_dim,
                                                  "input": spec[e.name].input}} for e in cfg.encoders},
        datasets={ds: {"source": ld.sources[ds], "n_records": ld.n_loaded[ds],
                       "n_subjects": len({r["subject_id"] for r in ld.rows[ds]}), "n_embedded": n_embedded.get(ds)}
                  for ds in ld.used},
        ranking=_rankings(results["aggregates"], results["_stats"], [e.name for e in cfg.encoders], cfg.n_bootstrap),
        skipped=[dict(k) for k in dict.fromkeys(tuple(x.items()) for x in ld.skipped)],  # each once
        notes=notes, timings=timings)


def write_results(doc: dict, out: str | Path, examples: list | None = None) -> dict:
    """Write ``results.json``, ``results.csv`` (the records) and ``report.html`` of a results doc
    (:func:`results_doc`) into ``out``; returns their paths ({"json", "csv", "html"}). The page's
    configuration section shows the doc's ``config`` with ``n_bootstrap``, a ``demo`` entry when
    the doc has one, and the timings."""
    from medssl.io import atomic_write_text

    out = Path(out)
    doc = _jsonable(doc)
    json_path = atomic_write_text(out / "results.json", json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    csv_path = atomic_write_text(out / "results.csv", _csv_text(doc["records"]))
    report = make_report(doc["records"] + doc["aggregates"] + doc["gaps"] + doc["comparisons"], title=doc["title"],
                         config={**doc["config"], "n_bootstrap": doc["config"].get("n_bootstrap", 1000),
                                 **({"demo": doc["demo"]} if "demo" in doc else {}), "timings_s": doc["timings_s"]},
                         notes=doc["notes"])
    report["ranking"] = doc["ranking"]
    report["examples"] = examples or []
    report["skipped"] = doc["skipped"]
    html_path = atomic_write_text(out / "report.html", render_html(report))
    return {"json": json_path, "csv": csv_path, "html": html_path}


def run_benchmark(config: str | Path | Mapping[str, Any], out_dir: str | Path, progress: bool = True,
                  precision: str | None = None) -> dict:
    """Run the benchmark of ``config`` into ``out_dir``; returns the results dict (see module doc)
    with ``paths`` added ({"json", "csv", "html", "embeddings"}). ``precision`` ("32" | "bf16")
    overrides the config's ``precision`` for frozen-encoder features."""
    import dataclasses

    from medssl.bench.segmentation import FeatureMapCache
    from medssl.engine.hardware import resolve_inference_precision

    t0 = time.perf_counter()
    cfg = load_bench_config(config)
    cfg = dataclasses.replace(cfg, precision=resolve_inference_precision(precision or cfg.precision, "cpu"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    timings: dict[str, float] = {}

    ld = _load(cfg, out, notes, progress)
    tasks = [prepare_task(cfg, i, t, ld.rows[t.dataset], notes) for i, t in enumerate(cfg.tasks)]
    plans = _resolution_plans(cfg, tasks, ld.rows, ld.fitted, notes)
    timings["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    # Embeddings for the probes; preprocessed inputs (and masks) for protocols that train encoders.
    probed = _datasets_of(cfg, tasks, ("linear_probe", "knn"))
    emb = {(e.name, ds): embed_dataset(cfg, e, ld.fitted[(e.name, ds)], ld.models[e.name][1], ds, ld.rows[ds], out,
                                       progress, notes, ld.skipped)
           for e in cfg.encoders for ds in ld.used if ds in probed}
    timings["embed_s"] = time.perf_counter() - t
    signals = _trained_inputs(cfg, ld, tasks, plans, notes)

    t = time.perf_counter()
    results: dict[str, Any] = {"records": [], "aggregates": [], "gaps": [], "comparisons": [], "errors": [],
                               "examples": [], "_stats": {}}
    n_embedded = {}
    feature_cache = FeatureMapCache()  # frozen feature maps per (encoder weights, images), for this run
    for td in tasks:
        td = _common_records(cfg, td, emb, signals, notes)
        n_embedded[td.task.dataset] = len(td.record_ids)
        X, inputs = _task_inputs(cfg, td, ld, emb, signals)
        _run_task(cfg, td, X, results, notes, progress, inputs, feature_cache)
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    doc = _results_doc(cfg, ld, results, n_embedded, notes, timings)
    paths = write_results(doc, out, results["examples"])
    doc["paths"] = {**paths, "embeddings": out / "embeddings"}
    say(progress, f"wrote {paths['json']}, {paths['csv']}, {paths['html']} in {timings['total_s']:.0f} s")
    return doc
