"""Tests of medssl.ssl.contrastive: NT-Xent, the projection head, TS2Vec's contrastive losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medssl.ssl.contrastive import (
    HierarchicalContrastiveLoss,
    NTXentLoss,
    ProjectionHead,
    instance_contrastive_loss,
    temporal_contrastive_loss,
)


def test_nt_xent_matches_a_hand_computed_example():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Each anchor: positive similarity 1, two negatives of similarity 0 (its own term excluded).
    assert NTXentLoss(1.0)(z, z.clone()).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)
    assert NTXentLoss(0.5)(z, z.clone()).item() == pytest.approx(math.log(math.e**2 + 2) - 2, abs=1e-6)
    # Projections are normalised: scaling a view changes nothing.
    assert NTXentLoss(0.5)(3 * z, 0.1 * z).item() == pytest.approx(math.log(math.e**2 + 2) - 2, abs=1e-6)


def test_nt_xent_matches_the_cross_entropy_definition_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    t = 0.2
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / t
    total = 0.0
    for i in range(10):
        pos = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        total += -(sim[i, pos] - torch.logsumexp(sim[i, others], 0))
    assert NTXentLoss(t)(z1, z2).item() == pytest.approx(total.item() / 10, rel=1e-5)


def test_nt_xent_identical_views_beat_shuffled_and_it_is_symmetric():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, 32, generator=g)
    z2 = z1 + 0.05 * torch.randn(16, 32, generator=g)
    loss = NTXentLoss(0.1)
    aligned = loss(z1, z2)
    shuffled = loss(z1, z2[torch.roll(torch.arange(16), 1)])
    assert aligned < shuffled - 1.0
    torch.testing.assert_close(loss(z1, z2), loss(z2, z1))


def test_nt_xent_rejects_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="batch, dim"):
        NTXentLoss()(torch.zeros(4, 3), torch.zeros(5, 3))


def test_projection_head_shapes_and_batch_norm_option():
    head = ProjectionHead(64, 32, 16)
    assert head(torch.randn(4, 64)).shape == (4, 16)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in ProjectionHead(64, 32, 16, batch_norm=True).modules())


def _reference_instance(z1, z2):
    """TS2Vec's published formulation (tril/triu removal of the self-similarity)."""
    b = z1.size(0)
    z = torch.cat([z1, z2], dim=0).transpose(0, 1)
    sim = z @ z.transpose(1, 2)
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1] + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    i = torch.arange(b)
    return (logits[:, i, b + i - 1].mean() + logits[:, b + i, i].mean()) / 2


def _reference_temporal(z1, z2):
    t = z1.size(1)
    z = torch.cat([z1, z2], dim=1)
    sim = z @ z.transpose(1, 2)
    logits = torch.tril(sim, diagonal=-1)[:, :, :-1] + torch.triu(sim, diagonal=1)[:, :, 1:]
    logits = -F.log_softmax(logits, dim=-1)
    i = torch.arange(t)
    return (logits[:, i, t + i - 1].mean() + logits[:, t + i, i].mean()) / 2


def test_instance_and_temporal_losses_match_the_published_formulation():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(3, 7, 4, generator=g), torch.randn(3, 7, 4, generator=g)
    torch.testing.assert_close(instance_contrastive_loss(z1, z2), _reference_instance(z1, z2))
    torch.testing.assert_close(temporal_contrastive_loss(z1, z2), _reference_temporal(z1, z2))
    assert instance_contrastive_loss(z1[:1], z2[:1]).item() == 0.0
    assert temporal_contrastive_loss(z1[:, :1], z2[:, :1]).item() == 0.0


def test_hierarchical_loss_on_hand_examples():
    # B = 2, T = 1, D = 1: one level, instance term only. Views a = (1, 0), b = (1, 0).
    z1 = torch.tensor([[[1.0]], [[0.0]]])
    z2 = z1.clone()
    rows = 2 * (math.log(math.e + 2) - 1) + 2 * math.log(3)  # two anchors at 1, two at 0
    assert HierarchicalContrastiveLoss(alpha=0.5)(z1, z2).item() == pytest.approx(0.5 * rows / 4, abs=1e-6)

    # B = 1, T = 2, D = 1, alpha = 0: temporal term at level 0, then pooled to T = 1 (a level
    # with no term): the temporal loss divided by 2 levels.
    z1 = torch.tensor([[[1.0], [-1.0]]])
    temporal = math.log(math.e + 2 / math.e) - 1
    assert HierarchicalContrastiveLoss(alpha=0.0)(z1, z1.clone()).item() == pytest.approx(temporal / 2, abs=1e-6)


def test_hierarchical_loss_pools_over_levels():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 8, 5, generator=g), torch.randn(4, 8, 5, generator=g)
    expected, a, b = 0.0, z1, z2
    for _ in range(3):  # T = 8, 4, 2
        expected += 0.5 * _reference_instance(a, b) + 0.5 * _reference_temporal(a, b)
        a = F.max_pool1d(a.transpose(1, 2), 2).transpose(1, 2)
        b = F.max_pool1d(b.transpose(1, 2), 2).transpose(1, 2)
    expected += 0.5 * _reference_instance(a, b)  # T = 1
    torch.testing.assert_close(HierarchicalContrastiveLoss(0.5)(z1, z2), expected / 4)
    # temporal_unit = 1 drops the temporal term of the first level only.
    drop = 0.5 * _reference_temporal(z1, z2) / 4
    torch.testing.assert_close(HierarchicalContrastiveLoss(0.5, temporal_unit=1)(z1, z2), expected / 4 - drop)
