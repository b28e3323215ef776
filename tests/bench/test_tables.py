"""medssl.bench.load_results: results.json tables as pandas DataFrames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.bench import load_results
from medssl.bench.runner import results_doc, write_results


def _results_json(path):
    agg = [{"kind": "aggregate", "encoder": e, "task": "t", "protocol": "linear", "shots": s, "label_fraction": None,
            "domain": d, "metric": "auroc_macro", "mean": m, "std": 0.01, "ci_low": None if m is None else m - 0.05,
            "ci_high": None if m is None else m + 0.05, "n_seeds": 3, "higher_is_better": True}
           for e, m0 in (("a", 0.8), ("b", 0.6)) for d in ("in", "out") for s, m in ((1, m0), ("all", None))]
    doc = {"schema_version": 1, "title": "x", "created": "2026-01-01T00:00:00+00:00", "aggregates": agg,
           "records": [{"encoder": "a", "seed": 0, "value": 0.7, "warnings": ["w1", "w2"]}],
           "gaps": [{"encoder": "a", "domain_ref": "in", "domain": "out", "gap": 0.1, "ci_low": 0.0, "ci_high": 0.2}],
           "comparisons": [{"encoder_a": "a", "encoder_b": "b", "delta": 0.2, "p_value": 0.01, "p_holm": 0.02}],
           "errors": [],
           "ranking": [{"domain": "in", "n_tasks": 1, "rows": [{"encoder": "a", "position": 1, "mean_rank": 1.0},
                                                               {"encoder": "b", "position": 2, "mean_rank": 2.0}]}]}
    path.write_text(json.dumps(doc))
    return doc


def test_results_json_tables(tmp_path):
    _results_json(tmp_path / "results.json")
    df = load_results(tmp_path)  # the folder works as well as the file
    assert len(df) == 8 and "kind" not in df.columns
    assert df["mean"].dtype == np.float64 and df["mean"].isna().sum() == 4  # null -> NaN
    assert set(df["shots"]) == {1, "all"}
    assert df.attrs["table"] == "aggregates" and df.attrs["source"].endswith("results.json")
    a_in = df[(df.encoder == "a") & (df.domain == "in") & (df.shots == 1)]
    assert a_in["ci_high"].item() == pytest.approx(0.85)
    assert load_results(tmp_path / "results.json", "records")["warnings"][0] == ["w1", "w2"]
    assert load_results(tmp_path, "gaps")["gap"].item() == 0.1
    assert load_results(tmp_path, "comparisons")["p_holm"].item() == 0.02
    assert load_results(tmp_path, "errors").empty
    rank = load_results(tmp_path, "ranking")
    assert list(rank["encoder"]) == ["a", "b"] and list(rank["domain"]) == ["in", "in"]


def test_tables_of_results_written_by_write_results(tmp_path):
    rows = [{"kind": "aggregate", "encoder": "e", "domain": d, "shots": 5, "metric": "auroc_macro", "mean": 0.7,
             "ci_low": 0.6, "ci_high": 0.8} for d in ("in", "out")]
    rows.append({"kind": "run", "encoder": "e", "domain": "in", "shots": 5, "seed": 0, "value": 0.7})
    write_results(results_doc(rows, title="few-shot", config={}), tmp_path)
    df = load_results(tmp_path)
    assert list(df["domain"]) == ["in", "out"] and df.attrs["title"] == "few-shot"
    assert load_results(tmp_path / "results.json", "records")["seed"].tolist() == [0]
    assert load_results(tmp_path, "gaps").empty


def test_load_results_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no results.json"):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "missing.json")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"auc": 0.5}')
    with pytest.raises(ValueError, match="not a medssl results.json"):
        load_results(tmp_path)
    _results_json(tmp_path / "results.json")
    with pytest.raises(ValueError, match="unknown table 'runs'.*aggregates"):
        load_results(tmp_path, "runs")
