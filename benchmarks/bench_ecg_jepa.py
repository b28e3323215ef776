"""ECG-JEPA pretraining throughput and model FLOP utilisation, against a naive baseline.

Both arms train the same architecture on the same batches and masks, in the same process:
- medssl: `scaled_dot_product_attention` with the cached Cross-Pattern Attention mask, bf16
  autocast where the hardware has native bf16 (fp32 otherwise);
- medssl factorized: the same, with `FactorizedCrossPattern` (same-lead and same-time scores only);
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
from medssl.engine.hardware import bf16_available
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


def build(size: str, naive: bool, seed: int = 0, cropa_impl: str = "sdpa") -> JEPA:
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


def time_training(model: JEPA, x: Tensor, steps: int, autocast: bool, device: str) -> float:
    """Seconds per optimisation step (median of `steps` after one warm-up step)."""
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ctx = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
           if autocast else contextlib.nullcontext())
    times = []
    for i in range(steps + 1):
        _sync(device)
        t = time.perf_counter()
        with ctx:
            loss = model(x, step=i)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_target(0.996)
        _sync(device)
        if i:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = args.device
    use_bf16 = bf16_available("gpu" if device.startswith("cuda") else "cpu")
    x = torch.randn(args.batch, 8, 2500, device=device)
    fast, naive = build(args.size, naive=False), build(args.size, naive=True)
    factorized = build(args.size, naive=False, cropa_impl="factorized")
    keep, mask = fast.sample_masks(args.batch, 0)
    flops = step_flops(fast, args.batch, keep.shape[1], mask.shape[1])
    # masks depend on the step; the FLOP count uses step 0's (counts vary by a few patches).

    with masks_rebuilt_every_call():
        t_naive = time_training(naive, x, args.steps, autocast=False, device=device)
    t_fast = time_training(fast, x, args.steps, autocast=use_bf16, device=device)
    t_fact = time_training(factorized, x, args.steps, autocast=use_bf16, device=device)
    peak_fast = matmul_peak_flops(torch.bfloat16 if use_bf16 else torch.float32, device)
    peak_fp32 = peak_fast if not use_bf16 else matmul_peak_flops(torch.float32, device)

    result = {
        "machine": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine(),
        "device": device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": args.size,
        "batch": args.batch,
        "precision_medssl": "bf16-autocast" if use_bf16 else "fp32",
        "naive_samples_per_s": args.batch / t_naive,
        "medssl_samples_per_s": args.batch / t_fast,
        "speedup": t_naive / t_fast,
        "factorized_samples_per_s": args.batch / t_fact,
        "speedup_factorized": t_naive / t_fact,
        "matmul_peak_tflops": peak_fast / 1e12,
        "matmul_peak_fp32_tflops": peak_fp32 / 1e12,
        "model_tflops_per_step": flops / 1e12,
        "mfu_medssl": flops / t_fast / peak_fast,
        "mfu_factorized_dense_equivalent": flops / t_fact / peak_fast,
        "mfu_naive_vs_fp32_peak": flops / t_naive / peak_fp32,
    }
    print(f"ECG-JEPA {args.size} pretraining, batch {args.batch}, {device} ({result['machine']}), "
          f"{result['threads']} threads, torch {torch.__version__}")
    print(f"  naive  (fp32, masked_fill, mask rebuilt): {result['naive_samples_per_s']:8.2f} samples/s  "
          f"MFU {result['mfu_naive_vs_fp32_peak']:.1%} of fp32 peak")
    print(f"  medssl ({result['precision_medssl']}, SDPA, cached CroPA): {result['medssl_samples_per_s']:8.2f} samples/s  "
          f"MFU {result['mfu_medssl']:.1%} of {result['precision_medssl']} peak "
          f"({result['matmul_peak_tflops']:.3f} TFLOP/s measured)")
    print(f"  medssl factorized CroPA: {result['factorized_samples_per_s']:8.2f} samples/s  "
          f"(dense-equivalent MFU {result['mfu_factorized_dense_equivalent']:.1%})")
    print(f"  speed-up over naive: SDPA {result['speedup']:.2f}x, factorized {result['speedup_factorized']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
