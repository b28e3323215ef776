"""Membership-inference evaluation metrics: ROC, AUC with a bootstrap CI, TPR at a low FPR.

Convention everywhere: a *higher* score means "more likely a member". Inputs are one score per
unit of membership; for subject-level audits, aggregate record scores first
(:func:`medssl.privacy.aggregate.aggregate_by_subject`) so the bootstrap resamples subjects.

Low-FPR reporting follows Carlini et al. 2022 ("Membership Inference Attacks From First
Principles", Sec. III.B / Sec. V): the TPR at a fixed low FPR (e.g. 0.1 %) is the metric that
matters, AUC alone hides it. An FPR of f can only be measured with at least ceil(1/f)
non-members (a single false positive among fewer non-members already exceeds f), so
:func:`tpr_at_fpr` flags such cases (``achievable=False``) and :func:`check_fpr_feasible` raises.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = [
    "auc_score",
    "auc_with_ci",
    "check_fpr_feasible",
    "clopper_pearson",
    "min_nonmembers_for_fpr",
    "roc_curve_points",
    "roc_loglog_svg",
    "tpr_at_fpr",
]


def _scores_labels(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).reshape(-1)
    if s.shape != m.shape:
        raise ValueError(f"scores and is_member differ in length: {s.shape[0]} vs {m.shape[0]}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("is_member must be boolean or 0/1")
        m = m.astype(bool)
    if not np.isfinite(s).all():
        raise ValueError(f"scores contain {int((~np.isfinite(s)).sum())} non-finite values")
    if m.all() or not m.any():
        raise ValueError(
            f"need both members and non-members, got {int(m.sum())} members and {int((~m).sum())} non-members"
        )
    return s, m


def roc_curve_points(scores, is_member) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points for the rule "member iff score >= threshold", one point per distinct score.

    Tied scores move together (no random tie-breaking), so the curve has a diagonal step at ties.
    Returns (fpr, tpr, thresholds), each (n_distinct + 1,): the first point is (0, 0) with
    threshold +inf, the last is (1, 1) at the lowest score; fpr and tpr are non-decreasing.
    """
    s, m = _scores_labels(scores, is_member)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, m_sorted = s[order], m[order]
    tp = np.cumsum(m_sorted)
    fp = np.cumsum(~m_sorted)
    # the last index of each run of equal scores
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    fpr = np.r_[0.0, fp[last] / (~m).sum()]
    tpr = np.r_[0.0, tp[last] / m.sum()]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thresholds


def auc_score(scores, is_member) -> float:
    """ROC AUC = P(score_member > score_nonmember) + 0.5 P(tie) (Mann-Whitney U / (n_pos n_neg))."""
    s, m = _scores_labels(scores, is_member)
    return float(_auc_batch(s[None], m)[0])


def _auc_batch(s: np.ndarray, m: np.ndarray) -> np.ndarray:
    """AUC of each row of s (n_rows, n) with the same labels m (n,), via average ranks."""
    ranks = stats.rankdata(s, axis=1)  # ties get average ranks -> ties count 1/2
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    u = ranks[:, m].sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def auc_with_ci(
    scores, is_member, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """AUC with a percentile bootstrap CI over subjects (one score per subject).

    Members and non-members are resampled with replacement separately (stratified bootstrap), so
    every replicate keeps the observed class sizes. Work is chunked so memory stays
    O(chunk * n). Returns dict(auc, ci_low, ci_high, n_bootstrap, n_members, n_nonmembers,
    confidence).
    """
    s, m = _scores_labels(scores, is_member)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be positive, got {n_bootstrap}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pos, neg = s[m], s[~m]
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    chunk = max(1, min(n_bootstrap, 2_000_000 // s.size))
    aucs = []
    for start in range(0, n_bootstrap, chunk):
        n = min(chunk, n_bootstrap - start)
        rows = np.concatenate(
            [pos[rng.integers(0, pos.size, (n, pos.size))], neg[rng.integers(0, neg.size, (n, neg.size))]],
            axis=1,
        )
        aucs.append(_auc_batch(rows, labels))
    aucs = np.concatenate(aucs)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return {
        "auc": float(_auc_batch(s[None], m)[0]),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_bootstrap": int(n_bootstrap),
        "n_members": int(m.sum()),
        "n_nonmembers": int((~m).sum()),
        "confidence": float(confidence),
    }


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion k/n.

    low = Beta(alpha/2; k, n-k+1) (0 if k == 0), high = Beta(1-alpha/2; k+1, n-k) (1 if k == n).
    Matches ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def min_nonmembers_for_fpr(fpr: float) -> int:
    """Smallest number of non-members at which FPR = fpr is resolvable: ceil(1 / fpr)."""
    if not 0.0 < fpr <= 1.0:
        raise ValueError(f"fpr must be in (0, 1], got {fpr}")
    return math.ceil(1.0 / fpr - 1e-9)


def check_fpr_feasible(n_nonmembers: int, fpr: float) -> None:
    """Raise ValueError unless n_nonmembers >= ceil(1/fpr) (e.g. 0.1 % FPR needs >= 1000)."""
    need = min_nonmembers_for_fpr(fpr)
    if n_nonmembers < need:
        raise ValueError(
            f"FPR {fpr:g} cannot be measured with {n_nonmembers} non-members: "
            f"need at least {need} non-members (one false positive = {1.0 / max(n_nonmembers, 1):.3g} FPR)"
        )


def tpr_at_fpr(scores, is_member, fpr: float, confidence: float = 0.95) -> dict:
    """TPR at a target FPR, with the Clopper-Pearson CI of the TPR over members.

    Rule: "member iff score > threshold" where threshold is the (k+1)-th largest non-member score,
    k = floor(fpr * n_nonmembers) (k >= n_nonmembers: threshold -inf, everyone flagged). Ties are
    counted conservatively: every non-member *and* member tied with the threshold is called a
    non-member, so the realised FPR never exceeds the target even with tied scores (the TPR may be
    lower than with random tie-breaking, never higher).

    Returns dict(value, ci_low, ci_high, threshold, n_members, n_nonmembers, achievable,
    fpr_target, fpr_realised, n_true_positives, n_false_positives, min_nonmembers, note).
    ``achievable`` is False when n_nonmembers < ceil(1/fpr): the operating point is then the
    zero-false-positive point (FPR = 0 < target), whose TPR is only a lower bound of the TPR at
    the target; ``note`` says so.
    """
    s, m = _scores_labels(scores, is_member)
    need = min_nonmembers_for_fpr(fpr)
    neg = np.sort(s[~m])[::-1]
    n_neg, n_pos = neg.size, int(m.sum())
    k = math.floor(fpr * n_neg + 1e-9)
    threshold = -np.inf if k >= n_neg else float(neg[k])
    tp = int((s[m] > threshold).sum())
    fp = int((s[~m] > threshold).sum())
    lo, hi = clopper_pearson(tp, n_pos, confidence)
    achievable = n_neg >= need
    note = (
        ""
        if achievable
        else f"not achievable: FPR {fpr:g} needs >= {need} non-members, got {n_neg}; "
        f"value is the TPR at 0 false positives (a lower bound)"
    )
    return {
        "value": tp / n_pos,
        "ci_low": lo,
        "ci_high": hi,
        "threshold": threshold,
        "n_members": n_pos,
        "n_nonmembers": int(n_neg),
        "achievable": bool(achievable),
        "fpr_target": float(fpr),
        "fpr_realised": fp / n_neg,
        "n_true_positives": tp,
        "n_false_positives": fp,
        "min_nonmembers": need,
        "note": note,
    }


def roc_loglog_svg(
    fpr, tpr, *, width: int = 320, height: int = 320, min_rate: float = 1e-3, label: str = "attack"
) -> str:
    """Inline SVG of an ROC curve on log-log axes from ``min_rate`` to 1, with the chance diagonal.

    Rates below ``min_rate`` are clipped to it (a curve starting at (0, 0) starts at the corner).
    Returns a standalone ``<svg>`` string (no external resources), suitable for HTML reports.
    """
    f = np.clip(np.asarray(fpr, dtype=np.float64).reshape(-1), min_rate, 1.0)
    t = np.clip(np.asarray(tpr, dtype=np.float64).reshape(-1), min_rate, 1.0)
    if f.shape != t.shape or f.size == 0:
        raise ValueError(f"fpr and tpr must be non-empty and equally long, got {f.size} and {t.size}")
    if not 0.0 < min_rate < 1.0:
        raise ValueError(f"min_rate must be in (0, 1), got {min_rate}")
    pad_l, pad_b, pad_t, pad_r = 48, 40, 12, 12
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    lo = math.log10(min_rate)

    def px(v: np.ndarray | float) -> np.ndarray:
        return pad_l + (np.log10(v) - lo) / -lo * pw

    def py(v: np.ndarray | float) -> np.ndarray:
        return pad_t + ph - (np.log10(v) - lo) / -lo * ph

    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">'),
        f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>',
    ]
    for e in range(round(lo), 1):
        v = 10.0**e
        x, y = float(px(v)), float(py(v))
        parts.append(f'<line x1="{x:.2f}" y1="{pad_t}" x2="{x:.2f}" y2="{pad_t + ph}" stroke="#ddd"/>')
        parts.append(f'<line x1="{pad_l}" y1="{y:.2f}" x2="{pad_l + pw}" y2="{y:.2f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.2f}" y="{pad_t + ph + 14}" text-anchor="middle">{v:g}</text>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 3:.2f}" text-anchor="end">{v:g}</text>')
    parts.append(
        f'<line class="diagonal" x1="{float(px(min_rate)):.2f}" y1="{float(py(min_rate)):.2f}" '
        f'x2="{float(px(1.0)):.2f}" y2="{float(py(1.0)):.2f}" stroke="#999" stroke-dasharray="4 3"/>'
    )
    pts = " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(px(f), py(t)))
    parts.append(f'<polyline class="roc" points="{pts}" fill="none" stroke="#c0392b" stroke-width="1.5"/>')
    parts.append(f'<text x="{pad_l + pw / 2}" y="{height - 6}" text-anchor="middle">FPR (log)</text>')
    parts.append(
        f'<text x="12" y="{pad_t + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + ph / 2})">TPR (log)</text>'
    )
    safe = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    parts.append(f"<title>{safe}: ROC, log-log</title>")
    parts.append("</svg>")
    return "\n".join(parts)
