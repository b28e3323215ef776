"""`ArrayStream`, the StreamingDataset of medssl shards (in its own module: it imports litdata,
which only `medssl.data.stream` imports, lazily)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset


class ArrayStream(StreamingDataset):
    """A StreamingDataset of medssl shards whose items are the float32 tensors `x` alone (what an
    SSL method trains on); `sample(i)` is the whole sample with its manifest fields."""

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.asarray(super().__getitem__(index)["x"], dtype=np.float32))

    def sample(self, index) -> dict:
        return super().__getitem__(index)


class StreamPretrainData(L.LightningDataModule):
    """Shuffled batches from shards, split by rank and worker by litdata, in the order of
    (seed, epoch); the loader's position is saved and restored by `callback`, which pretraining
    adds to the trainer. Module level and plain arguments: picklable for spawned DDP processes."""

    def __init__(self, location: str, batch_size: int, seed: int, num_workers: int = 0, *,
                 cache_dir: str | None = None, storage_options: dict | None = None):
        super().__init__()
        self.location, self.batch_size, self.seed, self.num_workers = location, batch_size, seed, num_workers
        self.cache_dir, self.storage_options = cache_dir, storage_options
        self.loader: StreamingDataLoader | None = None
        self.callback = LoaderStateAtProcessedBatch(self)

    def train_dataloader(self) -> StreamingDataLoader:
        from medssl.data.stream import stream_dataset

        ds = stream_dataset(self.location, shuffle=True, seed=self.seed, drop_last=True, cache_dir=self.cache_dir,
                            storage_options=self.storage_options)
        self.loader = StreamingDataLoader(ds, batch_size=self.batch_size, drop_last=True, num_workers=self.num_workers)
        return self.loader


class LoaderStateAtProcessedBatch(L.Callback):
    """The StreamingDataLoader's position, saved in the checkpoint and restored on resume, by
    litdata's own `state_dict`/`load_state_dict`. Two gaps in Lightning 2.6's automatic handling
    make this callback necessary (both seen in tests/data/test_stream.py): Lightning fetches a
    batch ahead of the one it trains on, so the loader state it saves counts one batch too many;
    and it restores loader states only when the dataloader is first set up after the checkpoint is
    read, which a module whose `configure_optimizers` asks for `estimated_stepping_batches` (every
    medssl method: the cosine schedule) has already done. The state kept here is litdata's
    `StreamingDataset.state_dict` at the batches the loop has processed in this epoch."""

    def __init__(self, datamodule):
        self.datamodule = datamodule
        self.trainer = None
        self._to_load: dict | None = None

    def setup(self, trainer, pl_module, stage) -> None:
        self.trainer = trainer

    def _state(self) -> dict | None:
        loader = self.datamodule.loader
        if loader is None or self.trainer is None:
            return None
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        n = done * loader.batch_size
        return {"dataset": loader.dataset.state_dict(n, loader.num_workers, loader.batch_size),
                "current_epoch": loader.current_epoch, "num_samples_yielded": n,
                "latest_worker_idx": (done - 1) % max(loader.num_workers, 1) if done else 0}

    def state_dict(self) -> dict:
        return {"loader": self._state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._to_load = state_dict.get("loader")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # the same state where Lightning keeps its own (one batch ahead), in case a version loads it
        states = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("state_dict", {}).get("combined_loader")
        state = self._state()
        if states and len(states) == 1 and state is not None:
            states[0] = state

    def on_train_start(self, trainer, pl_module) -> None:
        if self._to_load is not None and self.datamodule.loader is not None:
            self.datamodule.loader.load_state_dict(self._to_load)
        self._to_load = None
