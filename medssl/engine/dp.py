"""DP-SGD pretraining (Abadi et al., CCS 2016) with Opacus, at the level of the SUBJECT.

Turned on by the recipe's `privacy` section (defaults in :mod:`medssl.engine.config`)::

    privacy:
      dp: true
      target_epsilon: 8.0          # either this (noise calibrated over the planned steps) ...
      noise_multiplier: null       # ... or this (sigma; epsilon then follows from the accountant)
      max_grad_norm: 1.0           # C: each subject's gradient is clipped to this L2 norm
      delta: null                  # default 1 / (10 * n_subjects)
      accountant: rdp              # rdp | prv (Opacus accountants)
      poisson_sampling: true       # false: shuffled fixed-size batches (see caveat below)
      max_physical_batch_size: null  # per-sample gradients computed this many at a time (memory)

Privacy unit: the subject. Membership in medssl is a property of a subject (all of a person's
records), and DP-SGD protects the unit one clipped per-sample gradient stands for. So the DP
training set has one *example per subject*: each step samples subjects (Poisson, rate q =
batch_size / n_subjects) and, for every subject drawn, one of its windows uniformly at random
(:class:`medssl.engine.dp_sampling.SubjectBatchSampler`). A subject therefore contributes exactly
one clipped gradient to a step when it is sampled and none otherwise, which is what the
accountant's add/remove-one-example analysis assumes: the (epsilon, delta) reported bound what the
trained method reveals about all of a subject's records together (user-level DP), not about a
single window. Every window is still used over training (a subject's windows take turns). An
"epoch" is round(1 / q) steps, i.e. each subject once in expectation. Chosen over window-level
DP-SGD, whose epsilon a subject with m windows would have to multiply by about m (group privacy).

Per-sample gradients: the methods here (transformers whose decoders fold leads into the batch
dimension, raw `nn.Parameter` tokens, an EMA target network) do not fit the per-layer hooks of
Opacus's GradSampleModule, whose per-sample gradients would be per lead, not per subject. They are
computed for the whole method at once with `torch.func` (`vmap` over `grad` of the loss of a
batch of one, through `functional_call`), exact for any architecture, and handed to Opacus's
`DPOptimizer` through `p.grad_sample` (it reads them from there whatever computed them; Opacus's
own grad_sample_mode "no_op" leaves that to the caller too), which clips them per sample, sums,
adds Gaussian noise N(0, sigma^2 C^2), divides by the expected batch size and steps AdamW
(:mod:`medssl.engine.dp_grad`). The accountant (Opacus RDP or PRV) is stepped by the
optimiser's hook and saved in Lightning's checkpoints, so a resumed run keeps counting. With
`max_physical_batch_size`, chunks of the batch are clipped and accumulated one after the other
(Opacus's virtual steps), so memory is bounded without changing the update.

Supported methods: those whose batch loss is the mean of independent per-sample losses, so one
sample's gradient depends on that sample alone: MAE (`mae_ecg`, `MaskedAutoencoder`: every
sample has the same number of masked patches) and JEPA (`ecg_jepa`, `JEPA`: the same number of
masked time patches per sample). For JEPA only the context encoder and predictor are trained
(and clipped); the EMA target has no gradients and is updated from the privatised weights, which
is post-processing and costs no privacy. Refused, with the reason: SimCLR (`simclr_ecg`: NT-Xent
uses every other sample of the batch as a negative, so a sample's gradient depends on the rest
of the batch and per-sample clipping no longer bounds one subject's influence), TS2Vec (its
instance-wise contrastive term, likewise), CoRe-ECG (its contrastive term), and any method with
BatchNorm (batch statistics mix samples; Opacus's ModuleValidator.fix would swap it for
GroupNorm, but the checkpoint would then no longer match its registered encoder). Other methods
register with :func:`register_per_sample_loss`.

Randomness that the guarantee rests on is secret: which subjects each step samples comes from a
key drawn from the OS (`secrets`), kept in Lightning's checkpoint (resumes repeat it) but never in
the card; the noise comes from a generator seeded from the OS, not from the recipe's seed (which
the card records: noise derived from it could be subtracted). Masks still follow the recipe seed
(they do not depend on the data). torch's generators are not cryptographically secure; Opacus's
`secure_mode` (torchcsprng) is not used. So DP runs are not bit-reproducible.

Limits: one device (no DDP/FSDP yet: each rank would add its own noise); fp32 only (bf16 or fp16
mixed precision is refused before training: Opacus assigns per-sample gradients in the parameters'
dtype and its noise is calibrated in fp32; `trainer.precision: auto` resolves to 32-true here); `trainer.compile` is ignored (eager vmap); `optim.grad_clip` is ignored
(clipping is per sample at `max_grad_norm`). With `poisson_sampling: false` the batches are
fixed-size chunks of a per-epoch permutation of subjects and the accountant's Poisson analysis is
only an approximation (as in Opacus); the card says so.

The card's `privacy` list gets an entry (:meth:`DPSSLModule.guarantee`)::

    {"kind": "dp_sgd", "privacy_unit": "subject", "epsilon": float | null (null: no noise),
     "delta", "accountant", "noise_multiplier", "max_grad_norm", "sample_rate",
     "expected_batch_size", "steps", "epochs", "n_subjects", "n_windows", "sampling",
     "target_epsilon", "opacus", "notes": [str]}
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from medssl.engine.module import SSLModule
from medssl.engine.dp_grad import (
    DPUnsupported,
    PerSampleLoss,
    dp_backward,
    per_sample_gradients,
    per_sample_loss_of,
    register_per_sample_loss,
)
from medssl.engine.dp_sampling import (
    DPPretrainData,
    SubjectBatchSampler,
    subject_groups,
)

__all__ = [
    "DPPlan", "DPPretrainData", "DPSSLModule", "DPSettings", "DPUnsupported", "OpacusMissing", "PerSampleLoss",
    "SubjectBatchSampler", "default_delta", "dp_backward", "dp_training", "per_sample_gradients",
    "per_sample_loss_of", "plan_dp", "register_per_sample_loss", "spent_epsilon", "subject_groups",
]

log = logging.getLogger(__name__)

OPACUS_HINT = "DP-SGD pretraining (privacy.dp: true) needs Opacus: pip install 'medssl[privacy]'"
ACCOUNTANTS = ("rdp", "prv")


class OpacusMissing(DPUnsupported, ImportError):
    """Opacus is not installed (a ValueError too, so the CLI reports it in one line)."""


def _opacus():
    try:
        import opacus
    except ImportError:
        raise OpacusMissing(OPACUS_HINT) from None
    return opacus


# ---------------------------------------------------------------------------------------------
# settings and plan


@dataclass(frozen=True)
class DPSettings:
    """The recipe's `privacy` section, checked (see the module docstring for each key)."""

    target_epsilon: float | None
    noise_multiplier: float | None
    max_grad_norm: float
    delta: float | None
    accountant: str
    poisson_sampling: bool
    max_physical_batch_size: int | None

    @classmethod
    def from_recipe(cls, cfg: dict) -> DPSettings | None:
        """None when `privacy.dp` is false; raises DPUnsupported naming the bad key."""
        p = cfg.get("privacy") or {}
        if not p.get("dp"):
            return None
        eps, sigma = p.get("target_epsilon"), p.get("noise_multiplier")
        if (eps is None) == (sigma is None):
            raise DPUnsupported("privacy.dp is true: set exactly one of privacy.target_epsilon (noise calibrated "
                                "to reach it) or privacy.noise_multiplier, got "
                                f"target_epsilon={eps!r}, noise_multiplier={sigma!r}")
        if eps is not None and not (_number(eps) and 0 < eps < math.inf):
            raise DPUnsupported(f"privacy.target_epsilon must be a positive number, got {eps!r}")
        if sigma is not None and not (_number(sigma) and 0 <= sigma < math.inf):
            raise DPUnsupported(f"privacy.noise_multiplier must be a number >= 0, got {sigma!r}")
        c = p.get("max_grad_norm", 1.0)
        if not (_number(c) and 0 < c < math.inf):
            raise DPUnsupported(f"privacy.max_grad_norm must be a positive number, got {c!r}")
        delta = p.get("delta")
        if delta is not None and not (_number(delta) and 0 < delta < 1):
            raise DPUnsupported(f"privacy.delta must lie in (0, 1), got {delta!r}")
        acc = p.get("accountant", "rdp")
        if acc not in ACCOUNTANTS:
            raise DPUnsupported(f"privacy.accountant must be one of {', '.join(ACCOUNTANTS)}, got {acc!r}")
        chunk = p.get("max_physical_batch_size")
        if chunk is not None and not (isinstance(chunk, int) and chunk >= 1):
            raise DPUnsupported(f"privacy.max_physical_batch_size must be a positive integer or null, got {chunk!r}")
        return cls(None if eps is None else float(eps), None if sigma is None else float(sigma), float(c),
                   None if delta is None else float(delta), acc, bool(p.get("poisson_sampling", True)), chunk)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


@dataclass(frozen=True)
class DPPlan:
    """What a DP run will do: sampling, steps and the noise that meets the target."""

    n_subjects: int
    n_windows: int
    expected_batch_size: int
    sample_rate: float  # q: probability a subject is in a given step's batch
    steps_per_epoch: int
    planned_steps: int
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    accountant: str
    poisson_sampling: bool
    target_epsilon: float | None
    max_physical_batch_size: int | None


def default_delta(n_subjects: int) -> float:
    """1 / (10 n): well below 1 / n, the level at which releasing one random subject's data
    outright would still be (0, delta)-DP; a name-and-shame mechanism at this delta exposes 0.1
    subjects in expectation."""
    return 1.0 / (10.0 * n_subjects)


def plan_dp(settings: DPSettings, *, n_subjects: int, n_windows: int, batch_size: int, epochs: int,
            max_steps: int = -1) -> DPPlan:
    """Sample rate q = min(batch_size, n) / n, round(1 / q) steps per epoch, and the noise
    multiplier: the recipe's, or the smallest that keeps the accountant's epsilon at or below
    `target_epsilon` after the planned steps (epochs x steps per epoch, or max_steps if fewer)."""
    if n_subjects < 2:
        raise DPUnsupported(f"DP-SGD needs at least 2 training subjects, got {n_subjects}")
    if batch_size < 1 or epochs < 1:
        raise DPUnsupported(f"data.batch_size and optim.epochs must be >= 1, got {batch_size} and {epochs}")
    b = min(batch_size, n_subjects)
    q = b / n_subjects
    if settings.poisson_sampling:
        steps_per_epoch = max(1, round(n_subjects / b))
    else:
        steps_per_epoch = n_subjects // b
    planned = epochs * steps_per_epoch
    if max_steps is not None and max_steps > 0:
        planned = min(planned, max_steps)
    delta = settings.delta if settings.delta is not None else default_delta(n_subjects)
    sigma = settings.noise_multiplier
    if sigma is None:
        _opacus()
        from opacus.accountants.utils import get_noise_multiplier

        sigma = float(get_noise_multiplier(target_epsilon=settings.target_epsilon, target_delta=delta,
                                           sample_rate=q, steps=planned, accountant=settings.accountant,
                                           epsilon_tolerance=0.01))
    return DPPlan(n_subjects, n_windows, b, q, steps_per_epoch, planned, float(sigma), settings.max_grad_norm,
                  delta, settings.accountant, settings.poisson_sampling, settings.target_epsilon,
                  settings.max_physical_batch_size)


def spent_epsilon(accountant, delta: float) -> float:
    """The accountant's epsilon at `delta`; inf with no noise, 0 before any step."""
    if not accountant.history:
        return 0.0
    if any(sigma <= 0 for sigma, _, _ in accountant.history):
        return math.inf
    return float(accountant.get_epsilon(delta=delta))


# ---------------------------------------------------------------------------------------------
# the Lightning module


class DPSSLModule(SSLModule):
    """SSLModule trained with DP-SGD: manual optimisation, per-sample gradients by torch.func,
    Opacus's DPOptimizer around AdamW, and an Opacus accountant stepped by the optimiser."""

    def __init__(self, method: nn.Module, optim: dict, plan: DPPlan, per_sample: PerSampleLoss):
        super().__init__(method, optim)
        self.automatic_optimization = False
        self.plan = plan
        self.per_sample = per_sample
        from opacus.accountants import create_accountant

        self.accountant = create_accountant(plan.accountant)
        self.sampling_key = secrets.randbits(62)

    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            raise DPUnsupported("DP-SGD runs on one device: set trainer.devices=1 and trainer.num_nodes=1")

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        from opacus.optimizers import DPOptimizer

        noise = torch.Generator(device=self.device).manual_seed(secrets.randbits(63))
        dp = DPOptimizer(optimizer, noise_multiplier=self.plan.noise_multiplier,
                         max_grad_norm=self.plan.max_grad_norm, expected_batch_size=self.plan.expected_batch_size,
                         loss_reduction="mean", generator=noise)
        dp.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.plan.sample_rate))
        return dp

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        losses = dp_backward(self.method, batch, opt.optimizer, self.per_sample, step=self.global_step,
                             rank=self.global_rank, max_physical_batch_size=self.plan.max_physical_batch_size)
        if losses.numel() and not torch.isfinite(losses).all():
            raise FloatingPointError(f"loss became non-finite at step {self.global_step}")
        opt.step()
        self.lr_schedulers().step()
        self.update_target_network()
        if losses.numel():
            self.log_epoch_mean("train/loss", losses.mean(), losses.numel(), prog_bar=True)
        self.log("train/steps", float(self.global_step), on_step=False, on_epoch=True, reduce_fx="max")
        self.log("train/epochs", float(self.current_epoch + 1), on_step=False, on_epoch=True, reduce_fx="max")

    def epsilon(self) -> float:
        return spent_epsilon(self.accountant, self.plan.delta)

    def guarantee(self) -> dict:
        """The card's DP-SGD entry (schema in the module docstring)."""
        from importlib import metadata

        steps = sum(n for _, _, n in self.accountant.history)
        eps = self.epsilon()
        notes = ["privacy unit: the subject. Each step samples subjects and one window of each subject drawn, so "
                 "(epsilon, delta) bound what the trained method reveals about all of a subject's records together"]
        if not self.plan.poisson_sampling:
            notes.append("batches were shuffled fixed-size chunks of subjects; the accountant assumes Poisson "
                         "sampling, so epsilon is an approximation without a matching proof")
        if self.plan.noise_multiplier == 0:
            notes.append("no noise (noise_multiplier 0): clipping only, no privacy guarantee")
        p = asdict(self.plan)
        return {
            "kind": "dp_sgd", "privacy_unit": "subject", "epsilon": eps if math.isfinite(eps) else None,
            "delta": p["delta"], "accountant": p["accountant"], "noise_multiplier": p["noise_multiplier"],
            "max_grad_norm": p["max_grad_norm"], "sample_rate": p["sample_rate"],
            "expected_batch_size": p["expected_batch_size"], "steps": int(steps),
            "epochs": steps / p["steps_per_epoch"], "n_subjects": p["n_subjects"], "n_windows": p["n_windows"],
            "sampling": "poisson" if p["poisson_sampling"] else "shuffle", "target_epsilon": p["target_epsilon"],
            "opacus": metadata.version("opacus"), "notes": notes,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["medssl_dp"] = {"accountant": dict(self.accountant.state_dict()), "sampling_key": self.sampling_key}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("medssl_dp")
        if saved is None:
            raise DPUnsupported("this Lightning checkpoint was not trained with DP-SGD; resume it without "
                                "privacy.dp, or train the DP run in a fresh folder")
        self.accountant.load_state_dict(saved["accountant"])
        self.sampling_key = int(saved["sampling_key"])


# ---------------------------------------------------------------------------------------------
# entry point from medssl.engine.pretrain


DP_PRECISIONS = ("auto", "32", "32-true", "64", "64-true")


class DPTraining:
    """DP-SGD for one `pretrain` run: checks the recipe and method up front (`check`), then
    builds the Lightning module and data once the training rows are known (`lightning_parts`)."""

    def __init__(self, cfg: dict, method: nn.Module, settings: DPSettings):
        self.cfg, self.method, self.settings = cfg, method, settings
        self.per_sample = per_sample_loss_of(method, cfg.get("method"))
        t = cfg.get("trainer") or {}
        devices, nodes = t.get("devices", 1), t.get("num_nodes", 1)
        if nodes != 1 or (devices not in (1, "1", "auto") and not (isinstance(devices, list) and len(devices) == 1)):
            raise DPUnsupported(f"DP-SGD runs on one device (DDP would add noise on every rank): got "
                                f"trainer.devices={devices!r}, trainer.num_nodes={nodes!r}; set both to 1")
        if str(t.get("precision", "auto")) not in DP_PRECISIONS:
            raise DPUnsupported(f"DP-SGD runs in fp32 (per-sample gradients, clipping and noise): "
                                f"trainer.precision={t.get('precision')!r} is refused; use 32-true (what auto "
                                "resolves to for DP-SGD runs)")
        if t.get("compile"):
            log.warning("DP-SGD: trainer.compile ignored (per-sample gradients run eagerly under torch.func.vmap)")
        if (cfg.get("optim") or {}).get("grad_clip") is not None:
            log.warning("DP-SGD: optim.grad_clip ignored; every per-sample gradient is clipped to "
                        "privacy.max_grad_norm=%g", settings.max_grad_norm)
        self.plan: DPPlan | None = None

    def lightning_parts(self, arrays: np.ndarray, rows: Sequence[dict]) -> tuple[DPSSLModule, DPPretrainData]:
        cfg = self.cfg
        self.plan = plan_dp(self.settings, n_subjects=len({str(r["subject_id"]) for r in rows}), n_windows=len(rows),
                            batch_size=cfg["data"]["batch_size"], epochs=cfg["optim"]["epochs"],
                            max_steps=(cfg.get("trainer") or {}).get("max_steps", -1))
        log.info("DP-SGD: %d subjects, sample rate %.4g, %d steps planned, noise multiplier %.4g, delta %.3g",
                 self.plan.n_subjects, self.plan.sample_rate, self.plan.planned_steps, self.plan.noise_multiplier,
                 self.plan.delta)
        module = DPSSLModule(self.method, cfg["optim"], self.plan, self.per_sample)
        data = DPPretrainData(arrays, rows, self.plan, cfg["data"].get("num_workers", 0))
        return module, data


def dp_training(cfg: dict, method: nn.Module) -> DPTraining | None:
    """None when the recipe does not ask for DP-SGD; else its checked DPTraining (raises
    DPUnsupported for a method or setting DP-SGD cannot serve, ImportError without Opacus)."""
    settings = DPSettings.from_recipe(cfg)
    if settings is None:
        return None
    _opacus()
    return DPTraining(cfg, method, settings)
