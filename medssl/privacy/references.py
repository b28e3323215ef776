"""Reference ("shadow") models for LiRA / RMIA: the target's recipe, trained on random halves of a
population of subjects (Carlini et al. 2022, Sec. IV; Zarifzadeh et al. 2024, Sec. 3).

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
an interrupted run resumes from its Lightning checkpoint. Training is sequential, one reference
after another, in this process: fine for the handful of references a CPU audit uses; on a
cluster, launch the same folders as separate jobs (each is an ordinary ``pretrain`` run that
Lightning scales over devices/nodes).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.manifest import manifest_fingerprint
from medssl.io import atomic_write_json

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


def membership_matrix(n_refs: int, n_subjects: int, seed: int) -> np.ndarray:
    """(n_refs, n_subjects) bool: which reference trains on which subject.

    n_refs == 1: a random half of the subjects. n_refs >= 2: every subject is IN for exactly
    floor(n_refs / 2) references, chosen at random per subject (Carlini et al. 2022's balanced
    design), so each reference trains on about half the subjects and every subject has IN and OUT
    references (what online LiRA needs).
    """
    rng = np.random.default_rng(seed)
    if n_refs == 1:
        m = np.zeros((1, n_subjects), dtype=bool)
        m[0, rng.permutation(n_subjects)[: n_subjects // 2]] = True
        return m
    ranks = np.argsort(np.argsort(rng.random((n_refs, n_subjects)), axis=0), axis=0)
    return ranks < n_refs // 2


def reference_key(cfg: dict, population_rows: Sequence[dict], n_refs: int, seed: int) -> str:
    """Hash identifying a reference set: recipe (without cache_dir), population, n_refs, seed."""
    recipe = copy.deepcopy(cfg)
    recipe.get("data", {}).pop("cache_dir", None)  # where arrays are cached does not change a model
    blob = json.dumps(
        {"recipe": recipe, "population": manifest_fingerprint(population_rows), "n_refs": n_refs, "seed": seed},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_reference_models(
    cfg: dict,
    population_rows: Sequence[dict],
    n_refs: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    progress_bar: bool = False,
) -> list[ReferenceModel]:
    """Train (or reuse) ``n_refs`` reference models of recipe ``cfg``, each on a random half of the
    subjects of ``population_rows``; returns them in order (see the module docstring)."""
    from medssl.engine.pretrain import pretrain

    if n_refs < 1:
        raise ValueError(f"n_refs must be >= 1, got {n_refs}")
    subjects = tuple(sorted({str(r["subject_id"]) for r in population_rows}))
    if len(subjects) < 2:
        raise ValueError(f"the population needs at least 2 subjects to split in halves, got {len(subjects)}")
    pop_sha = manifest_fingerprint(population_rows)
    root = Path(out_dir) / f"refs-{reference_key(cfg, population_rows, n_refs, seed)}"
    refs = []
    for i in range(n_refs):
        run_dir = root / f"ref_{i:03d}"
        member_file = run_dir / "membership.json"
        ckpt = run_dir / "checkpoint"
        ref_seed = int(cfg.get("seed", 0)) + 1 + i
        if member_file.is_file() and (ckpt / "card.json").is_file():
            saved = json.loads(member_file.read_text())
            if saved.get("population_sha256") != pop_sha or len(saved["in"]) != len(subjects):
                raise ValueError(f"{member_file}: written for another population; remove {root}")
            is_in = np.array(saved["in"], dtype=bool)
        else:
            is_in = membership_matrix(n_refs, len(subjects), seed)[i]
            chosen = {s for s, keep in zip(subjects, is_in) if keep}
            ref_cfg = copy.deepcopy(cfg)
            ref_cfg["seed"] = ref_seed
            pretrain(ref_cfg, [r for r in population_rows if str(r["subject_id"]) in chosen], run_dir,
                     progress_bar=progress_bar)
            # written last: its presence marks a finished reference
            atomic_write_json(member_file, {"population_sha256": pop_sha, "n_subjects": len(subjects),
                                            "seed": ref_seed, "in": is_in.tolist()})
        refs.append(ReferenceModel(run_dir, ckpt, subjects, is_in, ref_seed))
    return refs
