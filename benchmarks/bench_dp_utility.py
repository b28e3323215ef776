"""Utility against membership leakage of DP-SGD pretraining, for several epsilons.

    .venv/bin/python benchmarks/bench_dp_utility.py [--out DIR] [--epsilons inf,8,1] [--members 16]
                                                     [--epochs 400] [--subjects-per-site 150]

One two-site synthetic ECG cohort (medssl.ecg.modality.write_synthetic_ecg: 1-3 records per
subject, site_a / site_b, 70/15/15 subject splits). Each arm pretrains the same tiny ECG-JEPA
recipe (depth 1, width 32, batch 4, lr 3e-3, many epochs: over-trained on purpose, so that the
undefended encoder leaks) on `--members` site_a training subjects, with `privacy.dp` off
(epsilon inf) or on with `privacy.target_epsilon` = each epsilon (delta 1/(10 n), RDP accountant,
Poisson subject sampling, C = 1); the arm "clip" is DP-SGD with noise multiplier 0 (clipping
and subject-level sampling only: no guarantee). Then

* utility: `medssl.bench.runner.run_benchmark`, linear probe on frozen embeddings, six conditions
  (multilabel macro AUROC), 5-shot (3 seeds) and all labels, trained on site_a train subjects and
  scored on site_a test subjects (in domain); a randomly initialised encoder is the floor;
* leakage: `medssl.privacy.audit.run_audit`, the LOSS attack with white-box access to the SSL
  loss (4 mask draws per window, subject mean), members vs every other site_a subject (>= 100,
  so TPR at 1 % FPR is resolvable);
* control: the same recipe (same arm) trained on `--members` *other* site_a training subjects,
  kept out of both audit sides, audited on the same split. It cannot know the members, so its AUC
  is what the attack reports without leakage: with a few dozen members the LOSS attack is
  confounded by which subjects the draw made members (some are easier to reconstruct for any
  model trained on this population), and the offset depends on how the model was trained
  (measured: random inits 0.38-0.47, a noise-dominated epsilon-1 model trained elsewhere 0.61 on
  the same split). Leakage is the arm's AUC minus its control's, not its distance from 0.5.

Prints one table and writes OUT/dp_utility.json. Defaults: 6 pretrainings (3 arms, 3 controls),
6 audits and one benchmark, 12 CPU minutes (17 min wall on a shared 2-core machine), one thread.
Measured there (defaults): attack AUC - control AUC = +0.05 (no DP), +0.06 (epsilon 8), -0.04
(epsilon 1), every CI containing 0.5 and TPR at 1 % FPR 0-1 of 16 members: at this scale the LOSS
attack barely detects even the undefended, over-trained encoder, so the table shows DP's utility
cost (none here: 5-shot AUROC 0.75 without DP, 0.82 and 0.84 with, the undefended arm over-fits
its 16 subjects), not its protection; tests/privacy/test_dp.py's slow test shows the latter on a
cohort where the attack works.
Without DP an "epoch" passes every window once; under DP every subject once in expectation
(one window per sampled subject), so at 1-3 records per subject the DP arms see about half as
many windows for the same number of epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
import warnings
from pathlib import Path

import torch

from medssl.checkpoint import read_card
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

ENCODER = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # ecg_jepa_tiny, narrower
RECIPE = ["variant=cpu", *(f"encoder.overrides.{k}={v}" for k, v in ENCODER.items()),
          "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2",
          "data.batch_size=4", "optim.warmup_epochs=1", "optim.lr=3e-3",
          "trainer.precision=32-true"]  # every arm in fp32, as DP-SGD trains: only the privacy setting differs


def _arm_overrides(arm: str) -> list[str]:
    if arm == "inf":
        return []
    if arm == "clip":
        return ["privacy.dp=true", "privacy.noise_multiplier=0"]
    return ["privacy.dp=true", f"privacy.target_epsilon={float(arm)}"]


def _bench_config(encoders: dict[str, str], data_dir: Path, subjects_per_site: int) -> dict:
    return {
        "title": "DP-SGD utility: tiny ECG-JEPA, linear probe",
        "n_bootstrap": 200,
        "encoders": [{"name": name, "ref": ref, **({"overrides": ENCODER} if ref.startswith("random:") else {})}
                     for name, ref in encoders.items()],
        "datasets": {"synthetic_ecg": {"synthetic": {"subjects_per_site": subjects_per_site, "seed": 0}}},
        "tasks": [{"name": "six conditions", "dataset": "synthetic_ecg", "kind": "multilabel",
                   "labels": ["NORM", "MI", "STTC", "CD", "HYP", "AF"], "metrics": ["auroc_macro"],
                   "train": {"site": "site_a", "split": "train"},
                   "eval": {"in": {"site": "site_a", "split": "test"}}}],
        "protocols": [{"kind": "linear_probe", "shots": [5, "all"], "seeds": 3}],
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/bench_dp_utility")
    ap.add_argument("--epsilons", default="inf,8,1", help="comma-separated: inf (no DP), clip (sigma 0), numbers")
    ap.add_argument("--members", type=int, default=16, help="pretraining subjects (site_a train)")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--subjects-per-site", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny models run best on one)")
    ap.add_argument("--no-controls", dest="controls", action="store_false",
                    help="skip the control models (same recipe, other subjects)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    out = Path(args.out)
    from medssl.ecg.modality import write_synthetic_ecg
    from medssl.privacy.audit import run_audit

    t0 = time.perf_counter()
    rows, _ = write_synthetic_ecg(out / "bench" / "data" / "synthetic_ecg", subjects_per_site=args.subjects_per_site,
                                  seed=0)
    site_a = [r for r in rows if r["site"] == "site_a"]
    train_subjects = sorted({r["subject_id"] for r in site_a if r["split"] == "train"})
    drawn = random.Random(0).sample(train_subjects, 2 * args.members if args.controls else args.members)
    chosen, held = set(drawn[:args.members]), set(drawn[args.members:])
    members = [r for r in site_a if r["subject_id"] in chosen]
    control_rows = [r for r in site_a if r["subject_id"] in held]  # trains the controls; in no audit side
    nonmembers = [r for r in site_a if r["subject_id"] not in chosen | held]
    arms = [a.strip() for a in args.epsilons.split(",") if a.strip()]
    results = {"arms": {}, "n_members": len(chosen), "n_nonmembers": len({r["subject_id"] for r in nonmembers}),
               "epochs": args.epochs, "recipe": RECIPE}
    refs = {"random init": "random:ecg_jepa_tiny:0"}
    for arm in arms:
        t = time.perf_counter()
        cfg = resolve_recipe("ecg_jepa", [*RECIPE, f"optim.epochs={args.epochs}", *_arm_overrides(arm),
                                          f"data.cache_dir={out / 'cache'}"])
        ckpt = pretrain(cfg, members, out / f"pretrain_{arm}", progress_bar=False)
        train_s = time.perf_counter() - t
        audit = run_audit(ckpt, members, nonmembers, n_queries=4, out_dir=out / f"audit_{arm}")
        card = read_card(ckpt)
        dp = next((p for p in card["privacy"] if p["kind"] == "dp_sgd"), None)
        results["arms"][arm] = {
            "epsilon": None if dp is None else dp["epsilon"], "delta": None if dp is None else dp["delta"],
            "noise_multiplier": None if dp is None else dp["noise_multiplier"],
            "steps": card["training_metrics"]["steps"], "train_loss": card["training_metrics"].get("train/loss"),
            "train_s": round(train_s, 1),
            "attack_auc": audit["auc"], "attack_auc_ci": audit["auc_ci"],
            "tpr_at_1pct_fpr": audit["tpr_at_fpr"]["0.01"], "tpr_at_10pct_fpr": audit["tpr_at_fpr"]["0.1"],
            "null_auc": audit["null_check"]["auc"],
        }
        refs[f"eps {arm}"] = str(ckpt.resolve())
        if args.controls:
            control = pretrain(cfg, control_rows, out / f"control_{arm}", progress_bar=False)
            c = run_audit(control, members, nonmembers, n_queries=4, out_dir=out / f"control_audit_{arm}")
            results["arms"][arm].update(control_auc=c["auc"], control_auc_ci=c["auc_ci"])
        print(f"arm {arm}: trained in {train_s:.0f} s, attack AUC {audit['auc']:.3f}"
              + (f", control {results['arms'][arm]['control_auc']:.3f}" if args.controls else ""), flush=True)

    from medssl.bench.runner import run_benchmark

    bench = run_benchmark(_bench_config(refs, out / "bench" / "data", args.subjects_per_site), out / "bench",
                          progress=False)
    utility = {}
    for a in bench["aggregates"]:
        if a["metric"] == "auroc_macro" and a["domain"] == "in":
            utility.setdefault(a["encoder"], {})[str(a["shots"])] = (a["mean"], a["ci_low"], a["ci_high"])
    for arm in arms:
        results["arms"][arm]["fewshot_auroc"] = utility.get(f"eps {arm}", {})
    results["random_init_auroc"] = utility.get("random init", {})
    results["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "dp_utility.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    _print_table(results)
    return results


def _fmt(v, ci=None) -> str:
    def bad(x):
        return x is None or (isinstance(x, float) and math.isnan(x))

    if bad(v):
        return "-"
    return f"{v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and not any(map(bad, ci)) else "")


def _print_table(r: dict) -> None:
    print(f"\n{r['n_members']} member subjects, {r['n_nonmembers']} non-member subjects, {r['epochs']} epochs; "
          f"total {r['total_s']:.0f} s")
    head = ("epsilon", "delta", "sigma", "5-shot AUROC", "all-label AUROC", "attack AUC", "control AUC", "TPR@1%FPR",
            "TPR@10%FPR", "train s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for arm, a in r["arms"].items():
        u = a["fewshot_auroc"]
        k5, kall = u.get("5"), u.get("all")
        eps = "inf (no DP)" if arm == "inf" else ("clip only" if arm == "clip" else
                                                  f"{a['epsilon']:.2f} (target {arm})")
        t1, t10 = a["tpr_at_1pct_fpr"], a["tpr_at_10pct_fpr"]
        print("| " + " | ".join([
            eps, "-" if a["delta"] is None else f"{a['delta']:.2g}",
            "-" if a["noise_multiplier"] is None else f"{a['noise_multiplier']:.2f}",
            _fmt(k5[0], k5[1:]) if k5 else "-", _fmt(kall[0]) if kall else "-",
            _fmt(a["attack_auc"], a["attack_auc_ci"]), _fmt(a.get("control_auc"), a.get("control_auc_ci")),
            _fmt(t1["value"], (t1["ci_low"], t1["ci_high"])),
            _fmt(t10["value"], (t10["ci_low"], t10["ci_high"])), f"{a['train_s']:.0f}",
        ]) + " |")
    ri = r["random_init_auroc"]
    if ri:
        print(f"| random init | - | - | {_fmt(ri['5'][0], ri['5'][1:]) if '5' in ri else '-'} | "
              f"{_fmt(ri['all'][0]) if 'all' in ri else '-'} | - | - | - | - | - |")


if __name__ == "__main__":
    main()
