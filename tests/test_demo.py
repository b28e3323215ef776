"""The demo end to end at a tiny size: data -> pretraining -> `medssl bench` -> audit -> report."""

from __future__ import annotations

import json

from medssl.demo import run_demo


def test_demo_writes_a_report_comparing_pretrained_and_random_init_in_and_out_of_domain(tmp_path):
    out = run_demo(
        tmp_path / "demo", subjects_per_site=40, epochs=1, seeds=2, shots=(1, "all"), n_bootstrap=50,
        overrides=("encoder.overrides.depth=1", "encoder.overrides.embed_dim=32", "encoder.overrides.num_heads=2",
                   "predictor.dim=16", "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=8"),
        progress_bar=False,
    )
    report = json.loads(out["json"].read_text())  # the benchmark's results.json, with the demo's notes
    assert out["json"].name == "results.json" and report["schema_version"] == 1
    results = report["aggregates"]
    assert {r["encoder"] for r in results} == {"ecg_jepa (pretrained)", "random init"}
    assert {r["domain"] for r in results} == {"in", "out"}
    assert {r["shots"] for r in results} == {1, "all"}
    assert all(r["metric"] == "auroc_macro" for r in results)
    measured = [r for r in results if r["mean"] is not None]
    assert len(measured) >= 6
    assert all(r["ci_low"] <= r["mean"] <= r["ci_high"] for r in measured)
    assert len(report["comparisons"]) == 4
    assert sum("pretraining steps" in n for n in report["notes"]) == 2
    assert any(n.startswith("Privacy (LOSS attack") for n in report["notes"])
    assert (out["json"].parent / "audit" / "audit.json").is_file()
    html = out["html"].read_text()
    assert "random init" in html and "ecg_jepa (pretrained)" in html
    card = json.loads((out["checkpoint"] / "card.json").read_text())
    assert card["benchmarks"] and card["benchmarks"][0]["results"]
    assert not any(s in out["json"].read_text() for s in ("Age:", "Sex:"))
    # the numbers are the benchmark's: the packaged bench_ecg_demo task run by run_benchmark
    assert report["demo"]["packaged_config"] == "bench_ecg_demo"
    assert {t["name"] for t in report["config"]["tasks"]} == {"six conditions"}
    assert len(report["records"]) == 2 * 2 * (2 + 1) and (out["json"].parent / "results.csv").is_file()
    assert [(r["encoder"], r["domain"], r["shots"], r["mean"]) for r in card["benchmarks"][0]["results"]] == [
        (a["encoder"], a["domain"], a["shots"], a["mean"]) for a in results]
