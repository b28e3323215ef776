"""ECG-JEPA pretraining throughput and model FLOP utilisation, against a naive baseline.

All arms train the same architecture on the same batches and masks, in the same process, one
step of each arm in turn (interleaved, so a change in the machine's load hits every arm alike):
- medssl fp32 and medssl bf16: `scaled_dot_product_attention` with the cached Cross-Pattern
  Attention mask, in fp32 and under bf16 autocast (the measurement behind medssl's default
  precision: medssl.engine.hardware);
- medssl factorized fp32 / bf16: the same, with `FactorizedCrossPattern` (same-lead and same-time
  scores only);
- naive: fp32, attention written out (QK^T, masked_fill, softmax, V) with the CroPA mask
  rebuilt at every call.
Model FLOP utilisation (MFU) = model FLOPs per second (dense attention counted, backward = 2x
forward for trained parts, forward only for the EMA target encoder) / the machine's matrix-multiply
peak measured here in the same precision. The factorized arm does fewer FLOPs than that count, so
its "dense-equivalent" MFU can exceed what the hardware does.

Usage: python benchmarks/bench_ecg_jepa.py [--size small] [--batch 16] [--steps 6] [--device cpu]
Prints a table and one JSON line; copy the figures into benchmarks/RESULTS.md with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time

import torch
from torch import Tensor

from medssl.ecg import cropa, encoders
from medssl.ecg.encoders import JepaPredictor
from medssl.engine.hardware import default_precision
from medssl.nn import transformer as tr
from medssl.registry import create_encoder
from medssl.ssl.jepa import JEPA
from medssl.ssl.masking import RandomPatchMasker

SIZES = {
    "tiny": dict(embed_dim=128, depth=4, num_heads=4, pred=(64, 2, 4)),
    "small": dict(embed_dim=384, depth=6, num_heads=6, pred=(192, 3, 6)),
    "base": dict(embed_dim=768, depth=12, num_heads=16, pred=(384, 6, 12)),  # the paper's
}


def matmul_peak_flops(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 10, trials: int = 3) -> float:
    """Best of `trials` timings of `repeats` n x n matrix products: the machine's attainable peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(trials):
        _sync(device)
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * repeats / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class NaiveAttention(tr.Attention):
    """The baseline's attention: QK^T, masked_fill, softmax, V, all materialised in fp32."""

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if attn_mask is None:
            attn_mask = torch.ones(n, n, dtype=torch.bool, device=x.device)
        out = tr.masked_attention_reference(qkv[0], qkv[1], qkv[2], attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


@contextlib.contextmanager
def masks_rebuilt_every_call():
    """Bypass the CroPA mask cache, so the naive arm rebuilds each mask at every forward."""
    original = encoders.cross_pattern_mask

    def rebuild(n_leads, n_time, device="cpu"):
        return cropa.build_cross_pattern_mask(n_leads, n_time, str(torch.device(device)))

    encoders.cross_pattern_mask = rebuild
    try:
        yield
    finally:
        encoders.cross_pattern_mask = original


def build(size: str, naive: bool, seed: int = 0, cropa_impl: str = "auto") -> JEPA:
    s = SIZES[size]
    torch.manual_seed(seed)
    encoder = create_encoder("ecg_jepa_base", embed_dim=s["embed_dim"], depth=s["depth"], num_heads=s["num_heads"],
                             cropa_impl=cropa_impl)
    pd, pdepth, pheads = s["pred"]
    predictor = JepaPredictor(n_leads=8, n_time=50, embed_dim=s["embed_dim"], predictor_dim=pd,
                              depth=pdepth, num_heads=pheads)
    model = JEPA(encoder, predictor, RandomPatchMasker((0.6, 0.7)), seed=seed)
    if naive:
        for m in model.modules():
            if type(m) is tr.Attention:
                m.__class__ = NaiveAttention
    return model


def step_flops(model: JEPA, batch: int, n_keep: int, n_mask: int) -> float:
    enc, pred = model.encoder, model.predictor
    L, T, D = enc.n_leads, enc.n_time, enc.embed_dim
    depth = len(enc.transformer.blocks)
    pdim = pred.embed.out_features
    pdepth = len(pred.transformer.blocks)
    target = tr.transformer_flops(L * T, D, depth) + 2 * L * T * enc.patch_size * D
    context = tr.transformer_flops(L * n_keep, D, depth) + 2 * L * T * enc.patch_size * D
    predictor = (L * tr.transformer_flops(n_keep + n_mask, pdim, pdepth)  # one sequence per lead
                 + 2 * L * n_keep * D * pdim + 2 * L * n_mask * pdim * D)
    return batch * (target + 3 * (context + predictor))


def time_interleaved(arms: dict[str, tuple[JEPA, bool]], x: Tensor, steps: int, device: str) -> dict[str, float]:
    """Seconds per optimisation step of each arm {name: (model, bf16 autocast)}: median of
    `steps` after one warm-up step, the arms taking one step each in turn."""
    state = {}
    for name, (model, autocast) in arms.items():
        model.to(device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        ctx = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
               if autocast else contextlib.nullcontext())
        state[name] = (model, opt, ctx, [])
    for i in range(steps + 1):
        for name, (model, opt, ctx, times) in state.items():
            rebuild = masks_rebuilt_every_call() if name == "naive" else contextlib.nullcontext()
            _sync(device)
            t = time.perf_counter()
            with rebuild, ctx:
                loss = model(x, step=i)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            model.update_target(0.996)
            _sync(device)
            if i:
                times.append(time.perf_counter() - t)
    return {name: sorted(s[3])[len(s[3]) // 2] for name, s in state.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = args.device
    x = torch.randn(args.batch, 8, 2500, device=device)
    fast = build(args.size, naive=False)
    arms = {
        "naive": (build(args.size, naive=True), False),
        "medssl_fp32": (fast, False),
        "medssl_bf16": (build(args.size, naive=False), True),
        "factorized_fp32": (build(args.size, naive=False, cropa_impl="factorized"), False),
        "factorized_bf16": (build(args.size, naive=False, cropa_impl="factorized"), True),
    }
    keep, mask = fast.sample_masks(args.batch, 0)
    flops = step_flops(fast, args.batch, keep.shape[1], mask.shape[1])
    # masks depend on the step; the FLOP count uses step 0's (counts vary by a few patches).
    t = time_interleaved(arms, x, args.steps, device)
    peak = {"fp32": matmul_peak_flops(torch.float32, device), "bf16": matmul_peak_flops(torch.bfloat16, device)}

    default = "bf16" if default_precision(device) == "bf16" else "fp32"
    result = {
        "machine": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine(),
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "medssl_default_precision": default,
        "samples_per_s": {name: args.batch / v for name, v in t.items()},
        "speedup_vs_naive": {name: t["naive"] / v for name, v in t.items()},
        "bf16_over_fp32": t["medssl_fp32"] / t["medssl_bf16"],
        "matmul_peak_tflops": {k: v / 1e12 for k, v in peak.items()},
        "model_tflops_per_step": flops / 1e12,
        "mfu": {name: flops / v / peak["bf16" if name.endswith("bf16") else "fp32"] for name, v in t.items()},
    }
    print(f"ECG-JEPA {args.size} pretraining, batch {args.batch}, {device} ({result['machine']}), "
          f"{result['threads']} threads, torch {torch.__version__}; medssl's default here: {default}")
    for name in t:
        print(f"  {name:16s} {result['samples_per_s'][name]:8.2f} samples/s  "
              f"{result['speedup_vs_naive'][name]:5.2f}x naive  MFU {result['mfu'][name]:.1%} "
              f"of the {'bf16' if name.endswith('bf16') else 'fp32'} matmul peak")
    print(f"  bf16 autocast / fp32 (medssl, SDPA): {result['bf16_over_fp32']:.2f}x; matmul peak "
          f"fp32 {result['matmul_peak_tflops']['fp32']:.3f}, bf16 {result['matmul_peak_tflops']['bf16']:.3f} TFLOP/s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
