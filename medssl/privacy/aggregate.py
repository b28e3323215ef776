"""Aggregate per-record (per-window) membership scores to per-subject scores.

Membership is a property of a subject (all of a subject's records are in or out of the training
set), so audits score every record window and pool the scores per subject before computing
ROC/TPR metrics (:mod:`medssl.privacy.metrics`); bootstrap CIs then resample subjects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["aggregate_by_subject", "subject_membership"]

_HOW = ("mean", "max")


def aggregate_by_subject(
    scores, subject_ids: Sequence, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Pool record scores (n_records,) per subject.

    how: "mean" (average over a subject's windows: lower variance) or "max" (the most confident
    window: the attacker flags a subject if any record looks like a member).
    Returns (subjects, subject_scores): subjects sorted as ``np.unique`` sorts them
    (n_subjects,), subject_scores float64 (n_subjects,) aligned with them.
    """
    if how not in _HOW:
        raise ValueError(f"how must be one of {_HOW}, got {how!r}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ids = np.asarray(subject_ids).reshape(-1)
    if s.shape != ids.shape:
        raise ValueError(f"scores and subject_ids differ in length: {s.size} vs {ids.size}")
    if s.size == 0:
        raise ValueError("no scores to aggregate")
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    subjects, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    if how == "mean":
        out = np.bincount(inverse, weights=s, minlength=subjects.size) / np.bincount(inverse, minlength=subjects.size)
    else:
        out = np.full(subjects.size, -np.inf)
        np.maximum.at(out, inverse, s)
    return subjects, out


def subject_membership(is_member, subject_ids: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject membership labels from per-record labels, checking they agree within a subject.

    Returns (subjects, is_member_subject bool) aligned with :func:`aggregate_by_subject`; raises
    ValueError naming the first subject whose records disagree (a subject split leak).
    """
    m = np.asarray(is_member).astype(bool).reshape(-1)
    ids = np.asarray(subject_ids).reshape(-1)
    if m.shape != ids.shape:
        raise ValueError(f"is_member and subject_ids differ in length: {m.size} vs {ids.size}")
    subjects, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_in = np.bincount(inverse, weights=m.astype(float), minlength=subjects.size)
    n = np.bincount(inverse, minlength=subjects.size)
    mixed = (n_in > 0) & (n_in < n)
    if mixed.any():
        first = subjects[np.argmax(mixed)]
        raise ValueError(
            f"membership differs between records of {int(mixed.sum())} subject(s), e.g. subject {first}: "
            "membership must be per subject"
        )
    return subjects, n_in > 0
