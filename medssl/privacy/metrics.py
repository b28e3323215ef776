"""Membership-inference evaluation metrics: ROC, AUC with a bootstrap CI, TPR at a low FPR.

Convention everywhere: a *higher* score means "more likely a member". Inputs are one score per
unit of membership; for subject-level audits, aggregate record scores first
(:func:`medssl.privacy.aggregate.aggregate_by_subject`) so the bootstrap resamples subjects.

Low-FPR reporting follows Carlini et al. 2022 ("Membership Inference Attacks From First
Principles", Sec. III.B / Sec. V): the TPR at a fixed low FPR (e.g. 0.1 %) is the metric that
matters, AUC alone hides it. An FPR of f can only be measured with at least ceil(1/f)
non-members (a single false positive among fewer non-members already exceeds f), so
:func:`tpr_at_fpr` flags such cases (``achievable=False``) and :func:`check_fpr_feasible` raises;
:func:`tpr_table` reports them as ``None`` with the reason and adds the TPR at the smallest FPR
the non-members can measure (1 / n_nonmembers).

Uncertainty. The TPR at a fixed FPR depends on a threshold estimated from the non-members, so
its interval must carry that threshold's uncertainty too: :func:`tpr_bootstrap_ci` resamples
members *and* non-members and re-estimates the threshold in every replicate. A Clopper-Pearson
interval over the members (:func:`clopper_pearson`) is conditional on the observed threshold
and covers the true TPR far less often than its nominal level with tens of non-members; it is
kept as a second, labelled column. :func:`auc_permutation_test` gives the distribution of the
AUC under "membership carries no signal" at the audit's own sample sizes (labels permuted over
the audited subjects), and :func:`auc_difference_ci` a paired interval for AUC(target) -
AUC(control) on the same subjects.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = [
    "auc_difference_ci",
    "auc_permutation_test",
    "auc_score",
    "auc_with_ci",
    "check_fpr_feasible",
    "clopper_pearson",
    "min_nonmembers_for_fpr",
    "roc_curve_points",
    "roc_loglog_svg",
    "tpr_at_fpr",
    "tpr_bootstrap_ci",
    "tpr_table",
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
    largest non-member score (a realised FPR of 0 here, an FPR near 1/(n_nonmembers + 1) in the
    population), which is *not* an estimate, nor a bound, of the TPR at the target FPR; ``note``
    says so and :func:`tpr_table` reports ``None`` for it.
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
        else f"not estimable: FPR {fpr:g} needs >= {need} non-members, got {n_neg}; "
        f"value is the TPR above the largest non-member score (an FPR near 1/{n_neg + 1}), not a TPR at {fpr:g}"
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


def _chunks(n_total: int, n_cols: int, budget: int = 2_000_000):
    step = max(1, min(n_total, budget // max(n_cols, 1)))
    for start in range(0, n_total, step):
        yield min(step, n_total - start)


def tpr_bootstrap_ci(
    scores, is_member, fpr: float, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the TPR at ``fpr`` that carries the threshold's uncertainty.

    Every replicate resamples members and non-members with replacement (stratified, class sizes
    kept), re-estimates the threshold from the resampled non-members with the rule of
    :func:`tpr_at_fpr` ((k+1)-th largest, k = floor(fpr * n_nonmembers), strict >) and measures
    the TPR of the resampled members above it. Returns (low, high)."""
    s, m = _scores_labels(scores, is_member)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be positive, got {n_bootstrap}")
    pos, neg = s[m], s[~m]
    k = math.floor(fpr * neg.size + 1e-9)
    rng = np.random.default_rng(seed)
    vals = []
    for n in _chunks(n_bootstrap, s.size):
        nb = neg[rng.integers(0, neg.size, (n, neg.size))]
        thr = np.full(n, -np.inf) if k >= neg.size else -np.partition(-nb, k, axis=1)[:, k]
        pb = pos[rng.integers(0, pos.size, (n, pos.size))]
        vals.append((pb > thr[:, None]).mean(axis=1))
    v = np.concatenate(vals)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _tpr_entry(scores, is_member, fpr: float, n_bootstrap: int, seed: int, confidence: float) -> dict:
    r = tpr_at_fpr(scores, is_member, fpr, confidence)
    lo, hi = tpr_bootstrap_ci(scores, is_member, fpr, n_bootstrap, seed, confidence)
    return {"value": r["value"], "ci_low": lo, "ci_high": hi,
            "cp_ci_low": r["ci_low"], "cp_ci_high": r["ci_high"], "achievable": True,
            "fpr_realised": r["fpr_realised"], "n_false_positives": r["n_false_positives"], "reason": None}


def tpr_table(
    scores, is_member, fprs=(0.001, 0.01, 0.1), n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """TPR at each FPR in ``fprs`` (keys ``f"{fpr:g}"``) plus ``"min_measurable"``, the TPR at the
    smallest FPR the non-members can measure (1 / n_nonmembers: one false positive allowed).

    Each estimable entry: ``value``; ``ci_low``/``ci_high`` from :func:`tpr_bootstrap_ci` (both
    classes resampled, threshold re-estimated); ``cp_ci_low``/``cp_ci_high``, Clopper-Pearson over
    the members *conditional on the observed threshold* (narrower, under-covers); ``achievable``
    True, ``fpr_realised``, ``n_false_positives``, ``reason`` None. An FPR below
    1 / n_nonmembers is not estimable: ``value`` and every interval are None, ``achievable`` False
    and ``reason`` says why. ``min_measurable`` adds ``fpr`` (its target)."""
    s, m = _scores_labels(scores, is_member)
    n_neg = int((~m).sum())
    out = {}
    for f in fprs:
        need = min_nonmembers_for_fpr(f)
        if n_neg < need:
            out[f"{f:g}"] = {
                "value": None, "ci_low": None, "ci_high": None, "cp_ci_low": None, "cp_ci_high": None,
                "achievable": False, "fpr_realised": None, "n_false_positives": None,
                "reason": f"not estimable: FPR {f:g} needs >= {need} non-members, the audit has {n_neg} "
                          f"(one false positive is an FPR of {1.0 / n_neg:.3g}); see the TPR at the smallest "
                          "measurable FPR instead",
            }
        else:
            out[f"{f:g}"] = _tpr_entry(s, m, f, n_bootstrap, seed, confidence)
    f_min = 1.0 / n_neg
    out["min_measurable"] = {"fpr": f_min, **_tpr_entry(s, m, f_min, n_bootstrap, seed, confidence)}
    return out


def auc_permutation_test(
    scores, is_member, n_permutations: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Null distribution of the AUC at these sample sizes: membership labels permuted over the
    same subjects (the scores kept), so it holds whatever the score distribution is.

    Returns dict(auc, null_low, null_high (the central ``confidence`` band of the permutation
    AUCs), null_mean, p_value, alternative="greater", n_permutations). The p-value is one-sided
    (leakage raises the AUC): (1 + #{permuted AUC >= observed}) / (1 + n_permutations).
    """
    s, m = _scores_labels(scores, is_member)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    ranks = stats.rankdata(s)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    observed = (ranks[m].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    rng = np.random.default_rng(seed)
    null = []
    for n in _chunks(n_permutations, s.size):
        picks = np.argsort(rng.random((n, s.size)), axis=1)[:, :n_pos]
        null.append((ranks[picks].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
    null = np.concatenate(null)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(null, [alpha / 2, 1 - alpha / 2])
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_permutations)
    return {"auc": float(observed), "null_low": float(lo), "null_high": float(hi), "null_mean": float(null.mean()),
            "p_value": float(p), "alternative": "greater", "n_permutations": int(n_permutations)}


def auc_difference_ci(
    scores_a, scores_b, is_member, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """AUC(a) - AUC(b) for two score vectors on the *same* subjects (e.g. the target model and a
    control model), with a paired stratified bootstrap: each replicate resamples members and
    non-members and evaluates both AUCs on the same resample. Returns dict(difference, ci_low,
    ci_high, auc_a, auc_b, n_bootstrap, confidence)."""
    a, m = _scores_labels(scores_a, is_member)
    b, _ = _scores_labels(scores_b, is_member)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be positive, got {n_bootstrap}")
    pos_i, neg_i = np.flatnonzero(m), np.flatnonzero(~m)
    labels = np.r_[np.ones(pos_i.size, bool), np.zeros(neg_i.size, bool)]
    rng = np.random.default_rng(seed)
    diffs = []
    for n in _chunks(n_bootstrap, 2 * a.size):
        idx = np.concatenate([pos_i[rng.integers(0, pos_i.size, (n, pos_i.size))],
                              neg_i[rng.integers(0, neg_i.size, (n, neg_i.size))]], axis=1)
        diffs.append(_auc_batch(a[idx], labels) - _auc_batch(b[idx], labels))
    d = np.concatenate(diffs)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    auc_a, auc_b = float(_auc_batch(a[None], m)[0]), float(_auc_batch(b[None], m)[0])
    return {"difference": auc_a - auc_b, "ci_low": float(lo), "ci_high": float(hi), "auc_a": auc_a, "auc_b": auc_b,
            "n_bootstrap": int(n_bootstrap), "confidence": float(confidence)}


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
