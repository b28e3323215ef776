"""Streaming shards (medssl.data.stream, litdata): built from a manifest they hold the memory-map
cache's arrays; pretraining from them splits every epoch across ranks, repeats its order per seed,
gives the same global batches on 1, 2 or 4 processes, and resumes after a kill at the same sample."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("litdata")

from litdata import StreamingDataLoader  # noqa: E402
from litdata.utilities.env import _DistributedEnv  # noqa: E402

from medssl.data._stream_dataset import StreamPretrainData  # noqa: E402
from medssl.data.layouts import index_layout  # noqa: E402
from medssl.data.modalities import encoder_inputs  # noqa: E402
from medssl.data.stream import META, build_stream, read_stream_meta, stream_dataset  # noqa: E402
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


@pytest.fixture(scope="module")
def small_chunks(built, tmp_path_factory):
    """The same 16 windows in 9 chunks of 1-2 items (one chunk would hide how chunks meet ranks)."""
    rows, cfg, _, _ = built
    out = tmp_path_factory.mktemp("shards") / "small-chunks"
    build_stream(rows, _spec(cfg), out, cfg["data"], workers=2, progress=False, chunk_bytes="200kB")
    assert len(json.loads((out / "index.json").read_text())["chunks"]) > 4
    return out


def _as_rank(ds, world: int, rank: int):
    ds.distributed_env = _DistributedEnv(world, rank, 1)  # what litdata detects in DDP rank `rank` of `world`
    return ds


def _global_batches(out, world: int, batch: int, workers: int, *, epochs: int = 2, seed: int = 0,
                    order: str = "global") -> list[list[list[str]]]:
    """Per epoch, per step: the samples of the ranks' batches of that step, rank 0's first."""
    per_rank = []
    for rank in range(world):
        ds = _as_rank(stream_dataset(out, shuffle=True, seed=seed, drop_last=True, order=order), world, rank)
        loader = StreamingDataLoader(ds, batch_size=batch, num_workers=workers, drop_last=True)
        epochs_seen = [[[_digest(x) for x in b] for b in loader] for _ in range(epochs)]
        assert [len(e) for e in epochs_seen] == [len(loader)] * epochs  # the length Lightning plans with
        per_rank.append(epochs_seen)
    return [[sum((per_rank[r][e][s] for r in range(world)), []) for s in range(len(per_rank[0][e]))]
            for e in range(epochs)]


def test_global_order_gives_the_same_global_batch_per_step_on_any_number_of_processes(small_chunks):
    """order=global: the global batch at each step (the ranks' batches together, in rank order)
    is the same on 1 process with batch 4, 2 with batch 2 and 4 with batch 1, with or without
    dataloader workers; every epoch covers every sample once, in an order of (seed, epoch)."""
    one = _global_batches(small_chunks, 1, 4, 0)
    assert [len(e) for e in one] == [4, 4]
    for epoch in one:
        assert sorted(d for step in epoch for d in step) == sorted(_all_digests(small_chunks))
    assert one[0] != one[1]
    assert _global_batches(small_chunks, 2, 2, 0) == one
    assert _global_batches(small_chunks, 4, 1, 0) == one
    assert _global_batches(small_chunks, 2, 2, 2) == one
    assert _global_batches(small_chunks, 1, 4, 2) == one
    assert _global_batches(small_chunks, 1, 4, 0) == one  # the same seed: the same order again
    assert _global_batches(small_chunks, 1, 4, 0, seed=1) != one
    # litdata's own assignment (order=per_rank) gives each rank its own chunks: another order on 2
    assert _global_batches(small_chunks, 2, 2, 0, order="per_rank") != _global_batches(
        small_chunks, 1, 4, 0, order="per_rank")


def _resume_at(callback, processed: int):
    callback.trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
        batch_progress=SimpleNamespace(current=SimpleNamespace(processed=processed)))))
    return callback.state_dict()


@pytest.mark.parametrize(("world", "batch", "workers", "stop", "then_workers"),
                         [(1, 4, 2, 1, 2), (1, 4, 2, 2, 2), (2, 2, 0, 3, 0), (2, 2, 0, 2, 2)])
def test_loader_state_resumes_the_global_order_at_the_next_global_batch(small_chunks, world, batch, workers, stop,
                                                                        then_workers):
    """The state the pretraining callback saves after `stop` steps of `world` processes resumes on
    1 process with batch 4 and `then_workers` workers at global batch `stop` of the uninterrupted
    epoch; on the same grid with 2 workers after an odd step, the next batch is the other
    worker's. (On another grid litdata cuts the rest of the epoch to a multiple of ranks x workers
    x batch: 2 ranks' 3 steps of 2 resumed with 2 workers of 4 would drop the last 4 samples.)"""
    straight = _global_batches(small_chunks, 1, 4, 0, epochs=1)[0]
    states = []
    for rank in range(world):
        data = StreamPretrainData(str(small_chunks), batch, seed=0, num_workers=workers)
        loader = data.train_dataloader()
        _as_rank(loader.dataset, world, rank)
        it = iter(loader)
        for _ in range(stop):
            next(it)
        states.append(_resume_at(data.callback, stop))
        del it
    assert all(s["loader"]["dataset"]["sample_in_epoch"] == stop * 4 for s in states)
    data = StreamPretrainData(str(small_chunks), 4, seed=0, num_workers=then_workers)
    loader = data.train_dataloader()
    data.callback.load_state_dict(states[0])
    data.callback.on_train_start(None, None)
    assert [[_digest(x) for x in b] for b in loader] == straight[stop:]


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
def test_two_ddp_processes_see_disjoint_samples_that_cover_the_epoch_in_the_one_process_order(built, tmp_path):
    """Lightning DDP on two CPU processes (gloo), batch 2 each, against one process with batch 4:
    litdata gives each rank its own part, and the two ranks' batches of a step together are the
    one process's batch of that step (rank 0's half first), for the same seed."""
    _, _, out, _ = built
    one = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=1", f"data.stream={out}"])
    pretrain(one, [], tmp_path / "one", progress_bar=False, callbacks=[RecordBatches(tmp_path / "rec-one")])
    cfg = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=1", "data.batch_size=2", f"data.stream={out}",
                                      "trainer.devices=2", "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu"])
    for run in ("x", "y"):
        pretrain(cfg, [], tmp_path / run, progress_bar=False, callbacks=[RecordBatches(tmp_path / f"rec-{run}")])
    ranks = [[d for b in _batches(tmp_path / "rec-x", r) for d in b["samples"]] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 8  # 16 windows, 2 ranks, 4 batches of 2 each
    assert not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == _all_digests(out)
    for r in (0, 1):  # the same seed: the same samples in the same order on each rank
        assert _batches(tmp_path / "rec-x", r) == _batches(tmp_path / "rec-y", r)
    single = _batches(tmp_path / "rec-one")
    pairs = zip(_batches(tmp_path / "rec-x", 0), _batches(tmp_path / "rec-x", 1), strict=True)
    assert [(b0["step"], b0["samples"] + b1["samples"]) for b0, b1 in pairs] == \
        [(b["step"], b["samples"]) for b in single]


def test_embed_from_shards_equals_embed_from_the_memory_map_cache(built, tiny_cohort_dir, tmp_path, monkeypatch,
                                                                   capsys):
    """`medssl embed --stream` reads the shards' arrays and rows: the same embeddings, record and
    subject IDs as `--data` from the manifest (through the memory-map cache), in shard order."""
    from medssl.cli import main

    _, _, out, _ = built
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    ref = ["embed", "--checkpoint", "random:ecg_jepa_tiny:1"]
    assert main([*ref, "--data", str(tiny_cohort_dir), "--out", str(tmp_path / "cache.npz")]) == 0
    assert main([*ref, "--stream", str(out), "--out", str(tmp_path / "shards.npz"), "--batch-size", "5"]) == 0
    with np.load(tmp_path / "cache.npz") as a, np.load(tmp_path / "shards.npz") as b:
        at = {r: i for i, r in enumerate(a["record_id"])}
        assert sorted(at) == sorted(b["record_id"]) and len(b["record_id"]) == 16
        order = [at[r] for r in b["record_id"]]
        np.testing.assert_array_equal(b["subject_id"], a["subject_id"][order])
        np.testing.assert_allclose(b["embeddings"], a["embeddings"][order], rtol=1e-6, atol=1e-6)
        assert str(b["precision"]) == str(a["precision"])
        in_shards = list(b["record_id"])
    ds = stream_dataset(out)
    assert in_shards == [ds.sample(i)["record_id"] for i in range(len(ds))]  # shard order
    capsys.readouterr()
    assert main([*ref, "--out", str(tmp_path / "none.npz")]) == 2
    assert "exactly one of --data" in capsys.readouterr().err


def test_shards_of_other_preprocessing_or_modality_are_refused_naming_the_file(built, tmp_path):
    from medssl.data.stream import stream_inputs
    from medssl.registry import create_encoder

    rows, _, _, _ = built
    spec = create_encoder("ecg_jepa_tiny").spec
    other = tmp_path / "unfiltered"
    build_stream(rows[:4], spec, other, {"bandpass": None}, workers=1, progress=False)
    with pytest.raises(ValueError, match=rf"^{other}/{META}: shards preprocessed for another input contract or "
                                         r"preprocessing than encoder ecg_jepa_tiny reads \(bandpass_high: None, "
                                         r"encoder 40.0; bandpass_low: None, encoder 0.67\)"):
        stream_inputs(other, spec)
    assert len(stream_inputs(other, spec, {"bandpass": None}).signals) == 4  # the settings they were built with
    with pytest.raises(ValueError, match=rf"^{other}/{META}: shards of modality 'ecg'; encoder mri_vit3d_tiny is mri"):
        stream_inputs(other, create_encoder("mri_vit3d_tiny").spec)
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path}/{META}: not found"):
        stream_inputs(tmp_path, spec)


def _shard_samples(out) -> list[tuple]:
    ds = stream_dataset(out)
    return [(s["record_id"], int(s["window"]), s["subject_id"], s["labels"], _digest(s["x"]))
            for s in (ds.sample(i) for i in range(len(ds)))]


def test_an_interrupted_build_reuses_its_finished_parts_and_ends_as_an_uninterrupted_one(built, tmp_path,
                                                                                         monkeypatch):
    """16 records in parts of 4: a build interrupted (KeyboardInterrupt, as Ctrl-C) while writing
    its third part is resumed by the same command, which builds only parts 3 and 4 and merges;
    the shards then hold the same items in the same order as a build that was not interrupted."""
    import litdata

    rows, cfg, _, _ = built
    straight = tmp_path / "straight"
    build_stream(rows, _spec(cfg), straight, cfg["data"], workers=2, progress=False, records_per_part=4)
    assert not (straight / "parts").exists() and sorted(p.name for p in straight.iterdir() if "chunk" not in p.name) \
        == ["index.json", META]

    real, calls = litdata.optimize, []

    def interrupted_at_part_3(**kw):
        calls.append(kw["output_dir"])
        if len(calls) == 3:  # a part half written, then Ctrl-C
            Path(kw["output_dir"]).mkdir(parents=True)
            (Path(kw["output_dir"]) / "chunk-0-0.bin").write_bytes(b"half")
            raise KeyboardInterrupt
        return real(**kw)

    out = tmp_path / "resumed"
    monkeypatch.setattr(litdata, "optimize", interrupted_at_part_3)
    with pytest.raises(KeyboardInterrupt):
        build_stream(rows, _spec(cfg), out, cfg["data"], workers=2, progress=False, records_per_part=4)
    assert read_stream_meta(out) is None and (out / "parts" / "part-000001" / "medssl_part.json").is_file()
    with pytest.raises(ValueError, match="unfinished build of other data or settings"):  # other parts: refused
        build_stream(rows, _spec(cfg), out, cfg["data"], workers=2, progress=False, records_per_part=8)
    calls.clear()
    monkeypatch.setattr(litdata, "optimize", lambda **kw: (calls.append(kw["output_dir"]), real(**kw))[1])
    info = build_stream(rows, _spec(cfg), out, cfg["data"], workers=2, progress=False, records_per_part=4)
    assert [Path(c).name for c in calls] == ["part-000002", "part-000003"]  # parts 1-2 reused
    assert _shard_samples(out) == _shard_samples(straight)
    assert len(_shard_samples(out)) == info.meta["n_items"] == 16
    assert json.loads((out / "index.json").read_text()) == json.loads((straight / "index.json").read_text())
    assert info.meta == json.loads((straight / META).read_text())
    assert not (out / "parts").exists()
