"""Synthetic OCTA end to end: pretraining pool -> VAMAE + MAE pretraining -> `medssl bench` -> summary.

The steps recipes/bench_octa_demo.yaml documents, in one process:
  1. write an unlabelled pool of synthetic site-A eyes (`medssl.retina.synthetic.write_synthetic`,
     seed 1: other retinas than the benchmark cohort's seed 0), indexed with the octa500 layout;
  2. pretrain `vamae_octa` and `mae_octa` from their CPU variants on it (`medssl.engine.pretrain`),
     checkpoints in OUT/vamae/checkpoint and OUT/mae/checkpoint;
  3. run the benchmark config (its pretrained encoders pointed at those checkpoints) into OUT/bench;
  4. print, and write to OUT/bench/summary.md, the headline table: Dice per label fraction and
     domain with 95% intervals for each encoder, and the paired differences with p-values.
Finished steps are reused: the pool while its settings match, a checkpoint folder that exists.

Usage: python benchmarks/bench_octa_pipeline.py [--out outputs/octa] [--epochs 30] [--quick]
`--quick` shrinks everything (pool, epochs, cohort, seeds) to a smoke run of about a minute.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "bench_octa_demo.yaml"
DEFAULT_OUT = REPO / "outputs" / "octa"
RECIPES = {"vamae": "vamae_octa", "mae": "mae_octa"}  # output folder -> recipe


def write_pool(folder: Path, n_subjects: int, size: int, seed: int = 1) -> list[dict]:
    """Unlabelled site-A pretraining images (every row, no splits)."""
    from medssl.retina.synthetic import write_synthetic

    rows, skipped = write_synthetic(folder, n_subjects=n_subjects, size=size, seed=seed, task="", sites=["A"],
                                    splits="none")
    if skipped:
        raise RuntimeError(f"{folder}: {len(skipped)} pool image(s) skipped, e.g. {skipped[0]}")
    return rows


def pretrain_recipe(recipe: str, rows: list[dict], out_dir: Path, overrides: list[str]) -> tuple[Path, dict]:
    """(checkpoint folder, training metrics of its card); an existing checkpoint is reused."""
    from medssl.checkpoint import read_card
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain

    folder = out_dir / "checkpoint"
    if not (folder / "card.json").is_file():
        cfg = resolve_recipe(recipe, ["variant=cpu", "trainer.precision=32-true", *overrides])  # as measured
        folder = pretrain(cfg, rows, out_dir, progress_bar=False)
    card = read_card(folder)
    return folder, card.get("training_metrics", {})


def bench_config(out: Path, *, quick: bool) -> dict:
    """The demo config as a dict, its checkpoint refs moved under `out` (they name DEFAULT_OUT)."""
    raw = yaml.safe_load(CONFIG.read_text())
    cfg = copy.deepcopy(raw)
    for e in cfg["encoders"]:
        if e["ref"].startswith("random:"):
            continue
        path = REPO / e["ref"]  # relative to the working directory (a packaged example), here the repository
        try:
            path = out / path.relative_to(DEFAULT_OUT)
        except ValueError:
            pass
        e["ref"] = str(path)
    cfg["cache_dir"] = str(out / "cache")
    if quick:
        cfg["n_bootstrap"] = 200
        for d in cfg["datasets"].values():
            d["synthetic"]["n_subjects"] = 32
        for p in cfg["protocols"]:
            p["seeds"] = 2
            if p["kind"] == "segmentation":
                p["label_fractions"] = [f for f in p["label_fractions"] if f >= 0.1] or [0.5]
                p["epochs"] = 2
            else:
                p["shots"] = ["all"]
    return cfg


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(p) -> str:
    return "n/a" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _segmentation_groups(doc: dict) -> dict[str, list[str]]:
    """"decoder <decoder>, <mode>" -> the names of the segmentation protocols that use it (config order):
    protocols that differ only in their label fractions and epochs are shown as one table."""
    groups: dict[str, list[str]] = {}
    for p in doc["config"]["protocols"]:
        if p["kind"] == "segmentation":
            key = f"decoder {p.get('decoder', 'pyramid')}, {p.get('mode', 'frozen')}"
            groups.setdefault(key, []).append(p.get("name", p["kind"]))
    return groups


def summary(doc: dict, metric: str = "dice") -> str:
    """Markdown: per segmentation decoder, `metric` mean [95% CI] per encoder x label fraction x
    domain, and the paired differences of every encoder pair; then the classification probes."""
    encoders = list(doc["encoders"])
    lines = []
    seg = [a for a in doc["aggregates"] if a["task_kind"] == "segmentation" and a["metric"] == metric]
    n_train = {}
    for r in doc["records"]:
        if r["task_kind"] == "segmentation":
            n_train.setdefault((r["protocol"], r["label_fraction"]), set()).add(r["n_train_subjects"])
    for title, protos in _segmentation_groups(doc).items():
        rows = [a for a in seg if a["protocol"] in protos]
        if not rows:
            continue
        lines += [f"### {rows[0]['task']}: {title}, {metric} (mean over seeds [95% CI])", "",
                  "| fraction | train subjects | domain | " + " | ".join(encoders) + " |",
                  "|---|---|---|" + "---|" * len(encoders)]
        for proto, f in dict.fromkeys((a["protocol"], a["label_fraction"]) for a in rows):
            for d in dict.fromkeys(a["domain"] for a in rows):
                cells = []
                for e in encoders:
                    a = next((a for a in rows if a["encoder"] == e and a["protocol"] == proto
                              and a["label_fraction"] == f and a["domain"] == d), None)
                    cells.append("n/a" if a is None else
                                 f"{_fmt(a['mean'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]")
                nt = "/".join(str(n) for n in sorted(n_train.get((proto, f), ())))
                lines.append(f"| {f:g} | {nt} | {d} | " + " | ".join(cells) + " |")
        lines += ["", f"Paired differences ({metric}, a - b [95% CI], p):", "",
                  "| fraction | domain | a - b | delta [95% CI] | p |", "|---|---|---|---|---|"]
        for c in doc["comparisons"]:
            if c["protocol"] in protos and c["metric"] == metric:
                lines.append(f"| {c['label_fraction']:g} | {c['domain']} | {c['encoder_a']} - {c['encoder_b']} | "
                             f"{_fmt(c['delta'])} [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {_p(c['p_value'])} |")
        lines.append("")
    cls = [a for a in doc["aggregates"] if a["task_kind"] != "segmentation" and a["metric"] == "auroc_macro"]
    if cls:
        lines += [f"### {cls[0]['task']}: AUROC (mean [95% CI])", "",
                  "| protocol | shots | domain | " + " | ".join(encoders) + " |",
                  "|---|---|---|" + "---|" * len(encoders)]
        for key in dict.fromkeys((a["protocol"], str(a["shots"]), a["domain"]) for a in cls):
            cells = []
            for e in encoders:
                a = next((a for a in cls if (a["protocol"], str(a["shots"]), a["domain"]) == key
                          and a["encoder"] == e), None)
                cells.append("n/a" if a is None else f"{_fmt(a['mean'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}]")
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        lines.append("")
    for block in doc.get("ranking", []):
        order = ", ".join(f"{r['position']}. {r['encoder']} (mean rank {r['mean_rank']:.2f})" for r in block["rows"])
        lines.append(f"Ranking, domain {block['domain']} ({block['n_tasks']} ranking tasks): {order}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--pool-subjects", type=int, default=192)
    ap.add_argument("--size", type=int, default=64, help="synthetic image size, px (the CPU variants read 64 x 64)")
    ap.add_argument("--epochs", type=int, default=30, help="pretraining epochs of each recipe")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a busy 2-core machine; raise it on an idle one)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny pool, 1 epoch, small cohort, 2 seeds")
    args = ap.parse_args(argv)

    import torch

    from medssl.bench.runner import run_benchmark
    from medssl.io import atomic_write_text

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    times: dict[str, float] = {}  # stage -> wall-clock seconds ("_s") and this process's CPU seconds ("_cpu_s")
    t0, c0 = time.perf_counter(), time.process_time()

    def stage(name: str, t: float, c: float) -> None:
        times[f"{name}_s"], times[f"{name}_cpu_s"] = time.perf_counter() - t, time.process_time() - c

    pool_n, epochs = (16, 1) if args.quick else (args.pool_subjects, args.epochs)
    rows = write_pool(out / "pool", pool_n, args.size)
    stage("pool", t0, c0)
    overrides = [f"optim.epochs={epochs}", f"optim.warmup_epochs={0 if args.quick else max(1, epochs // 10)}",
                 f"data.shape=[{args.size}, {args.size}]", f"data.cache_dir={out / 'cache'}"]
    metrics = {}
    for name, recipe in RECIPES.items():
        t, c = time.perf_counter(), time.process_time()
        _, metrics[name] = pretrain_recipe(recipe, rows, out / name, overrides)
        stage(f"pretrain_{name}", t, c)
        print(f"[octa] {recipe}: {metrics[name].get('steps')} steps on {metrics[name].get('n_records')} images, "
              f"final loss {metrics[name].get('train/loss_epoch', float('nan')):.4f}, "
              f"{times[f'pretrain_{name}_s']:.0f} s", file=sys.stderr, flush=True)
    t, c = time.perf_counter(), time.process_time()
    doc = run_benchmark(bench_config(out, quick=args.quick), out / "bench", progress=True)
    stage("bench", t, c)
    stage("total", t0, c0)
    text = summary(doc)
    timing = ", ".join(f"{k} {v:.0f}" for k, v in times.items())
    text += f"\nTimings (s): {timing}; bench stages: {doc['timings_s']}\n"
    atomic_write_text(out / "bench" / "summary.md", text)
    print(text)
    print(f"report: {doc['paths']['html']}")
    doc["pipeline_timings_s"] = times
    doc["pretrain_metrics"] = metrics
    return doc


if __name__ == "__main__":
    main()
