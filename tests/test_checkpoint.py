"""Tests of medssl.checkpoint: safetensors + card folders, strict loading, no pickle, atomic saves."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import medssl.checkpoint as ckpt
from medssl.checkpoint import (
    CARD_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    clone_random_encoder,
    load_encoder,
    read_card,
    save_checkpoint,
    update_card,
)
from medssl.registry import create_encoder

SMALL = dict(depth=1, embed_dim=32, num_heads=2, num_samples=500)


def _encoder(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return create_encoder("ecg_jepa_tiny", **{**SMALL, **overrides}).eval()


def _x(model, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.randn(batch, len(model.spec.input["leads"]), model.spec.input["num_samples"], generator=g)


@pytest.fixture
def saved(tmp_path):
    model = _encoder()
    folder = save_checkpoint(
        model, tmp_path / "ckpt",
        recipe={"method": "ecg_jepa", "optim": {"lr": 1e-3}},
        data_fingerprint="ab" * 32,
        metrics={"loss": 0.25, "steps": 10},
    )
    return model, folder


def test_roundtrip_gives_identical_outputs_and_spec(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE, "README.md", "config.json"])
    loaded = load_encoder(folder)
    assert loaded.spec == model.spec
    assert not loaded.training
    x = _x(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.forward_features(x), model.forward_features(x))
    # A different random model really differs (the check above can fail).
    with torch.no_grad():
        assert not torch.allclose(_encoder(seed=1)(x), model(x))


def test_card_contents(saved):
    model, folder = saved
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["encoder"] == json.loads(json.dumps(model.spec.to_dict()))
    assert card["encoder"]["name"] == "ecg_jepa_tiny"
    assert card["encoder"]["hparams"]["depth"] == 1
    versions = card["versions"]
    assert versions["torch"] == torch.__version__
    assert "python" in versions and "medssl" in versions
    assert card["data"]["manifest_sha256"] == "ab" * 32
    assert card["training_metrics"] == {"loss": 0.25, "steps": 10}
    assert card["recipe"] == {"method": "ecg_jepa", "optim": {"lr": 1e-3}}
    assert card["benchmarks"] == [] and card["privacy"] == []
    assert card["schema_version"] == ckpt.CARD_SCHEMA_VERSION
    assert read_card(folder) == card


def test_weights_file_is_safetensors_with_all_state(saved):
    model, folder = saved
    state = load_file(str(folder / WEIGHTS_FILE))
    assert set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)


def test_load_never_unpickles(saved, monkeypatch):
    model, folder = saved

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based loading used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    loaded = load_encoder(folder)
    with torch.no_grad():
        assert torch.equal(loaded(_x(model)), model(_x(model)))


def _rewrite_weights(folder, edit):
    path = folder / WEIGHTS_FILE
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))
    return path


def test_missing_weight_is_an_error_naming_the_file(saved):
    _, folder = saved
    path = _rewrite_weights(folder, lambda s: s.pop("patch_embed.weight"))
    with pytest.raises(CheckpointError, match="missing") as info:
        load_encoder(folder)
    assert str(path) in str(info.value) and "patch_embed.weight" in str(info.value)


def test_unexpected_weight_is_an_error_naming_the_file(saved):
    _, folder = saved
    path = _rewrite_weights(folder, lambda s: s.__setitem__("extra.head.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unexpected") as info:
        load_encoder(folder)
    assert str(path) in str(info.value) and "extra.head.weight" in str(info.value)


def test_missing_weights_file(saved):
    _, folder = saved
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights file missing") as info:
        load_encoder(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value)


def test_missing_card_and_missing_folder(saved, tmp_path):
    _, folder = saved
    (folder / CARD_FILE).unlink()
    load_encoder(folder)  # config.json (the Hugging Face layout) still describes the encoder
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError) as info:
        load_encoder(folder)
    assert str(folder / CARD_FILE) in str(info.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nowhere")


def test_corrupt_card(saved):
    _, folder = saved
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="model card"):
        load_encoder(folder)
    (folder / CARD_FILE).write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(CheckpointError, match="model card"):
        load_encoder(folder)


def test_save_replaces_existing_folder_without_leftovers(saved, tmp_path):
    first, folder = saved
    (folder / "stale.txt").write_text("from an older save")
    second = _encoder(seed=5)
    save_checkpoint(second, folder, metrics={"loss": 0.1})
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE, "README.md", "config.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "temporary or old folders left behind"
    loaded = load_encoder(folder)
    x = _x(second)
    with torch.no_grad():
        assert torch.equal(loaded(x), second(x))
        assert not torch.equal(loaded(x), first(x))
    assert read_card(folder)["training_metrics"] == {"loss": 0.1}


def test_failed_save_leaves_existing_checkpoint_intact(saved, tmp_path, monkeypatch):
    first, folder = saved

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_safetensors", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_encoder(seed=5), folder)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], "temporary folder left behind"
    loaded = load_encoder(folder)
    with torch.no_grad():
        assert torch.equal(loaded(_x(first)), first(_x(first)))


def test_create_encoder_pretrained(saved):
    """``medssl.create_encoder(name, pretrained=folder)``: the registry's encoder with the checkpoint's weights."""
    import medssl

    assert medssl.create_encoder is ckpt.create_encoder
    model, folder = saved
    x = _x(model)
    loaded = ckpt.create_encoder("ecg_jepa_tiny", pretrained=folder)
    same = ckpt.create_encoder("ecg_jepa_tiny", pretrained=str(folder), depth=1, embed_dim=32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(same(x), model(x))
    with pytest.raises(ValueError, match="depth"):
        ckpt.create_encoder("ecg_jepa_tiny", pretrained=folder, depth=2)
    with pytest.raises(ValueError, match="ecg_jepa_tiny"):
        ckpt.create_encoder("ecg_jepa_base", pretrained=folder)


def test_update_card_appends(saved):
    _, folder = saved
    before = read_card(folder)
    update_card(folder, "benchmarks", {"task": "af", "auroc": 0.9})
    update_card(folder, "benchmarks", {"task": "mi", "auroc": 0.8})
    update_card(folder, "privacy", {"attack": "loss", "auc": 0.51})
    card = read_card(folder)
    assert card["benchmarks"] == [{"task": "af", "auroc": 0.9}, {"task": "mi", "auroc": 0.8}]
    assert card["privacy"] == [{"attack": "loss", "auc": 0.51}]
    assert {k: v for k, v in card.items() if k not in ("benchmarks", "privacy")} == {
        k: v for k, v in before.items() if k not in ("benchmarks", "privacy")
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE, "README.md", "config.json"])
    load_encoder(folder)  # still a valid checkpoint


def test_clone_random_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = clone_random_encoder("ecg_jepa_tiny", seed=4, **SMALL)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = clone_random_encoder("ecg_jepa_tiny", seed=4, **SMALL)
    c = clone_random_encoder("ecg_jepa_tiny", seed=5, **SMALL)
    x = _x(a)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), c(x))


def test_weights_get_ordinary_permissions(tmp_path):
    """model.safetensors is readable like every other output (a FOMO container runs as another user);
    safetensors' own save_file leaves 0600."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        folder = save_checkpoint(_encoder(seed=1), tmp_path / "ckpt")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes["model.safetensors"] == 0o644 == modes["card.json"] == modes["README.md"] == modes["config.json"]


def test_one_reference_resolver_for_every_command(saved, tmp_path):
    """checkpoint folder (also relative to a base) | random:NAME[:SEED] | registry name, overrides only
    for the untrained ones; anything else names the path first."""
    model, folder = saved
    x = _x(model)
    loaded, path = ckpt.resolve_encoder_ref(folder)
    assert path == folder and torch.equal(loaded(x), model(x))
    again, path = ckpt.resolve_encoder_ref(folder.name, base=folder.parent)
    assert path == folder and torch.equal(again(x), model(x))
    a, none = ckpt.resolve_encoder_ref("random:ecg_jepa_tiny:3", {"depth": 1})
    b, _ = ckpt.resolve_encoder_ref("ecg_jepa_tiny", {"depth": 1})  # a registry name: untrained, seed 0
    c, _ = ckpt.resolve_encoder_ref("random:ecg_jepa_tiny", {"depth": 1})
    assert none is None and a.spec.hparams["depth"] == 1
    assert all(torch.equal(p, q) for p, q in zip(b.state_dict().values(), c.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    with pytest.raises(ValueError, match="overrides apply to random:/registry refs"):
        ckpt.resolve_encoder_ref(folder, {"depth": 1})
    with pytest.raises(ckpt.CheckpointError, match=rf"^{tmp_path / 'nowhere'}: checkpoint folder not found"):
        ckpt.resolve_encoder_ref(tmp_path / "nowhere")
