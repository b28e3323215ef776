"""Membership-inference attacks on per-example signals: loss threshold, LiRA and RMIA.

All attacks return one score per example, higher = more likely a member; evaluate them with
:mod:`medssl.privacy.metrics` after pooling per subject (:mod:`medssl.privacy.aggregate`).

Signals. The papers use classifier confidences; an SSL encoder has no label, so medssl uses a
per-example scalar computed by :mod:`medssl.privacy.signals`:

* LiRA expects an (approximately) Gaussian, unbounded signal. Carlini et al. logit-scale the
  confidence p, phi(p) = log(p / (1 - p)) (Sec. IV). A loss is already unbounded, so pass the
  *negative loss* directly (no logit); for similarity-type signals in (0, 1) (e.g. an
  augmentation-consistency cosine mapped to (0, 1)) pass ``transform="logit"``.
* RMIA compares probability ratios, so its signal must be positive and probability-like:
  ``exp(-loss)`` or a similarity in (0, 1].
* The loss attack (Yeom et al. 2018) thresholds the loss itself: score = -loss.

Shapes: B examples, R reference ("shadow") models, Q queries (augmented views) per example.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["lira_offline", "lira_online", "logit", "loss_attack", "rmia"]

DEFAULT_FIXED_VARIANCE_BELOW = 64


def loss_attack(losses) -> np.ndarray:
    """Loss-threshold attack (Yeom et al. 2018): score = -loss, so lower loss = more likely member.

    losses: (B,) or (B, Q) (averaged over queries). Returns float64 (B,).
    """
    x = np.asarray(losses, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise ValueError(f"losses must be (B,) or (B, Q), got shape {x.shape}")
    return -x


def logit(p, eps: float = 1e-6) -> np.ndarray:
    """phi(p) = log(p) - log(1 - p) with p clipped to [eps, 1 - eps] (Carlini et al. 2022, logit scaling, Sec. IV)."""
    q = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(q) - np.log1p(-q)


def _prepare(target, reference, transform: str | None) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if r.ndim == 2:
        r = r[:, :, None]
    if t.ndim != 2 or r.ndim != 3 or r.shape[1:] != t.shape:
        raise ValueError(
            f"target must be (B,) or (B, Q) and reference (R, B) or (R, B, Q) with matching B, Q; "
            f"got {np.shape(target)} and {np.shape(reference)}"
        )
    if transform == "logit":
        t, r = logit(t), logit(r)
    elif transform is not None:
        raise ValueError(f"transform must be None or 'logit', got {transform!r}")
    if not (np.isfinite(t).all() and np.isfinite(r).all()):
        raise ValueError("signals contain non-finite values")
    return t, r


VARIANCE_MODES = ("auto", "per_example", "pooled", "global")
MIN_POOLED_DOF = 8


def _gaussian_fit(
    ref: np.ndarray, mask: np.ndarray, variance: str, side: str, enough_for_per_example: bool,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Per-example mean (B, Q) of ref (R, B, Q) over the references where mask (R, B), and a
    variance by rule ``variance`` (returns the rule actually used):

    * ``per_example``: each example's own variance (needs >= 2 references per example on this
      side; ``auto`` uses it when ``enough_for_per_example``, the caller's rule);
    * ``pooled``: one variance per query pooled *within* examples (deviations around each
      example's own mean), with sum(n_b - 1) degrees of freedom (``auto``: when >= MIN_POOLED_DOF);
    * ``global``: the variance of all this side's reference signals across examples and models
      (the reference code's ``fix_variance`` for few shadow models, Carlini et al. 2022): it
      includes the spread between examples, so it is wider; ``auto`` falls back to it when the
      references are too few for a within-example estimate (e.g. one per side).
    Variance None when even the global one cannot be estimated (fewer than 2 signals) or is 0.
    """
    n = mask.sum(axis=0)  # (B,)
    if (n == 0).any():
        raise ValueError(
            f"{int((n == 0).sum())} example(s) have no {side} reference model; use more references "
            "or a membership matrix that covers every example on both sides"
        )
    w = mask[:, :, None].astype(np.float64)
    mu = (w * ref).sum(axis=0) / n[:, None]
    sq = (w * (ref - mu[None]) ** 2).sum(axis=0)  # (B, Q)
    dof = int((n - 1).sum())
    if variance == "auto":
        variance = ("per_example" if enough_for_per_example and int(n.min()) >= 2 else
                    "pooled" if dof >= MIN_POOLED_DOF else "global")
    if variance == "per_example":
        if (n < 2).any():
            raise ValueError(f"per-example variances need >= 2 {side} references per example")
        var = sq / (n[:, None] - 1)
    elif variance == "pooled":
        if dof < 1:
            raise ValueError(f"a pooled within-example variance needs some example with >= 2 {side} references")
        var = np.broadcast_to(sq.sum(axis=0, keepdims=True) / dof, mu.shape)
    else:
        vals = ref[mask]  # (N, Q): every signal of this side
        if vals.shape[0] < 2:
            return mu, None, variance
        var = np.broadcast_to(vals.var(axis=0, ddof=1)[None], mu.shape)
    scale = max(1.0, float(np.mean(ref[mask] ** 2)))
    if not (np.asarray(var) > 1e-12 * scale).all():
        return mu, None, variance
    return mu, np.asarray(var, dtype=np.float64), variance


def _check_variance(var, side: str, rule: str):
    if var is None:
        raise ValueError(
            f"LiRA: the {side} reference signals have no usable variance (rule {rule!r}: too few references "
            "or identical signals); train more reference models"
        )
    return var


def _check_membership(reference_in, r: int, b: int) -> np.ndarray:
    m = np.asarray(reference_in)
    if m.shape != (r, b):
        raise ValueError(f"reference_in must be (R, B) = {(r, b)}, got {m.shape}")
    return m.astype(bool)


def lira_online(
    target,
    reference,
    reference_in,
    *,
    fixed_variance_below: int = DEFAULT_FIXED_VARIANCE_BELOW,
    transform: str | None = None,
    variance: str = "auto",
    info: dict | None = None,
) -> np.ndarray:
    """Online LiRA (Carlini et al. 2022, Sec. IV, Algorithm 1).

    target: (B,) or (B, Q) signal of the audited model; reference: (R, B) or (R, B, Q) signals
    of R reference models on the same examples/queries; reference_in: (R, B) bool, True where
    reference model r trained on example b.
    For each example and query, fit N(mu_in, s_in^2) to the IN and N(mu_out, s_out^2) to the OUT
    reference signals and score
        Lambda = log N(x; mu_in, s_in^2) - log N(x; mu_out, s_out^2),
    averaged over the Q queries (the paper's augmented-query variant: mean of per-query
    log-ratios). Variances (``variance``, see :func:`_gaussian_fit`): ``auto`` uses per-example
    variances when R >= fixed_variance_below (64, the paper's threshold), else one variance per side pooled within examples, else (too few
    references for that, e.g. one per side) the global variance across examples and models as
    the authors' code does for few shadows. A side whose variance still cannot be estimated
    borrows the other side's (the paper's fixed-variance variant shares one); with neither, the
    attack is refused. ``info`` (a dict, optional) receives the rules used. Returns float64 (B,).
    """
    if variance not in VARIANCE_MODES:
        raise ValueError(f"variance must be one of {VARIANCE_MODES}, got {variance!r}")
    t, r = _prepare(target, reference, transform)
    m = _check_membership(reference_in, r.shape[0], r.shape[1])
    enough = r.shape[0] >= fixed_variance_below
    mu_in, var_in, rule_in = _gaussian_fit(r, m, variance, "IN", enough)
    mu_out, var_out, rule_out = _gaussian_fit(r, ~m, variance, "OUT", enough)
    if var_in is None and var_out is not None:
        var_in, rule_in = var_out, f"{rule_out} (OUT side's)"
    elif var_out is None and var_in is not None:
        var_out, rule_out = var_in, f"{rule_in} (IN side's)"
    var_in, var_out = _check_variance(var_in, "IN", rule_in), _check_variance(var_out, "OUT", rule_out)
    if info is not None:
        info.update(variance_in=rule_in, variance_out=rule_out)
    ll_in = stats.norm.logpdf(t, mu_in, np.sqrt(var_in))
    ll_out = stats.norm.logpdf(t, mu_out, np.sqrt(var_out))
    return (ll_in - ll_out).mean(axis=1)


def lira_offline(
    target,
    reference,
    reference_in=None,
    *,
    fixed_variance_below: int = DEFAULT_FIXED_VARIANCE_BELOW,
    transform: str | None = None,
    variance: str = "auto",
    info: dict | None = None,
) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022, Sec. IV, "offline" variant): OUT references only.

    Fit N(mu_out, s_out^2) per example and query and run the one-sided test "x is larger than an
    OUT model's signal": the paper's Lambda = 1 - Pr[Z > x], Z ~ N(mu_out, s_out^2). medssl scores
    -log Pr[Z > x] (= -log survival; a monotone transform of Lambda per query that stays
    resolvable in the far tail), averaged over queries. The reference code
    (github.com/tensorflow/privacy, lira plot.py) uses the OUT log-density instead; we follow the
    paper text. reference_in: (R, B) bool or None (None: every reference is OUT for every
    example, e.g. models trained on disjoint data). Variance rule as in :func:`lira_online`
    (refused when the OUT variance cannot be estimated). Returns float64 (B,).
    """
    if variance not in VARIANCE_MODES:
        raise ValueError(f"variance must be one of {VARIANCE_MODES}, got {variance!r}")
    t, r = _prepare(target, reference, transform)
    if reference_in is None:
        out = np.ones(r.shape[:2], bool)
    else:
        out = ~_check_membership(reference_in, r.shape[0], r.shape[1])
    enough = int(out.sum(axis=0).min()) >= fixed_variance_below
    mu_out, var_out, rule = _gaussian_fit(r, out, variance, "OUT", enough)
    var_out = _check_variance(var_out, "OUT", rule)
    if info is not None:
        info.update(variance_out=rule)
    return (-stats.norm.logsf(t, mu_out, np.sqrt(var_out))).mean(axis=1)


def _log_pr_marginal(reference: np.ndarray, reference_in: np.ndarray | None, a: float, offline: bool) -> np.ndarray:
    """log Pr(x) (B,) from reference signals (R, B) (Zarifzadeh et al. 2024, Sec. 3, offline setting)."""
    if offline:
        out = np.ones(reference.shape, bool) if reference_in is None else ~reference_in
        n = out.sum(axis=0)
        if (n == 0).any():
            raise ValueError(f"{int((n == 0).sum())} example(s) have no OUT reference model")
        mean_out = (reference * out).sum(axis=0) / n
        # offline approximation of the IN/OUT mixture from OUT models only
        pr = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    else:
        pr = reference.mean(axis=0)  # IN and OUT references (paper: half of them IN for x)
    if (pr <= 0).any():
        raise ValueError("Pr(x) must be positive; use a positive signal such as exp(-loss)")
    return np.log(pr)


def _rmia_signal(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=np.float64)
    if not np.isfinite(v).all() or (v <= 0).any():
        raise ValueError(f"{name}: RMIA signals must be finite and positive (e.g. exp(-loss) or a similarity in (0, 1])")
    return v


def rmia(
    target,
    reference,
    population_target,
    population_reference,
    *,
    reference_in=None,
    a: float = 0.3,
    gamma: float = 1.0,
    offline: bool = True,
    chunk_size: int = 65536,
) -> np.ndarray:
    """RMIA (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks", Sec. 3).

    target (B,): Pr(x | theta), the audited model's probability-like signal for each example;
    reference (R, B): the same signal from R reference models; population_target (Z,),
    population_reference (R, Z): signals on population samples z (non-members of every model).
    reference_in (R, B) bool or None: which reference models trained on x (None: all OUT).

        LR(x) = Pr(x | theta) / Pr(x),
        Score(x) = Pr_z[ LR(x) / LR(z) >= gamma ]          (Sec. 3; gamma = 1 by default)

    Pr(x): online (offline=False), the mean over all references; offline (default), from OUT
    references only with the paper's linear correction for the missing IN models:
        Pr(x)_offline = 0.5 * ((1 + a) * mean_OUT(x) + (1 - a)),
    ``a`` tuned on reference models in the paper (0.3 is a common default; a = 1 uses the OUT mean
    as is). Pr(z) is computed with the same rule as Pr(x) (z is OUT for every reference model) so
    that LR(x) and LR(z) are on the same scale. Works with a single reference model.

    Memory: the pairwise test is done in log space over chunks of ``chunk_size`` population
    samples (each chunk sorted once, counts by binary search, accumulated in int64), so no
    B x Z matrix is formed and the result does not depend on chunk_size. Returns float64 (B,) in
    [0, 1].
    """
    t = _rmia_signal(target, "target").reshape(-1)
    ref = _rmia_signal(reference, "reference")
    pt = _rmia_signal(population_target, "population_target").reshape(-1)
    pref = _rmia_signal(population_reference, "population_reference")
    if ref.ndim == 1:
        ref = ref[None]
    if pref.ndim == 1:
        pref = pref[None]
    if ref.shape[1] != t.size or pref.shape != (ref.shape[0], pt.size):
        raise ValueError(
            f"shapes disagree: target {t.shape}, reference {ref.shape} (R, B), "
            f"population_target {pt.shape}, population_reference {pref.shape} (R, Z)"
        )
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    m = None if reference_in is None else _check_membership(reference_in, ref.shape[0], t.size)
    if not offline and m is None:
        raise ValueError("online RMIA needs reference_in (which references trained on each x)")
    log_lr_x = np.log(t) - _log_pr_marginal(ref, m, a, offline)
    log_lr_z = np.log(pt) - _log_pr_marginal(pref, None, a, True) if offline else np.log(pt) - np.log(pref.mean(axis=0))
    # LR(x)/LR(z) >= gamma  <=>  log LR(z) <= log LR(x) - log gamma
    bound = log_lr_x - math.log(gamma)
    counts = np.zeros(t.size, dtype=np.int64)
    for start in range(0, pt.size, chunk_size):
        chunk = np.sort(log_lr_z[start : start + chunk_size])
        counts += np.searchsorted(chunk, bound, side="right")
    return counts / pt.size
