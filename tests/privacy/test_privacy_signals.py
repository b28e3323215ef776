"""Tests for medssl.privacy.signals with toy methods/encoders and medssl.ecg.augment views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medssl.ecg.augment import Compose, GaussianNoise
from medssl.privacy.signals import (
    augmentation_consistency,
    knn_distance,
    ssl_loss_signal,
)


class ToyMethod(nn.Module):
    """Reconstruct x from a noisy copy; noise drawn from hash((seed, step, rank)); has dropout."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.lin = nn.Linear(16, 16)
        self.drop = nn.Dropout(0.5)

    def forward(self, x, *, step: int, rank: int):
        g = torch.Generator().manual_seed(hash((self.seed, step, rank)) & 0x7FFF_FFFF_FFFF)
        noisy = x + 0.3 * torch.randn(x.shape, generator=g)
        return ((self.drop(self.lin(noisy)) - x) ** 2).mean()


class ToyEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2 * 16, 8)

    def forward(self, x):
        return self.proj(x.flatten(1))


def test_ssl_loss_signal_is_per_sample_and_per_query():
    torch.manual_seed(0)
    method = ToyMethod().train()
    x = torch.randn(5, 2, 16)
    out = ssl_loss_signal(method, x, n_queries=3, seed=1)
    assert out.shape == (5, 3) and out.dtype == np.float64
    assert method.training  # restored
    method.eval()
    with torch.no_grad():
        want = [[float(method(x[i : i + 1], step=100_003 + q, rank=0)) for q in range(3)] for i in range(5)]
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert len(np.unique(out[0])) == 3  # different queries, different draws
    np.testing.assert_array_equal(out, ssl_loss_signal(method, x, n_queries=3, seed=1))
    assert not np.allclose(out, ssl_loss_signal(method, x, n_queries=3, seed=2))
    # a sample the model fits better has a lower loss
    assert ssl_loss_signal(method, torch.zeros(1, 2, 16))[0, 0] < out.mean()
    with pytest.raises(ValueError, match=r"batch, \.\.\."):
        ssl_loss_signal(method, x[0][0])


@pytest.mark.parametrize("recipe", ["ecg_jepa", "mae_ecg"])
def test_batched_per_sample_losses_equal_batches_of_one(recipe):
    from medssl.engine.config import resolve_recipe
    from medssl.engine.methods import build_method

    tiny = ["variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
            "encoder.overrides.num_heads=2"]
    tiny += (["predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2"] if recipe == "ecg_jepa"
             else ["decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2"])
    cfg = resolve_recipe(recipe, tiny)
    torch.manual_seed(0)
    _, method = build_method(cfg)
    spec = method.encoder.spec.input
    x = torch.randn(4, len(spec["leads"]), spec["num_samples"])
    batched = ssl_loss_signal(method, x, n_queries=2, seed=3)
    method.eval()
    with torch.no_grad():
        one_by_one = [[float(method(x[i:i + 1], step=3 * 100_003 + q, rank=0)) for q in range(2)] for i in range(4)]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)


def test_augmentation_consistency():
    torch.manual_seed(0)
    enc = ToyEncoder()
    x = torch.randn(6, 2, 16)
    ident = augmentation_consistency(enc, x, Compose([]), n_views=3)
    np.testing.assert_allclose(ident, 1.0, atol=1e-6)
    weak = augmentation_consistency(enc, x, GaussianNoise(0.05), n_views=4, generator=torch.Generator().manual_seed(1))
    strong = augmentation_consistency(enc, x, GaussianNoise(2.0), n_views=4, generator=torch.Generator().manual_seed(1))
    assert weak.shape == (6,) and (weak > strong).all() and (strong > -1).all()
    again = augmentation_consistency(enc, x, GaussianNoise(2.0), n_views=4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(strong, again)
    # matches the explicit mean over view pairs
    gen = torch.Generator().manual_seed(5)
    views = [nn.functional.normalize(enc(GaussianNoise(1.0)(x, gen)), dim=-1) for _ in range(3)]
    pairs = [(views[i] * views[j]).sum(-1) for i in range(3) for j in range(i + 1, 3)]
    want = torch.stack(pairs).mean(0).detach().numpy()
    got = augmentation_consistency(enc, x, GaussianNoise(1.0), n_views=3, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_knn_distance_chunked_matches_brute_force():
    rng = np.random.default_rng(0)
    e, p = rng.normal(size=(7, 4)), rng.normal(size=(50, 4))
    d = np.sqrt(((e[:, None] - p[None]) ** 2).sum(-1))
    want = np.sort(d, axis=1)[:, :3].mean(1)
    for cs in (1, 7, 50, 1000):
        np.testing.assert_allclose(knn_distance(e, p, k=3, chunk_size=cs), want, rtol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        knn_distance(e, p, k=51)
    with pytest.raises(ValueError, match="share D"):
        knn_distance(e, p[:, :3])
