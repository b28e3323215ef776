"""The demo: the whole main job on built-in synthetic data, on a CPU, in minutes.

1. Generate a two-site synthetic 12-lead ECG cohort and write it as WFDB records + labels.csv.
2. Index it into a manifest (subject-level splits).
3. Pretrain a CPU-sized ECG-JEPA on site A's training subjects (labels unused).
4. Benchmark it with `medssl bench` (:func:`medssl.bench.runner.run_benchmark`) on the packaged
   ``bench_ecg_demo`` config pointed at the demo's manifest (:func:`demo_bench_config`): the
   pretrained encoder against a randomly initialised encoder of the same architecture (the
   control), few-shot linear probes (k labelled subjects per class, several seeds, same draws for
   both encoders) trained on site A; macro AUROC over the six conditions on site A's test subjects
   (in-domain) and on every site B subject (out-of-domain), with bootstrap intervals over subjects
   and paired comparisons.
5. A subject-level membership-inference audit (LOSS attack, :func:`medssl.privacy.audit.run_audit`)
   of the pretrained encoder: its training subjects against site A subjects it never saw, in `audit/`.
6. Write the benchmark's results.json, results.csv and report.html with the demo's notes and a
   ``demo`` entry (what was pretrained on what, precisions, the packaged config).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medssl.bench.runner import run_benchmark, write_results
from medssl.checkpoint import load_encoder, read_card, update_card
from medssl.data.layouts import index_layout
from medssl.data.manifest import write_manifest
from medssl.ecg.synthetic import CONDITIONS, generate_cohort, write_wfdb_cohort
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain

IN_SITE, OUT_SITE = "site_a", "site_b"
log = logging.getLogger(__name__)
DOMAIN_WORDS = {"in": "In-domain", "out": "Out-of-domain"}
DEMO_BENCH = "bench_ecg_demo"  # the packaged benchmark the demo runs (medssl/recipes/bench_ecg_demo.yaml)
PRETRAINED, RANDOM_INIT = "ecg_jepa (pretrained)", "random init"
TITLE = "medssl demo: ECG-JEPA few-shot linear probe, pretrained vs random initialisation"


def comparison_notes(results: list[dict], steps: int | None) -> list[str]:
    """One sentence per domain on pretrained vs random init with all labels, as measured; the
    verdict is at Holm-adjusted p < 0.05 over all the comparisons of the report (the same family
    as results.json's `p_holm`)."""
    from medssl.bench.report import adjust_comparisons, comparison_verdict

    notes = []
    for row in adjust_comparisons([dict(r) for r in results if r.get("kind") == "comparison"]):
        if row.get("shots") != "all":
            continue
        verdict = comparison_verdict(row)
        notes.append(
            f"{DOMAIN_WORDS.get(row['domain'], row['domain'])}, all labels: {row['encoder_a']} is {verdict} {row['encoder_b']} "
            f"(AUROC difference {row['delta']:+.3f}, 95% CI [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], "
            f"p = {row['p_value']:.3f}, Holm-adjusted {row['p_holm']:.3f}) after {steps} pretraining steps on a CPU budget."
        )
    return notes


def demo_audit(ckpt: Path, rows: list[dict], pretrain_rows: list[dict], out: Path) -> dict | None:
    """LOSS membership audit of the pretrained encoder: its training subjects against the
    subjects of the same site it never saw (same source, disjoint subjects). None when the
    cohort is too small to audit."""
    from medssl.privacy.audit import run_audit

    members = {r["subject_id"] for r in pretrain_rows}
    nonmembers = [r for r in rows if r["site"] == IN_SITE and r["subject_id"] not in members]
    try:
        return run_audit(ckpt, pretrain_rows, nonmembers, threat="score", attack="loss", n_queries=2, out_dir=out)
    except ValueError as e:
        log.warning("privacy audit skipped: %s", e)
        return None


def audit_notes(audit: dict | None) -> list[str]:
    if audit is None:
        return ["Privacy audit skipped: too few subjects."]
    tpr = audit["tpr_at_fpr"]["0.1"]
    return [
        f"Privacy (LOSS attack on the SSL loss, {audit['n_members']} member vs {audit['n_nonmembers']} "
        f"non-member subjects): AUC {audit['auc']:.3f} [{audit['auc_ci'][0]:.3f}, {audit['auc_ci'][1]:.3f}], "
        f"TPR at 10% FPR {tpr['value']:.3f} [{tpr['ci_low']:.3f}, {tpr['ci_high']:.3f}]; null check AUC "
        f"{audit['null_check']['auc']:.3f}. Full audit: audit/report.html."
    ]


def demo_bench_config(manifest: Path, checkpoint: Path, random_encoder: tuple[str, int, dict], *, seeds: int,
                      shots: tuple, n_bootstrap: int, cache_dir: Path) -> dict:
    """The packaged ``bench_ecg_demo`` benchmark pointed at the demo's own data and encoders: its
    task (six conditions, trained on site A's training subjects, evaluated in-domain on site A's
    test subjects and out-of-domain on every site B subject) and linear-probe protocol, scored on
    the demo's headline metric (macro AUROC), for the pretrained checkpoint against a random
    initialisation of the same architecture (``random_encoder``: (registry name, seed, factory
    arguments))."""
    from medssl.engine.config import find_bench_config, load_yaml

    packaged = load_yaml(find_bench_config(DEMO_BENCH))
    task = next(t for t in packaged["tasks"] if t["kind"] == "multilabel")
    probe = next(p for p in packaged["protocols"] if p["kind"] == "linear_probe")
    name, seed, hparams = random_encoder
    return {
        "title": TITLE,
        "n_bootstrap": n_bootstrap,
        "cache_dir": str(cache_dir),
        "encoders": [{"name": PRETRAINED, "ref": str(checkpoint)},
                     {"name": RANDOM_INIT, "ref": f"random:{name}:{seed}", "overrides": dict(hparams)}],
        "datasets": {"demo": {"path": str(manifest)}},
        "tasks": [{**task, "dataset": "demo", "metrics": ["auroc_macro"]}],
        "protocols": [{**probe, "shots": list(shots), "seeds": seeds}],
    }


def run_demo(
    out: str | Path,
    *,
    subjects_per_site: int = 200,
    epochs: int | None = None,
    seeds: int = 5,
    shots: tuple = (1, 5, 10, 50, "all"),
    n_bootstrap: int = 1000,
    overrides: tuple[str, ...] = (),
    progress_bar: bool = True,
) -> dict:
    """Run the demo into `out`; returns paths and timings."""
    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    cohort = generate_cohort(2 * subjects_per_site, records_per_subject=(1, 3), seed=0)
    data_dir = out / "data"
    write_wfdb_cohort(cohort, data_dir)
    rows, skipped = index_layout("synthetic", data_dir)
    manifest = write_manifest(rows, out / "manifest.csv")
    timings["data_s"] = time.perf_counter() - t0

    cache_dir = out / "cache"
    recipe_overrides = ["variant=cpu", f"data.cache_dir={cache_dir}", *overrides]
    if epochs is not None:
        recipe_overrides.append(f"optim.epochs={epochs}")
    cfg = resolve_recipe("ecg_jepa", recipe_overrides)
    pretrain_rows = [r for r in rows if r["site"] == IN_SITE and r["split"] == "train"]
    t = time.perf_counter()
    ckpt = pretrain(cfg, pretrain_rows, out / "pretrain", progress_bar=progress_bar)
    timings["pretrain_s"] = time.perf_counter() - t

    spec = load_encoder(ckpt).spec
    bench_cfg = demo_bench_config(manifest, ckpt, (spec.name, cfg["seed"] + 1, spec.hparams), seeds=seeds,
                                  shots=shots, n_bootstrap=n_bootstrap, cache_dir=cache_dir)
    bench = run_benchmark(bench_cfg, out, progress=progress_bar)
    timings.update({k: bench["timings_s"][k] for k in ("embed_s", "evaluate_s")})

    t = time.perf_counter()
    audit = demo_audit(ckpt, rows, pretrain_rows, out / "audit")
    timings["audit_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    card = read_card(ckpt)
    results = bench["records"] + bench["aggregates"] + bench["gaps"] + bench["comparisons"]
    doc = {k: v for k, v in bench.items() if k != "paths"}
    doc["notes"] = [
        "Synthetic data (medssl.ecg.synthetic): the numbers show the pipeline works end to end; "
        "they say nothing about real ECGs.",
        *comparison_notes(results, card["training_metrics"].get("steps")),
        *audit_notes(audit),
        f"{len(skipped) + len({s['record'] for s in bench['skipped']})} records skipped.",
        *bench["notes"],
    ]
    doc["demo"] = {
        "task": "multi-label: " + ", ".join(CONDITIONS),
        "metric": "macro AUROC over conditions present in the evaluation set",
        "pretraining": f"{cfg['encoder']['name']} on {len(pretrain_rows)} records of "
                       f"{len({r['subject_id'] for r in pretrain_rows})} {IN_SITE} training subjects, "
                       f"{cfg['optim']['epochs']} epochs",
        "probe_training": f"{IN_SITE} training subjects, k per class",
        "domains": {"in": f"{IN_SITE} test subjects", "out": f"all {OUT_SITE} subjects (never trained on)"},
        "precision": {"pretraining": card["recipe"]["trainer"]["precision"],
                      "pretraining_probe": card["recipe"]["trainer"].get("precision_probe"),
                      "embeddings": bench["machine"]["precision"]["embeddings"]},
        "packaged_config": DEMO_BENCH,
    }
    doc["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    paths = write_results(doc, out)
    update_card(ckpt, "benchmarks", {"report": str(paths["json"]), "encoder": PRETRAINED, "results": doc["aggregates"]})
    return {**paths, "checkpoint": ckpt, "timings": timings, "results": doc}
