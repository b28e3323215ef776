"""`run_benchmark` on synthetic OCTA: vessel segmentation across label fractions (Dice, NSD, HD95, IoU
with intervals, paired comparisons, rank stability, overlays in the report) and a disease probe, for a
freshly pretrained VAMAE checkpoint against random initialisation; and the demo config's wiring."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medssl.bench.config import load_bench_config
from medssl.bench.runner import run_benchmark
from medssl.bench.tasks import matches
from medssl.engine.config import resolve_recipe
from medssl.engine.pretrain import pretrain
from medssl.retina.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
ARCH = {"depth": 1, "embed_dim": 32, "num_heads": 2, "image_size": SIZE}
COHORT = {"modality": "retina", "n_subjects": 16, "size": SIZE, "seed": 0}
TRAIN = {"site": "synthetic_A", "split": "train"}
EVAL = {"in": {"site": "synthetic_A", "split": ["val", "test"]}, "out": {"site": "synthetic_B"}}
FRACTIONS = (0.5, 1.0)
SEEDS = (0, 1)
SEG_METRICS = ("dice", "nsd", "hd95", "iou")
ENCODERS = ("VAMAE", "random init")


def _config(checkpoint: Path, cache: Path) -> dict:
    return {
        "title": "synthetic OCTA test", "n_bootstrap": 200, "cache_dir": str(cache),
        "encoders": [{"name": "VAMAE", "ref": str(checkpoint)},
                     {"name": "random init", "ref": "random:retina_vit_tiny:0", "overrides": ARCH}],
        "datasets": {"vessels": {"synthetic": {**COHORT, "task": "vessel"}},
                     "disease": {"synthetic": {**COHORT, "task": "disease"}}},
        "tasks": [
            {"name": "vessel segmentation", "dataset": "vessels", "kind": "segmentation", "train": TRAIN, "eval": EVAL},
            {"name": "DR", "dataset": "disease", "kind": "binary", "labels": ["DR"],
             "metrics": ["auroc_macro", "balanced_accuracy"], "train": TRAIN, "eval": EVAL},
        ],
        "protocols": [
            {"kind": "segmentation", "name": "mask decoder", "decoder": "mask_decoder", "label_fractions": list(FRACTIONS),
             "seeds": len(SEEDS), "epochs": 2, "batch_size": 4, "width": 8},
            {"kind": "linear_probe", "shots": ["all"], "seeds": 1},
        ],
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One benchmark run: a VAMAE checkpoint pretrained for one epoch on other synthetic eyes, and a
    random-init encoder of the same architecture; returns (results, the vessel task's manifest rows)."""
    root = tmp_path_factory.mktemp("octa-bench")
    pool, _ = write_synthetic(root / "pool", n_subjects=6, size=SIZE, seed=1, task="", sites=["A"], splits="none")
    overrides = ["variant=cpu", "optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=3",
                 f"data.shape=[{SIZE}, {SIZE}]", "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2",
                 f"data.cache_dir={root / 'cache'}",
                 *(f"encoder.overrides.{k}={v}" for k, v in ARCH.items() if k != "image_size")]
    checkpoint = pretrain(resolve_recipe("vamae_octa", overrides), pool, root / "vamae", progress_bar=False)
    doc = run_benchmark(_config(checkpoint, root / "cache"), root / "out", progress=False)
    rows, _ = write_synthetic(root / "out" / "data" / "vessels", **{k: v for k, v in COHORT.items() if k != "modality"},
                              task="vessel")  # the replica the run wrote, indexed again (reused, not rewritten)
    return doc, rows


def test_segmentation_records_cover_every_encoder_fraction_seed_domain_and_metric(bench):
    doc, rows = bench
    assert doc["errors"] == []
    seg = [r for r in doc["records"] if r["task_kind"] == "segmentation"]
    got = Counter((r["encoder"], r["label_fraction"], r["seed"], r["domain"], r["metric"]) for r in seg)
    want = {(e, f, s, d, m) for e in ENCODERS for f in FRACTIONS for s in SEEDS for d in EVAL for m in SEG_METRICS}
    assert set(got) == want and set(got.values()) == {1}
    train = matches(rows, {k: (v,) for k, v in TRAIN.items()})
    n_eval = {d: int(matches(rows, {k: tuple(v) if isinstance(v, list) else (v,) for k, v in f.items()}).sum())
              for d, f in EVAL.items()}
    for r in seg:
        assert r["n_eval_records"] == n_eval[r["domain"]]
        if r["label_fraction"] == 1.0:
            assert r["n_train_subjects"] == int(train.sum())
        else:
            assert 1 <= r["n_train_subjects"] < int(train.sum())
        value = r["value"]
        assert value is not None and math.isfinite(value)
        assert value >= 0 if r["metric"] == "hd95" else 0 <= value <= 1
    # paired: every encoder trains on the same drawn subjects
    draws = {}
    for r in seg:
        draws.setdefault((r["label_fraction"], r["seed"]), set()).add(r["draw"])
    assert all(len(v) == 1 for v in draws.values())
    assert len({draws[(0.5, s)].pop() for s in SEEDS}) == len(SEEDS)  # new seed, new draw


def test_aggregates_carry_intervals_and_comparisons_p_values(bench):
    doc, _ = bench
    seg = [a for a in doc["aggregates"] if a["task_kind"] == "segmentation"]
    assert {(a["encoder"], a["label_fraction"], a["domain"], a["metric"]) for a in seg} == {
        (e, f, d, m) for e in ENCODERS for f in FRACTIONS for d in EVAL for m in SEG_METRICS}
    for a in seg:
        assert a["n_seeds"] == len(SEEDS)
        assert a["ci_low"] - 1e-9 <= a["mean"] <= a["ci_high"] + 1e-9
        assert a["higher_is_better"] == (a["metric"] != "hd95")
    comps = [c for c in doc["comparisons"] if c["task_kind"] == "segmentation"]
    assert {(c["encoder_a"], c["encoder_b"]) for c in comps} == {ENCODERS}
    assert len(comps) == len(FRACTIONS) * len(EVAL) * len(SEG_METRICS)
    assert all(0 <= c["p_value"] <= 1 and c["ci_low"] <= c["ci_high"] for c in comps)
    gaps = [g for g in doc["gaps"] if g["task_kind"] == "segmentation"]
    assert {(g["domain_ref"], g["domain"]) for g in gaps} == {("in", "out")}


def test_disease_probe_runs_in_the_same_benchmark(bench):
    doc, _ = bench
    cls = [r for r in doc["records"] if r["task"] == "DR"]
    assert {(r["encoder"], r["domain"], r["metric"]) for r in cls} == {
        (e, d, m) for e in ENCODERS for d in EVAL for m in ("auroc_macro", "balanced_accuracy")}
    out = [r["value"] for r in cls if r["domain"] == "out"]
    assert all(v is not None and 0 <= v <= 1 for v in out)


def test_ranking_has_position_frequencies(bench):
    doc, _ = bench
    assert {b["domain"] for b in doc["ranking"]} == set(EVAL)
    for block in doc["ranking"]:
        freq = block["position_frequencies"]
        assert set(freq) == set(ENCODERS)
        assert all(len(f) == len(ENCODERS) and np.isclose(sum(f), 1.0) for f in freq.values())
        # competition ranking: someone is first in every replicate (ties share the position)
        assert sum(f[0] for f in freq.values()) >= 1.0 - 1e-9


def test_report_shows_overlays_and_domain_bars(bench):
    doc, _ = bench
    html = Path(doc["paths"]["html"]).read_text()
    assert html.count("data:image/png;base64,") >= len(ENCODERS)  # segmentation overlays
    assert 'aria-label="dice by domain' in html  # in/out bars with intervals
    assert "vessel segmentation" in html and "VAMAE" in html


def test_the_demo_config_is_valid_and_wired_to_the_pipeline():
    """recipes/bench_octa_demo.yaml parses, points at the pipeline's checkpoints, and its cohort settings
    are ones the retina writer takes."""
    import inspect

    from medssl.retina.synthetic import write_synthetic as writer

    path = REPO / "recipes" / "bench_octa_demo.yaml"
    cfg = load_bench_config(path)
    refs = [e.ref for e in cfg.encoders]
    assert refs[-1] == "random:retina_vit_tiny:0"
    # a packaged example's relative paths mean the working directory (the repository, for the pipeline)
    assert [cfg.base / r for r in refs[:2]] == [
        Path.cwd() / "outputs" / "octa" / "vamae" / "checkpoint", Path.cwd() / "outputs" / "octa" / "mae" / "checkpoint"]
    accepted = inspect.signature(writer).parameters
    for d in cfg.datasets.values():
        assert d.synthetic["modality"] == "retina"
        assert all(k in accepted for k in d.synthetic if k != "modality")
    seg = [p for p in cfg.protocols if p.kind == "segmentation"]
    assert {p.finetune["decoder"] for p in seg} == {"mask_decoder"}
    assert [f for p in seg for f in p.label_fractions] == [0.01, 0.1, 0.5, 1.0]
    assert all(p.seeds == (0, 1, 2) for p in seg)
    assert {t.kind for t in cfg.tasks} == {"segmentation", "binary"}


@pytest.mark.slow
def test_the_pipeline_script_runs_quick(tmp_path):
    """benchmarks/bench_octa_pipeline.py --quick: pool, both pretrainings, the demo benchmark, summary."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_octa_pipeline", REPO / "benchmarks" / "bench_octa_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.main(["--quick", "--out", str(tmp_path)])
    assert doc["errors"] == []
    assert set(doc["encoders"]) == {"VAMAE", "MAE", "random init"}
    summary = (tmp_path / "bench" / "summary.md").read_text()
    assert "VAMAE - MAE" in summary and "decoder mask_decoder, frozen" in summary
    assert (tmp_path / "bench" / "report.html").is_file()
