"""Fine-tune a FOMO25 task model (encoder + task head) on a task folder's sessions.

`finetune_task(rows, task, encoder_ref, out_dir, settings)`:

1. the encoder: `random:NAME[:SEED]` is built with the task's sequences as its channels; a
   pretrained checkpoint folder is loaded and its first layer adapted to the task's sequences with
   `adapt_input_channels`, explicitly (a single-channel kernel W spread as W / C over the C
   sequences, so the pretrained features are kept at the start; named channels picked by name).
   The adaptation is written to the card's `input_adaptation` and logged. The official baseline
   instead drops the pretrained first convolution when the channel counts differ;
2. inputs: the MRI cache (`medssl.mri.modality.mri_array_cache`) through `MriPreprocess` at the
   encoder's spacing and `settings.shape`; every item goes through `preprocess_row`, the very
   function `medssl fomo predict` calls, so training and inference resample identically. Task 2
   masks come through `mri_mask_cache` on the same model grid;
3. the head (`medssl.mri.task_model`): tasks 1 and 3 a linear layer (or MLP) on the pooled
   embedding of the whole preprocessed volume; task 2 a U-Net decoder with skip connections over
   the encoder's feature maps, trained on random patches of `patch_size` (a third centred on a
   lesion voxel, nnU-Net's foreground oversampling) and applied by sliding windows;
4. losses: task 1 binary cross-entropy on the logit; task 3 mean squared error on the age
   standardised with the training set's mean and standard deviation (stored in the card, undone
   at prediction); task 2 Dice + cross-entropy (MONAI `DiceCELoss`, softmax over two classes);
5. AdamW (weight decay 0.01), linear warm-up then cosine decay per step, the encoder at
   `encoder_lr_scale` x the head's learning rate (0 freezes it); random left-right mirroring
   (p = 0.5; RAS volumes, so it is the first spatial axis) as the only augmentation;
6. a task checkpoint folder (`medssl.mri.task_model.save_task_checkpoint`): safetensors + card.

Choices left open by the challenge and made here (defaults in `FinetuneSettings`): the whole brain
at 1 mm (160 x 192 x 160 voxels, the pretraining recipes' cached volume) for tasks 1 and 3;
task 2 patches of the encoder's pretraining patch size; AdamW at 1e-4 (AMAES's pretraining rate)
for 50 epochs, batch size 2. `val_rows` (e.g. another site) are scored once at the end with the
task's metric (AUROC; Dice; MAE and Pearson r) and the result is written to the card.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.engine.hardware import autocast_context, default_precision
from medssl.mri.encoders import adapt_input_channels, channel_names
from medssl.mri.fomo_task import FomoTask, parse_task
from medssl.mri.preprocess import MriPreprocess
from medssl.mri.task_model import (
    POOLED_HEADS,
    build_task_model,
    predict_array,
    pyramid_widths,
    resolve_device,
    save_task_checkpoint,
)
from medssl.nn.param_groups import param_groups

log = logging.getLogger(__name__)

WHOLE_BRAIN_SHAPE = (160, 192, 160)


@dataclass(frozen=True)
class FinetuneSettings:
    """shape: the preprocessed volume (D, H, W) at the encoder's spacing (default: the whole
    brain, 160 x 192 x 160 at 1 mm); patch_size: task 2 training patch and sliding window
    (default: the encoder's `spec.input["shape"]`); epochs: passes over the training sessions
    (task 2: one patch per session per pass)."""

    epochs: int = 50
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 0
    encoder_lr_scale: float = 1.0
    head: str = "linear"
    hidden: int | None = None
    dropout: float = 0.0
    shape: tuple[int, int, int] | None = None
    patch_size: tuple[int, int, int] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 2
    foreground_fraction: float = 1 / 3
    mirror: bool = True
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    encoder_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or self.encoder_lr_scale < 0:
            raise ValueError(f"lr must be > 0 and encoder_lr_scale >= 0, got {self.lr} and {self.encoder_lr_scale}")
        if self.head not in POOLED_HEADS:
            raise ValueError(f"head must be one of {', '.join(POOLED_HEADS)}, got {self.head!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        for name in ("shape", "patch_size"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in ([value] * 3 if isinstance(value, int) else value))
                if len(value) != 3 or min(value) < 1:
                    raise ValueError(f"{name} must be three positive sizes [D, H, W], got {list(value)}")
                object.__setattr__(self, name, value)


def task_targets(rows: Sequence[Mapping], task: FomoTask) -> tuple[list[dict], list[tuple[str, str]]]:
    """(rows of `task` with a target, skipped (record_id, reason)): task 1 needs `infarct` 0/1,
    task 2 a `mask_path`, task 3 a numeric `age`."""
    keep, skipped = [], []
    for r in rows:
        rid = r.get("record_id", "?")
        if str(r.get("task", "")) != str(task.number):
            skipped.append((rid, f"not a task {task.number} record (task {r.get('task') or 'unknown'})"))
        elif task.number == 1 and str(r.get("infarct", "")) not in ("0", "1"):
            skipped.append((rid, "no infarct label (0/1)"))
        elif task.number == 2 and not r.get("mask_path"):
            skipped.append((rid, "no mask_path"))
        elif task.number == 3 and not _is_number(r.get("age")):
            skipped.append((rid, "no age"))
        else:
            keep.append(dict(r))
    return keep, skipped


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def task_encoder(ref: str, task: FomoTask, overrides: Mapping[str, Any] | None = None) -> tuple[nn.Module, str | None]:
    """(encoder reading the task's sequences, how its input layer was adapted or None).

    ref: `random:NAME[:SEED]` or a registry name (built with `channels` = the task's inputs, plus `overrides`) or an
    encoder checkpoint folder (or a file an importer claims), whose first layer is adapted."""
    from medssl.checkpoint import parse_random_ref, resolve_encoder_ref

    channels = channel_names(list(task.inputs))
    overrides = dict(overrides or {})
    untrained = parse_random_ref(str(ref)) is not None or not Path(str(ref)).expanduser().exists()
    if untrained:  # random:NAME[:SEED] or a registry name: built with the task's sequences as channels
        if "channels" in overrides and channel_names(overrides["channels"]) != channels:
            raise ValueError(f"task {task.number} reads {channels}; drop the channels override")
        overrides["channels"] = channels
    elif overrides:
        raise ValueError(f"{ref}: encoder overrides apply to random:NAME refs, not to pretrained checkpoints")
    encoder, _ = resolve_encoder_ref(ref, overrides)
    if encoder.spec.modality != "mri":
        raise ValueError(f"{ref}: a {encoder.spec.modality} encoder; FOMO tasks need an MRI encoder")
    if untrained:
        return encoder, None
    before = encoder.spec.input["channels"]
    adapt_input_channels(encoder, channels)
    if encoder.spec.input["channels"] == before:
        return encoder, None
    return encoder, encoder.spec.provenance.rsplit("; ", 1)[-1]


def _multiple(shape: Sequence[int], k: int, what: str) -> None:
    if any(int(s) % k for s in shape):
        raise ValueError(f"{what} {list(shape)} must be a multiple of {k} in every axis for this encoder")


def _lesion_patch_starts(mask: np.ndarray, patch: Sequence[int], fg: bool, rng: np.random.Generator) -> tuple:
    shape = mask.shape[-3:]
    if fg:
        where = np.argwhere(mask.reshape(shape) > 0.5)
        if len(where):
            centre = where[rng.integers(len(where))]
            return tuple(int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, shape))
    return tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch))


def _crop(a: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    (s0, s1, s2), (p0, p1, p2) = start, patch
    return np.asarray(a[..., s0:s0 + p0, s1:s1 + p1, s2:s2 + p2])


class _Batches:
    """Per-epoch batches (x, y) as tensors: whole volumes (tasks 1/3) or patches (task 2)."""

    def __init__(self, images, targets, task: FomoTask, settings: FinetuneSettings, patch: Sequence[int] | None):
        self.images, self.targets, self.task, self.s, self.patch = images, targets, task, settings, patch
        self.rng = np.random.default_rng(settings.seed)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.s.batch_size)

    def __iter__(self):
        order = self.rng.permutation(len(self.images))
        for b in range(len(self)):
            idx = np.sort(order[b * self.s.batch_size:(b + 1) * self.s.batch_size])
            if self.task.kind == "segmentation":
                xs, ys = [], []
                for i in idx:
                    start = _lesion_patch_starts(self.targets[i], self.patch,
                                                 self.rng.random() < self.s.foreground_fraction, self.rng)
                    xs.append(_crop(self.images[i], start, self.patch))
                    ys.append(_crop(self.targets[i], start, self.patch))
                x, y = np.stack(xs), np.stack(ys)
            else:
                x, y = np.array(self.images[idx], dtype=np.float32), self.targets[idx]
            if self.s.mirror:
                flip = self.rng.random(len(idx)) < 0.5
                x[flip] = x[flip, :, ::-1]
                if self.task.kind == "segmentation":
                    y[flip] = y[flip, :, ::-1]
            yield torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(
                np.ascontiguousarray(y, dtype=np.float32))


def _loss_fn(task: FomoTask) -> Callable:
    if task.kind == "segmentation":
        from monai.losses import DiceCELoss

        return DiceCELoss(to_onehot_y=True, softmax=True)
    if task.kind == "classification":
        return nn.BCEWithLogitsLoss()
    return nn.MSELoss()


def _param_groups(model: nn.Module, lr: float, encoder_scale: float, weight_decay: float) -> list[dict]:
    """[the rest (decoder, head) at lr, the encoder at lr * encoder_scale], each with its base_lr and
    weight decay on every parameter; frozen parameters left out, a group left out when empty."""
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return param_groups([rest, list(model.encoder.parameters())], weight_decay, lr=lr,
                        lr_scales=[1.0, encoder_scale], base_lr=True)


def train_task_model(model: nn.Module, batches: _Batches, task: FomoTask, settings: FinetuneSettings,
                     device: torch.device, progress: Callable[[str], None] | None = None) -> list[float]:
    """Train in place; returns the mean loss of each epoch. Precision: the device's default
    (:func:`medssl.engine.hardware.default_precision`, fp32 on a CPU), recorded in the card."""
    from medssl.nn.schedules import cosine_schedule

    precision = default_precision(device.type)

    if settings.encoder_lr_scale == 0:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(_param_groups(model, settings.lr, settings.encoder_lr_scale, settings.weight_decay))
    loss_fn = _loss_fn(task)
    total = settings.epochs * len(batches)
    warmup = settings.warmup_epochs * len(batches)
    model.to(device).train()
    history, step = [], 0
    for epoch in range(settings.epochs):
        losses = []
        for x, y in batches:
            for g in opt.param_groups:
                g["lr"] = cosine_schedule(step, total, g["base_lr"], warmup)
            x, y = x.to(device), y.to(device)
            with autocast_context(device.type, precision):
                out = model(x)
            loss = loss_fn(out.float(), y)
            if not torch.isfinite(loss):
                raise ValueError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        history.append(float(np.mean(losses)))
        if progress:
            progress(f"epoch {epoch + 1}/{settings.epochs}: loss {history[-1]:.4f}")
    return history


def evaluate(model: nn.Module, card: Mapping[str, Any], images, targets: np.ndarray, task: FomoTask,
             device: torch.device) -> dict[str, float]:
    """The task's metrics on preprocessed items: AUROC (task 1), mean Dice (task 2, model grid),
    MAE in years and Pearson r (task 3)."""
    preds = [predict_array(model, card, np.asarray(images[i]), device) for i in range(len(images))]
    if task.kind == "segmentation":
        from medssl.bench.segmentation_metrics import dice

        return {"dice": float(np.mean([dice(p >= 0.5, t[0] > 0.5) for p, t in zip(preds, targets)]))}
    p = np.asarray(preds, dtype=np.float64)
    if task.kind == "classification":
        from sklearn.metrics import roc_auc_score

        auroc = roc_auc_score(targets, p) if len(np.unique(targets)) == 2 else float("nan")
        return {"auroc": float(auroc)}
    r = float(np.corrcoef(p, targets)[0, 1]) if len(p) > 1 and np.std(p) > 0 else float("nan")
    return {"mae_years": float(np.mean(np.abs(p - targets))), "pearson_r": r}


def _arrays(rows, task: FomoTask, preprocess: MriPreprocess, cache_root, workers):
    """(inputs ArrayCache, targets aligned with its rows)."""
    from medssl.mri.modality import mri_array_cache, mri_mask_cache

    cache = mri_array_cache(rows, preprocess, cache_root, workers=workers)
    if task.kind == "segmentation":
        masks = mri_mask_cache(cache.rows, preprocess, cache_root, workers=workers)
        return cache, masks.signals
    column = "infarct" if task.number == 1 else "age"
    return cache, np.array([float(r[column]) for r in cache.rows], dtype=np.float32)


def finetune_task(rows: Sequence[Mapping], task, encoder_ref: str, out_dir: str | Path,
                  settings: FinetuneSettings | None = None, *, val_rows: Sequence[Mapping] | None = None,
                  cache_root: str | Path | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Fine-tune on the task's `rows` (fomo-task manifest rows); writes and returns the task
    checkpoint folder `out_dir`. Rows without a target or whose files cannot be read are skipped
    (their count is in the card); ValueError when fewer than 2 sessions remain (task 1: when
    only one class remains)."""
    from medssl.data.manifest import manifest_fingerprint

    t0 = time.perf_counter()
    settings = settings or FinetuneSettings()
    task = parse_task(task)
    say = progress or (lambda msg: None)
    rows, skipped = task_targets(rows, task)
    if len(rows) < 2:
        raise ValueError(f"task {task.number}: {len(rows)} usable session(s) with a target; need at least 2"
                         + (f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    if task.number == 1 and len({r["infarct"] for r in rows}) < 2:
        raise ValueError(f"task 1: every usable training session has infarct={rows[0]['infarct']}; both classes "
                         f"are needed")
    torch.manual_seed(settings.seed)
    encoder, adaptation = task_encoder(encoder_ref, task, settings.encoder_overrides)
    spec_input = encoder.spec.input
    shape = settings.shape or WHOLE_BRAIN_SHAPE
    patch = settings.patch_size or tuple(spec_input["shape"])
    k = int(spec_input.get("divisible_by", 1))
    _multiple(shape, k, "shape")
    if task.kind == "segmentation":
        _multiple(patch, k, "patch_size")
        if any(p > s for p, s in zip(patch, shape)):
            raise ValueError(f"patch_size {list(patch)} is larger than the volume shape {list(shape)}")
    preprocess = MriPreprocess.for_encoder(spec_input, shape=shape)

    say(f"preprocessing {len(rows)} session(s) of task {task.number} ({task.name}) at {list(shape)}")
    cache, targets = _arrays(rows, task, preprocess, cache_root, settings.workers)
    if task.kind == "classification" and len(np.unique(targets)) < 2:
        raise ValueError(f"task 1: every readable training session has infarct={int(targets[0])}; both classes "
                         f"are needed")
    target: dict[str, Any] = {"type": {"classification": "probability", "segmentation": "mask",
                                       "regression": "age_years"}[task.kind]}
    y = targets
    if task.kind == "regression":
        std = float(np.std(targets)) or 1.0
        target.update(mean=float(np.mean(targets)), std=std)
        y = (targets - target["mean"]) / std
    elif task.kind == "segmentation":
        target["threshold"] = 0.5
    if task.kind == "segmentation":
        head = {"type": "unet_decoder", "widths": pyramid_widths(encoder, list(patch)), "out_channels": 2,
                "convs_per_stage": 2}
    else:
        head = {"type": "pooled", "head": settings.head, "hidden": settings.hidden, "dropout": settings.dropout}
    model = build_task_model(encoder, head)
    device = resolve_device(settings.device)
    say(f"training on {len(cache.rows)} session(s), {device.type}")
    batches = _Batches(cache.signals, y, task, settings, patch)
    history = train_task_model(model, batches, task, settings, device, say)

    card: dict[str, Any] = {
        "task": {"number": task.number, "name": task.name, "kind": task.kind},
        "sequences": list(task.inputs),
        "encoder": encoder.spec.to_dict(),
        "encoder_source": str(encoder_ref),
        "input_adaptation": adaptation,
        "head": head,
        "preprocess": preprocess.to_dict(),
        "target": target,
    }
    if task.kind == "segmentation":
        card["inference"] = {"patch_size": list(patch), "overlap": settings.overlap, "mode": "gaussian",
                             "sw_batch_size": settings.sw_batch_size}
    training = {**{k: v for k, v in asdict(settings).items() if k not in ("device", "workers")},
                "shape": list(shape), "patch_size": list(patch) if task.kind == "segmentation" else None,
                "device": device.type, "precision": default_precision(device.type), "n_sessions": len(cache.rows),
                "n_subjects": len({r["subject_id"] for r in cache.rows}),
                "n_skipped": len(skipped) + len(cache.skipped), "loss_per_epoch": history, "final_loss": history[-1]}
    if val_rows:
        vrows, vskipped = task_targets(val_rows, task)
        if vrows:
            vcache, vtargets = _arrays(vrows, task, preprocess, cache_root, settings.workers)
            training["validation"] = {"n_sessions": len(vcache.rows), "n_skipped": len(vskipped) + len(vcache.skipped),
                                      **evaluate(model, card, vcache.signals, vtargets, task, device)}
            say(f"validation: {training['validation']}")
    training["seconds"] = round(time.perf_counter() - t0, 1)
    card["training"] = training
    # geometry_path names the local cache: left out so the fingerprint identifies the data alone
    card["data"] = {"manifest_sha256": manifest_fingerprint([{k: v for k, v in r.items() if k != "geometry_path"}
                                                             for r in cache.rows])}
    if adaptation:
        log.warning("task %d: %s", task.number, adaptation)
    return save_task_checkpoint(model.cpu(), out_dir, card)
