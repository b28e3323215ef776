"""trainer.mlflow: Lightning's MLflow logger on the local file store out_dir/mlruns."""

from __future__ import annotations

import pytest

from medssl.data.layouts import index_layout
from medssl.engine.config import ConfigError, resolve_recipe
from medssl.engine.pretrain import mlflow_logger, pretrain

TINY = [
    "variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
    "encoder.overrides.num_heads=2", "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=0", "trainer.log_every_n_steps=1",
]


def test_every_recipe_has_the_key_off_by_default():
    from medssl.engine.config import packaged_yaml

    names = [n for n in packaged_yaml(exclude_prefix="bench_")]
    assert len(names) >= 12
    for name in names:
        assert resolve_recipe(name)["trainer"]["mlflow"] is False, name
    assert resolve_recipe("ecg_jepa", ["trainer.mlflow=true"])["trainer"]["mlflow"] is True
    with pytest.raises(ConfigError, match="'trainer.mlflow' takes a bool"):
        resolve_recipe("ecg_jepa", ["trainer.mlflow=mlruns"])


def test_missing_mlflow_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"medssl\[tracking\]"):
        mlflow_logger(resolve_recipe("ecg_jepa"), tmp_path)


def test_pretrain_logs_to_the_local_file_store(tiny_cohort_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'medssl[tracking]' or mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # set by the logger (MLflow 3), undone after
    rows, _ = index_layout("synthetic", tiny_cohort_dir)
    cfg = resolve_recipe("ecg_jepa", [*TINY, "trainer.mlflow=true"])
    pretrain(cfg, rows, tmp_path / "run1", progress_bar=False)
    store = tmp_path / "run1" / "mlruns"
    assert store.is_dir()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("medssl-ecg_jepa")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run1" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert len(history) == 4  # 16 records, batches of 4, one epoch, logged every step
    assert run.data.params["optim.epochs"] == "1" and run.data.params["encoder.name"] == "ecg_jepa_tiny"
    assert run.data.tags["medssl.encoder"] == "ecg_jepa_tiny"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/model.safetensors", "checkpoint/card.json", "checkpoint/README.md"} <= artifacts
