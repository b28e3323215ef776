"""Reference models for LiRA/RMIA: balanced random halves of the population, cached by a hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.data.layouts import index_layout
from medssl.engine.config import resolve_recipe
from medssl.privacy.references import (
    membership_matrix,
    reference_key,
    train_reference_models,
)

TINY = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
    "encoder.overrides.num_heads=2", "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=0",
]


@pytest.mark.parametrize("n_refs", [2, 3, 4, 8])
def test_membership_matrix_is_balanced_per_subject(n_refs):
    m = membership_matrix(n_refs, 40, seed=1)
    assert m.shape == (n_refs, 40)
    assert (m.sum(axis=0) == n_refs // 2).all()  # every subject IN for exactly half (floor)
    assert 0 < m.sum(axis=1).min() and m.sum(axis=1).max() < 40
    assert not np.array_equal(m, membership_matrix(n_refs, 40, seed=2))


def test_single_reference_trains_on_a_random_half():
    m = membership_matrix(1, 9, seed=0)
    assert m.sum() == 4


def test_key_ignores_cache_dir_but_not_recipe_population_or_seed():
    rows = [{"record_id": "r1", "subject_id": "s1", "path": "p", "split": "train", "labels": ""}]
    a = resolve_recipe("ecg_jepa", [*TINY, "data.cache_dir=/x"])
    b = resolve_recipe("ecg_jepa", [*TINY, "data.cache_dir=/y"])
    c = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=2"])
    assert reference_key(a, rows, 2, 0) == reference_key(b, rows, 2, 0)
    assert len({reference_key(a, rows, 2, 0), reference_key(c, rows, 2, 0), reference_key(a, rows, 3, 0),
                reference_key(a, rows, 2, 1), reference_key(a, rows * 2, 2, 0)}) == 5


def test_references_are_trained_on_their_half_and_reused(tiny_cohort_dir, tmp_path):
    rows, _ = index_layout("synthetic", tiny_cohort_dir)
    cfg = resolve_recipe("ecg_jepa", TINY)
    refs = train_reference_models(cfg, rows, 2, tmp_path, seed=0, workers=1)
    subjects = sorted({r["subject_id"] for r in rows})
    assert len(refs) == 2 and refs[0].subjects == tuple(subjects)
    assert (np.stack([r.is_in for r in refs]).sum(axis=0) == 1).all()
    for ref in refs:
        saved = json.loads((ref.run_dir / "membership.json").read_text())
        assert saved["in"] == ref.is_in.tolist()
        assert not any(s in (ref.run_dir / "membership.json").read_text() for s in subjects)
        card = json.loads((ref.checkpoint / "card.json").read_text())
        assert card["training_metrics"]["n_subjects"] == int(ref.is_in.sum())
        assert ref.membership([subjects[0], "not-in-population"]).tolist() == [bool(ref.is_in[0]), False]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = train_reference_models(cfg, rows, 2, tmp_path, seed=0, workers=1)
    assert [r.run_dir for r in again] == [r.run_dir for r in refs]
    assert all(np.array_equal(a.is_in, b.is_in) for a, b in zip(again, refs))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps  # nothing retrained


@pytest.mark.slow
def test_references_train_in_parallel_worker_processes(tiny_cohort_dir, tmp_path):
    rows, _ = index_layout("synthetic", tiny_cohort_dir)
    cfg = resolve_recipe("ecg_jepa", TINY)
    parallel = train_reference_models(cfg, rows, 2, tmp_path / "p", seed=0, workers=2)
    serial = train_reference_models(cfg, rows, 2, tmp_path / "s", seed=0, workers=1)
    for a, b in zip(parallel, serial):
        assert np.array_equal(a.is_in, b.is_in) and a.seed == b.seed
        card = json.loads((a.checkpoint / "card.json").read_text())
        assert card["training_metrics"]["n_subjects"] == int(a.is_in.sum())


@pytest.mark.parametrize("n_refs,n_subjects,n_in", [(1, 24, 12), (4, 48, 12), (3, 24, 12), (5, 10, 7)])
def test_membership_matrix_trains_each_reference_on_the_targets_size_balanced(n_refs, n_subjects, n_in):
    m = membership_matrix(n_refs, n_subjects, seed=2, n_in=n_in)
    assert m.shape == (n_refs, n_subjects) and (m.sum(axis=1) == n_in).all()
    counts = m.sum(axis=0)
    assert counts.max() - counts.min() <= 1  # IN counts per subject differ by at most one
    assert not np.array_equal(m, membership_matrix(n_refs, n_subjects, seed=3, n_in=n_in)) or n_in == n_subjects
    with pytest.raises(ValueError, match="n_in"):
        membership_matrix(2, 10, seed=0, n_in=11)
