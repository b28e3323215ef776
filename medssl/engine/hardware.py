"""Which precision medssl computes in, chosen on evidence and recorded in every output.

Defaults, measured rather than inferred from hardware flags (benchmarks/RESULTS.md, "Precision"):

- CPU training (``trainer.precision: auto``): timed, not assumed. On AVX-512-BF16 CPUs bf16
  autocast was slower than fp32 for the ECG-JEPA step on one server (0.59x) and 2.0-2.2x faster on
  this VM (at 384 and at the demo's 128 wide, once bf16 attention stopped using torch's slow CPU
  flash kernel); so a one-process CPU run times its own step in both
  precisions and trains in bf16 only where that pays (`medssl.engine.precision_probe`). Where it
  cannot be timed (several processes, streamed data) it is fp32.
- CPU inference: fp32, because bf16 changed a checkpoint's embeddings from one machine to the next;
  ``--precision bf16`` opts in.
- CUDA: bf16 mixed precision where the card supports bf16, else fp32.

``MEDSSL_PRECISION=32|bf16`` in the environment replaces the default (never an explicit setting):
the test suite uses it to run its precision-sensitive tests with bf16 on any CPU.

Two vocabularies, one per use:

- training (Lightning's ``precision``): ``"32-true"``, ``"bf16-mixed"``, ... or ``"auto"``;
- inference (``medssl embed / bench / audit / fomo predict --precision``): ``"32"`` or ``"bf16"``.
"""

from __future__ import annotations

import contextlib
import os

import torch

ENV_VAR = "MEDSSL_PRECISION"
INFERENCE_PRECISIONS = ("32", "bf16")
_ALIASES = {"32": "32", "fp32": "32", "32-true": "32", "float32": "32",
            "bf16": "bf16", "bf16-mixed": "bf16", "bfloat16": "bf16"}


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def _device_kind(device: str) -> str:
    """"gpu" for CUDA devices and accelerators, "cpu" otherwise."""
    return "gpu" if device in ("gpu", "cuda") or str(device).startswith("cuda") else "cpu"


def cuda_bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def normalise_inference_precision(precision: str) -> str:
    """"32" or "bf16" from any accepted spelling; ValueError naming the value otherwise."""
    key = str(precision).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(INFERENCE_PRECISIONS)}")
    return _ALIASES[key]


def default_precision(device: str) -> str:
    """The inference precision medssl uses on ``device`` ("cpu", "cuda", "cuda:1", "gpu") when none
    is given: ``$MEDSSL_PRECISION`` if set, else bf16 on a bf16-capable CUDA card, else fp32."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        try:
            return normalise_inference_precision(env)
        except ValueError:
            raise ValueError(f"${ENV_VAR}={env!r}: expected one of {', '.join(INFERENCE_PRECISIONS)}") from None
    return "bf16" if _device_kind(device) == "gpu" and cuda_bf16_supported() else "32"


def resolve_inference_precision(precision: str | None, device: str) -> str:
    """An explicit precision normalised ("32" | "bf16"), or the default for ``device``."""
    if precision is None or str(precision).lower() == "auto":
        return default_precision(device)
    return normalise_inference_precision(precision)


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for training without a timing probe: ``"auto"`` -> "bf16-mixed" or
    "32-true" by the device's default; anything else passes through unchanged. (Pretraining on one
    CPU process times both instead: `medssl.engine.pretrain.with_resolved_precision`.)"""
    if precision != "auto":
        return precision
    return "bf16-mixed" if default_precision(resolve_accelerator(accelerator)) == "bf16" else "32-true"


def autocast_context(device_type: str, precision: str = "32"):
    """bf16 autocast when ``precision`` is "bf16", a no-op context for "32"."""
    if normalise_inference_precision(precision) == "32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
