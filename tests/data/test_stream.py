"""Streaming shards (medssl.data.stream, litdata): built from a manifest they hold the memory-map
cache's arrays; pretraining from them splits every epoch across ranks, repeats its order per seed
and resumes after a kill at the same sample."""

from __future__ import annotations

import hashlib
import json

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("litdata")

from medssl.data.layouts import index_layout  # noqa: E402
from medssl.data.modalities import encoder_inputs  # noqa: E402
from medssl.data.stream import META, build_stream, stream_dataset  # noqa: E402
from medssl.engine.config import resolve_recipe  # noqa: E402
from medssl.engine.pretrain import pretrain  # noqa: E402
from medssl.registry import encoder_spec  # noqa: E402

TINY = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
    "encoder.overrides.num_heads=2", "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=4", "optim.epochs=2", "optim.warmup_epochs=0", "trainer.checkpoint_every_n_steps=1",
]


def _spec(cfg):
    return encoder_spec(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))


def _digest(x) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tiny_cohort_dir, tmp_path_factory):
    rows, skipped = index_layout("synthetic", tiny_cohort_dir)
    assert not skipped
    cfg = resolve_recipe("ecg_jepa", TINY)
    out = tmp_path_factory.mktemp("shards") / "ecg"
    info = build_stream(rows, _spec(cfg), out, cfg["data"], workers=2, progress=False)
    return rows, cfg, out, info  # 16 records -> 16 windows of 8 x 2500


def test_shards_hold_the_memory_map_cache_arrays_and_manifest_fields(built, tmp_path):
    rows, cfg, out, info = built
    cache = encoder_inputs(rows, _spec(cfg), cfg["data"], tmp_path / "cache")
    ds = stream_dataset(out)
    samples = [ds.sample(i) for i in range(len(ds))]
    assert len(samples) == len(cache.rows) == info.meta["n_items"] == 16
    by_key = {(s["record_id"], int(s["window"])): s for s in samples}
    for i, row in enumerate(cache.rows):
        s = by_key[(row["record_id"], int(row["window"]))]
        np.testing.assert_array_equal(s["x"], cache.signals[i])
        assert (s["subject_id"], s["split"], s["labels"], s["site"]) == (row["subject_id"], row["split"],
                                                                         row["labels"], row["site"])
        assert "path" not in s  # no file paths (which may carry names) in the shards
    assert isinstance(ds[0], torch.Tensor) and ds[0].dtype == torch.float32 and tuple(ds[0].shape) == (8, 2500)
    meta = json.loads((out / META).read_text())
    assert meta["modality"] == "ecg" and meta["n_subjects"] == 8 and meta["item_shape"] == [8, 2500]


def test_same_key_is_a_no_op_and_other_data_is_refused(built):
    rows, cfg, out, info = built
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = build_stream(rows, _spec(cfg), out, cfg["data"], workers=1, progress=False)
    assert again.meta["key"] == info.meta["key"]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(ValueError, match="other data or settings"):
        build_stream(rows[:8], _spec(cfg), out, cfg["data"], workers=1, progress=False)


class RecordBatches(L.Callback):
    """Writes the digest of every sample of every batch, per rank, to `folder/rank<r>.jsonl`."""

    def __init__(self, folder):
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                "samples": [_digest(x) for x in batch.cpu().numpy()]}) + "\n")


class CrashAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _batches(folder, rank=0) -> list[dict]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


def _all_digests(out) -> set[str]:
    ds = stream_dataset(out)
    return {_digest(ds.sample(i)["x"]) for i in range(len(ds))}


@pytest.mark.precision
def test_pretrain_from_shards_repeats_its_order_and_resumes_at_the_same_sample(built, tmp_path):
    _, _, out, _ = built
    cfg = resolve_recipe("ecg_jepa", [*TINY, f"data.stream={out}"])
    straight = pretrain(cfg, [], tmp_path / "straight", progress_bar=False, callbacks=[RecordBatches(tmp_path / "a")])
    seen = _batches(tmp_path / "a")
    assert len(seen) == 8  # 2 epochs of 4 batches of 4
    for epoch in (0, 1):  # every epoch covers every sample once, in a shuffled order that changes per epoch
        epoch_samples = [d for b in seen if b["epoch"] == epoch for d in b["samples"]]
        assert sorted(epoch_samples) == sorted(_all_digests(out))
    assert [b["samples"] for b in seen[:4]] != [b["samples"] for b in seen[4:]]

    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, [], tmp_path / "resumed", progress_bar=False,
                 callbacks=[CrashAtStep(6), RecordBatches(tmp_path / "b")])
    first = _batches(tmp_path / "b")
    assert [b["samples"] for b in first] == [b["samples"] for b in seen[:len(first)]]  # same order, same seed
    resumed = pretrain(cfg, [], tmp_path / "resumed", progress_bar=False, callbacks=[RecordBatches(tmp_path / "c")])
    after = _batches(tmp_path / "c")
    # the resumed run starts at the sample after the checkpoint's and ends where the straight run did
    assert [b["samples"] for b in after] == [b["samples"] for b in seen[-len(after):]]
    assert 0 < len(after) < 8 and after[0]["step"] == seen[-len(after)]["step"]
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    card = json.loads((resumed / "card.json").read_text())
    assert card["training_metrics"]["steps"] == 8 and card["training_metrics"]["n_windows"] == 16


@pytest.mark.slow
def test_two_ddp_processes_see_disjoint_samples_that_cover_the_epoch_in_a_seeded_order(built, tmp_path):
    """Lightning DDP on two CPU processes (gloo): litdata gives each rank its own part."""
    _, _, out, _ = built
    cfg = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=1", f"data.stream={out}", "trainer.devices=2",
                                      "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu"])
    for run in ("x", "y"):
        pretrain(cfg, [], tmp_path / run, progress_bar=False, callbacks=[RecordBatches(tmp_path / f"rec-{run}")])
    ranks = [[d for b in _batches(tmp_path / "rec-x", r) for d in b["samples"]] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 8  # 16 windows, 2 ranks, 2 batches of 4 each
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == _all_digests(out)
    for r in (0, 1):  # the same seed: the same samples in the same order on each rank
        assert _batches(tmp_path / "rec-x", r) == _batches(tmp_path / "rec-y", r)
