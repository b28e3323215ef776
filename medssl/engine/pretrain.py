"""Pretraining: recipe + manifest -> checkpoint folder, under Lightning.

Outputs in `out_dir`:
  config.yaml         the recipe as resolved (defaults -> variant -> overrides; trainer.precision
                      as used, never "auto")
  lightning/last.ckpt Lightning's resumable state (optimizer, schedules, loop position)
  logs/               CSV logs (TensorBoard too when trainer.tensorboard is true)
  mlruns/             with trainer.mlflow: true, an MLflow run (local file store; experiment = the
                      method, run name = the output folder; $MLFLOW_TRACKING_URI, when set, wins):
                      metrics, the resolved recipe as parameters, the checkpoint folder as artifacts
  checkpoint/         model.safetensors + card.json: the encoder, ready for `medssl.load_encoder`
CPU by default; GPUs, several devices and several nodes through Lightning's `accelerator`,
`devices`, `num_nodes` and `strategy` settings, without code changes.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.utils.data import DataLoader

from medssl.checkpoint import CheckpointError, save_checkpoint, update_card
from medssl.data.array_dataset import ArrayDataset, collate_batch
from medssl.data.manifest import manifest_fingerprint
from medssl.data.samplers import EpochShuffleSampler
from medssl.engine.hardware import ENV_VAR, resolve_accelerator, resolve_precision
from medssl.engine.methods import build_method, check_encoder_modality
from medssl.engine.module import SSLModule
from medssl.io import atomic_write_text
from medssl.nn.transformer import compile_transformers

log = logging.getLogger(__name__)


class PretrainData(L.LightningDataModule):
    """Shuffled batches from the array cache, in an order fixed by (seed, epoch) and resumable."""

    def __init__(self, array: np.ndarray, batch_size: int, seed: int, num_workers: int = 0):
        super().__init__()
        self.dataset = ArrayDataset(array)
        self.batch_size = min(batch_size, len(array))
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = EpochShuffleSampler(
            len(self.dataset), self.seed, rank=trainer.global_rank, num_replicas=trainer.world_size
        )
        sampler.skip = trainer.lightning_module.resume_batches_done * self.batch_size
        return DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, collate_fn=collate_batch,
        )


class _KeptRowsWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps the rows an earlier run of the same folder
    wrote: Lightning deletes metrics.csv when a run starts, which loses the steps before a kill
    when the run resumes. Rows of steps from the first step this run logs on are dropped (the
    resumed run logs them again); the others stay, and new rows follow them."""

    def _check_log_dir_exists(self) -> None:  # Lightning's version deletes metrics.csv
        self._earlier: list[dict] | None = None
        self._earlier_keys: list[str] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                reader = csv.DictReader(f)
                self._earlier, self._earlier_keys = list(reader), list(reader.fieldnames or [])

    def save(self) -> None:
        if self._earlier is not None and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [r for r in self._earlier if r.get("step") and int(float(r["step"])) < first]
            self.metrics_keys = sorted(set(self.metrics_keys) | set(self._earlier_keys))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self.metrics_keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(Path(self.metrics_file_path), buf.getvalue())
            self._earlier = None
        super().save()


class KeptRowsCSVLogger(CSVLogger):
    """CSVLogger whose logs/metrics.csv survives a resume whole (see `_KeptRowsWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeptRowsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeptRowsWriter(log_dir=self.log_dir)
        return self._experiment


def load_training_arrays(cfg: dict, rows: Sequence[dict], encoder) -> tuple[np.ndarray, list[dict], list]:
    """The preprocessed training arrays for this encoder's input contract, from the cache of its
    modality's data hook (:mod:`medssl.data.modalities`), with the recipe's `data` settings."""
    from medssl.data.modalities import encoder_inputs

    cache = encoder_inputs(rows, encoder.spec, cfg["data"], cfg["data"].get("cache_dir"))
    return cache.signals, cache.rows, cache.skipped


def pretrain(
    cfg: dict,
    rows: Sequence[dict],
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress_bar: bool = True,
    callbacks: Sequence[L.Callback] = (),
) -> Path:
    """Train `cfg["method"]` on the records of `rows`; return the checkpoint folder.

    With `resume`, a run whose `out_dir/lightning/last.ckpt` exists continues from it at the same
    step, with the same data order and masks.
    """
    check_encoder_modality(cfg.get("method"), (cfg.get("encoder") or {}).get("name"))  # before writing anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.get("seed", 0), workers=True, verbose=False)

    encoder, method = build_method(cfg)
    from medssl.engine.dp import dp_training

    dp = dp_training(cfg, method)  # None unless privacy.dp; refuses what DP-SGD cannot train, before any data
    stream = cfg["data"].get("stream")  # litdata shards (medssl.data.stream), a folder or an object-store URL
    if stream:
        from medssl.data.stream import stream_pretrain_data

        if dp is not None:
            raise ValueError("privacy.dp with data.stream: DP-SGD's subject-level sampling reads the memory-map "
                             "cache, not shards; unset data.stream")
        stream_data, stream_info = stream_pretrain_data(cfg, encoder.spec)
        arrays, used_rows, skipped = None, [], stream_info.skipped
    else:
        arrays, used_rows, skipped = load_training_arrays(cfg, rows, encoder)
    for path, reason in skipped:
        log.warning("skipped %s: %s", path, reason)

    last = out_dir / "lightning" / "last.ckpt"
    resuming = resume and last.is_file()
    # the precision probe times one batch of the run's own data (streamed runs are not probed)
    probe_batch = (None if arrays is None
                   else ArrayDataset(arrays).__getitems__(list(range(min(len(arrays), cfg["data"]["batch_size"])))))
    cfg = with_resolved_precision(cfg, method=method, probe_batch=probe_batch,
                                  previous=out_dir / "config.yaml" if resuming else None)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))

    o, t = cfg["optim"], cfg["trainer"]
    if t.get("compile") and dp is None:
        compile_transformers(method)
    if dp is not None:
        module, data = dp.lightning_parts(arrays, used_rows)
    else:
        module = SSLModule(method, o)
        data = stream_data if stream else PretrainData(arrays, cfg["data"]["batch_size"], cfg.get("seed", 0),
                                                       cfg["data"].get("num_workers", 0))
    loggers = [KeptRowsCSVLogger(out_dir, name="logs", version="")]
    if t.get("tensorboard"):
        loggers.append(TensorBoardLogger(out_dir, name="tensorboard", version=""))
    if t.get("mlflow"):
        loggers.append(mlflow_logger(cfg, out_dir))
    ckpt_dir = out_dir / "lightning"
    trainer = L.Trainer(
        max_epochs=o["epochs"],
        max_steps=t.get("max_steps", -1),
        accelerator=resolve_accelerator(t.get("accelerator", "auto")),
        devices=t.get("devices", 1),
        num_nodes=t.get("num_nodes", 1),
        strategy=t.get("strategy", "auto"),
        precision=t["precision"],
        gradient_clip_val=o.get("grad_clip") if dp is None else None,  # DP-SGD clips per sample
        logger=loggers,
        log_every_n_steps=t.get("log_every_n_steps", 10),
        callbacks=[
            # enable_version_counter=False: a --no-resume run replaces last.ckpt rather than writing
            # last-v1.ckpt beside it (which a later resume would never read)
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, enable_version_counter=False,
                            every_n_train_steps=t.get("checkpoint_every_n_steps", 100)),
            *callbacks,
            *([data.callback] if stream else []),  # the StreamingDataLoader's position at the trained batch
        ],
        use_distributed_sampler=False,  # EpochShuffleSampler (or litdata, for data.stream) shards by rank itself
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        # DP-SGD steps manually; its checkpoints hold the state after the step, like automatic ones
        warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
        trainer.fit(module, datamodule=data, ckpt_path=check_resumable(last) if resuming else None)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    metrics.update(steps=int(metrics.pop("train/steps", trainer.global_step)),
                   epochs=int(metrics.pop("train/epochs", trainer.current_epoch)),
                   n_records=len({r["record_id"] for r in used_rows}), n_windows=len(used_rows), n_subjects=len({r["subject_id"] for r in used_rows}),
                   n_skipped=len(skipped))
    if stream:  # the counts the shards were built with
        metrics.update(n_records=stream_info.meta.get("n_records", 0), n_windows=stream_info.meta.get("n_items", 0),
                       n_subjects=stream_info.meta.get("n_subjects", 0))
    if trainer.is_global_zero:
        folder = save_checkpoint(encoder, out_dir / "checkpoint", recipe=cfg,
                                 data_fingerprint=stream_info.meta.get("manifest_sha256", "") if stream
                                 else manifest_fingerprint(used_rows), metrics=metrics)
        save_method_state(method, folder)
        if dp is not None:
            update_card(folder, "privacy", module.guarantee())
        for lg in loggers:
            if type(lg).__name__ == "MLFlowLogger":  # the checkpoint (weights, card, README.md) as the run's artifacts
                lg.experiment.log_artifacts(lg.run_id, str(folder), artifact_path="checkpoint")
    return out_dir / "checkpoint"


def mlflow_logger(cfg: dict, out_dir: Path):
    """Lightning's MLFlowLogger on the local file store ``out_dir/mlruns`` (``$MLFLOW_TRACKING_URI``
    wins when set; for the file store, ``$MLFLOW_ALLOW_FILE_STORE`` defaults to true, which MLflow 3
    requires), experiment named after the method, run after the output folder, the resolved
    recipe logged as parameters. mlflow is the optional extra ``tracking``; without it, an error
    that says so before training starts."""
    import importlib.util

    from medssl.engine.config import ConfigError

    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError("trainer.mlflow is true but mlflow is not installed: pip install 'medssl[tracking]' "
                          "(or mlflow-skinny), or set trainer.mlflow=false")
    from lightning.pytorch.loggers import MLFlowLogger

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = (out_dir / "mlruns").resolve().as_uri()
        # MLflow >= 3 refuses the file store ("maintenance mode") unless this is set; the local,
        # server-less store is the point here (`mlflow ui --backend-store-uri <out_dir>/mlruns`)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name=f"medssl-{cfg.get('method', 'pretrain')}", run_name=out_dir.resolve().name,
                          tracking_uri=uri, tags={"medssl.recipe": str(cfg.get("recipe", "")),
                                                  "medssl.encoder": str((cfg.get("encoder") or {}).get("name"))})
    logger.log_hyperparams(_flat_params(cfg))
    return logger


def _flat_params(cfg: dict, prefix: str = "") -> dict[str, str]:
    """The recipe as MLflow parameters: dotted keys, values as text (MLflow caps a value at 6000 chars)."""
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat_params(v, f"{key}."))
        else:
            out[key] = str(v)[:6000]
    return out


def check_resumable(path: Path) -> str:
    """`path` if it is a whole Lightning checkpoint (a zip archive whose members all pass their
    CRC check); a truncated or corrupt one is a CheckpointError naming it, before training starts."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        problem = f"member {bad} is corrupt" if bad else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        problem = f"not a whole checkpoint archive: {e}"
    if problem:
        raise CheckpointError(f"{path}: cannot resume from it ({problem}); delete it, or start afresh with "
                              f"--no-resume")
    return str(path)


def with_resolved_precision(
    cfg: dict, *, method=None, probe_batch=None, previous: Path | None = None
) -> dict:
    """A copy of ``cfg`` whose ``trainer.precision`` is the value training will use, so config.yaml
    and the card record the precision actually used, never "auto".

    "auto" becomes: fp32 for DP-SGD; on a resumed run, the precision its config.yaml recorded; on
    one CPU process with a ``method`` and a ``probe_batch`` and no ``$MEDSSL_PRECISION``, the
    faster of fp32 and bf16 autocast as timed by :func:`medssl.engine.precision_probe.probe_cpu_precision`
    (its timings kept as ``trainer.precision_probe``); otherwise the device's default
    (:func:`medssl.engine.hardware.resolve_precision`).
    """
    cfg = copy.deepcopy(cfg)
    t = cfg.setdefault("trainer", {})
    precision = str(t.get("precision", "auto"))
    if precision == "auto" and (cfg.get("privacy") or {}).get("dp"):
        precision = "32-true"
    if precision == "auto" and previous is not None and previous.is_file():
        from medssl.engine.config import load_yaml

        recorded = load_yaml(previous).get("trainer") or {}
        if recorded.get("precision", "auto") != "auto":
            t["precision"] = recorded["precision"]
            if "precision_probe" in recorded:
                t["precision_probe"] = recorded["precision_probe"]
            return cfg
    accelerator = resolve_accelerator(t.get("accelerator", "auto"))
    one_process = t.get("devices", 1) in (1, "1") and t.get("num_nodes", 1) == 1
    if (precision == "auto" and accelerator == "cpu" and one_process and method is not None
            and probe_batch is not None and not os.environ.get(ENV_VAR, "").strip()):
        from medssl.engine.precision_probe import probe_cpu_precision

        t["precision_probe"] = probe_cpu_precision(method, probe_batch)
        t["precision"] = t["precision_probe"]["chosen"]
        log.info("precision: %s (CPU probe: fp32 %.1f ms, bf16 %.1f ms per step)", t["precision"],
                 t["precision_probe"]["fp32_ms_per_step"], t["precision_probe"]["bf16_ms_per_step"])
        return cfg
    t["precision"] = resolve_precision(precision, t.get("accelerator", "auto"))
    return cfg


METHOD_WEIGHTS_FILE = "method.safetensors"


def save_method_state(method, folder: Path) -> Path:
    """The whole SSL method (predictor, heads, EMA target...) beside the encoder, as safetensors:
    what a white-box privacy audit needs to compute the training loss, without any pickle."""
    from medssl.io import save_safetensors

    state = {k.replace("_orig_mod.", ""): v.detach().cpu().clone().contiguous()
             for k, v in method.state_dict().items()}
    return save_safetensors(state, folder / METHOD_WEIGHTS_FILE)
