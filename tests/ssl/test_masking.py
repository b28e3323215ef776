"""Tests of medssl.ssl.masking: random and multi-block maskers over time patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.ssl.masking import MultiBlockPatchMasker, RandomPatchMasker, build_masker

N_PATCHES = 50


def _check_common(keep: torch.Tensor, mask: torch.Tensor, batch: int, n: int) -> None:
    assert keep.dtype == torch.long and mask.dtype == torch.long
    assert keep.ndim == 2 and mask.ndim == 2 and keep.shape[0] == mask.shape[0] == batch
    assert keep.shape[1] >= 1 and mask.shape[1] >= 1
    for k, m in zip(keep, mask):
        assert torch.all(k[1:] > k[:-1]) and torch.all(m[1:] > m[:-1]), "not sorted / repeated"
        assert k.min() >= 0 and m.min() >= 0 and k.max() < n and m.max() < n
        assert not set(k.tolist()) & set(m.tolist()), "keep and mask overlap"
        assert len(k) + len(m) <= n


def _runs(idx: list[int]) -> list[int]:
    """Lengths of the runs of consecutive integers in a sorted list."""
    runs, start = [], 0
    for i in range(1, len(idx) + 1):
        if i == len(idx) or idx[i] != idx[i - 1] + 1:
            runs.append(i - start)
            start = i
    return runs


@pytest.mark.parametrize("ratio", [(0.6, 0.7), (0.3, 0.3), (0.1, 0.9)])
def test_random_masker(ratio):
    masker = RandomPatchMasker(ratio)
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(20):
        keep, mask = masker(8, N_PATCHES, g)
        _check_common(keep, mask, 8, N_PATCHES)
        # Random masking partitions the sequence.
        assert keep.shape[1] + mask.shape[1] == N_PATCHES
        frac = mask.shape[1] / N_PATCHES
        assert ratio[0] - 0.5 / N_PATCHES <= frac <= ratio[1] + 0.5 / N_PATCHES
        counts.add(mask.shape[1])
        assert len({tuple(m.tolist()) for m in mask}) > 1, "positions should differ between samples"
    if ratio[0] < ratio[1] - 0.05:
        assert len(counts) > 1, "the ratio should be redrawn per batch"


def test_random_masker_rejects_bad_ratio():
    for bad in [(0.0, 0.5), (0.5, 1.0), (0.7, 0.6)]:
        with pytest.raises(ValueError):
            RandomPatchMasker(bad)


@pytest.mark.parametrize("masker", [RandomPatchMasker(), MultiBlockPatchMasker()], ids=["random", "multiblock"])
def test_masker_is_deterministic_under_a_generator(masker):
    a = masker(4, N_PATCHES, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    b = masker(4, N_PATCHES, torch.Generator().manual_seed(5))
    c = masker(4, N_PATCHES, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (a[1].shape == c[1].shape and torch.equal(a[1], c[1]))


def test_multiblock_masker_batches():
    masker = MultiBlockPatchMasker(4, (0.175, 0.225))
    g = torch.Generator().manual_seed(0)
    lo, hi = int(0.175 * N_PATCHES), int(0.225 * N_PATCHES)
    for _ in range(20):
        keep, mask = masker(8, N_PATCHES, g)
        _check_common(keep, mask, 8, N_PATCHES)
        # The union of 4 blocks covers between one block and four blocks.
        assert lo <= mask.shape[1] <= 4 * hi


def test_multiblock_single_block_is_contiguous_with_length_in_range():
    lo, hi = 0.1, 0.3
    masker = MultiBlockPatchMasker(1, (lo, hi))
    g = torch.Generator().manual_seed(1)
    lengths = set()
    for _ in range(50):
        # One sample: no trimming, so the mask is the block itself and keep is everything else.
        keep, mask = masker(1, N_PATCHES, g)
        _check_common(keep, mask, 1, N_PATCHES)
        m = mask[0].tolist()
        assert _runs(m) == [len(m)], f"block not contiguous: {m}"
        assert int(lo * N_PATCHES) <= len(m) <= int(hi * N_PATCHES)
        assert keep.shape[1] + mask.shape[1] == N_PATCHES
        lengths.add(len(m))
    assert len(lengths) > 1


def test_multiblock_union_is_at_most_n_blocks_runs():
    masker = MultiBlockPatchMasker(3, (0.1, 0.15))
    g = torch.Generator().manual_seed(2)
    for _ in range(50):
        keep, mask = masker(1, N_PATCHES, g)
        runs = _runs(mask[0].tolist())
        assert 1 <= len(runs) <= 3
        assert min(runs) >= int(0.1 * N_PATCHES)
        assert keep.shape[1] + mask.shape[1] == N_PATCHES


def _release_block_mask(rng: np.random.Generator, p: int, n_blocks=4, scale=(0.175, 0.225)) -> np.ndarray:
    """The ECG-JEPA release's rule, restated: n_blocks blocks of int(p * U(scale)) patches each,
    starts uniform in [0, p - length), one mask for the whole batch."""
    m = np.zeros(p, bool)
    for _ in range(n_blocks):
        length = int(p * rng.uniform(*scale))
        start = rng.integers(0, p - length)
        m[start:start + length] = True
    return m


def test_multiblock_effective_shares_match_the_release_at_batch_128():
    """What the context encoder and the predictor actually get per sample at batch 128: the same
    context and target shares as the release (context ~23 of 50 patches), nothing dropped."""
    masker = MultiBlockPatchMasker(4, (0.175, 0.225))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = [], []
    for _ in range(400):
        keep, mask = masker(128, N_PATCHES, g)
        _check_common(keep, mask, 128, N_PATCHES)
        assert keep.shape[1] + mask.shape[1] == N_PATCHES, "a patch is neither context nor target"
        ctx.append(keep.shape[1] / N_PATCHES)
        tgt.append(mask.shape[1] / N_PATCHES)
    rng = np.random.default_rng(1)
    release = np.array([_release_block_mask(rng, N_PATCHES).mean() for _ in range(20000)])
    assert abs(np.mean(tgt) - release.mean()) < 0.02
    assert abs(np.mean(ctx) - (1 - release.mean())) < 0.02
    assert np.mean(ctx) > 0.4  # the old per-sample union trimmed to the batch minimum gave ~0.2
    assert abs(np.std(tgt) - release.std()) < 0.03


def test_multiblock_mask_is_shared_by_the_batch():
    keep, mask = MultiBlockPatchMasker()(16, N_PATCHES, torch.Generator().manual_seed(4))
    assert (keep == keep[0]).all() and (mask == mask[0]).all()


def test_multiblock_always_keeps_context():
    masker = MultiBlockPatchMasker(4, (0.9, 0.95))  # blocks nearly cover everything
    keep, mask = masker(4, 10, torch.Generator().manual_seed(0))
    _check_common(keep, mask, 4, 10)


def test_multiblock_rejects_bad_settings():
    with pytest.raises(ValueError):
        MultiBlockPatchMasker(0)
    with pytest.raises(ValueError):
        MultiBlockPatchMasker(2, (0.3, 0.2))


def test_build_masker():
    assert isinstance(build_masker("random", ratio=(0.5, 0.6)), RandomPatchMasker)
    assert isinstance(build_masker("multiblock", n_blocks=2), MultiBlockPatchMasker)
    with pytest.raises(ValueError, match="blocks"):
        build_masker("blocks")
