"""Reference ("shadow") models for LiRA / RMIA: the target's recipe, trained on random subsets of a
population of subjects (halves, or as many subjects as the target trained on: ``n_in``) (Carlini et al. 2022, Sec. IV; Zarifzadeh et al. 2024, Sec. 3).

Layout under ``out_dir``::

    refs-<key>/                  key = sha256(recipe, population manifest fingerprint, n_refs, seed)[:16]
      ref_000/                   a `medssl.engine.pretrain.pretrain` run folder
        checkpoint/              model.safetensors + card.json
        checkpoint/method.safetensors  full method state (encoder + predictor / heads)
        membership.json          {"population_sha256", "n_subjects", "in": [bool, ...]}
      ref_001/ ...

``membership.json`` holds one boolean per population subject, aligned with the *sorted* unique
subject ids of the population rows (so no subject identifier is written; the vector is read
back against the same population). Reference i trains on row i of :func:`membership_matrix`
(a random half of the subjects; with >= 2 references each subject is IN for exactly half of
them), with recipe seed
``cfg["seed"] + 1 + i`` (a different initialisation and data order per reference; the audit
scores every model with the target's mask/augmentation seed, see :mod:`medssl.privacy.audit`).

Caching: a reference folder whose ``membership.json`` and ``checkpoint/card.json`` exist is
reused as is, so a second call with the same recipe, population, n_refs and seed trains nothing;
an interrupted run resumes from its Lightning checkpoint. References train in parallel worker
processes (``workers``; default one per two cores, each with its share of the torch threads), or
one after another in this process with ``workers=1``. On a cluster, launch the same folders as
separate jobs (each is an ordinary ``pretrain`` run that Lightning scales over devices/nodes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.manifest import manifest_fingerprint
from medssl.io import atomic_write_json
from medssl.progress import progress

__all__ = ["ReferenceModel", "membership_matrix", "reference_key", "train_reference_models"]


@dataclass(frozen=True)
class ReferenceModel:
    """One trained reference model: its run folder, checkpoint folder and per-subject membership."""

    run_dir: Path
    checkpoint: Path
    subjects: tuple[str, ...]  # sorted unique population subject ids (in memory only)
    is_in: np.ndarray  # (n_subjects,) bool, aligned with `subjects`
    seed: int  # recipe seed the reference was trained with

    def membership(self, subject_ids: Sequence[str]) -> np.ndarray:
        """(len(subject_ids),) bool: True where this reference trained on the subject (False if
        the subject is not in the population)."""
        index = dict(zip(self.subjects, self.is_in.tolist()))
        return np.array([bool(index.get(str(s), False)) for s in subject_ids], dtype=bool)


def membership_matrix(n_refs: int, n_subjects: int, seed: int, n_in: int | None = None) -> np.ndarray:
    """(n_refs, n_subjects) bool: which reference trains on which subject.

    n_in None (half the subjects): n_refs == 1: a random half of the subjects. n_refs >= 2: every
    subject is IN for exactly floor(n_refs / 2) references, chosen at random per subject (Carlini
    et al. 2022's balanced design), so each reference trains on about half the subjects and every
    subject has IN and OUT references (what online LiRA needs).

    n_in given (e.g. the target's number of training subjects): every reference trains on exactly
    n_in subjects, chosen greedily among the subjects IN for the fewest references so far (ties at
    random), so IN counts per subject differ by at most one.
    """
    rng = np.random.default_rng(seed)
    if n_in is not None:
        if not 1 <= n_in <= n_subjects:
            raise ValueError(f"n_in must be in [1, {n_subjects}], got {n_in}")
        m = np.zeros((n_refs, n_subjects), dtype=bool)
        count = np.zeros(n_subjects)
        for i in range(n_refs):
            pick = np.lexsort((rng.random(n_subjects), count))[:n_in]
            m[i, pick] = True
            count[pick] += 1
        return m
    if n_refs == 1:
        m = np.zeros((1, n_subjects), dtype=bool)
        m[0, rng.permutation(n_subjects)[: n_subjects // 2]] = True
        return m
    ranks = np.argsort(np.argsort(rng.random((n_refs, n_subjects)), axis=0), axis=0)
    return ranks < n_refs // 2


def reference_key(cfg: dict, population_rows: Sequence[dict], n_refs: int, seed: int,
                  n_in: int | None = None) -> str:
    """Hash identifying a reference set: recipe (without cache_dir), population, n_refs, seed and
    the training-set size n_in (None: halves)."""
    recipe = copy.deepcopy(cfg)
    recipe.get("data", {}).pop("cache_dir", None)  # where arrays are cached does not change a model
    key = {"recipe": recipe, "population": manifest_fingerprint(population_rows), "n_refs": n_refs, "seed": seed}
    if n_in is not None:
        key["n_in"] = int(n_in)
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_reference(cfg: dict, rows: list[dict], run_dir: Path, progress_bar: bool, threads: int | None) -> None:
    """One reference's pretraining run (a worker-process entry point)."""
    from medssl.engine.pretrain import pretrain

    if threads:
        import torch

        torch.set_num_threads(threads)
    pretrain(cfg, rows, run_dir, progress_bar=progress_bar)


def train_reference_models(
    cfg: dict,
    population_rows: Sequence[dict],
    n_refs: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    progress_bar: bool = False,
    workers: int | None = None,
    n_in: int | None = None,
) -> list[ReferenceModel]:
    """Train (or reuse) ``n_refs`` reference models of recipe ``cfg``, each on a random half of the
    subjects of ``population_rows``; returns them in order (see the module docstring).

    workers: reference trainings at once in worker processes (default: one per two cores, at
    most ``n_refs``); 1 trains them one after another in this process. n_in: subjects per
    reference (the target's training-set size; None: half the population), see
    :func:`membership_matrix`."""
    if n_refs < 1:
        raise ValueError(f"n_refs must be >= 1, got {n_refs}")
    subjects = tuple(sorted({str(r["subject_id"]) for r in population_rows}))
    if len(subjects) < 2:
        raise ValueError(f"the population needs at least 2 subjects to split in halves, got {len(subjects)}")
    pop_sha = manifest_fingerprint(population_rows)
    root = Path(out_dir) / f"refs-{reference_key(cfg, population_rows, n_refs, seed, n_in)}"
    plan = membership_matrix(n_refs, len(subjects), seed, n_in)
    jobs = []  # (index, cfg, rows, run_dir) of the references still to train
    for i in range(n_refs):
        run_dir = root / f"ref_{i:03d}"
        if not ((run_dir / "membership.json").is_file() and (run_dir / "checkpoint" / "card.json").is_file()):
            chosen = {s for s, keep in zip(subjects, plan[i]) if keep}
            ref_cfg = copy.deepcopy(cfg)
            ref_cfg["seed"] = int(cfg.get("seed", 0)) + 1 + i
            jobs.append((i, ref_cfg, [dict(r) for r in population_rows if str(r["subject_id"]) in chosen], run_dir))
    cores = os.cpu_count() or 1
    workers = min(len(jobs), workers or max(1, cores // 2)) if jobs else 0
    if workers > 1:
        threads = max(1, cores // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_reference, c, rows, d, False, threads) for _, c, rows, d in jobs]
            for f in progress(futures, desc=f"reference models ({workers} in parallel)", unit="model"):
                f.result()
    else:
        for _, c, rows, d in progress(jobs, desc="reference models", unit="model"):
            _train_reference(c, rows, d, progress_bar, None)
    for i, c, _, run_dir in jobs:  # written last: its presence marks a finished reference
        atomic_write_json(run_dir / "membership.json", {"population_sha256": pop_sha, "n_subjects": len(subjects),
                                                        "seed": c["seed"], "in": plan[i].tolist()})
    refs = []
    for i in range(n_refs):
        run_dir = root / f"ref_{i:03d}"
        member_file = run_dir / "membership.json"
        saved = json.loads(member_file.read_text())
        if saved.get("population_sha256") != pop_sha or len(saved["in"]) != len(subjects):
            raise ValueError(f"{member_file}: written for another population; remove {root}")
        refs.append(ReferenceModel(run_dir, run_dir / "checkpoint", subjects, np.array(saved["in"], dtype=bool),
                                   int(saved.get("seed", int(cfg.get("seed", 0)) + 1 + i))))
    return refs
