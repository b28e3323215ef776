"""The shared U-Net encoder: 2-D and 3-D pyramids, input checks, and the MRI class it backs."""

from __future__ import annotations

import pytest
import torch

from medssl.nn.unet import UNetEncoder


@pytest.mark.parametrize("dims", [2, 3])
def test_feature_maps_halve_per_stage_and_forward_pools_the_bottleneck(dims):
    enc = UNetEncoder(2, [4, 8, 16], spatial_dims=dims)
    x = torch.randn(3, 2, *([16] * dims))
    maps = enc.feature_maps(x)
    assert [tuple(m.shape) for m in maps] == [(3, w, *([16 // 2 ** i] * dims)) for i, w in enumerate([4, 8, 16])]
    assert torch.allclose(enc(x), maps[-1].flatten(2).mean(2))
    assert enc.forward_features(x).shape == (3, 4 ** dims, 16)


def test_wrong_shapes_are_named():
    enc = UNetEncoder(1, [4, 8, 16], spatial_dims=2)
    with pytest.raises(ValueError, match=r"multiple of 4"):
        enc(torch.zeros(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r"\(batch, 1 channels, H, W\)"):
        enc(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetEncoder(1, [4, 8], spatial_dims=1)


def test_the_mri_encoder_is_the_3d_case_with_unchanged_weight_names():
    from medssl.mri.unet_encoder import UNetEncoder3d

    mri = UNetEncoder3d(1, [4, 8])
    generic = UNetEncoder(1, [4, 8], spatial_dims=3)
    assert list(mri.state_dict()) == list(generic.state_dict())
    assert "stages.0.conv1.conv.weight" in mri.state_dict()
    generic.load_state_dict(mri.state_dict())
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.equal(mri(x), generic(x))


def test_retina_unet_is_registered_with_a_tile_contract():
    from medssl.registry import create_encoder, encoder_spec

    spec = encoder_spec("retina_unet_small")
    assert spec.input["tile_size"] == [64, 64] and spec.input["divisible_by"] == 8 and spec.embed_dim == 128
    enc = create_encoder("retina_unet_small", widths=[4, 8], image_size=32)
    assert enc.spec.input["shape"] == [32, 32] and enc(torch.zeros(2, 1, 32, 32)).shape == (2, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        encoder_spec("retina_unet_small", image_size=60)
