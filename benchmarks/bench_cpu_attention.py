"""Attention kernels on a CPU at ECG-JEPA's shapes, fp32 and bf16: SDPA against the alternatives.

Shapes (384 wide, 6 heads of 64; batch 16; 8 leads x 50 time patches): the target encoder's
forward (400 tokens, CroPA mask, no grad), the context encoder's forward + backward (8 x 18
visible tokens, CroPA mask), the predictor's forward + backward (one 50-token sequence per lead,
192 wide: 6 heads of 32, no mask). Kernels:
- `sdpa`: `F.scaled_dot_product_attention` with the cached boolean CroPA mask (on a CPU its flash kernel);
- `written_out`: `medssl.nn.transformer.written_out_attention` (q k^T, masked_fill_, softmax, @ v:
  what `medssl.nn.transformer.attention` does for bf16 on a CPU);
- `factorized`: `medssl.ecg.cropa.FactorizedCrossPattern` (masked shapes only).
Median of `--repeats` calls after two warm-ups, ratios against `sdpa` measured in the same process.

Usage: python benchmarks/bench_cpu_attention.py [--repeats 7] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medssl.ecg.cropa import FactorizedCrossPattern, cross_pattern_mask
from medssl.nn.transformer import written_out_attention

SHAPES = {  # name: (batch, heads, leads, time patches, head_dim, backward)
    "target encoder fwd (16x6x400x64)": (16, 6, 8, 50, 64, False),
    "context encoder fwd+bwd (16x6x144x64)": (16, 6, 8, 18, 64, True),
    "predictor fwd+bwd (128x6x50x32)": (128, 6, 1, 50, 32, True),
}


def median_ms(fn, backward: bool, repeats: int) -> float:
    def once():
        with torch.set_grad_enabled(backward):
            out = fn()
            if backward:
                out.sum().backward()

    for _ in range(2):
        once()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "load": os.getloadavg(), "ms": {}}
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        for name, (b, h, leads, t, d, backward) in SHAPES.items():
            n = leads * t
            q, k, v = (torch.randn(b, h, n, d, generator=g).to(dtype).requires_grad_(backward) for _ in range(3))
            mask = cross_pattern_mask(leads, t) if leads > 1 else None
            kernels = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                       "written_out": lambda: written_out_attention(q, k, v, mask)}
            if mask is not None:
                kernels["factorized"] = lambda: FactorizedCrossPattern(leads, t)(q, k, v)
            ms = {kn: median_ms(fn, backward, args.repeats) for kn, fn in kernels.items()}
            result["ms"][f"{str(dtype)[6:]} {name}"] = ms
            print(f"{str(dtype)[6:]:8s} {name:40s} " + "  ".join(
                f"{kn} {v:6.1f} ms ({ms['sdpa'] / v:.2f}x)" for kn, v in ms.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
