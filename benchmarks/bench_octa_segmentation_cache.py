"""Frozen-feature segmentation: feature maps computed once per image vs recomputed at every step.

The OCTA demo's segmentation protocols (recipes/bench_octa_demo.yaml: the 80-eye vessel cohort at
64 px, prompt-free mask decoder on frozen `retina_vit_tiny` encoders, label fractions 1-100 %,
3 seeds, 100 / 25 epochs of batch 4), run through `medssl bench` (`run_benchmark`) twice in this
process: once with `medssl.bench.segmentation.CACHE_FROZEN_FEATURES = False` (the encoder runs on
every batch at every decoder step, as before) and once with the cache (maps computed once per
(encoder weights, images) and reused for every fraction, seed and the evaluation images). The
probes (linear, k-NN) and the disease task are left out: they do not train decoders. The encoders
are randomly initialised `retina_vit_tiny` (seeds 0, 1, 2) instead of the demo's pretrained
VAMAE / MAE checkpoints: the same architecture, so the same cost, without 90 s of pretraining.
Both arms must give the same Dice values (checked; the maximum difference is printed).

Usage: python benchmarks/bench_octa_segmentation_cache.py [--out outputs/octa_seg_cache] [--encoders 3]
       [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "bench_octa_demo.yaml"


def config(out: Path, n_encoders: int, quick: bool) -> dict:
    raw = yaml.safe_load(CONFIG.read_text())
    cfg = copy.deepcopy(raw)
    cfg["encoders"] = [{"name": f"random {i}", "ref": f"random:retina_vit_tiny:{i}"} for i in range(n_encoders)]
    cfg["tasks"] = [t for t in cfg["tasks"] if t["kind"] == "segmentation"]
    cfg["datasets"] = {t["dataset"]: cfg["datasets"][t["dataset"]] for t in cfg["tasks"]}
    cfg["protocols"] = [p for p in cfg["protocols"] if p["kind"] == "segmentation"]
    cfg["cache_dir"] = str(out / "cache")
    cfg["n_bootstrap"] = 200
    if quick:
        for p in cfg["protocols"]:
            p["seeds"] = 1
            p["epochs"] = max(1, p["epochs"] // 10)
    return cfg


def run(cfg: dict, out: Path, cached: bool) -> tuple[float, dict]:
    from medssl.bench import segmentation
    from medssl.bench.runner import run_benchmark

    segmentation.CACHE_FROZEN_FEATURES = cached
    t = time.perf_counter()
    doc = run_benchmark(cfg, out, progress=False)
    return time.perf_counter() - t, doc


def dice_values(doc: dict) -> dict:
    return {(r["encoder"], r["protocol"], r["label_fraction"], r["seed"], r["domain"]): r["value"]
            for r in doc["records"] if r["metric"] == "dice"}


def step_breakdown(repeats: int = 20) -> dict:
    """Milliseconds of one training step's parts for the demo's segmenter (retina_vit_tiny + mask
    decoder, width 32, batch 4 at 64 x 64): the frozen encoder's forward, a decoder step on cached
    maps (forward, Dice + BCE, backward, AdamW), and the uncached step (both); medians of 3 rounds."""
    import numpy as np
    import torch
    from monai.losses import DiceCELoss

    from medssl.bench.segmentation import build_segmenter
    from medssl.registry import create_encoder

    torch.manual_seed(0)
    model = build_segmenter(create_encoder("retina_vit_tiny"), (1, 64, 64), mode="frozen", width=32,
                            decoder="mask_decoder").train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    loss_fn = DiceCELoss(sigmoid=True)
    x, y = torch.randn(4, 1, 64, 64), (torch.rand(4, 1, 64, 64) > 0.8).float()
    maps = model.encode(x)

    def decoder_step(m):
        loss = loss_fn(model.decode(x, m), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    parts = {"encoder_forward": lambda: model.encode(x), "decoder_step_cached": lambda: decoder_step(maps),
             "step_uncached": lambda: decoder_step(model.encode(x))}
    times = {k: [] for k in parts}
    for _ in range(3):
        for k, f in parts.items():  # interleaved rounds
            f()
            t = time.perf_counter()
            for _ in range(repeats):
                f()
            times[k].append(1000 * (time.perf_counter() - t) / repeats)
    return {k: round(float(np.median(v)), 1) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "octa_seg_cache")
    ap.add_argument("--encoders", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 seed, a tenth of the epochs: a smoke run")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cfg = config(args.out, args.encoders, args.quick)
    # Warm-up: the synthetic cohort and the preprocessed-array cache are written once, outside the timings.
    warm = copy.deepcopy(cfg)
    for p in warm["protocols"]:
        p["seeds"], p["epochs"], p["label_fractions"] = 1, 1, [1.0]
    run(warm, args.out / "warmup", cached=True)
    load = os.getloadavg()
    t_plain, plain = run(cfg, args.out / "uncached", cached=False)
    t_cached, cached = run(cfg, args.out / "cached", cached=True)
    breakdown = step_breakdown()
    load_after = os.getloadavg()
    a, b = dice_values(plain), dice_values(cached)
    assert a.keys() == b.keys() and a, "the two arms scored different runs"
    diff = max(abs((a[k] or 0.0) - (b[k] or 0.0)) for k in a)
    n_train = sum(1 for r in plain["records"] if r["metric"] == "dice" and r["domain"] == "in")
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads,
                    "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in load_after]},
        "encoders": args.encoders, "quick": args.quick, "decoder_trainings": n_train,
        "uncached_s": round(t_plain, 1), "cached_s": round(t_cached, 1),
        "uncached_timings_s": plain.get("timings_s"), "cached_timings_s": cached.get("timings_s"),
        "speedup": round(t_plain / t_cached, 2), "max_dice_difference": diff, "step_breakdown_ms": breakdown,
    }
    print(json.dumps(result, indent=1))
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
