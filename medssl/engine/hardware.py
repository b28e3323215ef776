"""What the machine can do: bf16 support and the precision setting Lightning should use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX). Without them, bf16
    autocast on CPU emulates and runs slower than fp32, so medssl stays in fp32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def bf16_available(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """`auto` -> "bf16-mixed" where bf16 is native, else "32-true"; anything else passes through."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if bf16_available(resolve_accelerator(accelerator)) else "32-true"


def autocast_context(device_type: str):
    """bf16 autocast where native, a no-op context otherwise."""
    enabled = bf16_available("gpu" if device_type == "cuda" else "cpu")
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)
