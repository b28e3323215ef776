"""trainer.precision "auto" on a CPU: bf16 only where timing the run's own step says it pays."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from medssl.data.layouts import index_layout
from medssl.engine import hardware as hw
from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.engine.precision_probe import probe_cpu_precision
from medssl.engine.pretrain import pretrain, with_resolved_precision

TINY = ["variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32", "encoder.overrides.num_heads=2",
        "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=4", "optim.epochs=1",
        "optim.warmup_epochs=0"]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(hw.ENV_VAR, raising=False)


@pytest.fixture
def jepa():
    _, method = build_method(resolve_recipe("ecg_jepa", TINY))
    return method


def fake_clock(fp32_s: float, bf16_s: float):
    """A clock the probe reads twice per timed pass, fp32 then bf16 in turn: each pass takes the given time."""
    state = {"t": 0.0, "calls": 0}

    def clock() -> float:
        call = state["calls"]
        state["calls"] += 1
        if call % 2:  # the end of a pass
            state["t"] += fp32_s if call % 4 == 1 else bf16_s
        return state["t"]

    return clock


@pytest.mark.parametrize("fp32_s,bf16_s,chosen", [(2.0, 1.0, "bf16-mixed"), (1.0, 1.0, "32-true"),
                                                  (1.1, 1.0, "32-true"), (1.0, 2.0, "32-true")])
def test_bf16_only_when_it_wins_by_the_margin(jepa, fp32_s, bf16_s, chosen):
    result = probe_cpu_precision(jepa, torch.randn(2, 8, 2500), steps=2, clock=fake_clock(fp32_s, bf16_s))
    assert result["chosen"] == chosen
    assert result["fp32_ms_per_step"] == pytest.approx(1000 * fp32_s)
    assert result["bf16_speedup"] == pytest.approx(fp32_s / bf16_s, rel=1e-3)


def test_the_probe_leaves_the_method_and_the_global_rng_alone(jepa):
    before = {k: v.clone() for k, v in jepa.state_dict().items()}
    batch = torch.randn(2, 8, 2500)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    result = probe_cpu_precision(jepa, batch, warmup=0, steps=1)
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, before[k]) for k, v in jepa.state_dict().items())
    assert all(p.grad is None for p in jepa.parameters())
    assert result["fp32_ms_per_step"] > 0 and result["bf16_ms_per_step"] > 0


def test_pretrain_records_the_probe_and_trains_in_its_choice(no_env, tiny_cohort_dir, tmp_path):
    rows, _ = index_layout("synthetic", tiny_cohort_dir)
    folder = pretrain(resolve_recipe("ecg_jepa", TINY), rows, tmp_path / "run", progress_bar=False)
    trainer = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["trainer"]
    probe = trainer["precision_probe"]
    assert trainer["precision"] == probe["chosen"] in ("32-true", "bf16-mixed")
    assert probe["batch_size"] == 4
    card = json.loads((folder / "card.json").read_text())
    assert card["precision"] == probe["chosen"]
    assert card["recipe"]["trainer"]["precision_probe"] == probe


def test_a_resumed_run_keeps_its_recorded_precision(no_env, jepa, tmp_path):
    previous = tmp_path / "config.yaml"
    previous.write_text(yaml.safe_dump({"trainer": {"precision": "bf16-mixed", "precision_probe": {"chosen": "bf16-mixed"}}}))
    cfg = with_resolved_precision({"trainer": {"precision": "auto"}}, method=jepa, probe_batch=torch.randn(2, 8, 2500),
                                  previous=previous)
    assert cfg["trainer"]["precision"] == "bf16-mixed"


def test_not_probed_where_it_cannot_decide_for_every_process(no_env, jepa, monkeypatch):
    monkeypatch.setattr(hw, "cuda_bf16_supported", lambda: False)
    batch = torch.randn(2, 8, 2500)
    several = with_resolved_precision({"trainer": {"precision": "auto", "devices": 2}}, method=jepa, probe_batch=batch)
    streamed = with_resolved_precision({"trainer": {"precision": "auto"}}, method=jepa, probe_batch=None)
    dp = with_resolved_precision({"trainer": {"precision": "auto"}, "privacy": {"dp": {"epsilon": 8}}}, method=jepa,
                                 probe_batch=batch)
    for cfg in (several, streamed, dp):
        assert cfg["trainer"]["precision"] == "32-true"
        assert "precision_probe" not in cfg["trainer"]
    explicit = with_resolved_precision({"trainer": {"precision": "bf16-mixed"}}, method=jepa, probe_batch=batch)
    assert explicit["trainer"]["precision"] == "bf16-mixed" and "precision_probe" not in explicit["trainer"]


def test_the_environment_replaces_the_probe(monkeypatch, jepa):
    monkeypatch.setenv(hw.ENV_VAR, "bf16")
    cfg = with_resolved_precision({"trainer": {"precision": "auto"}}, method=jepa, probe_batch=torch.randn(2, 8, 2500))
    assert cfg["trainer"]["precision"] == "bf16-mixed" and "precision_probe" not in cfg["trainer"]
