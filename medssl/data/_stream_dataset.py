"""`ArrayStream`, the StreamingDataset of medssl shards (in its own module: it imports litdata,
which only `medssl.data.stream` imports, lazily)."""

from __future__ import annotations

import copy

import lightning as L
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.elastic import topology_changed
from litdata.utilities.env import _DistributedEnv

from medssl.data.stream import ORDERS


class ArrayStream(StreamingDataset):
    """A StreamingDataset of medssl shards whose items are the float32 tensors `x` alone (what an
    SSL method trains on); `sample(i)` is the whole sample with its manifest fields.

    `order="global"` (with `shuffle` and `drop_last`, under a StreamingDataLoader): every epoch
    is the order litdata gives one process with one worker (chunks permuted from (seed, epoch),
    items shuffled inside each chunk), cut into consecutive global batches of world size x batch
    size items; global batch k goes to the ranks in turn (rank r: its k-th batch is items
    [(k*W + r)*B, (k*W + r + 1)*B) of that order). It is litdata's own elastic-resume plan
    (`litdata.streaming.elastic`: a canonical item stream restriped onto the current ranks,
    workers and batch size), which litdata uses after a resume on another topology; here it is
    pinned to a canonical grid of one process, one worker, batch 1 from the first batch of every
    epoch, by giving the dataset that state at each epoch start. `order="per_rank"` is litdata's
    default: each rank and worker gets its own run of whole chunks, which depends on the world
    size."""

    def __init__(self, *args, order: str = "global", **kwargs):
        if order not in ORDERS:
            raise ValueError(f"stream order {order!r}: expected one of {', '.join(ORDERS)}")
        super().__init__(*args, **kwargs)
        self.order = order

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.asarray(super().__getitem__(index)["x"], dtype=np.float32))

    def sample(self, index) -> dict:
        return super().__getitem__(index)

    @property
    def global_order(self) -> bool:
        return self.order == "global" and self.shuffle and bool(self.drop_last)

    def canonical_state(self, epoch: int, sample_in_epoch: int = 0) -> dict:
        """litdata's dataset state for the global order at `sample_in_epoch` samples (all ranks
        together) into `epoch`: an elastic state whose grid is one process, one worker, batch 1."""
        state = copy.deepcopy(StreamingDataset.state_dict(self, 0, 1, 1)) if self._state_dict is None else \
            copy.deepcopy(self._state_dict)
        state.update(world_size=1, num_workers=1, batch_size=1, num_samples_yielded=0,
                     initial_world_size=1, initial_num_workers=1, initial_batch_size=1, initial_num_nodes=1,
                     num_canonical_nodes=1, resume_mode="elastic", current_epoch=epoch,
                     sample_in_epoch=int(sample_in_epoch))
        return state

    def set_epoch(self, current_epoch: int) -> None:
        super().set_epoch(current_epoch)
        # at a fresh epoch (no state restored from a checkpoint) litdata would assign chunks to
        # this world size; the canonical elastic state makes it the global order instead
        if self._state_dict is None and self.global_order:
            self._state_dict = self.canonical_state(current_epoch)

    def get_len(self, num_workers: int, batch_size: int) -> int:
        n = super().get_len(num_workers, batch_size)
        if not self.global_order:
            return n
        # the items per rank of the restriped plan (litdata's `restripe_items` with drop_last:
        # the stream is cut to a multiple of ranks x workers x batch), not of per-rank chunks
        total = self.shuffler.get_len(_DistributedEnv(1, 0, 1), 1, 1, self.current_epoch)
        workers = max(self.num_workers, 1)
        stride = self.distributed_env.world_size * workers * max(batch_size, 1)
        return (total // stride) * workers * max(batch_size, 1)


class StreamPretrainData(L.LightningDataModule):
    """Shuffled batches from shards, split by rank and worker by litdata, in the order of
    (seed, epoch) (`order`: see `ArrayStream`); the loader's position is saved and restored by
    `callback`, which pretraining adds to the trainer. Module level and plain arguments: picklable
    for spawned DDP processes."""

    def __init__(self, location: str, batch_size: int, seed: int, num_workers: int = 0, *,
                 cache_dir: str | None = None, storage_options: dict | None = None, order: str = "global"):
        super().__init__()
        self.location, self.batch_size, self.seed, self.num_workers = location, batch_size, seed, num_workers
        self.cache_dir, self.storage_options, self.order = cache_dir, storage_options, order
        self.loader: StreamingDataLoader | None = None
        self.callback = LoaderStateAtProcessedBatch(self)

    def train_dataloader(self) -> StreamingDataLoader:
        from medssl.data.stream import stream_dataset

        ds = stream_dataset(self.location, shuffle=True, seed=self.seed, drop_last=True, cache_dir=self.cache_dir,
                            storage_options=self.storage_options, order=self.order)
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
    `StreamingDataset.state_dict` at the batches the loop has processed in this epoch; in the
    global order, the canonical elastic state at that many samples of all ranks together, which
    litdata resumes on the same grid by skipping each worker's processed batches, and on another
    world size, worker count or batch size by restriping the rest of the epoch."""

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
        ds = loader.dataset
        if getattr(ds, "global_order", False):
            world = ds.distributed_env.world_size
            dataset = ds.canonical_state(loader.current_epoch, n * world)
            dataset.update(world_size=world, num_workers=max(loader.num_workers, 1), batch_size=loader.batch_size,
                           num_samples_yielded=n)
        else:
            dataset = ds.state_dict(n, loader.num_workers, loader.batch_size)
        return {"dataset": copy.deepcopy(dataset), "current_epoch": loader.current_epoch, "num_samples_yielded": n,
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
        loader, state = self.datamodule.loader, self._to_load
        self._to_load = None
        if state is None or loader is None:
            return
        if state["dataset"].get("resume_mode") != "elastic":
            loader.load_state_dict(state)
            return
        if state["num_samples_yielded"] >= len(loader) * loader.batch_size:
            # the epoch was complete: the next one starts afresh (litdata restores an elastic state
            # even at the end of its epoch, which would replay an empty epoch)
            loader.current_epoch = state["current_epoch"]
            return
        loader.load_state_dict(state)
        if not topology_changed(state["dataset"], world_size=loader.dataset.distributed_env.world_size,
                                num_workers=max(loader.num_workers, 1), batch_size=loader.batch_size):
            # on the same grid litdata skips each worker's processed batches; the next batch is then
            # the next worker's, as litdata's own non-elastic resume sets it (an elastic resume
            # restripes from worker 0, which is right only on another grid)
            loader._latest_worker_idx = state["latest_worker_idx"] + 1 if state["num_samples_yielded"] else 0
