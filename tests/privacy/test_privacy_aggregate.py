"""Tests for medssl.privacy.aggregate."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.privacy.aggregate import aggregate_by_subject, subject_membership


def test_mean_and_max_per_subject():
    scores = [1.0, 3.0, -2.0, 5.0, 0.5, 0.5]
    ids = ["b", "b", "a", "c", "a", "c"]
    subjects, mean = aggregate_by_subject(scores, ids, "mean")
    assert list(subjects) == ["a", "b", "c"]
    np.testing.assert_allclose(mean, [-0.75, 2.0, 2.75])
    subjects, mx = aggregate_by_subject(scores, ids, how="max")
    np.testing.assert_allclose(mx, [0.5, 3.0, 5.0])
    assert mean.dtype == np.float64


def test_integer_ids_and_negative_max():
    subjects, mx = aggregate_by_subject([-5.0, -7.0, -1.0], [10, 10, 2], how="max")
    assert list(subjects) == [2, 10]
    np.testing.assert_allclose(mx, [-1.0, -5.0])


def test_aggregation_lines_up_with_subject_membership():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, 200)
    member_subjects = set(range(0, 30, 2))
    is_member = np.array([i in member_subjects for i in ids])
    scores = rng.normal(size=200) + is_member  # members shifted
    subjects, subj_scores = aggregate_by_subject(scores, ids)
    subjects2, subj_member = subject_membership(is_member, ids)
    np.testing.assert_array_equal(subjects, subjects2)
    assert set(subjects[subj_member]) == member_subjects & set(ids)
    assert subj_scores[subj_member].mean() > subj_scores[~subj_member].mean() + 0.5


def test_errors():
    with pytest.raises(ValueError, match="how must be one of"):
        aggregate_by_subject([1.0], ["a"], how="median")
    with pytest.raises(ValueError, match="differ in length"):
        aggregate_by_subject([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="non-finite"):
        aggregate_by_subject([np.nan], ["a"])
    with pytest.raises(ValueError, match="subject b"):
        subject_membership([1, 0, 1, 1], ["a", "b", "b", "a"])
