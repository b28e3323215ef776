"""Maskers over a 1-D sequence of patches (ECG time patches shared across leads).

A masker returns `(keep_idx, mask_idx)`, both (B, K) long tensors of patch indices, sorted,
disjoint, with the same K for every sample of the batch so that the context encoder and the
predictor run on dense batches.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sorted_random_subset(candidates: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """For each row of a bool (B, P) candidate mask, k candidate indices drawn uniformly, sorted."""
    noise = torch.rand(candidates.shape, generator=generator)
    noise[~candidates] = 2.0  # non-candidates sort last
    return torch.sort(torch.argsort(noise, dim=1)[:, :k], dim=1).values


class RandomPatchMasker:
    """Random masking (ECG-JEPA): a ratio drawn uniformly from `ratio` per batch, the same count of
    patches masked in every sample, positions independent per sample."""

    def __init__(self, ratio: tuple[float, float] = (0.6, 0.7)):
        lo, hi = ratio
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"mask ratio range must lie in (0, 1), got {ratio}")
        self.ratio = (lo, hi)

    def __call__(self, batch_size: int, n_patches: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lo, hi = self.ratio
        r = lo + (hi - lo) * torch.rand((), generator=generator).item()
        n_mask = min(max(int(round(r * n_patches)), 1), n_patches - 1)
        order = torch.argsort(torch.rand(batch_size, n_patches, generator=generator), dim=1)
        mask_idx = torch.sort(order[:, :n_mask], dim=1).values
        keep_idx = torch.sort(order[:, n_mask:], dim=1).values
        return keep_idx, mask_idx


class MultiBlockPatchMasker:
    """Multi-block masking (ECG-JEPA): the union of `n_blocks` contiguous blocks, each covering a
    fraction of the sequence drawn from `block_scale`.

    Unions differ in size between samples; as in I-JEPA's collator, every sample is trimmed to the
    batch's smallest target count and smallest context count, dropping random surplus patches
    (dropped patches are neither context nor target).
    """

    def __init__(self, n_blocks: int = 4, block_scale: tuple[float, float] = (0.175, 0.225)):
        if n_blocks < 1 or not 0.0 < block_scale[0] <= block_scale[1] < 1.0:
            raise ValueError(f"bad multi-block settings: n_blocks={n_blocks}, block_scale={block_scale}")
        self.n_blocks = n_blocks
        self.block_scale = block_scale

    def __call__(self, batch_size: int, n_patches: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lo, hi = self.block_scale
        lengths = torch.round((lo + (hi - lo) * torch.rand(batch_size, self.n_blocks, generator=generator)) * n_patches)
        lengths = lengths.clamp(1, n_patches - 1).long()
        starts = (torch.rand(batch_size, self.n_blocks, generator=generator) * (n_patches - lengths + 1)).long()
        pos = torch.arange(n_patches)
        inside = (pos[None, None] >= starts[..., None]) & (pos[None, None] < (starts + lengths)[..., None])
        masked = inside.any(dim=1)
        masked[masked.all(dim=1), 0] = False  # keep at least one context patch
        n_mask = int(masked.sum(1).min())
        n_keep = int((~masked).sum(1).min())
        return (
            _sorted_random_subset(~masked, n_keep, generator),
            _sorted_random_subset(masked, n_mask, generator),
        )


def build_masker(kind: str, **kwargs) -> RandomPatchMasker | MultiBlockPatchMasker:
    maskers = {"random": RandomPatchMasker, "multiblock": MultiBlockPatchMasker}
    if kind not in maskers:
        raise ValueError(f"unknown masking {kind!r}; choose from {', '.join(maskers)}")
    return maskers[kind](**kwargs)
