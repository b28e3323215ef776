"""Retinal vessel segmentation on real fundus photographs (DRIVE format: images/, 1st_manual/, mask/).

Arms, all trained on the same image draws and scored on the same evaluation images:
  (a) a U-Net trained from scratch, the standard supervised reference (retina_unet_small: 4 stages,
      16-128 channels, + the segmentation protocol's U-Net decoder over its skips);
  (b) MAE (He et al. 2022; recipe mae_octa, variant cpu: retina_vit_tiny, 75 % masking,
      normalised-pixel loss) pretrained here on tiles of every --data image at native resolution
      (pixels only, never a vessel mask), then fine-tuned with the prompt-free mask decoder
      (medssl.retina.mask_decoder, the MAE-based retinal segmentation design);
  (c) the same ViT, random init, fine-tuned with the same decoder and recipe ((b) - (c) is what
      pretraining buys).
Every arm trains on random 64 x 64 px tiles cut from the full-resolution images (inside the field
of view) and predicts by Gaussian-blended sliding windows at native resolution
(medssl.bench.tiling); one recipe for all (AdamW, cosine, Dice + BCE, --lr for the decoder, the
ViTs' encoder at --encoder-lr-scale x --lr, 0.1 by default, the usual smaller rate for a pretrained
encoder and the same for its random-init control; the U-Net's encoder, half of a network trained
from scratch, at the full rate). Label budgets: 1, 5 and all training images (subjects), --seeds draws each.
Metrics inside the field of view, per image, with 95% image-bootstrap intervals: Dice (= F1 at
0.5), sensitivity, specificity, AUROC of the vessel probability; paired bootstrap p-values, Holm-
adjusted over every comparison.

Data: `--data DIR` is indexed with the image-folder layout (task segmentation; DRIVE as shipped, or
any folder of images with masks/FOV masks paired by name); the evaluation images are
`--eval-data DIR` (another cohort of the same format, e.g. DRIVE's test/ with its 1st_manual/ and
mask/; then every --data image trains) or, by default, a held-out part of --data
(--heldout-fraction of the subjects). MAE pretrains on the --data images only: in the held-out
mode these include the held-out images' pixels (no masks), as transductive self-supervision does;
an --eval-data cohort is never seen before scoring.

Outputs in --out: manifest.csv (paths and parts; never images), mae/ (checkpoint), bench/ (the
`medssl bench` run), results.json + report.html (the `medssl bench` schema), summary.md.
Usage: python benchmarks/real_drive.py [--data DIR] [--eval-data DIR] [--out DIR] [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_common import (  # noqa: E402
    PART,
    REAL_DATA,
    Stopwatch,
    budget_fractions,
    heldout_split,
    logger,
    machine_line,
    merge_results,
    summary_markdown,
    tag_cohorts,
)

log = logger("real-drive")
METRICS = ["dice", "sensitivity", "specificity", "auroc"]
UNET = "U-Net from scratch"
MAE = "MAE pretrained, fine-tuned"
RANDOM = "ViT random init, fine-tuned"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REAL_DATA / "drive"), help="image-folder cohort (default: %(default)s)")
    ap.add_argument("--eval-data", default=None, help="a second cohort of the same format to score on")
    ap.add_argument("--out", default="outputs/real_drive")
    ap.add_argument("--heldout-fraction", type=float, default=0.25)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--budgets", default="1,5,all", help="training images with masks (comma list; 'all')")
    ap.add_argument("--seeds", type=int, default=2, help="draws (and initialisations) per partial budget")
    ap.add_argument("--seeds-all", type=int, default=1, help="initialisations with every training image")
    ap.add_argument("--steps", type=int, default=400, help="training steps per segmenter (batches of --batch tiles)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--encoder-lr-scale", type=float, default=0.1, help="the ViT arms' encoder learning-rate scale")
    ap.add_argument("--width", type=int, default=32, help="decoder channels")
    ap.add_argument("--unet", default="retina_unet_small", help="registered 2-D U-Net encoder of arm (a)")
    ap.add_argument("--unet-widths", default=None, help="override its stage widths, e.g. 8,16,32")
    ap.add_argument("--pretrain-epochs", type=int, default=6)
    ap.add_argument("--pretrain-stride", type=int, default=32, help="px between pretraining tiles")
    ap.add_argument("--pretrain-max-steps", type=int, default=None)
    ap.add_argument("--checkpoint", default=None, help="an MAE (retina ViT) checkpoint to use instead of pretraining")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    return ap.parse_args(argv)


def index(root: str) -> list[dict]:
    from medssl.data.layouts import index_layout

    rows, skipped = index_layout("image-folder", Path(root), task="segmentation")
    for path, reason in skipped:
        log(f"skipped {path}: {reason}")
    unlabelled = [r for r in rows if not r.get("mask_path")]
    if unlabelled:
        log(f"{root}: {len(unlabelled)} image(s) without a vessel mask left out (nothing to train or score on)")
    rows = [r for r in rows if r.get("mask_path")]
    if not rows:
        raise SystemExit(f"{root}: no images with a vessel mask indexed (DRIVE layout: images/, 1st_manual/, mask/)")
    if not all(r.get("fov_path") for r in rows):
        log(f"{root}: {sum(not r.get('fov_path') for r in rows)} image(s) without a field-of-view mask: scored "
            f"over the whole image")
    return rows


def pretrain_mae(rows: list[dict], args, out: Path, cache: Path) -> tuple[Path, dict]:
    """MAE on tiles of the --data images at native resolution (no masks read)."""
    from medssl.checkpoint import read_card
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain

    pre = [{k: v for k, v in r.items() if k not in ("mask_path", "labels")} | {"split": "train", "labels": ""}
           for r in rows if r[PART] != "eval-data"]
    overrides = ["variant=cpu", f"optim.epochs={args.pretrain_epochs}", f"data.cache_dir={cache}",
                 f"data.tiles={json.dumps({'stride': args.pretrain_stride, 'min_fov': 0.5})}",
                 "trainer.precision=32-true"]
    if args.pretrain_max_steps is not None:
        overrides.append(f"trainer.max_steps={args.pretrain_max_steps}")
    log(f"pretraining MAE (mae_octa, cpu variant) on tiles of {len(pre)} images, {args.pretrain_epochs} epochs")
    ckpt = pretrain(resolve_recipe("mae_octa", overrides), pre, out / "mae", resume=False, progress_bar=False)
    return ckpt, read_card(ckpt).get("training_metrics", {})


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from medssl.bench.runner import run_benchmark
    from medssl.checkpoint import load_encoder
    from medssl.data.manifest import write_manifest

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    clock = Stopwatch()

    clock.start()
    data_rows = index(args.data)
    eval_rows = index(args.eval_data) if args.eval_data else None
    train_subj = None if eval_rows else heldout_split(data_rows, None, args.heldout_fraction, args.split_seed)
    rows = tag_cohorts(data_rows, eval_rows, train_subj)
    domain = "eval-data" if eval_rows else "held-out"
    write_manifest(rows, out / "manifest.csv")
    n_train = len({r["subject_id"] for r in rows if r[PART] == "train"})
    n_eval = len({r["subject_id"] for r in rows if r[PART] == domain})
    log(f"{len(rows)} images: {n_train} training subjects, {n_eval} {domain} subjects")
    clock.stop("index")

    if args.checkpoint:
        ckpt, pre_metrics = Path(args.checkpoint).resolve(), {}
    else:
        clock.start()
        ckpt, pre_metrics = pretrain_mae(rows, args, out, cache)
        log(f"MAE: {pre_metrics.get('steps')} steps on {pre_metrics.get('n_windows')} tiles, loss "
            f"{pre_metrics.get('train/loss_epoch', float('nan')):.4f} in {clock.stop('pretrain MAE'):.0f} s")
    vit = load_encoder(ckpt).spec
    unet_overrides = {"widths": [int(w) for w in args.unet_widths.split(",")]} if args.unet_widths else {}

    budgets = budget_fractions(args.budgets, n_train, log)
    protocols = [{"kind": "segmentation", "name": f"fine-tune, {b} image(s)" if b != "all" else "fine-tune, all images",
                  "decoder": "mask_decoder", "mode": "finetune", "label_fractions": [f],
                  "seeds": args.seeds_all if b == "all" else args.seeds,
                  "epochs": 1, "min_steps": args.steps, "batch_size": args.batch, "lr": args.lr,
                  "encoder_lr_scale": args.encoder_lr_scale, "width": args.width} for b, f in budgets]
    config = {
        "title": "Vessel segmentation on real fundus photographs: U-Net vs MAE vs random init",
        "n_bootstrap": args.n_bootstrap, "cache_dir": str(cache), "precision": "32",
        "encoders": [
            {"name": UNET, "ref": f"random:{args.unet}:0", "decoder": "pyramid", "encoder_lr_scale": 1.0,
             "overrides": unet_overrides},
            {"name": MAE, "ref": str(ckpt)},
            {"name": RANDOM, "ref": f"random:{vit.name}:0",
             "overrides": {k: v for k, v in vit.hparams.items() if k != "name"}},
        ],
        "datasets": {"fundus": {"path": str(out / "manifest.csv"),
                                "data": {"tiling": "always", "tile_overlap": 0.5, "tile_blend": "gaussian"}}},
        "tasks": [{"name": "vessels", "dataset": "fundus", "kind": "segmentation", "metrics": METRICS,
                   "train": {PART: "train"}, "eval": {domain: {PART: domain}}}],
        "protocols": protocols,
    }
    torch.manual_seed(0)
    clock.start()
    doc = run_benchmark(config, out / "bench", progress=True)
    clock.stop("bench (3 arms)")

    timing = clock.as_dict()
    extra = {"pipeline": {
        "script": "benchmarks/real_drive.py", "data": str(Path(args.data).resolve()),
        "eval_data": str(Path(args.eval_data).resolve()) if args.eval_data else None, "domain": domain,
        "n_train_subjects": n_train, "n_eval_subjects": n_eval, "budgets": dict(budgets), "steps": args.steps,
        "batch_size": args.batch, "tile": vit.input.get("tile_size"), "pretrain_epochs":
            None if args.checkpoint else args.pretrain_epochs, "pretrain_stride_px": args.pretrain_stride,
        "pretraining_metrics": pre_metrics, "timing": timing, "torch_threads": torch.get_num_threads(),
        "published_reference": "U-Net-family models: Dice/F1 about 0.80-0.83 inside the FOV on DRIVE's test set "
                               "against the first observer; the second observer agrees at about 0.79"}}
    merged = merge_results({"bench": doc}, out, "Vessel segmentation on real fundus photographs", extra)
    lines = [
        f"# Vessel segmentation on real fundus photographs ({domain} images)", "",
        machine_line(),
        f"cohort: {n_train} training images, {n_eval} {domain} images; budgets {', '.join(b for b, _ in budgets)}; "
        f"{args.steps} steps of {args.batch} tiles per segmenter, {args.seeds} seed(s) per partial budget, "
        f"{args.seeds_all} with all images",
        f"MAE: {pre_metrics.get('steps', 'given checkpoint')} steps on {pre_metrics.get('n_windows', '?')} tiles, "
        f"final loss {pre_metrics.get('train/loss_epoch', float('nan')):.4f}",
        *clock.lines(),
        "reference: U-Net-family Dice about 0.80-0.83 on DRIVE's test set (second observer ~0.79)",
        "", summary_markdown(merged, "dice", 3), "",
        summary_markdown(merged, "auroc", 3, comparisons=False), "",
        summary_markdown(merged, "sensitivity", 3, comparisons=False), "",
        summary_markdown(merged, "specificity", 3, comparisons=False), "",
        f"errors: {len(merged['errors'])}", *[f"- {e}" for e in merged["errors"]],
        "notes:", *[f"- {n}" for n in merged["notes"]],
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
