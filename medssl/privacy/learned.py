"""The adaptive learned attacker (threat model 3): a classifier over subject-level statistics of
repeated queries.

Features of a subject, from its record windows (W windows x Q queries each):

* from the SSL loss (score access): mean, minimum, maximum and standard deviation over windows of
  the query-mean loss, and the mean over windows of the across-query standard deviation (members
  are often not only lower but also more stable under re-masking);
* from the embeddings (embedding access): mean, minimum and maximum over windows of the
  augmentation consistency (EncoderMI's feature);
* the number of windows is *not* a feature (it says how long a recording is, not whether it was
  trained on).

Classifier: standardised L2 logistic regression. The attacker is calibrated the way an auditor
can: it learns from subjects of known membership and is scored on others. Scores are
*cross-fitted* by subject: subjects are split into ``n_folds`` stratified folds, and each fold's
scores come from a model trained on the other folds, so no subject is scored by a model that saw
its label. This is a stronger attacker than a threshold (it adapts to the model), and an upper
bound on what an outsider with a few known members could do; say so when reporting it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

FEATURE_NAMES = ("loss_mean", "loss_min", "loss_max", "loss_std", "loss_query_std",
                 "consistency_mean", "consistency_min", "consistency_max")


def subject_features(subjects: Sequence[str], window_subjects: np.ndarray, losses: np.ndarray,
                     consistency: np.ndarray) -> np.ndarray:
    """(S, 8) features (``FEATURE_NAMES``) of ``subjects`` from per-window losses (W, Q) and
    consistencies (W,), the windows belonging to ``window_subjects`` (W,)."""
    losses = np.asarray(losses, dtype=np.float64).reshape(len(window_subjects), -1)
    consistency = np.asarray(consistency, dtype=np.float64)
    per_window = losses.mean(axis=1)
    query_std = losses.std(axis=1)
    out = np.zeros((len(subjects), len(FEATURE_NAMES)))
    for i, s in enumerate(subjects):
        m = window_subjects == s
        if not m.any():
            raise ValueError(f"subject {i} has no scored window")
        lw, c = per_window[m], consistency[m]
        out[i] = (lw.mean(), lw.min(), lw.max(), lw.std(), query_std[m].mean(), c.mean(), c.min(), c.max())
    return out


def cross_fitted_scores(features: np.ndarray, labels: np.ndarray, *, n_folds: int = 5, seed: int = 0,
                        C: float = 1.0) -> np.ndarray:
    """(S,) membership scores: out-of-fold decision values of a logistic regression on the
    standardised features, folds stratified by membership."""
    labels = np.asarray(labels, dtype=bool)
    n_folds = int(min(n_folds, labels.sum(), (~labels).sum()))
    if n_folds < 2:
        raise ValueError("the learned attacker needs at least 2 member and 2 non-member subjects")
    scores = np.zeros(len(labels))
    for train, test in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(features, labels):
        scaler = StandardScaler().fit(features[train])
        model = LogisticRegression(C=C, max_iter=1000).fit(scaler.transform(features[train]), labels[train])
        scores[test] = model.decision_function(scaler.transform(features[test]))
    return scores
