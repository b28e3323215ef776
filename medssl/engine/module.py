"""The Lightning module every SSL method trains under.

AdamW without weight decay on biases and norms, per-step linear warm-up then cosine decay, and,
for methods with a target network (`update_target`), an EMA momentum rising linearly over
training. The position in the data order is saved in checkpoints so a run resumed mid-epoch
continues on the very next batch.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from medssl.nn.param_groups import no_weight_decay_ids
from medssl.nn.param_groups import param_groups as nn_param_groups
from medssl.nn.schedules import cosine_schedule, momentum_schedule


def param_groups(module: nn.Module, weight_decay: float, no_weight_decay: tuple[str, ...] | list[str] = ()
                 ) -> list[dict]:
    """AdamW groups [decay, no decay] (both kept, even when empty): biases and 1-D parameters (norm
    scales) never decay (as in MAE, ECG-JEPA, SimMIM, DINO); nor do parameters whose qualified name
    contains one of `no_weight_decay` (a recipe's `optim.no_weight_decay`, e.g. ["pos_embed",
    "cls_token"]). `medssl.nn.param_groups` with match="contains"."""
    no_decay = no_weight_decay_ids(module, no_weight_decay, match="contains")
    return nn_param_groups([list(module.parameters())], weight_decay, no_decay=no_decay, keep_empty=True)


def optimizer_settings(optim: dict) -> dict:
    """AdamW keyword arguments of a recipe's `optim` section, the same keys for every recipe:
    `lr`, `weight_decay`, `betas` (default torch's (0.9, 0.999)), `eps` (default 1e-8), and
    `no_weight_decay` (extra names excluded from decay). Raises ValueError for bad values."""
    betas = tuple(float(b) for b in (optim.get("betas") or (0.9, 0.999)))
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"optim.betas must be two numbers in [0, 1), got {optim.get('betas')!r}")
    eps = float(optim.get("eps", 1e-8))
    names = optim.get("no_weight_decay") or []
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"optim.no_weight_decay must be a list of parameter-name parts, got {names!r}")
    return {"lr": float(optim["lr"]), "weight_decay": float(optim["weight_decay"]), "betas": betas, "eps": eps,
            "no_weight_decay": tuple(names)}


def build_optimizer(module: nn.Module, optim: dict) -> torch.optim.AdamW:
    """The AdamW every pretraining recipe gets (see `optimizer_settings`)."""
    s = optimizer_settings(optim)
    return torch.optim.AdamW(param_groups(module, s["weight_decay"], s["no_weight_decay"]), lr=s["lr"],
                             betas=s["betas"], eps=s["eps"])


class SSLModule(L.LightningModule):
    def __init__(self, method: nn.Module, optim: dict):
        super().__init__()
        self.method = method
        self.optim = dict(optim)
        self.resume_batches_done = 0
        self._epoch_sums: dict[str, tuple] = {}  # name -> (sum of value x batch size, items) this epoch
        self._sums_epoch: int | None = None

    def log_epoch_mean(self, name: str, value, batch_size: int, prog_bar: bool = False) -> None:
        """Log `value` at this step as `{name}_step`, and the epoch's mean over its batches as
        `{name}_epoch` (and `name`) when the epoch ends. The running sums are saved in checkpoints,
        so an epoch resumed mid-way still averages every one of its batches (Lightning's own epoch
        aggregation would start again from the resumed batch)."""
        v = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        self.log(f"{name}_step", v, prog_bar=prog_bar, on_step=True, on_epoch=False, batch_size=batch_size)
        total, n = self._epoch_sums.get(name, (0.0, 0))
        self._epoch_sums[name] = (total + v * batch_size, n + batch_size)

    def on_train_epoch_start(self) -> None:
        if self._sums_epoch != self.current_epoch:  # a new epoch, not the one a checkpoint resumed
            self._epoch_sums, self._sums_epoch = {}, self.current_epoch

    def on_train_epoch_end(self) -> None:
        for name, (total, n) in self._epoch_sums.items():
            mean = torch.as_tensor(total / max(n, 1), dtype=torch.float32)
            self.log(f"{name}_epoch", mean, on_step=False, on_epoch=True)
            self.log(name, mean, on_step=False, on_epoch=True)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.method(batch, step=self.global_step, rank=self.global_rank)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.global_step}")
        self.log_epoch_mean("train/loss", loss, batch.shape[0], prog_bar=True)
        # A method may expose its loss terms and diagnostics (e.g. DAGMaN's attention-head diversity).
        for name, value in getattr(self.method, "last_metrics", {}).items():
            self.log_epoch_mean(f"train/{name}", float(value), batch.shape[0])
        # Counters in the logged metrics survive spawn-based strategies, whose trainer state does not.
        self.log("train/steps", float(self.global_step + 1), on_step=False, on_epoch=True, reduce_fx="max")
        self.log("train/epochs", float(self.current_epoch + 1), on_step=False, on_epoch=True, reduce_fx="max")
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA update belongs to the optimiser step: checkpoint callbacks run in
        # on_train_batch_end, before the module's own hook, and must see the updated target.
        super().optimizer_step(*args, **kwargs)
        self.update_target_network()

    def update_target_network(self) -> None:
        """EMA update of the method's target network, if it has one (after each optimiser step)."""
        if hasattr(self.method, "update_target"):
            start, end = self.optim["ema_momentum"]
            m = momentum_schedule(self.global_step, self.trainer.estimated_stepping_batches, start, end)
            self.method.update_target(m)
            self.log("train/ema_momentum", m, on_step=True, on_epoch=False)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The optimiser the schedule drives; identity here (DP-SGD wraps it in Opacus's DPOptimizer)."""
        return optimizer

    def configure_optimizers(self):
        o = self.optim
        opt = self.wrap_optimizer(build_optimizer(self.method, o))
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        warmup = int(o.get("warmup_epochs", 0) * steps_per_epoch)
        min_ratio = o.get("min_lr", 0.0) / o["lr"]
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_schedule(step, total, 1.0, warmup, min_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        checkpoint["medssl_data_order"] = {"epoch": self.current_epoch, "batches_done": progress.processed}
        checkpoint["medssl_epoch_sums"] = {"epoch": self._sums_epoch,
                                           "sums": {k: [float(t), int(n)] for k, (t, n) in self._epoch_sums.items()}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resume_batches_done = checkpoint.get("medssl_data_order", {}).get("batches_done", 0)
        saved = checkpoint.get("medssl_epoch_sums") or {}
        self._sums_epoch = saved.get("epoch")
        self._epoch_sums = {k: (float(t), int(n)) for k, (t, n) in (saved.get("sums") or {}).items()}
