"""`medssl bench CONFIG.yaml [--out DIR]`."""

from __future__ import annotations

import json

import yaml

from medssl.cli import main


def test_bench_cli_writes_results_and_report(bench_config, tmp_path, capsys):
    cfg = bench_config(n_bootstrap=10, protocols=[{"kind": "knn", "k": 3, "shots": [1, "all"], "seeds": 2}])
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and "results.json" in out
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["shots"] for r in data["records"]} == {1, "all"} and data["comparisons"]
    assert (tmp_path / "out" / "results.csv").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_bench_cli_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"encoders": [], "datasets": {}, "tasks": [], "protocols": [], "sedes": 3}))
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"medssl: error: {path}: unknown key 'sedes'; known: title, n_bootstrap, cache_dir, precision, encoders, " \
                  "datasets, tasks, protocols"
    assert main(["bench", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: config file not found" in capsys.readouterr().err
