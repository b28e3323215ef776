"""CT end to end on a CPU: synthetic chest phantoms -> DAGMaN and SimMIM pretraining -> benchmark.

1. data: the two-site synthetic chest CT cohort of `recipes/bench_ct_demo.yaml` (DICOM series,
   nodule masks, one manifest row per labelled nodule), written where the benchmark reads it
   (OUT/bench/data/chest), and the pretraining manifest OUT/pretrain.csv: the nodule rows of the
   task's training rows (site A, split train) plus `--crops` crops per nodule whose centres are
   shifted by up to `--jitter-mm` along each axis (unlabelled; the evaluation subjects, in-domain
   and site B, are never seen in pretraining);
2. pretraining: recipes dagman_ct and simmim_ct, variant cpu (ct_swin_tiny, 32^3, batch 4), the
   same `--epochs` over the same patches for both (the same number of optimiser steps);
3. benchmark: `run_benchmark` with the demo config, the two checkpoints and random init
   (random:ct_swin_tiny:0): nodule malignancy (linear probe and k-NN, few-shot and all) and
   nodule segmentation (SwinUNETR decoder on the frozen encoder), in = site A, out = site B;
4. a summary table: per task / protocol / setting / domain, each encoder's mean [95% CI] of the
   headline metric (AUROC; Dice) and the paired-bootstrap p-values of DAGMaN vs SimMIM,
   DAGMaN vs random init and SimMIM vs random init; written to OUT/summary.md with the timings.

The steps one by one with the `medssl` CLI are in the header of recipes/bench_ct_demo.yaml.
Measured on the 2-core VM with the defaults: 6 min 48 s wall when quiet (cohort 16 s, DAGMaN 426
steps 128 s, SimMIM 426 steps 88 s, benchmark 169 s), 17 min with other jobs sharing the cores.
Usage: python benchmarks/bench_ct_pipeline.py [--out outputs/bench_ct] [--epochs 6]
       [--subjects-per-site 60] [--no-segmentation] [--data-only]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stopwatch import Stopwatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "bench_ct_demo.yaml"
RECIPES = {"DAGMaN": ("dagman_ct", "dagman"), "SimMIM": ("simmim_ct", "simmim")}
HEADLINE = {"nodule malignancy": "auroc_macro", "nodule segmentation": "dice"}


def log(msg: str) -> None:
    print(f"[ct-pipeline] {msg}", file=sys.stderr, flush=True)


def pretraining_rows(rows: list[dict], train: dict, crops: int, jitter_mm: float, seed: int = 0) -> list[dict]:
    """The training rows of the task (filter `train`: column -> value(s)) and `crops` jittered
    copies of each (centre + U(-jitter, jitter) mm per axis), all split "train", labels removed."""
    from medssl.bench.tasks import matches

    filt = {k: tuple(str(x) for x in (v if isinstance(v, list) else [v])) for k, v in train.items()}
    keep = [r for r, m in zip(rows, matches(rows, filt)) if m]
    rng = np.random.default_rng(seed)
    out = []
    for r in keep:
        base = {**r, "split": "train", "labels": "", "malignancy": ""}
        out.append(base)
        centre = np.array([float(r[f"center_{a}_mm"]) for a in "xyz"])
        for k in range(crops):
            c = centre + rng.uniform(-jitter_mm, jitter_mm, 3)
            out.append({**base, "record_id": f"{r['record_id']}-crop{k}",
                        **{f"center_{a}_mm": f"{v:.4f}" for a, v in zip("xyz", c)}})
    return out


def pretrain_encoder(recipe: str, rows: list[dict], out: Path, epochs: int, cache: Path) -> tuple[Path, dict]:
    from medssl.checkpoint import read_card
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain

    cfg = resolve_recipe(recipe, ["variant=cpu", "trainer.precision=32-true", f"optim.epochs={epochs}",
                                  f"data.cache_dir={cache}"])  # fp32, as RESULTS.md's figures were measured
    ckpt = pretrain(cfg, rows, out, resume=False, progress_bar=False)
    card = read_card(ckpt)
    return ckpt, card.get("training_metrics", {})


def _fmt(v) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"


def _p(v) -> str:
    return "n/a" if v is None else ("<0.001" if v < 0.001 else f"{v:.3f}")


def summary_table(doc: dict, encoders: list[str]) -> str:
    """Markdown: one line per task / protocol / setting / domain (headline metric)."""
    aggs = {(a["task"], a["protocol"], a["shots"], a["label_fraction"], a["domain"], a["metric"], a["encoder"]): a
            for a in doc["aggregates"]}
    comps = {(c["task"], c["protocol"], c["shots"], c["label_fraction"], c["domain"], c["metric"],
              c["encoder_a"], c["encoder_b"]): c for c in doc["comparisons"]}
    pairs = [(encoders[i], encoders[j]) for i in range(len(encoders)) for j in range(i + 1, len(encoders))]
    head = (["task", "protocol", "setting", "domain", "metric"] + [f"{e} mean [95% CI]" for e in encoders]
            + [f"p {a} vs {b}" for a, b in pairs] + ["seeds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = dict.fromkeys(k[:6] for k in aggs if HEADLINE.get(k[0]) == k[5])
    for task, proto, shots, frac, domain, metric in keys:
        setting = f"k={shots}" if shots is not None else f"fraction={frac:g}"
        cells = [task, proto, setting, domain, metric]
        n_seeds = 0
        for e in encoders:
            a = aggs.get((task, proto, shots, frac, domain, metric, e))
            if a is None:
                cells.append("n/a")
                continue
            n_seeds = max(n_seeds, a["n_seeds"])
            cells.append(f"{_fmt(a['mean'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]")
        for a_, b_ in pairs:
            c = comps.get((task, proto, shots, frac, domain, metric, a_, b_))
            cells.append("n/a" if c is None else f"{_p(c['p_value'])} (d={c['delta']:+.3f})")
        cells.append(str(n_seeds))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/bench_ct")
    ap.add_argument("--epochs", type=int, default=6, help="pretraining epochs over the pretraining patches")
    ap.add_argument("--crops", type=int, default=3, help="jittered crops per training nodule for pretraining")
    ap.add_argument("--jitter-mm", type=float, default=12.0)
    ap.add_argument("--subjects-per-site", type=int, default=None, help="default: the demo config's")
    ap.add_argument("--n-bootstrap", type=int, default=None, help="default: the demo config's")
    ap.add_argument("--no-segmentation", action="store_true", help="leave the segmentation task out (faster)")
    ap.add_argument("--data-only", action="store_true", help="write the cohort and pretrain.csv, then stop")
    args = ap.parse_args(argv)

    import torch

    import medssl.ct.segmentation  # noqa: F401 - registers decoder swin_unetr
    from medssl.bench.runner import run_benchmark
    from medssl.data.manifest import write_manifest
    from medssl.data.modalities import modality_data
    from medssl.io import atomic_write_text

    out = Path(args.out).resolve()
    cache = out / "cache"
    clock = Stopwatch()
    cfg = yaml.safe_load(CONFIG.read_text())
    synth = dict(cfg["datasets"]["chest"]["synthetic"])
    if args.subjects_per_site is not None:
        synth["subjects_per_site"] = args.subjects_per_site
        cfg["datasets"]["chest"]["synthetic"] = synth
    if args.n_bootstrap is not None:
        cfg["n_bootstrap"] = args.n_bootstrap
    if args.no_segmentation:
        cfg["tasks"] = [t for t in cfg["tasks"] if t["kind"] != "segmentation"]
        cfg["protocols"] = [p for p in cfg["protocols"] if p["kind"] != "segmentation"]
    task = next(t for t in cfg["tasks"] if t["name"] == "nodule malignancy")

    clock.start()
    params = {k: v for k, v in synth.items() if k != "modality"}
    rows, skipped = modality_data("ct").write_synthetic(out / "bench" / "data" / "chest", **params)
    pre_rows = pretraining_rows(rows, task["train"], args.crops, args.jitter_mm)
    write_manifest(pre_rows, out / "pretrain.csv")
    data_s = clock.stop("data")
    sites = {s: sum(r["site"] == s for r in rows) for s in sorted({r["site"] for r in rows})}
    log(f"cohort: {len(rows)} labelled nodules ({sites}), {len(skipped)} skipped (rating 3 or no series); "
        f"pretraining: {len(pre_rows)} patches of {len({r['subject_id'] for r in pre_rows})} site-A training "
        f"subjects; {data_s:.0f} s")
    if args.data_only:
        return 0

    checkpoints, pre_metrics = {}, {}
    for name, (recipe, folder) in RECIPES.items():
        clock.start()
        log(f"pretraining {name} ({recipe}, variant cpu, {args.epochs} epoch(s))")
        checkpoints[name], pre_metrics[name] = pretrain_encoder(recipe, pre_rows, out / folder, args.epochs, cache)
        log(f"{name}: {pre_metrics[name].get('steps')} steps in {clock.stop(f'pretrain {folder}'):.0f} s")

    cfg["cache_dir"] = str(cache)
    for e in cfg["encoders"]:
        if e["name"] in checkpoints:
            e["ref"] = str(checkpoints[e["name"]])
    clock.start()
    doc = run_benchmark(cfg, out / "bench", progress=True)
    clock.stop("benchmark")

    encoders = [e["name"] for e in cfg["encoders"]]
    table = summary_table(doc, encoders)
    guided = pre_metrics["DAGMaN"].get("train/mask_attention_epoch")
    masked = pre_metrics["SimMIM"].get("train/mask_fraction_epoch")
    uniform = guided is not None and masked is not None and abs(guided - masked) < 0.01
    lines = [
        f"# {cfg['title']}", "",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        f"cohort: {synth}; {len(rows)} labelled nodules; pretraining: {len(pre_rows)} patches, "
        f"{args.epochs} epoch(s) each",
        *clock.lines(),
        "bench timings (s): " + ", ".join(f"{k} {v}" for k, v in doc["timings_s"].items()),
        "pretraining (last logged): " + "; ".join(
            f"{n}: " + ", ".join(f"{k.removeprefix('train/')}={v:.4g}" for k, v in sorted(m.items())
                                 if k.startswith("train/") and k.endswith("_epoch"))
            for n, m in pre_metrics.items()),
        *(["note: DAGMaN's teacher attention under its masks equals the masked share of cells: the teacher's "
           "semantic attention is still uniform, so its guided masks were effectively random masks"]
          if uniform else []),
        "", table, "",
        "Means over seeds; 95% CIs and p-values from the paired two-level bootstrap (subjects, seeds); "
        "d = difference of means (first - second). Rows with 1 seed (k=all): the intervals and "
        "p-values reflect the evaluation subjects only, not the variability of training.",
        f"errors: {len(doc['errors'])}; notes: {len(doc['notes'])}",
        *[f"- {n}" for n in doc["notes"]],
        f"report: {doc['paths']['html']}",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
