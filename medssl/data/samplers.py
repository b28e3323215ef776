"""Samplers whose order is a pure function of (seed, epoch), so a resumed run sees the same data."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation each epoch from `seed + epoch`; resumable mid-epoch via `skip`.

    With num_replicas > 1 (one process per device under Lightning's DDP), each rank takes every
    num_replicas-th index of the padded permutation, as torch's DistributedSampler does.
    """

    def __init__(self, n: int, seed: int = 0, *, rank: int = 0, num_replicas: int = 1):
        self.n = n
        self.seed = seed
        self.rank = rank
        self.num_replicas = num_replicas
        self.epoch = 0
        self.skip = 0  # indices of this epoch already consumed (set when resuming)
        self.per_rank = math.ceil(n / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        total = self.per_rank * self.num_replicas
        if total > self.n:
            perm = torch.cat([perm, perm[: total - self.n]])
        mine = perm[self.rank : total : self.num_replicas].tolist()
        start, self.skip = self.skip, 0
        return iter(mine[start:])
