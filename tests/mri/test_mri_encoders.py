"""MRI encoders: shapes, gradients, the registry round trip, the input contract, input-channel
adaptation, and the U-Net decoder."""

from __future__ import annotations

import logging

import pytest
import torch

from medssl.mri.encoders import adapt_input_channels
from medssl.mri.unet_decoder import UNetDecoder3d
from medssl.registry import create_encoder, list_encoders

TINY = ["mri_unet_tiny", "mri_vit3d_tiny"]


def test_mri_encoders_are_registered():
    assert set(list_encoders(modality="mri")) >= {"mri_unet_base", "mri_unet_tiny", "mri_vit3d_base", "mri_vit3d_tiny"}


@pytest.mark.parametrize("name", TINY)
def test_tiny_encoder_shapes_gradients_and_rebuild(name):
    torch.manual_seed(0)
    model = create_encoder(name)
    spec = model.spec
    assert spec.modality == "mri"
    assert spec.input["channels"] == ["any"] and spec.input["spatial_dims"] == 3
    assert spec.input["shape"] == [32, 32, 32] and spec.input["input_shape"] == [1, 32, 32, 32]
    assert spec.input["spacing_mm"] == [1.0, 1.0, 1.0]
    assert "z-score" in spec.input["intensity"]

    x = torch.randn(2, 1, 32, 32, 32)
    maps = model.feature_maps(x)
    sizes = [m.shape[2:] for m in maps]
    assert all(m.shape[0] == 2 for m in maps)
    assert all(a[0] >= b[0] for a, b in zip(sizes, sizes[1:]))  # fine to coarse
    assert maps[-1].shape[1] == spec.embed_dim
    tokens = model.forward_features(x)
    assert tokens.shape == (2, maps[-1][0, 0].numel(), spec.embed_dim)
    pooled = model(x)
    assert pooled.shape == (2, spec.embed_dim)
    assert torch.allclose(pooled, maps[-1].flatten(2).mean(2), atol=1e-5)
    assert torch.isfinite(pooled).all()

    pooled.pow(2).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname

    again = create_encoder(name, **spec.hparams)
    assert again.spec == spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_unet_stage_geometry_and_other_sizes():
    model = create_encoder("mri_unet_tiny").eval()
    assert model.widths == [8, 16, 32, 64] and model.spec.input["divisible_by"] == 8
    with torch.no_grad():
        maps = model.feature_maps(torch.randn(1, 1, 16, 24, 40))  # any multiple of 8 works
    assert [tuple(m.shape[1:]) for m in maps] == [(8, 16, 24, 40), (16, 8, 12, 20), (32, 4, 6, 10), (64, 2, 3, 5)]


def test_base_encoders_follow_the_papers():
    unet = create_encoder("mri_unet_base")
    assert unet.widths == [32, 64, 128, 256, 512]  # AMAES U-Net B
    assert unet.spec.input["shape"] == [96, 96, 96] and unet.spec.input["divisible_by"] == 16
    assert 13e6 < sum(p.numel() for p in unet.parameters()) < 16e6
    vit = create_encoder("mri_vit3d_base", depth=1)  # depth kept small: only the widths are checked
    assert vit.embed_dim == 768 and vit.patch_size == 16 and vit.spec.hparams["num_heads"] == 12


def test_bad_inputs_are_named():
    unet = create_encoder("mri_unet_tiny")
    with pytest.raises(ValueError, match="1 channels"):
        unet(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of 8"):
        unet(torch.randn(1, 1, 30, 32, 32))
    with pytest.raises(TypeError, match="dpeth"):
        create_encoder("mri_vit3d_tiny", dpeth=2)
    with pytest.raises(ValueError, match="multiple of 8"):
        create_encoder("mri_vit3d_tiny", shape=[36, 32, 32])
    with pytest.raises(ValueError, match="repeat"):
        create_encoder("mri_unet_tiny", channels=["t1", "T1"])


def test_multi_sequence_encoder_from_the_factory():
    model = create_encoder("mri_unet_tiny", channels=["T1", "t2", "flair"])
    assert model.spec.input["channels"] == ["t1", "t2", "flair"]
    assert model.spec.input["input_shape"] == [3, 32, 32, 32]
    assert model(torch.randn(1, 3, 32, 32, 32)).shape == (1, 64)


@pytest.mark.parametrize("name", TINY)
def test_adapting_one_channel_to_four_preserves_the_output_on_identical_channels(name, caplog):
    torch.manual_seed(0)
    model = create_encoder(name).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        before = model(x)
    with caplog.at_level(logging.WARNING, logger="medssl.mri.encoders"):
        adapted = adapt_input_channels(model, ["t1", "t2", "flair", "swi"])
    assert adapted is model
    assert "adapted" in caplog.text and "divided by 4" in caplog.text
    with torch.no_grad():
        after = model(x.repeat(1, 4, 1, 1, 1))
    assert torch.allclose(before, after, atol=1e-5)
    spec = model.spec
    assert spec.input["channels"] == ["t1", "t2", "flair", "swi"] and spec.input["input_shape"][0] == 4
    assert spec.hparams["channels"] == ["t1", "t2", "flair", "swi"]
    assert "adapted" in spec.provenance
    rebuilt = create_encoder(name, **spec.hparams)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_adapting_named_channels_picks_kernels_by_name_or_refuses():
    torch.manual_seed(0)
    model = create_encoder("mri_unet_tiny", channels=["t1", "t2", "flair"]).eval()
    w = model.input_conv.weight.detach().clone()
    adapt_input_channels(model, ["flair", "t1"])
    assert torch.equal(model.input_conv.weight, w[:, [2, 0]])
    assert "dropped t2" in model.spec.provenance
    with pytest.raises(ValueError, match="cannot adapt"):
        adapt_input_channels(model, ["dwi"])
    same = adapt_input_channels(model, ["flair", "t1"])  # already so: unchanged
    assert same.spec.provenance.count("adapted") == 1


def test_unet_decoder_with_and_without_skips():
    torch.manual_seed(0)
    enc = create_encoder("mri_unet_tiny")
    x = torch.randn(2, 1, 32, 32, 32)
    maps = [m.detach().requires_grad_(True) for m in enc.feature_maps(x)]
    seg = UNetDecoder3d(enc.widths, out_channels=3, skips=True, convs_per_stage=2)
    out = seg(maps)
    assert out.shape == (2, 3, 32, 32, 32)
    out.sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)

    maps = [m.detach().requires_grad_(True) for m in maps]
    rec = UNetDecoder3d(enc.widths, out_channels=1, skips=False, convs_per_stage=1)
    rec(maps).sum().backward()
    assert maps[-1].grad is not None
    assert all(m.grad is None for m in maps[:-1])  # without skips only the bottleneck is read
    with pytest.raises(ValueError, match="channels"):
        rec(maps[1:])
