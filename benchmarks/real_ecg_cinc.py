"""Real 12-lead ECGs (PhysioNet/CinC 2021 format): do encoders pretrained on synthetic ECGs transfer?

Arms (frozen encoders + the bench's linear probe: standardised L2 logistic regression, one per
label, fitted on k labelled subjects per label; every arm on the same subject draws):
  - ECG-JEPA (ecg_jepa_tiny) pretrained on the built-in synthetic cohort, as `make demo` does
    (recipe ecg_jepa, variant cpu, site A training subjects; or --checkpoint);
  - the same architecture, random init;
  - SimCLR (ecg_resnet1d_tiny), TS2Vec (ecg_ts2vec_tiny) and MAE / ST-MEM (ecg_mae_vit_tiny), each
    pretrained on the same synthetic subjects with its cpu recipe;
  - NeuroKit2 measurements of lead II (heart rate, QRS duration, RR variability; the non-learned
    clinical baseline, medssl.ecg.neurokit_features) + the same logistic regression.
Labels: the rhythm and conduction diagnoses (CinC abbreviations of SNOMED-CT codes, the sets below)
with at least --min-positives positive subjects in --data and positives and negatives in both the
training and the evaluation subjects. Metrics: AUROC macro over those labels (one multilabel task)
and each label's AUROC (one binary task per label), 95% subject-bootstrap intervals, paired
bootstrap p-values, Holm-adjusted over every comparison.

Data: `--data DIR` indexed with --layout (physionet2021, default; or wfdb with --labels CSV); the
evaluation subjects are `--eval-data DIR` (same format; then every --data subject trains) or a
held-out part of --data (--heldout-fraction of the subjects, stratified on each subject's rarest
selected label). Outputs in --out: manifest.csv, synthetic/ (the pretraining cohort), one folder
per pretrained method, bench/ (results.json + report.html, the `medssl bench` schema; copied to
--out), summary.md.
Usage: python benchmarks/real_ecg_cinc.py [--data DIR] [--eval-data DIR] [--out DIR] [...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_common import (  # noqa: E402
    PART,
    REAL_DATA,
    Stopwatch,
    heldout_split,
    logger,
    machine_line,
    summary_markdown,
    tag_cohorts,
)

log = logger("real-ecg")

# CinC 2021 abbreviations (medssl/ecg/data/snomed_ct_ecg.csv) of rhythm and conduction diagnoses;
# morphology (ST-T, axis, voltage, hypertrophy, infarction, Q/R/T waves) is left out.
RHYTHM = ("AF", "AFL", "AFAFL", "CAF", "PAF", "RAF", "Brady", "SB", "STach", "SA", "NSR", "PAC", "SVPB", "BPAC",
          "PVC", "VPB", "VEB", "VPVC", "VBig", "VTrig", "AB", "SVB", "PR", "AP", "VPP", "AAR", "AED", "AIVR", "AJR",
          "ARH", "ATach", "AVJR", "AVNRT", "AVRT", "BTS", "CD", "FB", "IR", "JE", "JPC", "JTach", "PSVT", "PVT",
          "SAAWR", "SARR", "SND", "SVT", "VEsB", "VEsR", "VF", "VFL", "VTach", "WAP")
CONDUCTION = ("BBB", "CLBBB", "CRBBB", "LBBB", "RBBB", "IRBBB", "ILBBB", "LAnFB", "LPFB", "NSIVCB", "DIB", "IAVB",
              "IIAVB", "IIAVBII", "MoI", "AVB", "CHB", "CIAHB", "AVD", "SAB", "LPR", "SPRI", "WPW", "VPEx")
METHODS = {  # name -> (recipe, display name)
    "jepa": ("ecg_jepa", "ECG-JEPA (synthetic)"),
    "simclr": ("simclr_ecg", "SimCLR (synthetic)"),
    "ts2vec": ("ts2vec_ecg", "TS2Vec (synthetic)"),
    "mae": ("mae_ecg", "MAE (synthetic)"),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REAL_DATA / "ecg_cinc2021"))
    ap.add_argument("--eval-data", default=None, help="a second cohort of the same format to score on")
    ap.add_argument("--out", default="outputs/real_ecg_cinc")
    ap.add_argument("--layout", default="physionet2021", choices=["physionet2021", "wfdb"])
    ap.add_argument("--labels", default=None, help="wfdb layout: labels CSV (for --data; --eval-data finds its own "
                                                   "labels.csv)")
    ap.add_argument("--heldout-fraction", type=float, default=0.4)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--min-positives", type=int, default=5)
    ap.add_argument("--shots", default="1,3,all", help="labelled subjects per label (comma list; 'all')")
    ap.add_argument("--seeds", type=int, default=10, help="draws per few-shot setting")
    ap.add_argument("--methods", default="jepa,simclr,ts2vec,mae", help="pretrained arms (comma list of "
                                                                       + ", ".join(METHODS) + ")")
    ap.add_argument("--checkpoint", default=None, help="ECG-JEPA checkpoint (e.g. outputs/demo/pretrain/checkpoint) "
                                                      "instead of pretraining it here")
    ap.add_argument("--synthetic-subjects", type=int, default=100, help="synthetic subjects per site")
    ap.add_argument("--pretrain-epochs", type=int, default=None, help="default: each cpu recipe's own")
    ap.add_argument("--pretrain-max-steps", type=int, default=None)
    ap.add_argument("--reuse-pretrained", action="store_true",
                    help="use the checkpoints an earlier run left in --out (pretrained with the same settings)")
    ap.add_argument("--no-per-label", action="store_true", help="only the macro task")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    return ap.parse_args(argv)


def index(root: str, layout: str, labels: str | None) -> list[dict]:
    from medssl.data.layouts import index_layout

    root_p = Path(root)
    if layout == "wfdb" and labels is None and (root_p / "labels.csv").is_file():
        labels = str(root_p / "labels.csv")
    rows, skipped = index_layout(layout, root_p, labels=labels)
    if skipped:
        log(f"{root}: {len(skipped)} record(s) skipped while indexing")
    if not rows:
        raise SystemExit(f"{root}: no records indexed")
    return rows


def label_counts(rows: list[dict], names) -> Counter:
    from medssl.data.manifest import split_labels

    c = Counter()
    for subj_labels in {r["subject_id"]: set(split_labels(r.get("labels", ""))) for r in rows}.values():
        c.update(lab for lab in subj_labels if lab in names)
    return c


def pretrain_synthetic(methods: list[str], out: Path, args, clock) -> dict[str, tuple[str, dict]]:
    """Pretrain each method's cpu recipe on the synthetic cohort's site A training subjects, as the
    demo does; name -> (checkpoint path, training metrics)."""
    from medssl.checkpoint import read_card
    from medssl.data.modalities import modality_data
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain

    got = {}
    if args.reuse_pretrained:
        for m in methods:
            folder = out / m / "checkpoint"
            if (folder / "card.json").is_file():
                got[m] = (str(folder), read_card(folder).get("training_metrics", {}))
                log(f"{METHODS[m][0]}: reusing {folder} ({got[m][1].get('steps')} steps)")
        methods = [m for m in methods if m not in got]
        if not methods:
            return got
    clock.start()
    rows, _ = modality_data("ecg").write_synthetic(out / "synthetic", subjects_per_site=args.synthetic_subjects, seed=0)
    pre = [r for r in rows if r["site"] == "site_a" and r["split"] == "train"]
    clock.stop("synthetic cohort")
    log(f"synthetic cohort: {len(rows)} records; pretraining on {len(pre)} records of "
        f"{len({r['subject_id'] for r in pre})} site A training subjects")
    for m in methods:
        recipe = METHODS[m][0]
        overrides = ["variant=cpu", f"data.cache_dir={out / 'cache'}", "trainer.precision=32-true"]
        if args.pretrain_epochs is not None:
            overrides.append(f"optim.epochs={args.pretrain_epochs}")
        if args.pretrain_max_steps is not None:
            overrides.append(f"trainer.max_steps={args.pretrain_max_steps}")
        clock.start()
        ckpt = pretrain(resolve_recipe(recipe, overrides), pre, out / m, resume=False, progress_bar=False)
        metrics = read_card(ckpt).get("training_metrics", {})
        log(f"{recipe}: {metrics.get('steps')} steps in {clock.stop(f'pretrain {m}'):.0f} s")
        got[m] = (str(ckpt), metrics)
    return got


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from medssl.bench.runner import run_benchmark
    from medssl.checkpoint import load_encoder
    from medssl.data.manifest import write_manifest
    from medssl.ecg.neurokit_features import register as register_neurokit

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch()

    clock.start()
    data_rows = index(args.data, args.layout, args.labels)
    eval_rows = index(args.eval_data, args.layout, None) if args.eval_data else None
    wanted = set(RHYTHM) | set(CONDUCTION)
    counts = label_counts(data_rows, wanted)
    candidates = sorted(lab for lab, n in counts.items() if n >= args.min_positives)
    if not candidates:
        raise SystemExit(f"{args.data}: no rhythm or conduction label has {args.min_positives} positive subjects "
                         f"(found: {dict(counts)})")
    train_subj = None if eval_rows else heldout_split(data_rows, None, args.heldout_fraction, args.split_seed,
                                                       label_names=candidates)
    rows = tag_cohorts(data_rows, eval_rows, train_subj)
    domain = "eval-data" if eval_rows else "held-out"
    tr_counts = label_counts([r for r in rows if r[PART] == "train"], candidates)
    ev_rows = [r for r in rows if r[PART] == domain]
    ev_counts = label_counts(ev_rows, candidates)
    n_tr = len({r["subject_id"] for r in rows if r[PART] == "train"})
    n_ev = len({r["subject_id"] for r in ev_rows})
    labels = [lab for lab in candidates if 0 < tr_counts[lab] < n_tr and 0 < ev_counts[lab] < n_ev]
    dropped = sorted(set(candidates) - set(labels))
    if not labels:
        raise SystemExit("no label has positives and negatives in both the training and the evaluation subjects")
    write_manifest(rows, out / "manifest.csv")
    log(f"{len(rows)} records: {n_tr} training, {n_ev} {domain} subjects; labels (train/eval positives): "
        + ", ".join(f"{lab} {tr_counts[lab]}/{ev_counts[lab]}" for lab in labels)
        + (f"; dropped (no positive or negative on one side): {', '.join(dropped)}" if dropped else ""))
    clock.stop("index")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    to_train = [m for m in methods if not (m == "jepa" and args.checkpoint)]
    ckpts = pretrain_synthetic(to_train, out, args, clock) if to_train else {}
    if args.checkpoint and "jepa" in methods:
        ckpts["jepa"] = (str(Path(args.checkpoint).resolve()), {})
    register_neurokit()

    encoders = []
    for m in methods:
        encoders.append({"name": METHODS[m][1], "ref": ckpts[m][0]})
        if m == "jepa":
            spec = load_encoder(ckpts[m][0]).spec
            encoders.append({"name": "random init (ECG-JEPA arch.)", "ref": f"random:{spec.name}:1",
                             "overrides": dict(spec.hparams)})
    if "jepa" not in methods:
        encoders.append({"name": "random init (ECG-JEPA arch.)", "ref": "random:ecg_jepa_tiny:1"})
    encoders.append({"name": "NeuroKit2 features", "ref": "ecg_neurokit_features"})
    shots = [s if s == "all" else int(s) for s in (x.strip() for x in args.shots.split(",")) if s]
    filt = {"train": {PART: "train"}, "eval": {domain: {PART: domain}}}
    tasks = [{"name": "rhythm/conduction (macro)", "dataset": "cinc", "kind": "multilabel", "labels": labels,
              "metrics": ["auroc_macro"], **filt}]
    if not args.no_per_label:
        tasks += [{"name": lab, "dataset": "cinc", "kind": "binary", "labels": [lab], "metrics": ["auroc_macro"],
                   **filt} for lab in labels]
    cfg = {"title": "Real ECGs (CinC 2021 format): rhythm/conduction labels, frozen encoders + logistic probe",
           "n_bootstrap": args.n_bootstrap, "cache_dir": str(out / "cache"), "precision": "32",
           "encoders": encoders, "datasets": {"cinc": {"path": str(out / "manifest.csv")}}, "tasks": tasks,
           "protocols": [{"kind": "linear_probe", "name": "logistic probe (frozen)", "shots": shots,
                          "seeds": args.seeds}]}
    clock.start()
    torch.manual_seed(0)
    doc = run_benchmark(cfg, out / "bench", progress=True)
    clock.stop("bench")

    # results.json + report.html at the top of --out, with the pipeline's facts added.
    pipeline = {"script": "benchmarks/real_ecg_cinc.py", "data": str(Path(args.data).resolve()),
                "eval_data": str(Path(args.eval_data).resolve()) if args.eval_data else None, "domain": domain,
                "n_train_subjects": n_tr, "n_eval_subjects": n_ev, "labels": labels,
                "train_positives": {lab: tr_counts[lab] for lab in labels},
                "eval_positives": {lab: ev_counts[lab] for lab in labels}, "dropped_labels": dropped,
                "pretraining": {m: metrics for m, (_, metrics) in ckpts.items()}, "timing": clock.as_dict(),
                "torch_threads": torch.get_num_threads(),
                "published_reference": "CinC 2021 winners: challenge score ~0.6 on hidden 12-lead test sets, "
                                       "per-label AUROCs mostly 0.9+ when trained on ~88,000 recordings"}
    saved = json.loads(Path(doc["paths"]["json"]).read_text())
    saved["pipeline"] = pipeline
    (out / "results.json").write_text(json.dumps(saved, indent=2, allow_nan=False, default=str) + "\n")
    shutil.copyfile(doc["paths"]["html"], out / "report.html")
    lines = [
        f"# Real ECGs ({domain} subjects): rhythm/conduction labels", "",
        machine_line(),
        f"{n_tr} training, {n_ev} {domain} subjects; labels (train/eval positives): "
        + ", ".join(f"{lab} {tr_counts[lab]}/{ev_counts[lab]}" for lab in labels),
        "pretraining: " + "; ".join(f"{m}: {met.get('steps', 'given')} steps" for m, (_, met) in ckpts.items()),
        *clock.lines(), "",
        "## AUROC macro", "", summary_markdown(doc, "auroc_macro", 3, task="rhythm/conduction (macro)"), "",
        "## Per label (AUROC)", "",
        *[summary_markdown(doc, "auroc_macro", 3, task=lab, comparisons=False).replace(
            "| protocol |", f"| {lab}: protocol |", 1) + "\n" for lab in (labels if not args.no_per_label else [])],
        f"errors: {len(doc['errors'])}", *[f"- {e}" for e in doc["errors"]],
        "notes:", *[f"- {n}" for n in doc["notes"]],
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
