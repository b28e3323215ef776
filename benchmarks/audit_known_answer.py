"""Known-answer membership-inference audit: a model that should leak and a control that should not.

    .venv/bin/python benchmarks/audit_known_answer.py --seed 0 --out outputs/known_answer/seed0

One synthetic ECG cohort per seed (one record per subject), split by subject into

* 12 members: a tiny ``mae_ecg`` (depth-1 ViT, 32 wide) over-trained on them (``--epochs``,
  default 300): the *target*, which should leak;
* 24 non-members (audited, never trained on);
* 12 control subjects: the same recipe trained on them gives the *control* model, whose
  membership is independent of the audited labels (it saw neither members nor non-members);
* 48 population subjects, never audited: LiRA's references train on 24 of them; RMIA draws 24
  at random as its z samples and trains its references on the other 24.

The target is audited with LOSS, offline LiRA and RMIA (``--refs`` reference models of the
target's size, 12 subjects), each with the control checkpoint as its control. A
second set of audits treats the *control* as the audited model with the same labels: its AUC
must sit inside its permutation null band (its "members" were never trained on).

Writes ``OUT/known_answer.json``::

    {"seed", "config": {...}, "machine": {...}, "seconds": {...},
     "target": {"loss" | "lira" | "rmia": SUMMARY}, "control_as_target": {"loss": SUMMARY, ...},
     "checks": {"target_detected": {attack: bool}, "control_inside_null_band": {attack: bool}}}
    SUMMARY = {"auc", "auc_ci", "null_band", "p_value", "tpr_at_min_fpr": {"fpr", "value", "ci"},
               "control_auc", "difference": {"value", "ci_low", "ci_high"}, "conclusion", "references"}

"detected": p <= 0.05 and the difference to the control's AUC has a CI above 0; "inside the
null band": the AUC lies within the permutation band at the audit's sample sizes. The audit
folders (audit.json, report.html, subject_scores.csv) are kept under OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medssl.data.layouts import index_layout  # noqa: E402
from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort  # noqa: E402
from medssl.engine.config import resolve_recipe  # noqa: E402
from medssl.engine.pretrain import pretrain  # noqa: E402
from medssl.io import atomic_write_json  # noqa: E402
from medssl.privacy.audit import run_audit  # noqa: E402

TINY_MAE = ["variant=cpu", "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32",
            "encoder.overrides.num_heads=2", "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2",
            "data.batch_size=4", "optim.warmup_epochs=1", "optim.lr=3e-3", "trainer.precision=32-true"]
SIZES = {"members": 12, "nonmembers": 24, "control": 12, "pool": 24, "z": 24}


def _summary(doc: dict) -> dict:
    low = doc["tpr_at_min_fpr"]
    c = doc.get("control")
    return {"auc": doc["auc"], "auc_ci": doc["auc_ci"], "null_band": doc["null_band"], "p_value": doc["p_value"],
            "tpr_at_min_fpr": {"fpr": low["fpr"], "value": low["value"], "ci": [low["ci_low"], low["ci_high"]]},
            "control_auc": c["auc"] if c else None, "difference": c["difference"] if c else None,
            "conclusion": doc["conclusion"], "references": doc["references"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--refs", type=int, default=2, help="reference models per attack (2 keeps a seed near 15 min "
                                                      "on a 2-core VM)")
    p.add_argument("--queries", type=int, default=4)
    p.add_argument("--attacks", default="loss,lira,rmia")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    attacks = [a for a in args.attacks.split(",") if a]
    t0 = time.perf_counter()
    seconds = {}

    n_total = sum(SIZES.values())
    write_wfdb_cohort(generate_cohort(n_total, records_per_subject=1, seed=1000 + args.seed), out / "data")
    rows, _ = index_layout("synthetic", out / "data")
    subjects = sorted({r["subject_id"] for r in rows})
    order = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(subjects), generator=order).tolist()
    groups, start = {}, 0
    for name, n in SIZES.items():
        chosen = {subjects[i] for i in perm[start:start + n]}
        groups[name] = [r for r in rows if r["subject_id"] in chosen]
        start += n
    seconds["data"] = time.perf_counter() - t0

    recipe = [*TINY_MAE, f"optim.epochs={args.epochs}", f"seed={args.seed}", f"data.cache_dir={out / 'cache'}"]
    cfg = resolve_recipe("mae_ecg", recipe)
    t = time.perf_counter()
    target = pretrain(cfg, groups["members"], out / "target", progress_bar=False)
    control = pretrain(cfg, groups["control"], out / "control", progress_bar=False)
    seconds["train_target_and_control"] = time.perf_counter() - t

    (out / "references").mkdir(exist_ok=True)
    result = {"target": {}, "control_as_target": {}}
    for attack in attacks:
        t = time.perf_counter()
        kw = {}
        if attack == "lira":
            kw = {"n_refs": args.refs, "population_rows": groups["pool"]}
        elif attack == "rmia":
            # 24 of the 48 non-audited subjects become z at random, the other 24 the references' pool
            # (a different draw from LiRA's pool, so RMIA trains its own references)
            kw = {"n_refs": args.refs, "population_rows": groups["pool"] + groups["z"], "n_z": SIZES["z"]}
        for role, ckpt, ctrl in (("target", target, control), ("control_as_target", control, target)):
            folder = out / role / attack
            folder.mkdir(parents=True, exist_ok=True)
            link = folder / "references"
            if not link.exists():
                os.symlink(out / "references", link)  # one reference set for every audit of this seed
            doc = run_audit(ckpt, groups["members"], groups["nonmembers"], attack=attack, n_queries=args.queries,
                            control_checkpoint=ctrl if role == "target" else None, out_dir=folder,
                            seed=args.seed, **kw)
            result[role][attack] = _summary(doc)
        seconds[f"audit_{attack}"] = time.perf_counter() - t

    checks = {
        "target_detected": {a: bool(s["p_value"] <= 0.05 and s["difference"] and s["difference"]["ci_low"] > 0)
                            for a, s in result["target"].items()},
        "control_inside_null_band": {a: bool(s["null_band"][0] <= s["auc"] <= s["null_band"][1])
                                     for a, s in result["control_as_target"].items()},
    }
    seconds["total"] = time.perf_counter() - t0
    doc = {
        "seed": args.seed,
        "config": {"recipe": "mae_ecg", "overrides": [r for r in recipe if not r.startswith("data.cache_dir")],
                   "sizes": SIZES, "n_refs": args.refs, "n_queries": args.queries, "attacks": attacks},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_avg": os.getloadavg()},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        **result, "checks": checks,
    }
    atomic_write_json(out / "known_answer.json", doc)
    for role in ("target", "control_as_target"):
        for a, s in result[role].items():
            d = s["difference"]
            diff = f", minus control {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else ""
            print(f"{role:18s} {a:5s} AUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}] null band "
                  f"[{s['null_band'][0]:.3f}, {s['null_band'][1]:.3f}] p {s['p_value']:.4f}{diff}")
    print(json.dumps(checks))
    print(out / "known_answer.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
