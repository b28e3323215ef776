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
    """Multi-block masking (ECG-JEPA): one mask per batch, the union of `n_blocks` contiguous blocks
    over the time patches (shared by every lead), the target being the union and the context all
    the other patches.

    As in the ECG-JEPA release (`MaskTransformer._make_block_mask`, `mask_type='block'`): each
    block's length is `int(n_patches * r)` with r drawn uniformly from `block_scale` per block,
    its start uniform over `[0, n_patches - length)`, and the one mask is used for the whole batch.
    So no patch is left out: context + target = all patches for every sample. (Drawing a union per
    sample and trimming every sample to the batch's smallest context and target counts, as
    I-JEPA's collator does for its per-sample masks, leaves a context encoder of about 10 of 50
    patches at batch 128, where the release's sees about 23.) At least one context patch is kept.
    """

    def __init__(self, n_blocks: int = 4, block_scale: tuple[float, float] = (0.175, 0.225)):
        if n_blocks < 1 or not 0.0 < block_scale[0] <= block_scale[1] < 1.0:
            raise ValueError(f"bad multi-block settings: n_blocks={n_blocks}, block_scale={block_scale}")
        self.n_blocks = n_blocks
        self.block_scale = block_scale

    def draw(self, n_patches: int, generator: torch.Generator) -> Tensor:
        """One bool (n_patches,) mask: True = target."""
        lo, hi = self.block_scale
        masked = torch.zeros(n_patches, dtype=torch.bool)
        for _ in range(self.n_blocks):
            r = lo + (hi - lo) * torch.rand((), generator=generator).item()
            length = min(max(int(n_patches * r), 1), n_patches - 1)
            start = int(torch.randint(0, n_patches - length, (), generator=generator))
            masked[start:start + length] = True
        if masked.all():
            masked[0] = False  # keep at least one context patch
        return masked

    def __call__(self, batch_size: int, n_patches: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        masked = self.draw(n_patches, generator)
        pos = torch.arange(n_patches)
        return (pos[~masked].expand(batch_size, -1).clone(), pos[masked].expand(batch_size, -1).clone())


def build_masker(kind: str, **kwargs) -> RandomPatchMasker | MultiBlockPatchMasker:
    maskers = {"random": RandomPatchMasker, "multiblock": MultiBlockPatchMasker}
    if kind not in maskers:
        raise ValueError(f"unknown masking {kind!r}; choose from {', '.join(maskers)}")
    return maskers[kind](**kwargs)
