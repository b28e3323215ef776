"""A benchmark dataset given as streaming shards (`datasets.NAME.stream`) scores as the same
dataset given as its manifest: the shards hold the memory-map cache's arrays and the rows'
record, subject, site, split and labels."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("litdata")

from medssl.bench.config import BenchConfigError, load_bench_config  # noqa: E402
from medssl.bench.runner import ContractError, run_benchmark  # noqa: E402
from medssl.data.stream import META, build_stream  # noqa: E402
from medssl.registry import create_encoder  # noqa: E402

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}  # the encoders of tests/bench/conftest.py

FAST = {"n_bootstrap": 20, "protocols": [{"kind": "linear_probe", "shots": [1, "all"], "seeds": 2},
                                          {"kind": "knn", "k": 3, "label_fractions": [0.5, 1.0], "seeds": 1}]}


@pytest.fixture(scope="module")
def shards(bench_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-shards") / "syn"
    build_stream(bench_cohort["rows"], create_encoder("ecg_jepa_tiny", **TINY).spec, out, {}, workers=2,
                 progress=False)
    return out


def _results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_a_stream_dataset_gives_the_results_of_its_manifest(bench_config, shards, tmp_path):
    run_benchmark(bench_config(**FAST), tmp_path / "manifest", progress=False)
    run_benchmark(bench_config(**FAST, datasets={"syn": {"stream": str(shards)}}), tmp_path / "stream",
                  progress=False)
    a, b = _results(tmp_path / "manifest"), _results(tmp_path / "stream")
    assert not a["errors"] and not b["errors"] and len(a["records"]) == 2 * 5 * 2 * 2
    assert b["records"] == a["records"]
    assert b["aggregates"] == a["aggregates"] and b["comparisons"] == a["comparisons"]


def test_stream_dataset_config_and_contract_errors(bench_config, shards, tmp_path):
    with pytest.raises(BenchConfigError, match=r"datasets.syn: give exactly one of path or synthetic or stream"):
        load_bench_config(bench_config(datasets={"syn": {"stream": str(shards), "path": "m.csv"}}))
    cfg = load_bench_config(bench_config(datasets={"syn": {"stream": "shards/syn"}}))
    assert cfg.datasets["syn"].stream == str(cfg.base / "shards/syn")  # relative to the config, like path
    assert load_bench_config(bench_config(datasets={"syn": {"stream": "s3://b/x"}})).datasets["syn"].stream == \
        "s3://b/x"
    with pytest.raises(BenchConfigError, match=rf"datasets.syn.stream: {tmp_path}/{META}: not found"):
        run_benchmark(bench_config(datasets={"syn": {"stream": str(tmp_path)}}), tmp_path / "b", progress=False)
    # the encoders read band-passed ECGs; shards built without the filter are refused before any embedding
    unfiltered = bench_config(**FAST, datasets={"syn": {"stream": str(shards), "data": {"bandpass": None}}})
    with pytest.raises(ContractError, match=rf"datasets.syn.stream: {shards}/{META}: shards preprocessed for "
                                            r"another input contract or preprocessing than encoder ecg_jepa_tiny"):
        run_benchmark(unfiltered, tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "embeddings").exists()
