"""`ArrayStream`, the StreamingDataset of medssl shards (in its own module: it imports litdata,
which only `medssl.data.stream` imports, lazily)."""

from __future__ import annotations

import numpy as np
import torch
from litdata import StreamingDataset


class ArrayStream(StreamingDataset):
    """A StreamingDataset of medssl shards whose items are the float32 tensors `x` alone (what an
    SSL method trains on); `sample(i)` is the whole sample with its manifest fields."""

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.asarray(super().__getitem__(index)["x"], dtype=np.float32))

    def sample(self, index) -> dict:
        return super().__getitem__(index)
