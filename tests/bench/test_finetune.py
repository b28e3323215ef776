"""Fine-tuning protocol: layer-wise lr decay groups, freezing, training, determinism, runner wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.bench import finetune as ft
from medssl.bench.config import BenchConfigError, load_bench_config
from medssl.bench.finetune import (
    encoder_layers,
    finetune_classifier,
    layerwise_lr_groups,
    predict,
)
from medssl.bench.metrics import auroc
from medssl.registry import create_encoder


def _jepa(depth=3, **kw):
    return create_encoder("ecg_jepa_tiny", depth=depth, embed_dim=16, num_heads=2, num_samples=250, **kw)


def test_llrd_groups_hand_checked_on_a_three_block_encoder():
    enc = _jepa(depth=3)
    head = torch.nn.Linear(16, 2)
    groups = layerwise_lr_groups(enc, base_lr=1.0, decay=0.5, weight_decay=0.05, head=head)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in enc.parameters()) + 2  # every parameter exactly once
    # L = 3: embedding 0.5^4, block j (0-based) 0.5^(3 - j), final norm + head 1.0
    assert lr_of[id(enc.patch_embed.weight)] == (0.0625, 0.05)
    assert lr_of[id(enc.patch_embed.bias)] == (0.0625, 0.0)
    for j, want in enumerate([0.125, 0.25, 0.5]):
        blk = enc.transformer.blocks[j]
        assert lr_of[id(blk.attn.qkv.weight)] == (want, 0.05)
        assert lr_of[id(blk.norm1.weight)] == (want, 0.0)  # norms: no weight decay
    assert lr_of[id(enc.transformer.norm.weight)] == (1.0, 0.0)
    assert lr_of[id(head.weight)] == (1.0, 0.05) and lr_of[id(head.bias)] == (1.0, 0.0)
    assert sorted({g["layer_id"] for g in groups}) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name, blocks", [("ecg_resnet1d_tiny", "stages"), ("ecg_ts2vec_tiny", "blocks"),
                                          ("ecg_mae_vit_tiny", "transformer.blocks")])
def test_block_list_rule_on_cnn_and_vit_encoders(name, blocks):
    enc = create_encoder(name)
    found, container = ft.find_block_list(enc)
    assert found == blocks
    layers = encoder_layers(enc)
    assert len(layers) == len(container) + 2
    assert [id(p) for lay in layers for p in lay] == [id(p) for p in enc.parameters()]
    if name == "ecg_resnet1d_tiny":
        assert {id(p) for p in enc.stem.parameters()} == {id(p) for p in layers[0]}


def test_last_blocks_freezes_the_rest():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 8, 250)).astype(np.float32), rng.integers(0, 2, (6, 1)).astype(np.float32)
    enc = _jepa(depth=3)
    model = finetune_classifier(enc, x, y, kind="binary", epochs=1, batch_size=3, seed=0, mode="last_blocks", n_last=1)
    e = model.encoder
    frozen = [*e.patch_embed.parameters(), *e.transformer.blocks[0].parameters(), *e.transformer.blocks[1].parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    trainable = [*e.transformer.blocks[2].parameters(), *e.transformer.norm.parameters(), *model.head.parameters()]
    assert all(p.requires_grad and p.grad is not None for p in trainable)
    for p, q in zip(enc.patch_embed.parameters(), e.patch_embed.parameters()):
        assert torch.equal(p, q)  # frozen: unchanged
    assert not torch.equal(enc.transformer.blocks[2].attn.qkv.weight, e.transformer.blocks[2].attn.qkv.weight)
    assert all(p.requires_grad for p in enc.parameters())  # the caller's encoder is untouched
    with pytest.raises(ValueError, match="n_last"):
        finetune_classifier(enc, x, y, kind="binary", epochs=1, mode="last_blocks", n_last=4)


def _separable(n, seed, leads=8):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = np.linspace(0, 1, 250, dtype=np.float32)
    x = rng.normal(scale=1.0, size=(n, leads, 250)).astype(np.float32)
    x[y == 1] += 1.5 * np.sin(2 * np.pi * 5 * t)  # class 1: a 5-cycle wave on every lead
    return x, y[:, None].astype(np.float32)


def test_finetuning_lowers_the_loss_and_beats_chance():
    x, y = _separable(32, 0)
    xt, yt = _separable(32, 1)
    model = finetune_classifier(_jepa(depth=1), x, y, kind="binary", epochs=10, batch_size=8, base_lr=1e-2, seed=0)
    assert len(model.train_losses) == 10 and model.train_losses[-1] < 0.5 * model.train_losses[0]
    s = predict(model, xt)
    assert s.shape == (32, 1) and ((s >= 0) & (s <= 1)).all()
    assert auroc(yt[:, 0].astype(bool), s[:, 0]) > 0.9


def test_multiclass_and_regression_heads():
    x, y = _separable(12, 2)
    x12 = np.concatenate([x, x[:, :4]], axis=1)  # the CNN encoders read 12 leads
    onehot = np.eye(2, dtype=np.float32)[y[:, 0].astype(int)]
    m = finetune_classifier(_jepa(depth=1), x, onehot, kind="multiclass", epochs=1, batch_size=5, seed=0)
    s = predict(m, x[:4])
    assert s.shape == (4, 2) and np.allclose(s.sum(axis=1), 1)
    target = 60 + 10 * y  # target units are restored
    r = finetune_classifier(create_encoder("ecg_ts2vec_tiny", num_samples=250), x12, target, kind="regression",
                            epochs=1, batch_size=4, seed=0)
    assert r.train_losses and 40 < predict(r, x12).mean() < 80


def test_deterministic_under_seed():
    x, y = _separable(10, 3, leads=12)
    enc = create_encoder("ecg_resnet1d_tiny", num_samples=250)  # BatchNorm + batch shuffling
    runs = [predict(finetune_classifier(enc, x, y, kind="binary", epochs=2, batch_size=4, seed=s), x)
            for s in (0, 0, 1)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_config_keys():
    base = {"encoders": [{"name": "a", "ref": "random:ecg_jepa_tiny"}], "datasets": {"d": {"path": "m.csv"}},
            "tasks": [{"name": "t", "dataset": "d", "kind": "binary", "labels": ["MI"], "train": {"s": "a"},
                       "eval": {"in": {"s": "b"}}}]}
    cfg = load_bench_config({**base, "protocols": [{"kind": "finetune", "shots": ["all"], "seeds": 1, "epochs": 2,
                                                    "mode": "last_blocks", "n_last": 2}]})
    assert cfg.protocols[0].finetune == {"epochs": 2, "lr": 1e-3, "layer_decay": 0.75, "mode": "last_blocks",
                                         "n_last": 2, "batch_size": 32}
    for bad, match in [({"kind": "linear_probe", "shots": ["all"], "epochs": 2}, "only the finetune and segmentation protocols"),
                       ({"kind": "finetune", "shots": ["all"], "mode": "partial"}, "unknown mode"),
                       ({"kind": "finetune", "shots": ["all"], "layer_decay": 1.5}, "layer_decay"),
                       ({"kind": "finetune", "shots": ["all"], "n_last": 1}, "n_last applies")]:
        with pytest.raises(BenchConfigError, match=match):
            load_bench_config({**base, "protocols": [bad]})


_PROTOCOLS = [{"kind": "linear_probe", "shots": ["all"], "seeds": 1},
              {"kind": "finetune", "shots": ["all"], "seeds": 1, "epochs": 1, "batch_size": 8}]


def test_runner_writes_finetune_records(bench_config, tmp_path):
    from medssl.bench.runner import run_benchmark

    run_benchmark(bench_config(protocols=_PROTOCOLS, n_bootstrap=20), tmp_path / "b", progress=False)
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    assert not data["errors"]
    fine = [r for r in data["records"] if r["protocol"] == "finetune"]
    lp = [r for r in data["records"] if r["protocol"] == "linear_probe"]
    assert fine and len(fine) == len(lp) and all(r["protocol_kind"] == "finetune" for r in fine)
    assert {r["encoder"] for r in fine} == {"rand0", "rand1"}
    assert {r["draw"] for r in fine} == {r["draw"] for r in lp}  # same paired draw
    assert all(r["value"] is None or 0 <= r["value"] <= 1 for r in fine)


def test_a_failing_finetune_run_is_an_error_row(bench_config, tmp_path, monkeypatch):
    from medssl.bench.runner import run_benchmark

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(ft, "finetune_classifier", boom)
    run_benchmark(bench_config(protocols=_PROTOCOLS, n_bootstrap=20), tmp_path / "b", progress=False)
    data = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {(e["encoder"], e["protocol"]) for e in data["errors"]} == {("rand0", "finetune"), ("rand1", "finetune")}
    assert all("injected failure" in e["error"] for e in data["errors"])
    assert not [r for r in data["records"] if r["protocol"] == "finetune"]
    assert {r["encoder"] for r in data["records"] if r["protocol"] == "linear_probe"} == {"rand0", "rand1"}


def test_finetune_keeps_every_seed_with_all_labels_while_probes_run_once(bench_config, tmp_path):
    from medssl.bench.runner import run_benchmark

    protocols = [{"kind": "linear_probe", "shots": ["all"], "seeds": 2},
                 {"kind": "finetune", "shots": ["all"], "seeds": 2, "epochs": 1, "batch_size": 8}]
    run_benchmark(bench_config(protocols=protocols, n_bootstrap=20), tmp_path / "b", progress=False)
    records = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    seeds = {p: {r["seed"] for r in records if r["protocol"] == p} for p in ("linear_probe", "finetune")}
    assert len(seeds["linear_probe"]) == 1 and len(seeds["finetune"]) == 2
