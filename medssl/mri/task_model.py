"""FOMO25 task models (an MRI encoder + a task head), their checkpoint folders, and inference.

Heads (Munk et al., FOMO25; the official baseline fine-tunes AMAES's U-Net the same way):
- tasks 1 (infarct) and 3 (brain age): `PooledTaskModel`, the encoder's pooled embedding
  (B, D) -> a linear layer (or a one-hidden-layer MLP) -> (B,) one logit (task 1) or one
  standardised age (task 3);
- task 2 (meningioma): `SegmentationTaskModel`, the encoder's `feature_maps` (fine to coarse,
  halving in size) -> `UNetDecoder3d` with skip connections, two conv blocks per stage ->
  (B, 2, *S) background/lesion logits.

A task checkpoint folder holds `model.safetensors` (encoder weights under `encoder.`, head weights
under `head.` or `decoder.`; never a pickle) and `card.json`:

    {"schema_version": 1, "kind": "fomo-task-model", "created": ISO-8601,
     "task": {"number", "name", "kind"}, "sequences": [channel names, in input order],
     "encoder": EncoderSpec dict (as adapted: `create_encoder(name, **hparams)` rebuilds it),
     "encoder_source": "random:NAME:SEED" or the pretrained checkpoint it started from,
     "input_adaptation": how the first layer was adapted to the sequences, or null,
     "head": {"type": "pooled", "head": "linear" | "mlp", "hidden", "dropout"}
           | {"type": "unet_decoder", "widths", "out_channels": 2, "convs_per_stage": 2},
     "preprocess": MriPreprocess.to_dict() (channels, shape, spacing_mm, crop_foreground, version),
     "target": {"type": "probability"} | {"type": "age_years", "mean", "std"}
             | {"type": "mask", "threshold"},
     "inference": {"patch_size", "overlap", "mode", "sw_batch_size"} (task 2 only),
     "training": {...settings, counts, final loss, validation metrics}, "versions": {...},
     "data": {"manifest_sha256"}}

Inference (`predict_array`): tasks 1/3 run the whole preprocessed volume through the model
(the encoders are fully convolutional or size-agnostic); task 2 uses MONAI's
`sliding_window_inference` over windows of the training patch size with overlap (Gaussian
weighting), so a volume of any size is segmented with the receptive field the model learnt.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medssl.checkpoint import (
    CARD_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    package_versions,
    read_json_card,
    read_safetensors,
)
from medssl.io import make_temp_dir, replace_folder, save_safetensors
from medssl.mri.unet_decoder import UNetDecoder3d
from medssl.registry import EncoderSpec, encoder_entry

TASK_CARD_KIND = "fomo-task-model"
TASK_CARD_SCHEMA = 1
POOLED_HEADS = ("linear", "mlp")


class PooledTaskModel(nn.Module):
    """(B, C, D, H, W) -> (B,): encoder's pooled embedding -> linear layer or MLP -> one value."""

    def __init__(self, encoder: nn.Module, head: str = "linear", hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        if head not in POOLED_HEADS:
            raise ValueError(f"head must be one of {', '.join(POOLED_HEADS)}, got {head!r}")
        self.encoder = encoder
        dim = int(encoder.spec.embed_dim)
        if head == "linear":
            self.head = nn.Linear(dim, 1)
        else:
            hidden = int(hidden or dim)
            self.head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)).squeeze(1)


class SegmentationTaskModel(nn.Module):
    """(B, C, *S) -> (B, out_channels, *S) logits: encoder feature maps -> U-Net decoder with skips."""

    def __init__(self, encoder: nn.Module, widths: list[int], out_channels: int = 2, convs_per_stage: int = 2):
        super().__init__()
        self.encoder = encoder
        self.decoder = UNetDecoder3d(widths, out_channels, skips=True, convs_per_stage=convs_per_stage)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder.feature_maps(x))


def pyramid_widths(encoder: nn.Module, patch_size: list[int]) -> list[int]:
    """Channel widths of `encoder.feature_maps` on a zero patch; raises ValueError unless the maps
    halve in size stage by stage (a U-Net encoder), which the U-Net decoder needs."""
    if not hasattr(encoder, "feature_maps"):
        raise ValueError(f"{encoder.spec.name}: has no feature_maps; task 2 needs a U-Net encoder")
    channels = encoder.spec.input["input_shape"][0]
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        maps = encoder.feature_maps(torch.zeros(1, channels, *patch_size))
    encoder.train(was_training)
    sizes = [tuple(m.shape[2:]) for m in maps]
    halving = len(maps) >= 2 and all(tuple(2 * s for s in b) == a for a, b in pairwise(sizes))
    if not halving or sizes[0] != tuple(patch_size):
        raise ValueError(f"{encoder.spec.name}: feature maps of sizes {sizes} on a {list(patch_size)} patch; the "
                         f"task 2 U-Net decoder needs maps from full size halving stage by stage (a U-Net encoder "
                         f"such as mri_unet_tiny / mri_unet_base, not a ViT)")
    return [int(m.shape[1]) for m in maps]


def build_task_model(encoder: nn.Module, head: Mapping[str, Any]) -> nn.Module:
    """The task model of a card's `head` section around `encoder`."""
    kind = head.get("type")
    if kind == "pooled":
        return PooledTaskModel(encoder, head.get("head", "linear"), head.get("hidden"), float(head.get("dropout", 0.0)))
    if kind == "unet_decoder":
        return SegmentationTaskModel(encoder, [int(w) for w in head["widths"]], int(head.get("out_channels", 2)),
                                     int(head.get("convs_per_stage", 2)))
    raise ValueError(f"unknown task head type {kind!r}")


def save_task_checkpoint(model: nn.Module, folder: str | Path, card: Mapping[str, Any]) -> Path:
    """Write `folder/model.safetensors` + `folder/card.json` (card completed with kind, schema,
    time, versions), replacing the folder atomically (temporary folder + rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    card = {"schema_version": TASK_CARD_SCHEMA, "kind": TASK_CARD_KIND,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **card,
            "versions": package_versions()}
    tmp = make_temp_dir(folder)
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_safetensors(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "kind": TASK_CARD_KIND,
                                                              "task": str(card["task"]["number"])})
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_task_card(folder: str | Path) -> dict[str, Any]:
    """The card of a task checkpoint folder; CheckpointError naming the folder if it is not one."""
    folder = Path(folder)
    path = folder / CARD_FILE
    card = read_json_card(folder, what="task checkpoint", card="task checkpoint card",
                          missing="card missing; not a task checkpoint (made by `medssl fomo finetune`)")
    if card.get("kind") != TASK_CARD_KIND:
        kind = card.get("kind")
        raise CheckpointError(f"{folder}: not a FOMO task checkpoint (card kind {kind!r}); an encoder checkpoint "
                              f"is fine-tuned first with `medssl fomo finetune`")
    for key in ("task", "encoder", "head", "preprocess", "target"):
        if key not in card:
            raise CheckpointError(f"{path}: card lacks {key!r}")
    return card


def load_task_checkpoint(folder: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(task model in eval mode, card). Every weight must match the architecture the card
    describes: a missing or unexpected key is an error."""
    folder = Path(folder)
    card = read_task_card(folder)
    spec = EncoderSpec.from_dict(card["encoder"])
    encoder = encoder_entry(spec.name).factory(**spec.hparams)
    encoder.spec = spec
    model = build_task_model(encoder, card["head"])
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    state = read_safetensors(weights, device=map_location)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the card's model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True)
    return model.eval(), card


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def output_value(raw: float, target: Mapping[str, Any]) -> float:
    """A pooled model's raw output -> the task's value: probability (sigmoid) or age in years."""
    if target["type"] == "probability":
        return float(1.0 / (1.0 + np.exp(-raw)))
    if target["type"] == "age_years":
        return float(raw * float(target["std"]) + float(target["mean"]))
    raise ValueError(f"target type {target['type']!r} has no scalar output")


@torch.no_grad()
def predict_array(model: nn.Module, card: Mapping[str, Any], x: np.ndarray, device: torch.device | str = "cpu",
                  precision: str | None = None) -> float | np.ndarray:
    """One preprocessed input (C, D, H, W) -> the task's value (float: probability or age in
    years) or, for task 2, the lesion probability (D, H, W) float32 on the model grid.
    ``precision`` "32" | "bf16"; None: the device's default (fp32 on a CPU)."""
    from medssl.engine.hardware import autocast_context, resolve_inference_precision

    device = torch.device(device)
    precision = resolve_inference_precision(precision, device.type)
    model = model.to(device).eval()
    t = torch.from_numpy(np.array(x, dtype=np.float32))[None].to(device)  # a copy: x is often a read-only memmap
    with autocast_context(device.type, precision):
        if card["head"]["type"] == "pooled":
            return output_value(float(model(t).float()[0]), card["target"])
        from monai.inferers import sliding_window_inference

        inf = card["inference"]
        logits = sliding_window_inference(t, roi_size=tuple(inf["patch_size"]), sw_batch_size=int(inf["sw_batch_size"]),
                                          predictor=model, overlap=float(inf["overlap"]), mode=inf["mode"])
    return torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy().astype(np.float32)
