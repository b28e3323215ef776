"""Tests for medssl.privacy.attacks on synthetic signals with a known member shift."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.privacy.attacks import lira_offline, lira_online, logit, loss_attack, rmia
from medssl.privacy.metrics import auc_score


def _world(seed: int, b: int = 400, r: int = 16, q: int = 1, shift: float = 1.0, hetero: bool = False):
    """Signals = -loss. Each example has a difficulty mu_b; a model that trained on it gets a
    signal higher by delta_b (delta_b = shift, or U(0, 2*shift) with IN noise smaller if hetero)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 2.0, b)
    delta = rng.uniform(0, 2 * shift, b) if hetero else np.full(b, shift)
    sd_out = rng.uniform(0.2, 1.0, b) if hetero else np.full(b, 0.5)
    sd_in = sd_out * (0.3 if hetero else 1.0)

    def model(members: np.ndarray) -> np.ndarray:  # (b,) bool -> (b, q)
        noise = rng.normal(size=(b, q))
        return np.where(members[:, None], mu[:, None] + delta[:, None] + sd_in[:, None] * noise,
                        mu[:, None] + sd_out[:, None] * noise)

    ref_in = rng.random((r, b)) < 0.5
    ref = np.stack([model(ref_in[i]) for i in range(r)])
    target_in = rng.random(b) < 0.5
    return model(target_in), ref, ref_in, target_in


def test_loss_attack():
    np.testing.assert_allclose(loss_attack([0.5, 2.0]), [-0.5, -2.0])
    np.testing.assert_allclose(loss_attack([[1.0, 3.0]]), [-2.0])
    rng = np.random.default_rng(0)
    is_member = rng.random(500) < 0.5
    losses = rng.gamma(2.0, 1.0, 500) - 0.8 * is_member
    assert auc_score(loss_attack(losses), is_member) > 0.6
    null = rng.gamma(2.0, 1.0, 500)
    assert abs(auc_score(loss_attack(null), is_member) - 0.5) < 0.07


@pytest.mark.parametrize("q", [1, 4])
def test_lira_detects_shift_and_is_null_without(q):
    target, ref, ref_in, is_member = _world(0, q=q)
    t1 = target[:, 0] if q == 1 else target
    r1 = ref[..., 0] if q == 1 else ref
    assert auc_score(lira_online(t1, r1, ref_in), is_member) > 0.85
    assert auc_score(lira_offline(t1, r1, ref_in), is_member) > 0.8
    target0, ref0, ref_in0, is_member0 = _world(1, q=q, shift=0.0)
    assert abs(auc_score(lira_online(target0, ref0, ref_in0), is_member0) - 0.5) < 0.08
    assert abs(auc_score(lira_offline(target0, ref0, ref_in0), is_member0) - 0.5) < 0.08


def test_lira_online_beats_offline_with_informative_in_references():
    target, ref, ref_in, is_member = _world(2, b=600, r=64, hetero=True)
    on = auc_score(lira_online(target, ref, ref_in), is_member)
    off = auc_score(lira_offline(target, ref, ref_in), is_member)
    assert on > off + 0.03, (on, off)


def test_lira_queries_average_per_query_log_ratios():
    target, ref, ref_in, _ = _world(3, b=50, q=3)
    per_query = np.stack([lira_online(target[:, j], ref[..., j], ref_in) for j in range(3)], axis=1)
    np.testing.assert_allclose(lira_online(target, ref, ref_in), per_query.mean(axis=1), rtol=1e-12)
    per_query = np.stack([lira_offline(target[:, j], ref[..., j], ref_in) for j in range(3)], axis=1)
    np.testing.assert_allclose(lira_offline(target, ref, ref_in), per_query.mean(axis=1), rtol=1e-12)


def test_lira_online_closed_form_and_variance_switch():
    # 2 examples, 4 references: IN for ex0 = refs 0,1; OUT = refs 2,3
    ref = np.array([[1.0, 0.0], [3.0, 1.0], [-1.0, 4.0], [1.0, 6.0]])
    ref_in = np.array([[1, 0], [1, 1], [0, 0], [0, 1]], bool)
    x = np.array([2.0, 3.0])
    # fixed variance (R=4 < 64): pooled within-example variance per side
    # IN: ex0 {1,3} mu 2 ss 2; ex1 {1,6} mu 3.5 ss 12.5 -> var 14.5 / (4-2)
    # OUT: ex0 {-1,1} mu 0 ss 2; ex1 {0,4} mu 2 ss 8 -> var 10 / 2
    from scipy.stats import norm
    vi, vo = 14.5 / 2, 10.0 / 2
    want = norm.logpdf(x, [2.0, 3.5], np.sqrt(vi)) - norm.logpdf(x, [0.0, 2.0], np.sqrt(vo))
    np.testing.assert_allclose(lira_online(x, ref, ref_in, variance="pooled"), want)
    # per-example variances once R >= threshold
    want_pe = norm.logpdf(x, [2.0, 3.5], np.sqrt([2.0, 12.5])) - norm.logpdf(x, [0.0, 2.0], np.sqrt([2.0, 8.0]))
    np.testing.assert_allclose(lira_online(x, ref, ref_in, fixed_variance_below=4), want_pe)
    # offline: -log survival of the OUT Gaussian
    np.testing.assert_allclose(lira_offline(x, ref, ref_in, variance="pooled"), -norm.logsf(x, [0.0, 2.0], np.sqrt(vo)))
    # 2 residual degrees of freedom per side are too few for auto's pooled rule: global variance
    info = {}
    lira_online(x, ref, ref_in, info=info)
    assert info == {"variance_in": "global", "variance_out": "global"}


def test_lira_logit_transform_and_errors():
    p = np.array([0.2, 0.5, 0.9])
    np.testing.assert_allclose(logit(p), np.log(p / (1 - p)))
    target, ref, ref_in, _ = _world(4, b=20)
    sig = 1 / (1 + np.exp(-target[:, 0]))
    rsig = 1 / (1 + np.exp(-ref[..., 0]))
    np.testing.assert_allclose(
        lira_online(sig, rsig, ref_in, transform="logit"), lira_online(target[:, 0], ref[..., 0], ref_in), atol=1e-6
    )
    bad = ref_in.copy()
    bad[:, 0] = True
    with pytest.raises(ValueError, match="no OUT reference"):
        lira_online(target[:, 0], ref[..., 0], bad)
    with pytest.raises(ValueError, match="reference_in must be"):
        lira_online(target[:, 0], ref[..., 0], ref_in[:, :5])


def _rmia_world(seed: int, r: int, b: int = 400, z: int = 1000, shift: float = 0.7):
    """Pr(x|theta) = exp(-loss); per-example difficulty in the loss; members' loss lower."""
    rng = np.random.default_rng(seed)
    base_x = rng.gamma(2.0, 0.7, b)
    base_z = rng.gamma(2.0, 0.7, z)
    is_member = rng.random(b) < 0.5

    def loss(base, members=None):
        out = base * np.exp(0.25 * rng.normal(size=base.size))
        return out if members is None else out - shift * members * out

    target = np.exp(-loss(base_x, is_member))
    ref = np.exp(-np.stack([loss(base_x) for _ in range(r)]))  # offline: all OUT
    pop_t = np.exp(-loss(base_z))
    pop_r = np.exp(-np.stack([loss(base_z) for _ in range(r)]))
    return target, ref, pop_t, pop_r, is_member


@pytest.mark.parametrize("r", [1, 2, 4])
def test_rmia_offline_with_few_references(r):
    target, ref, pop_t, pop_r, is_member = _rmia_world(r, r)
    scores = rmia(target, ref, pop_t, pop_r)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert auc_score(scores, is_member) > 0.75
    target0, ref0, pop_t0, pop_r0, is_member0 = _rmia_world(10 + r, r, shift=0.0)
    assert abs(auc_score(rmia(target0, ref0, pop_t0, pop_r0), is_member0) - 0.5) < 0.08


def test_rmia_chunking_is_exact_and_matches_dense():
    target, ref, pop_t, pop_r, _ = _rmia_world(7, 2, b=60, z=257)
    full = rmia(target, ref, pop_t, pop_r, a=0.5, gamma=1.3)
    for cs in (1, 10, 64, 256, 10_000):
        np.testing.assert_array_equal(rmia(target, ref, pop_t, pop_r, a=0.5, gamma=1.3, chunk_size=cs), full)
    # dense reference implementation of the paper's formulas
    pr_x = 0.5 * ((1 + 0.5) * ref.mean(0) + (1 - 0.5))
    pr_z = 0.5 * ((1 + 0.5) * pop_r.mean(0) + (1 - 0.5))
    lr_x, lr_z = target / pr_x, pop_t / pr_z
    dense = ((lr_x[:, None] / lr_z[None]) >= 1.3).mean(axis=1)
    np.testing.assert_allclose(full, dense, atol=1.5 / 257)  # at most one borderline float tie


def test_rmia_online_and_errors():
    target, ref, pop_t, pop_r, is_member = _rmia_world(8, 4)
    ref_in = np.zeros(ref.shape, bool)
    on = rmia(target, ref, pop_t, pop_r, reference_in=ref_in, offline=False)
    assert auc_score(on, is_member) > 0.75
    with pytest.raises(ValueError, match="online RMIA needs reference_in"):
        rmia(target, ref, pop_t, pop_r, offline=False)
    with pytest.raises(ValueError, match="positive"):
        rmia(-target, ref, pop_t, pop_r)
    with pytest.raises(ValueError, match="shapes disagree"):
        rmia(target[:5], ref, pop_t, pop_r)


def test_lira_with_one_reference_per_side_falls_back_to_a_global_variance():
    """The degenerate case of the review: one IN and one OUT reference per example gave a pooled
    variance of 0 (clipped to 1e-12), scores near 1e12 and hundreds of ties. The global variance
    across examples keeps the scores finite, distinct and informative."""
    rng = np.random.default_rng(3)
    b = 2000
    difficulty = rng.normal(0, 1, b)
    member = rng.random(b) < 0.5
    ref_in = np.zeros((2, b), bool)
    ref_in[0, rng.random(b) < 0.5] = True
    ref_in[1] = ~ref_in[0]
    ref = difficulty[None] + 0.5 * ref_in + rng.normal(0, 0.3, (2, b))
    target = difficulty + 0.5 * member + rng.normal(0, 0.3, b)
    info = {}
    s_on = lira_online(target, ref, ref_in, info=info)
    assert info == {"variance_in": "global", "variance_out": "global"}
    s_off = lira_offline(target, ref, ref_in, info=info)
    for s in (s_on, s_off):
        assert np.isfinite(s).all() and np.abs(s).max() < 1e3
        assert np.unique(s).size > 0.99 * b  # no mass of ties
    from medssl.privacy.metrics import auc_score
    assert auc_score(s_off, member) > 0.6  # still detects the member shift
    with pytest.raises(ValueError, match="no usable variance"):
        lira_offline(np.zeros(3), np.ones((1, 3)), None)  # constant references: refused
