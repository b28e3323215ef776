"""Subject-level batches for DP-SGD (see :mod:`medssl.engine.dp`): each step samples subjects
and one window of each subject drawn, so a subject contributes at most one example to a step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from medssl.data.array_dataset import ArrayDataset, collate_batch

if TYPE_CHECKING:
    from medssl.engine.dp import DPPlan

__all__ = ["DPPretrainData", "SubjectBatchSampler", "subject_groups"]


def _draw_seed(*parts: int) -> int:
    return hash(tuple(parts)) & 0x7FFF_FFFF_FFFF


class SubjectBatchSampler(Sampler[list[int]]):
    """Batches of window indices with at most one window per subject.

    groups: each subject's window indices. Poisson (default): every step draws each subject
    independently with probability `sample_rate` (batch sizes vary, may be 0); otherwise each
    epoch permutes the subjects and cuts `batch_size` per step (drop last). For each subject drawn,
    one of its windows uniformly. Draws are a pure function of (key, epoch, step), so a resumed run
    (`skip` = steps of this epoch already done) repeats them.
    """

    def __init__(self, groups: Sequence[np.ndarray], *, sample_rate: float, steps_per_epoch: int, key: int,
                 poisson: bool = True, batch_size: int | None = None):
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        self.sample_rate = sample_rate
        self.steps_per_epoch = steps_per_epoch
        self.key = key
        self.poisson = poisson
        self.batch_size = batch_size or max(1, round(sample_rate * len(self.groups)))
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        n = len(self.groups)
        sizes = torch.tensor([len(g) for g in self.groups])
        order = None
        if not self.poisson:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_draw_seed(self.key, self.epoch, -1)))
        start, self.skip = self.skip, 0
        for i in range(start, self.steps_per_epoch):
            g = torch.Generator().manual_seed(_draw_seed(self.key, self.epoch, i))
            if self.poisson:
                chosen = torch.nonzero(torch.rand(n, generator=g) < self.sample_rate).flatten()
            else:
                chosen = order[i * self.batch_size:(i + 1) * self.batch_size]
            pick = (torch.rand(len(chosen), generator=g) * sizes[chosen]).long()
            yield [int(self.groups[s][k]) for s, k in zip(chosen.tolist(), pick.tolist())]


class _Windows(ArrayDataset):
    def __getitems__(self, indices: list[int]) -> Tensor:  # an empty Poisson batch included
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.asarray(self.array[idx], dtype=np.float32).reshape(len(idx), *self.array.shape[1:]))


def subject_groups(rows: Sequence[dict]) -> list[np.ndarray]:
    """Window indices of each subject (rows aligned with the arrays), subjects in sorted order."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(str(r["subject_id"]), []).append(i)
    return [np.array(by[s], dtype=np.int64) for s in sorted(by)]


class DPPretrainData(L.LightningDataModule):
    """Subject-level batches (:class:`SubjectBatchSampler`) from the array cache."""

    def __init__(self, array: np.ndarray, rows: Sequence[dict], plan: DPPlan, num_workers: int = 0):
        super().__init__()
        self.dataset = _Windows(array)
        self.groups = subject_groups(rows)
        self.plan = plan
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        module = self.trainer.lightning_module
        sampler = SubjectBatchSampler(self.groups, sample_rate=self.plan.sample_rate,
                                      steps_per_epoch=self.plan.steps_per_epoch, key=module.sampling_key,
                                      poisson=self.plan.poisson_sampling, batch_size=self.plan.expected_batch_size)
        sampler.skip = module.resume_batches_done
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=collate_batch)
