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
