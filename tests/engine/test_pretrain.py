"""Pretraining under Lightning: it trains, writes a checkpoint, and resumes exactly."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tolerance import running_bf16

from medssl.checkpoint import load_encoder
from medssl.data.layouts import index_layout
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

TINY = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
    "encoder.overrides.num_heads=2", "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=4", "optim.epochs=2", "optim.warmup_epochs=0", "trainer.checkpoint_every_n_steps=1",
]


pytestmark = pytest.mark.precision


class CrashAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def rows(tiny_cohort_dir):
    rows, skipped = index_layout("synthetic", tiny_cohort_dir)
    assert not skipped
    return rows  # 16 records -> 4 batches of 4 per epoch


def test_pretrain_writes_a_loadable_checkpoint_and_lowers_the_loss(rows, tmp_path):
    cfg = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=3", "optim.lr=3e-3"])
    folder = pretrain(cfg, rows, tmp_path / "run", progress_bar=False)
    encoder = load_encoder(folder)
    card = json.loads((folder / "card.json").read_text())
    assert card["encoder"]["hparams"]["embed_dim"] == 32
    assert card["recipe"]["optim"]["epochs"] == 3
    assert card["training_metrics"]["steps"] == 12
    assert len(card["data"]["manifest_sha256"]) == 64
    # the precision actually used, never "auto": fp32 on a CPU unless MEDSSL_PRECISION says bf16
    expected = "bf16-mixed" if running_bf16() else "32-true"
    assert card["precision"] == card["recipe"]["trainer"]["precision"] == expected
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]["precision"] == expected
    losses = _epoch_losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    x = torch.randn(2, 8, 2500)
    assert encoder(x).shape == (2, 32)


def _epoch_losses(run_dir) -> list[float]:
    import csv

    with (run_dir / "logs" / "metrics.csv").open() as f:
        return [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(rows, tmp_path):
    cfg = resolve_recipe("ecg_jepa", TINY)
    straight = pretrain(cfg, rows, tmp_path / "straight", progress_bar=False)

    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, rows, tmp_path / "resumed", progress_bar=False, callbacks=[CrashAtStep(6)])
    assert not (tmp_path / "resumed" / "checkpoint").exists()
    assert (tmp_path / "resumed" / "lightning" / "last.ckpt").is_file()  # step 6 of 8: mid-epoch 2
    resumed = pretrain(cfg, rows, tmp_path / "resumed", progress_bar=False)

    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    card = json.loads((resumed / "card.json").read_text())
    assert card["training_metrics"]["steps"] == 8


def _log_rows(run_dir) -> list[tuple]:
    import csv

    with (run_dir / "logs" / "metrics.csv").open() as f:
        return [(int(r["step"]), r.get("train/loss_step") or None, r.get("train/loss_epoch") or None)
                for r in csv.DictReader(f)]


def test_logs_stay_whole_across_a_kill_and_resume(rows, tmp_path):
    """Issue 17: Lightning deleted the earlier logs/metrics.csv rows on resume, and the resumed
    epoch's mean loss covered only the batches after the resume."""
    cfg = resolve_recipe("ecg_jepa", [*TINY, "trainer.log_every_n_steps=1"])
    pretrain(cfg, rows, tmp_path / "straight", progress_bar=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, rows, tmp_path / "resumed", progress_bar=False, callbacks=[CrashAtStep(6)])
    before = _log_rows(tmp_path / "resumed")
    assert [s for s, step_loss, _ in before if step_loss] == [0, 1, 2, 3, 4]  # epoch 2 was under way
    pretrain(cfg, rows, tmp_path / "resumed", progress_bar=False)

    straight, resumed = _log_rows(tmp_path / "straight"), _log_rows(tmp_path / "resumed")
    assert resumed[:len(before)] == before  # the rows before the kill are still there
    assert [(s, a) for s, a, _ in resumed] == [(s, a) for s, a, _ in straight]  # every step once, same losses
    epochs = [float(e) for *_, e in straight if e]
    assert len(epochs) == 2
    assert [float(e) for *_, e in resumed if e] == pytest.approx(epochs, rel=1e-6, abs=0)  # means over all batches
    card = json.loads((tmp_path / "resumed" / "checkpoint" / "card.json").read_text())
    assert card["training_metrics"]["train/loss_epoch"] == pytest.approx(epochs[-1], rel=1e-6, abs=0)


def test_resume_without_the_data_order_would_differ(rows, tmp_path):
    """Guard for the test above: a crash, then a fresh start from step 0, ends elsewhere."""
    cfg = resolve_recipe("ecg_jepa", TINY)
    straight = pretrain(cfg, rows, tmp_path / "straight", progress_bar=False)
    cfg_other = resolve_recipe("ecg_jepa", [*TINY, "seed=1"])
    other = pretrain(cfg_other, rows, tmp_path / "other", progress_bar=False)
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(other / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_bad_records_are_skipped_and_listed(rows, tmp_path, caplog):
    cfg = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=1"])
    broken = dict(rows[0], path=str(tmp_path / "missing_record"), record_id="missing_record")
    folder = pretrain(cfg, [broken, *rows], tmp_path / "run", progress_bar=False)
    card = json.loads((folder / "card.json").read_text())
    assert card["training_metrics"]["n_skipped"] == 1
    assert card["training_metrics"]["n_records"] == len(rows)
    assert any("missing_record" in m for m in caplog.messages)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(rows, tmp_path):
    """Lightning's DDP strategy on the gloo backend, two CPU processes: no code change needed."""
    cfg = resolve_recipe("ecg_jepa", [*TINY, "optim.epochs=1", "trainer.devices=2",
                                      "trainer.strategy=ddp_spawn", "trainer.accelerator=cpu"])
    folder = pretrain(cfg, rows, tmp_path / "ddp", progress_bar=False)
    card = json.loads((folder / "card.json").read_text())
    # 16 records, 2 ranks of 8, batches of 4: 2 optimiser steps per epoch.
    assert card["training_metrics"]["steps"] == 2
    assert np.isfinite(card["training_metrics"]["train/loss_epoch"])


def test_compiled_transformers_save_the_plain_architecture(rows, tmp_path):
    """trainer.compile wraps transformer stacks in torch.compile; the checkpoint keeps plain keys."""
    from medssl.checkpoint import save_checkpoint
    from medssl.engine.methods import build_method
    from medssl.nn.transformer import compile_transformers

    cfg = resolve_recipe("ecg_jepa", TINY)
    encoder, method = build_method(cfg)
    plain = set(encoder.state_dict())
    compile_transformers(method)
    assert any("_orig_mod." in k for k in encoder.state_dict())
    folder = save_checkpoint(encoder, tmp_path / "ck")
    assert set(load_encoder(folder).state_dict()) == plain
