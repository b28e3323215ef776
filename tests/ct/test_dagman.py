"""DAGMaN: semantic attention, attention-guided masking, head diversity, noisy EMA teacher, the method."""

from __future__ import annotations

import pytest
import torch

from medssl.ct.attention_guided import (
    AttentionGuidedMasker,
    SemanticAttention,
    head_diversity,
)
from medssl.ct.dagman import DAGMaN, distillation_ce
from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.engine.module import param_groups
from medssl.registry import create_encoder

SMALL_HEAD = dict(sam_heads=4, head_out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16)


def _method(seed=0, **kw) -> DAGMaN:
    torch.manual_seed(seed)
    return DAGMaN(create_encoder("ct_swin_tiny"), mask_patch_size=8, **{**SMALL_HEAD, **kw})


def test_semantic_attention_shapes():
    sam = SemanticAttention(48, 4)
    g, attn = sam(torch.randn(3, 64, 48))
    assert g.shape == (3, 48) and attn.shape == (3, 4, 64)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4))


def test_masker_masks_exactly_the_ratio():
    for ratio, p in [(0.6, 64), (0.3, 216), (0.75, 27)]:
        masker = AttentionGuidedMasker(ratio)
        mask = masker(torch.rand(5, p), torch.Generator().manual_seed(0))
        assert mask.dtype == torch.bool and (mask.sum(1) == round(ratio * p)).all()


def test_masker_prefers_attended_cells_and_stays_stochastic():
    importance = torch.full((1, 64), 0.1)
    hot = torch.tensor([3, 17, 30, 41, 50, 62])
    importance[0, hot] = 50.0  # a planted importance map
    masker = AttentionGuidedMasker(0.5, temperature=1.0)
    masks = torch.stack([masker(importance, torch.Generator().manual_seed(s))[0] for s in range(20)])
    assert masks[:, hot].all()  # the attended cells are always hidden
    assert (masks.sum(1) == 32).all()
    assert len({tuple(m.nonzero().ravel().tolist()) for m in masks}) > 10  # the rest varies with the draw
    again = masker(importance, torch.Generator().manual_seed(3))[0]
    assert torch.equal(again, masks[3])  # same generator seed, same mask
    # Graded importance: the mask's share of importance beats a random mask's, and low temperature -> top-k.
    graded = torch.rand(8, 64, generator=torch.Generator().manual_seed(1)) ** 4
    guided = AttentionGuidedMasker(0.5)(graded, torch.Generator().manual_seed(0))
    share = (graded * guided).sum(1) / graded.sum(1)
    assert share.mean() > 0.7
    topk = AttentionGuidedMasker(0.5, temperature=1e-4)(graded, torch.Generator().manual_seed(0))
    assert torch.equal(topk, torch.zeros_like(topk).scatter_(1, graded.topk(32, dim=1).indices, True))


def test_head_diversity():
    same = torch.softmax(torch.randn(2, 1, 50), -1).expand(2, 4, 50)
    assert head_diversity(same) == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.eye(4).repeat(2, 1, 1)  # four heads on four different tokens
    assert head_diversity(one_hot) == pytest.approx(1.0, abs=1e-4)
    mixed = torch.softmax(torch.randn(2, 4, 50) * 3, -1)
    assert 0.0 < head_diversity(mixed) < 1.0
    assert head_diversity(torch.softmax(torch.randn(2, 1, 50), -1)) == 0.0


def test_distillation_ce_is_minimal_when_student_matches_sharpened_teacher():
    t = torch.randn(4, 10)
    zero = torch.zeros(1, 10)
    matched = distillation_ce(t * (0.1 / 0.04), t, zero, 0.1, 0.04)
    assert matched < distillation_ce(torch.randn(4, 10), t, zero, 0.1, 0.04)


def test_teacher_noise_changes_the_teacher_not_the_student():
    noisy = _method(teacher_noise=0.2)
    clean = _method(teacher_noise=0.0)
    x = torch.rand(2, 1, 32, 32, 32)
    t1 = noisy.teacher_forward(x, torch.Generator().manual_seed(1))
    t2 = noisy.teacher_forward(x, torch.Generator().manual_seed(2))
    c1 = clean.teacher_forward(x, torch.Generator().manual_seed(1))
    c2 = clean.teacher_forward(x, torch.Generator().manual_seed(2))
    for a, b, c, d in zip(t1, t2, c1, c2):
        assert not torch.allclose(a, b) and not torch.allclose(a, c)
        assert torch.equal(c, d)  # without noise the teacher is deterministic
    cells = torch.zeros(2, 64, dtype=torch.bool)
    cells[:, ::2] = True
    with torch.no_grad():
        s_noisy, s_clean = noisy.student_forward(x, cells), clean.student_forward(x, cells)
    for a, b in zip(s_noisy[1:], s_clean[1:]):
        assert torch.equal(a, b)


def test_ema_update_and_no_gradient_to_the_teacher():
    m = _method()
    x = torch.rand(2, 1, 32, 32, 32)
    opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-2)
    assert all(not p.requires_grad for p in m.teacher.parameters())
    assert not any(p is q for p in m.teacher.parameters() for q in opt.param_groups[0]["params"])
    teacher_before = [p.clone() for p in m.teacher.parameters()]
    loss = m(x, step=0, rank=0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in m.teacher.parameters())
    student = [p.detach().clone() for p in m.student.parameters()]
    assert not torch.equal(student[0], teacher_before[0])
    pending = m._pending_centers[0].clone()
    m.update_target(0.9)
    for t_old, t_new, s in zip(teacher_before, m.teacher.parameters(), student):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * s)
    torch.testing.assert_close(m.center_patch, 0.1 * pending)  # centre started at 0, momentum 0.9
    frozen = [p.clone() for p in m.teacher.parameters()]
    m.update_target(1.0)
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.teacher.parameters()))


def test_same_seed_step_rank_same_loss_and_metrics():
    m = _method()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        a = m(x, step=4, rank=0)
        metrics = dict(m.last_metrics)
        b = m(x, step=4, rank=0)
        c = m(x, step=5, rank=0)
    assert a == b and a != c
    assert set(metrics) == {"loss_mip", "loss_patch", "loss_global", "head_diversity", "teacher_head_diversity",
                            "mask_attention"}
    assert all(torch.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["head_diversity"] <= 1.0
    assert metrics["mask_attention"] >= 0.6 - 0.05  # at least a random mask's share of attention


def test_a_few_steps_reduce_the_loss():
    m = _method()
    x = torch.rand(2, 1, 32, 32, 32)
    opt = torch.optim.AdamW(param_groups(m, 0.0), lr=2e-3)
    losses = []
    for _ in range(4):
        loss = m(x, step=0, rank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.update_target(0.99)
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_mask_patch_must_match_a_stage():
    with pytest.raises(ValueError, match=r"must equal one of the encoder's stage strides \[8\]"):
        DAGMaN(create_encoder("ct_vit3d_tiny"), mask_patch_size=16, **SMALL_HEAD)
    vit = DAGMaN(create_encoder("ct_vit3d_tiny"), mask_patch_size=8, **SMALL_HEAD)  # one token per cell
    assert vit.stage == 0 and torch.isfinite(vit(torch.rand(1, 1, 32, 32, 32), step=0, rank=0))


def test_build_method_on_the_recipe():
    cfg = resolve_recipe("dagman_ct", ["variant=cpu"])
    encoder, method = build_method(cfg)
    assert encoder.spec.name == "ct_swin_tiny" and isinstance(method, DAGMaN) and method.encoder is encoder
    assert method.stage == 2 and method.masker.ratio == 0.6 and method.teacher_noise == 0.1
    with torch.no_grad():
        assert torch.isfinite(method(torch.rand(1, 1, 32, 32, 32), step=0, rank=0))
    base = resolve_recipe("dagman_ct", ["variant=gpu"])
    assert base["encoder"]["name"] == "ct_swin_base" and base["data"]["shape"] == [96, 96, 96]
    assert base["trainer"]["precision"] == "bf16-mixed"


# --- The paper's defining claims, as properties -------------------------------------------------


def _sharpen_teacher_attention(m: DAGMaN, factor: float) -> None:
    """Scale the teacher's semantic-attention projections so its attention logits grow factor^2-fold:
    a stand-in for a trained teacher, whose attention is content-dependent and peaked. At
    initialisation (std 0.02) the attention is near uniform (max/min ~1.02 over cells), so any
    masking rule hides ~ratio of it; benchmarks/RESULTS.md measured the same after 426 CPU steps."""
    with torch.no_grad():
        m.teacher["sam"].q.weight.mul_(factor)
        m.teacher["sam"].kv.weight.mul_(factor)


def test_teacher_token_i_is_mask_cell_i():
    """The attention the masker reads is over the cells the student has hidden: brightening the
    voxels of mask cell p changes the teacher's stage token p most, for every probed cell."""
    m = _method(teacher_noise=0.0)
    x = 0.1 * torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = m.teacher_forward(x, g)[0]
        for p in (0, 5, 21, 42, 63):
            cell = torch.zeros(1, 64, dtype=torch.bool)
            cell[0, p] = True
            change = (m.teacher_forward(x + 2.0 * m.geometry.on_voxels(cell)[:, None].float(), g)[0] - base).norm(dim=-1)
            assert int(change[0].argmax()) == p
    # the student's mask tokens sit on the same voxels the L1 term scores
    cells = AttentionGuidedMasker(0.6)(torch.rand(2, 64), torch.Generator().manual_seed(1))
    stride = m.geometry.embed_stride
    on_emb = m.geometry.on_embedding(cells)
    for dim in (1, 2, 3):
        on_emb = on_emb.repeat_interleave(stride, dim=dim)
    assert torch.equal(on_emb, m.geometry.on_voxels(cells))


def test_guided_masks_hide_more_teacher_attention_than_random_masks():
    """DAGMaN's claim: the teacher's attention chooses the masks, so they hide more of its attention
    mass than a random mask of the same size, whose expected share is exactly n_masked / P (the
    attention sums to 1). Measured through the method's own forward (noisy teacher, masker, the
    logged `mask_attention`) over 12 steps x 2 volumes, against the exact random-mask expectation."""
    m = _method()
    _sharpen_teacher_attention(m, 20.0)
    share = m.masker.n_masked(64) / 64
    gains = []
    with torch.no_grad():
        for step in range(12):
            x = 0.1 * torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(step))
            m(x, step=step, rank=0)
            gains.append(float(m.last_metrics["mask_attention"]) - share)
    gains = torch.tensor(gains)
    se = gains.std() / len(gains) ** 0.5
    assert gains.mean() > 0.03 and gains.mean() > 4 * se, (gains.mean(), se)
    # a masker that ignored the attention would show no gain: the same measurement at temperature
    # 1e6 (random masking) stays within noise of zero
    m.masker.temperature = 1e6
    flat = []
    with torch.no_grad():
        for step in range(12):
            x = 0.1 * torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(step))
            m(x, step=step, rank=0)
            flat.append(float(m.last_metrics["mask_attention"]) - share)
    assert abs(sum(flat) / len(flat)) < gains.mean() / 3


def _blobs(batch: int, seed: int) -> torch.Tensor:
    """Synthetic CT patches: noise plus three bright spheres (nodule-like) per volume."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(batch, 1, 32, 32, 32, generator=g)
    zz, yy, xx = torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij")
    for i in range(batch):
        for _ in range(3):
            c = torch.randint(4, 28, (3,), generator=g).float()
            r = 2 + 3 * torch.rand(1, generator=g)
            x[i, 0] += (((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < r**2).float()
    return x


def _student_head_diversity_after_training(noise: float, seed: int, steps: int = 10) -> float:
    torch.manual_seed(seed)
    m = DAGMaN(create_encoder("ct_swin_tiny"), mask_patch_size=8, teacher_noise=noise, seed=seed, **SMALL_HEAD)
    with torch.no_grad():  # a selective attention in both, as after training (see _sharpen_teacher_attention)
        for part in (m.student, m.teacher):
            part["sam"].q.weight.mul_(10.0)
            part["sam"].kv.weight.mul_(10.0)
    opt = torch.optim.AdamW(param_groups(m, 0.0), lr=1e-3)
    for step in range(steps):
        loss = m(_blobs(2, 1000 * seed + step), step=step, rank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.update_target(0.9)
    with torch.no_grad():
        held_out = _blobs(4, 99999)
        attn = m.student_forward(held_out, torch.zeros(4, 64, dtype=torch.bool))[3]
    return float(head_diversity(attn))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "DAGMaN's claim that the noisy teacher keeps the attention heads diverse is not observable at a "
    "test's budget: after 10 steps (tiny Swin, 3 seeds) the student's head diversity with "
    "teacher_noise=0.1 vs 0 was 0.0082 vs 0.0084, 0.0198 vs 0.0184, 0.0082 vs 0.0076 bits (ratios "
    "0.98-1.08), and both fall from ~0.02-0.1 bits at the start. The paper shows it after full "
    "pretraining; strict, so the day it shows here this test reports XPASS"))
def test_noisy_teacher_keeps_heads_more_diverse_than_a_noiseless_one():
    ratios = [_student_head_diversity_after_training(0.1, s) / _student_head_diversity_after_training(0.0, s)
              for s in (0, 1, 2)]
    assert min(ratios) > 1.1, ratios
