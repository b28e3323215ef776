"""Tests of medssl.engine.embed: encoder references and frozen embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.checkpoint import save_checkpoint
from medssl.engine.embed import embed_arrays, resolve_encoder
from medssl.registry import create_encoder
from tolerance import close

pytestmark = pytest.mark.precision


def _inputs(n: int, n_leads: int = 8, n_samples: int = 2500) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, n_leads, n_samples)).astype(np.float32)


def test_random_reference_is_deterministic_per_seed():
    x = torch.from_numpy(_inputs(2))
    a, name = resolve_encoder("random:ecg_jepa_tiny:3")
    b, _ = resolve_encoder("random:ecg_jepa_tiny:3")
    c, _ = resolve_encoder("random:ecg_jepa_tiny:4")
    assert name == "random:ecg_jepa_tiny:3"
    assert not a.training and a.spec.name == "ecg_jepa_tiny"
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yc)
    d, _ = resolve_encoder("random:ecg_jepa_tiny")  # seed defaults to 0
    e, _ = resolve_encoder("random:ecg_jepa_tiny:0")
    for p, q in zip(d.parameters(), e.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("ref", [
    "random:", "random::3", "random:ecg_jepa_tiny:1:2", "random:ecg_jepa_tiny:abc", "random:no_such_encoder",
])
def test_bad_random_references(ref):
    with pytest.raises(ValueError):
        resolve_encoder(ref)


def test_missing_checkpoint_reference(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        resolve_encoder(tmp_path / "nowhere")


def test_checkpoint_reference(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=500).eval()
    save_checkpoint(enc, tmp_path / "run1")
    loaded, name = resolve_encoder(tmp_path / "run1")
    assert name == "run1"
    x = _inputs(3, n_samples=500)
    np.testing.assert_array_equal(embed_arrays(loaded, x), embed_arrays(enc, x))


def test_embed_arrays_shape_and_batch_size_invariance():
    torch.manual_seed(0)
    enc = create_encoder("ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=500)
    enc.train()  # embed_arrays must switch to eval itself
    x = _inputs(7, n_samples=500)
    full = embed_arrays(enc, x, batch_size=64)
    assert full.shape == (7, 32) and full.dtype == np.float32
    assert np.isfinite(full).all()
    tol = close(fp32=1e-5, bf16=3e-2)  # bf16 keeps 8 bits of mantissa: ~0.4 % per rounding
    for bs in (1, 3):
        np.testing.assert_allclose(embed_arrays(enc, x, batch_size=bs), full, rtol=10 * tol, atol=tol)
    # Each row is the embedding of its own input (the fp32 forward: bf16 must stay near it).
    with torch.no_grad():
        np.testing.assert_allclose(full[4], enc.eval()(torch.from_numpy(x[4:5]))[0].numpy(), rtol=10 * tol, atol=tol)
    assert len({tuple(np.round(r, 5)) for r in full}) == 7
    empty = embed_arrays(enc, x[:0])
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_precision_is_explicit_and_bf16_stays_near_fp32():
    torch.manual_seed(0)
    enc = create_encoder("ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2, num_samples=500)
    x = _inputs(4, n_samples=500)
    fp32 = embed_arrays(enc, x, precision="32")
    bf16 = embed_arrays(enc, x, precision="bf16")
    with torch.no_grad():
        np.testing.assert_array_equal(fp32, enc.eval()(torch.from_numpy(x)).numpy())
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # bf16 rounding happened
    np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=0.05)
    with pytest.raises(ValueError, match="precision 'fp16'"):
        embed_arrays(enc, x, precision="fp16")
    with pytest.raises(ValueError, match="batch size"):
        embed_arrays(enc, x, batch_size=0)
