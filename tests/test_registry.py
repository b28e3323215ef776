"""Tests of medssl.registry: every registered encoder honours the encoder contract, and the
registry's own rules (registration, listing, creation errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medssl
from medssl import registry
from medssl.plugins import modality_names
from medssl.registry import (
    EncoderSpec,
    UnknownEncoderError,
    create_encoder,
    encoder_entry,
    encoder_spec,
    list_encoders,
    register_encoder,
)

SMALL = dict(depth=1, embed_dim=32, num_heads=2)


def _build_small(name: str) -> nn.Module:
    """The encoder with small overrides where its factory accepts them, else its defaults."""
    ct_swin = dict(shape=[32, 32, 32], feature_size=12, window_size=4, num_heads=[1, 2, 4, 8])
    unet = dict(shape=[32, 32, 32], widths=[8, 16])
    for overrides in (SMALL, dict(depth=1), ct_swin, unet, {}):
        try:
            return create_encoder(name, **overrides)
        except TypeError:
            continue
    raise AssertionError(f"{name}: could not be built even with default arguments")


def _example_input(spec: EncoderSpec, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A random input following the spec's input contract."""
    contract = spec.input
    if "leads" in contract:  # ECG: (B, leads, samples)
        shape = (batch, len(contract["leads"]), int(contract["num_samples"]))
    elif "input_shape" in contract:
        shape = (batch, *contract["input_shape"])
    else:
        pytest.fail(f"{spec.name}: spec.input {sorted(contract)} gives no input shape (leads/num_samples or input_shape)")
    return torch.randn(shape, generator=generator)


def _expected_n_tokens(spec: EncoderSpec) -> int | None:
    c = spec.input
    if "leads" in c and "patch_size" in c:
        return len(c["leads"]) * int(c["num_samples"]) // int(c["patch_size"])
    return None


@pytest.mark.parametrize("name", list_encoders())
def test_every_encoder_honours_the_contract(name):
    torch.manual_seed(0)
    model = _build_small(name)
    spec = model.spec
    assert isinstance(spec, EncoderSpec)
    assert spec.name == name
    assert spec.modality in modality_names()
    assert spec.input, f"{name}: empty input contract"
    assert spec.embed_dim > 0

    x = _example_input(spec, 2, torch.Generator().manual_seed(1))

    # Token features and pooled embedding shapes, all finite.
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model(x)
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[2] == spec.embed_dim and tokens.shape[1] > 0
    n_tokens = _expected_n_tokens(spec)
    if n_tokens is not None:
        assert tokens.shape[1] == n_tokens
    assert pooled.shape == (2, spec.embed_dim)
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()

    # Every trainable parameter receives a finite gradient.
    model.train()
    model.zero_grad()
    model(x).pow(2).sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for pname, p in trainable:
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient in {pname}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)

    # Same seed -> same weights -> same outputs; a different seed -> different outputs.
    def seeded_output(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        m = _build_small(name).eval()
        with torch.no_grad():
            return m(x)

    a, b, c = seeded_output(7), seeded_output(7), seeded_output(8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)

    # The spec's hparams rebuild the same architecture.
    torch.manual_seed(3)
    again = create_encoder(name, **spec.hparams)
    assert again.spec == spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    list_encoders()  # make sure the built-in encoders are in before copying
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


def _toy_factory(modality: str):
    def factory(**overrides):
        m = nn.Linear(4, 4)
        m.spec = EncoderSpec(name="toy", modality=modality, input={"input_shape": [4]}, embed_dim=4)
        return m

    return factory


def test_register_encoder_rejects_duplicate_names(private_registry):
    register_encoder(_toy_factory("mri"), modality="mri", name="toy_dup")
    with pytest.raises(ValueError, match="toy_dup.*already registered"):
        register_encoder(_toy_factory("mri"), modality="mri", name="toy_dup")
    # A built-in name is protected too.
    with pytest.raises(ValueError, match="already registered"):
        register_encoder(_toy_factory("ecg"), modality="ecg", name="ecg_jepa_tiny")


def test_register_encoder_same_function_twice_is_idempotent(private_registry):
    f = _toy_factory("ct")
    register_encoder(f, modality="ct", name="toy_same")
    register_encoder(f, modality="ct", name="toy_same")
    assert list_encoders(pattern="toy_same") == ["toy_same"]


def test_register_encoder_rejects_unknown_modality(private_registry):
    with pytest.raises(ValueError, match="modality"):
        register_encoder(_toy_factory("eeg"), modality="eeg", name="toy_eeg")
    assert "toy_eeg" not in list_encoders()


def test_register_encoder_as_decorator_uses_function_name(private_registry):
    @register_encoder(modality="retina")
    def toy_retina_encoder(**overrides):
        """A toy retina encoder."""
        return _toy_factory("retina")()

    assert "toy_retina_encoder" in list_encoders(modality="retina")
    assert registry.encoder_entry("toy_retina_encoder").description == "A toy retina encoder."


def test_list_encoders_filters_by_modality_and_pattern(private_registry):
    register_encoder(_toy_factory("mri"), modality="mri", name="toy_mri_a")
    register_encoder(_toy_factory("mri"), modality="mri", name="toy_mri_b")
    ecg = list_encoders(modality="ecg")
    assert {"ecg_jepa_tiny", "ecg_jepa_base"} <= set(ecg)
    assert "toy_mri_a" not in ecg
    assert {"toy_mri_a", "toy_mri_b"} <= set(list_encoders(modality="mri"))
    assert list_encoders(modality="mri", pattern="toy_*_b") == ["toy_mri_b"]
    assert list_encoders(pattern="ecg_jepa_*") == sorted(list_encoders(pattern="ecg_jepa_*"))
    assert "toy_mri_a" not in list_encoders(pattern="ecg_*")
    everything = list_encoders()
    assert everything == sorted(everything)
    assert set(everything) == {n for m in modality_names() for n in list_encoders(modality=m)}


def test_create_encoder_unknown_name_lists_registered_names():
    with pytest.raises(UnknownEncoderError) as info:
        create_encoder("no_such_encoder")
    msg = str(info.value)
    assert "no_such_encoder" in msg
    for name in list_encoders():
        assert name in msg


def test_create_encoder_unknown_override_raises_type_error():
    with pytest.raises(TypeError, match="dpeth"):
        create_encoder("ecg_jepa_tiny", dpeth=1)


def test_create_encoder_applies_overrides():
    m = create_encoder("ecg_jepa_tiny", **SMALL)
    assert m.spec.embed_dim == 32 and m.spec.hparams["depth"] == 1
    assert len(m.transformer.blocks) == 1


def test_create_encoder_requires_a_spec(private_registry):
    register_encoder(lambda **kw: nn.Linear(2, 2), modality="ct", name="toy_nospec")
    with pytest.raises(TypeError, match="EncoderSpec"):
        create_encoder("toy_nospec")


def test_package_exports():
    from medssl.checkpoint import create_encoder as create_with_weights

    # medssl.create_encoder is the registry's plus pretrained=FOLDER (the checkpoint layer's)
    assert medssl.create_encoder is create_with_weights and medssl.list_encoders is list_encoders
    assert type(medssl.create_encoder("ecg_jepa_tiny")) is type(create_encoder("ecg_jepa_tiny"))


def _small_overrides(name: str) -> dict:
    """The first of _build_small's override sets this encoder accepts."""
    for overrides in (SMALL, dict(depth=1), dict(shape=[32, 32, 32], feature_size=12, window_size=4,
                                                    num_heads=[1, 2, 4, 8]), dict(shape=[32, 32, 32], widths=[8, 16])):
        try:
            encoder_spec(name, **overrides)
            return overrides
        except TypeError:
            continue
    return {}


@pytest.mark.parametrize("name", list_encoders())
def test_every_builtin_encoder_declares_the_spec_its_factory_builds(name):
    """`medssl encoders` reads specs without building weights: each spec function gives the spec
    the factory's module carries, at the defaults (built on the meta device where possible) and
    with overrides."""
    assert encoder_entry(name).spec is not None, f"{name}: registered without a spec function"
    overrides = _small_overrides(name)
    assert encoder_spec(name, **overrides) == create_encoder(name, **overrides).spec
    default = encoder_spec(name)
    assert default.name == name and default.embed_dim > 0
    if name.endswith("_tiny"):
        assert default == create_encoder(name).spec
    with pytest.raises(TypeError, match="unknown argument"):
        encoder_spec(name, no_such_argument=1)


def test_encoder_spec_builds_an_encoder_registered_without_a_spec_function(private_registry):
    register_encoder(_toy_factory("ecg"), modality="ecg", name="toy")
    assert encoder_spec("toy").embed_dim == 4


def test_the_encoders_command_builds_no_encoder(monkeypatch, capsys):
    from medssl.cli import main

    list_encoders()
    for entry in list(registry._REGISTRY.values()):
        def refuse(**_):
            raise AssertionError("an encoder was built")
        monkeypatch.setitem(registry._REGISTRY, entry.name, registry._Entry(
            entry.name, entry.modality, refuse, entry.description, entry.spec))
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_encoders())
