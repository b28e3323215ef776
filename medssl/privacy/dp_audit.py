"""An empirical lower bound on a DP-SGD run's epsilon from its membership-inference audit.

Steinke, Nasr and Jagielski 2023, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023):
when each audited unit (here a subject) is included in training independently at random, an
attacker that guesses "member" for its k+ highest-scored units and "non-member" for its k-
lowest (abstaining on the rest) makes r = k+ + k- guesses, and under epsilon-DP the number of
correct guesses W is stochastically dominated by Binomial(r, e^eps / (1 + e^eps)) (their
Theorem 3.1 with delta = 0). So

    eps_lower = the largest eps with  P[Binomial(r, e^eps / (1 + e^eps)) >= W] <= beta

is a (1 - beta)-confidence lower bound on epsilon. medssl tries a few guess counts (a quarter,
half and all of the smaller group, on each side) and applies a Bonferroni correction (beta /
number of tries), so the maximum over them is still a valid bound.

Caveats reported with the figure: (1) the bound assumes membership was assigned at random
before training (true for an audit that split its cohort at random, not for an arbitrary member
list; with a fixed-size random split the inclusions are exchangeable rather than independent,
a small departure); (2) it is the delta = 0 bound: for (epsilon, delta)-DP the paper's
delta-aware version is slightly lower, so with the accountant's small delta the figure can
exceed the truth by a little; (3) with a few dozen subjects it is far below any useful epsilon
(at most about log(r) even for a perfect attacker): it can reveal a broken DP claim (bound above
the accountant's epsilon), not confirm a tight one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

__all__ = ["dp_check", "empirical_epsilon_lower_bound", "epsilon_from_guesses"]


def epsilon_from_guesses(n_guesses: int, n_correct: int, beta: float = 0.05) -> float:
    """Largest eps with P[Binomial(n_guesses, e^eps/(1+e^eps)) >= n_correct] <= beta (0 if none)."""
    if n_guesses < 1 or not 0 <= n_correct <= n_guesses:
        raise ValueError(f"need 0 <= n_correct <= n_guesses >= 1, got {n_correct} of {n_guesses}")
    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), got {beta}")

    def tail(eps: float) -> float:
        p = 1.0 / (1.0 + math.exp(-eps))
        return float(stats.binom.sf(n_correct - 1, n_guesses, p))

    if n_correct == 0 or tail(0.0) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while tail(hi) <= beta and hi < 100:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) <= beta else (lo, mid)
    return lo


def empirical_epsilon_lower_bound(scores, is_member, beta: float = 0.05) -> dict:
    """One-run lower bound on epsilon from per-subject scores (higher = member) and labels.

    Returns dict(epsilon_lower, beta, n_guesses, n_correct, k) for the best of the tried guess
    counts k per side (Bonferroni-corrected over the tries)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member, dtype=bool).reshape(-1)
    if s.shape != m.shape or m.all() or not m.any():
        raise ValueError("need one score per subject and both members and non-members")
    order = np.argsort(-s, kind="mergesort")
    n_small = int(min(m.sum(), (~m).sum()))
    tries = sorted({max(1, n_small // 4), max(1, n_small // 2), n_small})
    best = {"epsilon_lower": 0.0, "beta": beta, "n_guesses": 0, "n_correct": 0, "k": 0}
    for k in tries:
        correct = int(m[order[:k]].sum() + (~m[order[::-1][:k]]).sum())
        eps = epsilon_from_guesses(2 * k, correct, beta / len(tries))
        if eps > best["epsilon_lower"] or best["n_guesses"] == 0:
            best = {"epsilon_lower": eps, "beta": beta, "n_guesses": 2 * k, "n_correct": correct, "k": k}
    best["n_tries"] = len(tries)
    return best


def dp_check(card: dict, scores, is_member, beta: float = 0.05) -> dict | None:
    """The accountant's epsilon of the card's DP-SGD entry (the last one) next to the empirical
    lower bound; None when the checkpoint was not trained with DP-SGD."""
    entries = [p for p in (card.get("privacy") or []) if isinstance(p, dict) and p.get("kind") == "dp_sgd"]
    if not entries:
        return None
    dp = entries[-1]
    emp = empirical_epsilon_lower_bound(scores, is_member, beta)
    eps = dp.get("epsilon")
    if eps is None or not math.isfinite(float(eps)):
        verdict = "the accountant reports no finite epsilon (no noise): nothing to compare"
    elif emp["epsilon_lower"] > float(eps):
        verdict = ("the empirical lower bound EXCEEDS the accountant's epsilon: a bug in training, accounting or "
                   "this audit's assumptions (membership assigned at random before training)")
    else:
        verdict = (f"the empirical lower bound is below the accountant's epsilon, as it must be; with "
                   f"{emp['n_guesses']} guesses it cannot exceed about {math.log(max(emp['n_guesses'], 2)):.1f}, so it "
                   "checks the claim for gross errors only")
    return {"accountant_epsilon": None if eps is None else float(eps), "delta": dp.get("delta"),
            "empirical": emp, "verdict": verdict,
            "assumption": "membership assigned at random before training; delta = 0 bound (Steinke et al. 2023)"}
