"""GPU pretraining throughput of every ECG recipe's `gpu` variant (bf16 autocast, SDPA).

For each recipe: build the method exactly as `medssl pretrain RECIPE variant=gpu` does, feed
random batches shaped by the encoder's input contract, and time optimiser steps (forward under
bf16 autocast, backward, AdamW, EMA update where the method has one). For ECG-JEPA at the paper's
size it also times the naive baseline of `bench_ecg_jepa.py` (fp32, masked_fill attention, mask
rebuilt each call), the release-style step of `bench_ecg_jepa_release.py` (checked equal to the
public release's; in the release's fp16 autocast with a GradScaler, and in bf16 autocast), the
factorized CroPA kernel, and CroPA as a FlexAttention block mask under `torch.compile`; it reports
MFU against a bf16 matmul peak measured in the same process, and projects the paper's pretraining
(about 180,000 ECGs, 100 epochs, batch 128: the paper and the release's defaults) in GPU-hours from
each arm's step time. Needs only torch, numpy, pyyaml and safetensors (no data readers).

Usage: PYTHONPATH=. python benchmarks/bench_gpu_pretrain.py [--steps 10] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ecg_jepa as jepa_bench  # noqa: E402
import bench_ecg_jepa_release as release_bench  # noqa: E402

from medssl.engine.config import resolve_recipe  # noqa: E402
from medssl.engine.methods import build_method  # noqa: E402
from medssl.nn.transformer import compile_transformers  # noqa: E402

RECIPES = ("ecg_jepa", "mae_ecg", "core_ecg", "simclr_ecg", "ts2vec_ecg")
PAPER_PRETRAINING_STEPS = 180_000 * 100 / 128  # ~180k ECGs (ECG-JEPA paper), 100 epochs, batch 128 (release)


class ReleaseStep(torch.nn.Module):
    """The release-style model behind `time_steps`' interface: forward(x, step, rank), update_target."""

    def __init__(self):
        super().__init__()
        self.model = release_bench.ReleaseStyleJEPA(size=release_bench.PAPER_SIZE)

    def forward(self, x: torch.Tensor, step: int = 0, rank: int = 0) -> torch.Tensor:
        return self.model(x)

    def update_target(self, momentum: float) -> None:
        release_bench.release_ema(self.model, momentum)


def time_steps(method, x: torch.Tensor, steps: int, bf16: bool, warmup: int = 3, fp16_scaler: bool = False) -> dict:
    """Median optimiser step; `fp16_scaler`: fp16 autocast with a GradScaler (the release's own setting)."""
    method.cuda().train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if fp16_scaler else None
    dtype = torch.float16 if fp16_scaler else torch.bfloat16
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + warmup):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=bf16 or fp16_scaler):
            loss = method(x, step=i, rank=0)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(method, "update_target"):
            method.update_target(0.996)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    return {"step_ms": step * 1e3, "samples_per_s": x.shape[0] / step, "loss": float(loss),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def input_for(encoder, batch: int) -> torch.Tensor:
    spec = encoder.spec.input
    return torch.randn(batch, len(spec["leads"]), int(spec["num_samples"]), device="cuda")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only-jepa", action="store_true", help="skip the per-recipe table")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "recipes": {}}
    peak = jepa_bench.matmul_peak_flops(torch.bfloat16, "cuda", n=8192)
    result["bf16_matmul_peak_tflops"] = peak / 1e12
    print(f"{result['device']}, torch {torch.__version__}, bf16 matmul peak {peak / 1e12:.0f} TFLOP/s", flush=True)

    for name in () if args.only_jepa else RECIPES:
        try:
            cfg = resolve_recipe(name, ["variant=gpu"])
            torch.manual_seed(0)
            encoder, method = build_method(cfg)
            batch = min(cfg["data"]["batch_size"], args.max_batch)
            r = time_steps(method, input_for(encoder, batch), args.steps, bf16=True)
            r.update(batch=batch, encoder=encoder.spec.name,
                     params_m=sum(p.numel() for p in method.parameters() if p.requires_grad) / 1e6)
            result["recipes"][name] = r
            print(f"{name:12s} {encoder.spec.name:18s} batch {batch:4d}: {r['samples_per_s']:8.0f} samples/s, "
                  f"{r['step_ms']:7.1f} ms/step, {r['peak_mem_gib']:5.1f} GiB", flush=True)
            del method, encoder
            torch.cuda.empty_cache()
        except Exception as e:  # one recipe failing must not lose the others' figures
            result["recipes"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)

    # ECG-JEPA, paper size: medssl (bf16, SDPA + cached CroPA) vs factorized vs naive fp32.
    batch = 128
    x = torch.randn(batch, 8, 2500, device="cuda")
    arms = {}
    fast = jepa_bench.build("base", naive=False)
    keep, mask = fast.sample_masks(batch, 0)
    flops = jepa_bench.step_flops(fast, batch, keep.shape[1], mask.shape[1])
    arms["sdpa_bf16"] = time_steps(fast, x, args.steps, bf16=True)
    del fast
    arms["factorized_bf16"] = time_steps(jepa_bench.build("base", naive=False, cropa_impl="factorized"),
                                         x, args.steps, bf16=True)
    with jepa_bench.masks_rebuilt_every_call():
        arms["naive_fp32"] = time_steps(jepa_bench.build("base", naive=True), x, args.steps, bf16=False)
    torch.manual_seed(0)
    arms["release_fp16_scaler"] = time_steps(ReleaseStep(), x, args.steps, bf16=False, fp16_scaler=True)
    torch.manual_seed(0)
    arms["release_bf16"] = time_steps(ReleaseStep(), x, args.steps, bf16=True)
    try:  # never run on a GPU yet: a failure must not lose the other arms' figures
        flex = jepa_bench.build("base", naive=False, cropa_impl="flex")
        compile_transformers(flex)
        arms["flex_bf16_compiled"] = time_steps(flex, x, args.steps, bf16=True, warmup=8)
        del flex
    except Exception as e:
        print(f"flex_bf16_compiled: FAILED {type(e).__name__}: {e}", flush=True)
        result["flex_error"] = f"{type(e).__name__}: {e}"
    torch.cuda.empty_cache()
    for arm in arms.values():
        arm["mfu_vs_bf16_peak"] = flops / (arm["step_ms"] / 1e3) / peak
    for b in (128, 256):
        m = jepa_bench.build("base", naive=False)
        compile_transformers(m)
        xb = torch.randn(b, 8, 2500, device="cuda")
        kb, mb = m.sample_masks(b, 0)
        arm = time_steps(m, xb, args.steps, bf16=True, warmup=8)
        arm["mfu_vs_bf16_peak"] = jepa_bench.step_flops(m, b, kb.shape[1], mb.shape[1]) / (arm["step_ms"] / 1e3) / peak
        arm["batch"] = b
        arms[f"sdpa_bf16_compiled_b{b}"] = arm
        del m
        torch.cuda.empty_cache()
    arms["speedup_sdpa_vs_naive"] = arms["naive_fp32"]["step_ms"] / arms["sdpa_bf16"]["step_ms"]
    arms["speedup_factorized_vs_naive"] = arms["naive_fp32"]["step_ms"] / arms["factorized_bf16"]["step_ms"]
    arms["model_tflop_per_step"] = flops / 1e12
    for name, arm in list(arms.items()):
        if isinstance(arm, dict) and "step_ms" in arm:
            arm["paper_pretraining_gpu_hours"] = PAPER_PRETRAINING_STEPS * arm["step_ms"] / 1e3 / 3600
            if name != "release_fp16_scaler":
                arm["speedup_vs_release_fp16"] = arms["release_fp16_scaler"]["step_ms"] / arm["step_ms"]
    result["ecg_jepa_base_arms"] = arms
    for k in ("release_fp16_scaler", "release_bf16", "naive_fp32", "sdpa_bf16", "factorized_bf16", "flex_bf16_compiled",
              "sdpa_bf16_compiled_b128", "sdpa_bf16_compiled_b256"):
        if k not in arms:
            continue
        a = arms[k]
        print(f"ECG-JEPA base {k:24s}: {a['samples_per_s']:7.0f} samples/s, {a['step_ms']:7.1f} ms/step, "
              f"MFU {a.get('mfu_vs_bf16_peak', float('nan')):.1%} of bf16 peak, {a['peak_mem_gib']:.1f} GiB, "
              f"{a.get('speedup_vs_release_fp16', 1.0):.2f}x the release, "
              f"paper's pretraining {a['paper_pretraining_gpu_hours']:.1f} GPU-h", flush=True)
    print(f"speed-up over naive: SDPA {arms['speedup_sdpa_vs_naive']:.2f}x, "
          f"factorized {arms['speedup_factorized_vs_naive']:.2f}x")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
