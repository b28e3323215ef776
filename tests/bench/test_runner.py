"""`run_benchmark` end to end on a tiny synthetic cohort with two tiny random encoders."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import numpy as np
import pytest

from medssl.bench import runner
from medssl.bench.config import BenchConfigError
from medssl.bench.runner import ContractError, check_contract, run_benchmark


def _run(bench_config, out, **changes):
    return run_benchmark(bench_config(**changes), out, progress=False)


def test_records_aggregates_gaps_comparisons_and_paired_draws(bench_config, tmp_path):
    doc = _run(bench_config, tmp_path / "b")
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    assert data["schema_version"] == 1 and not data["errors"]
    recs = data["records"]
    assert {r["encoder"] for r in recs} == {"rand0", "rand1"}
    assert {r["domain"] for r in recs} == {"in", "out"}
    assert {r["metric"] for r in recs} == {"auroc_macro", "auprc"}
    lp = [r for r in recs if r["protocol"] == "linear_probe"]
    assert {r["shots"] for r in lp} == {1, "all"}  # k=3 skipped: STTC has 2 training subjects
    assert {r["seed"] for r in lp if r["shots"] == 1} == {0, 1} and {r["seed"] for r in lp if r["shots"] == "all"} == {0}
    knn = [r for r in recs if r["protocol"] == "knn"]
    assert {r["label_fraction"] for r in knn} == {0.5, 1.0} and all(r["shots"] is None for r in knn)
    assert all(r["k"] == 3 for r in knn)
    # 2 encoders x (lp: 2 seeds + 1, knn: 2 seeds + 1) x 2 domains x 2 metrics
    assert len(recs) == 2 * 6 * 2 * 2
    # paired: for every setting/seed both encoders trained on the same subjects
    draws = defaultdict(set)
    for r in recs:
        draws[(r["protocol"], r["shots"], r["label_fraction"], r["seed"])].add((r["encoder"], r["draw"],
                                                                               r["n_train_subjects"]))
    for key, seen in draws.items():
        assert {e for e, _, _ in seen} == {"rand0", "rand1"}
        assert len({(d, n) for _, d, n in seen}) == 1, key
    assert len({d for (p, s, f, seed), v in draws.items() if p == "linear_probe" and s == 1 for _, d, _ in v}) == 2
    # every multilabel 1-shot draw: 1 subject per class pool, at least 3 and at most 4 subjects
    assert all(3 <= r["n_train_subjects"] <= 4 for r in lp if r["shots"] == 1)

    aggs = data["aggregates"]
    assert len(aggs) == 2 * 4 * 2 * 2  # encoders x settings x domains x metrics
    for a in aggs:
        if a["mean"] is not None and a["ci_low"] is not None:
            assert a["ci_low"] <= a["ci_high"] and 0 <= a["mean"] <= 1
    one = next(a for a in aggs if a["encoder"] == "rand0" and a["shots"] == 1 and a["domain"] == "out"
           and a["metric"] == "auroc_macro")
    vals = [r["value"] for r in recs if r["encoder"] == "rand0" and r["shots"] == 1 and r["domain"] == "out"
            and r["metric"] == "auroc_macro"]
    assert one["n_seeds"] == 2 and one["mean"] == pytest.approx(np.mean(vals))
    gaps = data["gaps"]
    assert len(gaps) == 2 * 4 * 2 and {g["domain_ref"] for g in gaps} == {"in"} and {g["domain"] for g in gaps} == {"out"}
    g = next(g for g in gaps if g["encoder"] == "rand0" and g["shots"] == 1 and g["metric"] == "auroc_macro")
    a_in = next(a for a in aggs if a["encoder"] == "rand0" and a["shots"] == 1 and a["domain"] == "in"
            and a["metric"] == "auroc_macro")
    assert g["gap"] == pytest.approx(a_in["mean"] - one["mean"])
    comps = data["comparisons"]
    assert len(comps) == 4 * 2 * 2 and all(c["encoder_a"] == "rand0" and c["encoder_b"] == "rand1" for c in comps)
    assert all(c["p_value"] is None or 0 < c["p_value"] <= 1 for c in comps)
    assert any("k=3 skipped" in n and "'STTC' has 2" in n for n in data["notes"])
    ranking = {b["domain"]: b for b in data["ranking"]}
    assert set(ranking) == {"in", "out"} and ranking["in"]["n_tasks"] == 4
    assert sorted(r["position"] for r in ranking["out"]["rows"]) in ([1, 2], [1, 1])
    for block in ranking.values():  # rank stability over the bootstrap replicates
        freq = block["position_frequencies"]
        assert set(freq) == {r["encoder"] for r in block["rows"]} and block["n_bootstrap"] == data["config"]["n_bootstrap"]
        for fractions in freq.values():
            assert len(fractions) == 2 and all(0 <= f <= 1 for f in fractions) and sum(fractions) >= 1 - 1e-9

    with (tmp_path / "b" / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(recs)
    for row, rec in zip(rows, recs):
        assert row["encoder"] == rec["encoder"] and row["domain"] == rec["domain"] and row["draw"] == rec["draw"]
        assert row["seed"] == str(rec["seed"]) and row["metric"] == rec["metric"]
        assert (row["value"] == "" and rec["value"] is None) or float(row["value"]) == pytest.approx(rec["value"])
    html = (tmp_path / "b" / "report.html").read_text()
    assert "Ranking" in html and "conditions" in html and "knn" in html and "label fraction" in html and "k=3 skipped" in html
    assert doc["paths"]["html"].name == "report.html"


def test_embeddings_are_reused_on_a_second_run(bench_config, tmp_path):
    cfg = {"protocols": [{"kind": "knn", "k": 3, "shots": ["all"], "seeds": 1}], "n_bootstrap": 10}
    _run(bench_config, tmp_path / "b", **cfg)
    files = sorted((tmp_path / "b" / "embeddings").glob("*.npz"))
    assert [f.name for f in files] == ["rand0__syn.npz", "rand1__syn.npz"]
    stamps = [f.stat().st_mtime_ns for f in files]
    z = np.load(files[0])
    assert z["embeddings"].shape == (40, 32) and z["record_id"].shape == (40,)
    first = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    _run(bench_config, tmp_path / "b", **cfg)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    second = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    assert [r["value"] for r in first] == [r["value"] for r in second]


def test_contract_mismatch_is_refused_naming_what_differs(bench_config, bench_cohort, tmp_path):
    from medssl.data.manifest import write_manifest

    rows = [dict(r, leads="I;II;III;aVR;aVL;aVF") for r in bench_cohort["rows"]]
    manifest = write_manifest(rows, tmp_path / "limb_only.csv")
    cfg = bench_config(datasets={"syn": {"path": str(manifest)}})
    with pytest.raises(ContractError, match=r"^<config>: encoder 'rand0' cannot read dataset 'syn': leads: 40 of 40 "
                                            r"records lack V1, V2, V3, V4, V5, V6"):
        run_benchmark(cfg, tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "embeddings").exists()  # refused before embedding anything


def test_check_contract_rate_length_and_derivable_leads():
    need = {"leads": ["I", "II", "III", "V1"], "sampling_rate": 250.0, "num_samples": 2500}
    ok = [{"leads": "I;II;V1", "sampling_rate": "500", "n_samples": "5000"}]  # III derived from I and II
    check_contract(need, ok, encoder="e", dataset="d")
    with pytest.raises(ContractError, match=r"rate: sampled at 100 Hz, below the encoder's 250 Hz"):
        check_contract(need, [{"leads": "I;II;V1", "sampling_rate": "100", "n_samples": "1000"}], encoder="e",
                       dataset="d")
    with pytest.raises(ContractError, match=r"length: 5.00 s, shorter than the encoder's 10 s window"):
        check_contract(need, [{"leads": "I;II;V1", "sampling_rate": "250", "n_samples": "1250"}], encoder="e",
                       dataset="d")
    with pytest.raises(ContractError, match=r"missing lead\(s\) II, III; the record has I, V1"):
        check_contract(need, [{"leads": "I;V1", "sampling_rate": "250", "n_samples": "2500"}], encoder="e",
                       dataset="d")


def test_a_crashing_probe_becomes_an_error_row_and_the_rest_runs(bench_config, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = runner.knn_probe

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "knn_probe", flaky)
    # one probe worker, so the first call is the first job (rand0, seed 0); with parallel workers
    # which job calls first depends on thread scheduling
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 1)
    doc = _run(bench_config, tmp_path / "b", n_bootstrap=10,
               protocols=[{"kind": "knn", "k": 3, "label_fractions": [0.5], "seeds": 2}])
    assert len(doc["errors"]) == 1
    err = doc["errors"][0]
    assert err["encoder"] == "rand0" and err["seed"] == 0 and err["error"] == "RuntimeError: boom"
    assert {(r["encoder"], r["seed"]) for r in doc["records"]} == {("rand0", 1), ("rand1", 0), ("rand1", 1)}
    agg = [a for a in doc["aggregates"] if a["encoder"] == "rand0"]
    assert agg and all(a["n_seeds"] == 1 for a in agg)
    assert not doc["comparisons"]  # no pair with every seed
    assert any("rand0 failed" in n and "boom" in n for n in doc["notes"])


def test_regression_task_with_label_fractions(bench_config, tmp_path):
    task = {"name": "rate", "dataset": "syn", "kind": "regression", "column": "sampling_rate",
            "train": {"site": ["site_a"], "split": "train"}, "eval": {"in": {"site": "site_a", "split": "test"}}}
    doc = _run(bench_config, tmp_path / "b", tasks=[task], n_bootstrap=10,
               protocols=[{"kind": "linear_probe", "shots": [1], "seeds": 1},
                          {"kind": "knn", "k": 2, "label_fractions": [1.0], "seeds": 1}])
    assert {r["metric"] for r in doc["records"]} == {"mae", "pearson_r"}
    mae = [r["value"] for r in doc["records"] if r["metric"] == "mae"]
    assert mae == pytest.approx([0.0, 0.0])  # a constant target (500 Hz on site A) is predicted exactly
    assert any("shots need classes" in n for n in doc["notes"])


def test_binary_and_multiclass_tasks(bench_config, tmp_path):
    split = {"train": {"site": "site_a", "split": "train"}, "eval": {"in": {"site": "site_a", "split": "test"},
                                                                      "out": {"site": "site_b"}}}
    metrics = ["auroc_macro", "auprc", "f1_macro", "balanced_accuracy"]
    tasks = [{"name": "norm", "dataset": "syn", "kind": "binary", "labels": ["NORM"], "metrics": metrics, **split},
             {"name": "norm_vs_sttc", "dataset": "syn", "kind": "multiclass", "labels": ["NORM", "STTC"],
              "metrics": metrics, **split}]
    doc = _run(bench_config, tmp_path / "b", tasks=tasks, n_bootstrap=10,
               protocols=[{"kind": "knn", "k": 3, "shots": [1, "all"], "seeds": 1}])
    assert not doc["errors"]
    for task in ("norm", "norm_vs_sttc"):
        recs = [r for r in doc["records"] if r["task"] == task]
        assert {r["metric"] for r in recs} == set(metrics) and {r["shots"] for r in recs} == {1, "all"}
        vals = [r["value"] for r in recs if r["value"] is not None]
        assert vals and all(0 <= v <= 1 for v in vals)
    mc = [r for r in doc["records"] if r["task"] == "norm_vs_sttc" and r["shots"] == 1]
    assert all(r["n_train_subjects"] == 2 for r in mc)  # one subject per class, no no-finding pool
    assert any(n.startswith("task norm_vs_sttc:") and "without exactly one of the classes" in n for n in doc["notes"])


def test_bad_encoder_ref_names_the_encoder(bench_config, tmp_path):
    cfg = bench_config(encoders=[{"name": "x", "ref": "random:no_such_encoder"}])
    with pytest.raises(BenchConfigError, match=r"^<config>: encoder 'x': .*no_such_encoder"):
        run_benchmark(cfg, tmp_path / "b", progress=False)


def test_embedding_extraction_resumes_from_finished_chunks(bench_config, tmp_path, monkeypatch):
    from medssl.bench import inputs
    from medssl.engine import embed

    monkeypatch.setattr(inputs, "EMBED_CHUNK", 8)
    calls = []
    real = embed.embed_arrays

    def crash_on_third(model, arrays, *a, **k):
        calls.append(len(arrays))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, arrays, *a, **k)

    monkeypatch.setattr(embed, "embed_arrays", crash_on_third)
    cfg = bench_config(protocols=[{"kind": "knn", "k": 3, "shots": ["all"], "seeds": 1}])
    cfg["encoders"] = cfg["encoders"][:1]
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg, tmp_path / "b", progress=False)
    assert len(list((tmp_path / "b" / "embeddings").glob("*.parts/*.npy"))) == 2
    calls.clear()
    monkeypatch.setattr(embed, "embed_arrays", real)
    doc = run_benchmark(cfg, tmp_path / "b", progress=False)
    assert doc["records"] and not list((tmp_path / "b" / "embeddings").glob("*.parts"))
