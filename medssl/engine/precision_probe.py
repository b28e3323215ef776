"""Training precision on a CPU, chosen by timing the run's own step in fp32 and in bf16 autocast.

Whether bf16 pays on a CPU depends on the model, the machine and its kernels, not on its
instruction-set flags (benchmarks/RESULTS.md, "Precision"): on this project's AVX-512-BF16 VM the
ECG-JEPA step is 2.0-2.2x faster in bf16 at 384 wide and at the demo's 128 wide; on another server
with the same flags bf16 was slower (0.59x). So ``trainer.precision: auto`` on a CPU times a few
forward + backward passes of a copy of the method on a batch of the run's data, both precisions
interleaved, and trains in bf16 mixed precision only when it is at least ``MIN_SPEEDUP`` times
faster. The timings are recorded with the choice (``trainer.precision_probe`` in config.yaml and the
checkpoint card). The probe leaves the method and the global RNG state as they were. Its cost is
2 x (warmup + steps) = 8 forward + backward passes at the defaults: seconds for the recipes' CPU
variants, minutes for a ViT-B at batch 128 on a CPU (set ``trainer.precision`` to skip it).

Inference (embeddings, benchmarks, audits) keeps fp32 on a CPU whatever training chose: embeddings
of one checkpoint must not change from machine to machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from medssl.engine.hardware import autocast_context

# bf16 must win by this factor: a smaller gain is within run-to-run noise and not worth the rounding.
MIN_SPEEDUP = 1.15


def probe_cpu_precision(
    method: nn.Module,
    batch: Tensor,
    *,
    warmup: int = 1,
    steps: int = 3,
    min_speedup: float = MIN_SPEEDUP,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time ``method(batch, step=i, rank=0)`` + backward in fp32 and in bf16 autocast on a copy of the method.

    method: an SSL method whose forward returns the scalar loss (as `medssl.engine.module.SSLModule`
    calls it); batch: one training batch. The two precisions alternate step by step, so a change in
    the machine's load hits both alike; each figure is the median of `steps` after `warmup`.

    Returns {"chosen": "bf16-mixed" | "32-true", "fp32_ms_per_step", "bf16_ms_per_step",
    "bf16_speedup", "min_speedup", "batch_size", "steps"}.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    probe = copy.deepcopy(method).train()
    times: dict[str, list[float]] = {"32": [], "bf16": []}
    with torch.random.fork_rng(devices=[]):
        for i in range(warmup + steps):
            for precision, kept in times.items():
                start = clock()
                with autocast_context("cpu", precision):
                    loss = probe(batch, step=i, rank=0)
                loss.backward()
                probe.zero_grad(set_to_none=True)
                elapsed = clock() - start
                if i >= warmup:
                    kept.append(elapsed)
    fp32, bf16 = (sorted(t)[len(t) // 2] for t in (times["32"], times["bf16"]))
    speedup = fp32 / bf16 if bf16 > 0 else float("inf")
    return {
        "chosen": "bf16-mixed" if speedup >= min_speedup else "32-true",
        "fp32_ms_per_step": round(1000 * fp32, 2),
        "bf16_ms_per_step": round(1000 * bf16, 2),
        "bf16_speedup": round(speedup, 3),
        "min_speedup": min_speedup,
        "batch_size": int(batch.shape[0]),
        "steps": steps,
    }
