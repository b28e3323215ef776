"""A torch Dataset over the rows of a (memory-mapped) preprocessed array, and its batch collation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate


class ArrayDataset(Dataset):
    """Rows of a (memory-mapped) array as float32 tensors.

    `__getitems__` lets the DataLoader fetch a whole batch as one tensor with one fancy-indexed
    read of the memory map, instead of a read per row and a stack; pair it with `collate_batch`.
    """

    def __init__(self, array: np.ndarray):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[i], dtype=np.float32))

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.array[np.asarray(indices)], dtype=np.float32))


def collate_batch(batch):
    """A batch `ArrayDataset.__getitems__` already stacked passes through; anything else is collated."""
    return batch if isinstance(batch, torch.Tensor) else default_collate(batch)
