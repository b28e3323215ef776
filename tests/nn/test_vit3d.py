"""Tests of medssl.nn.vit3d.ViT3d: the one 3-D ViT behind ct_vit3d_* and mri_vit3d_*."""

from __future__ import annotations

import pytest
import torch

from medssl.nn.pos_embed import sincos_3d
from medssl.nn.vit3d import ViT3d
from medssl.registry import create_encoder


def test_both_modalities_build_the_one_class_with_the_same_state_dict_keys():
    torch.manual_seed(0)
    ct = create_encoder("ct_vit3d_tiny").eval()
    mri = create_encoder("mri_vit3d_tiny").eval()
    assert type(ct) is ViT3d and type(mri) is ViT3d
    assert {k: v.shape for k, v in ct.state_dict().items()} == {k: v.shape for k, v in mri.state_dict().items()}
    assert (ct.patch_embed.bias == 0).all() and not (mri.patch_embed.bias == 0).all()
    # A CT checkpoint loads into the MRI encoder key for key: same tokens; pooling is each one's own.
    mri.load_state_dict(ct.state_dict())
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        h = ct.forward_features(x)
        assert torch.equal(mri.forward_features(x), h)
        assert torch.equal(mri(x), h.mean(dim=1))  # mean of the layer-normed tokens
        last = ct._run(x)[0]
        assert torch.equal(ct(x), ct.transformer.norm(last.mean(dim=1)))  # norm of the mean (norm_after_pool)
        assert torch.equal(ct.feature_maps(x)[0], mri.feature_maps(x)[0])
        assert torch.equal(ct.feature_maps(x)[0], h.transpose(1, 2).reshape(2, 96, 4, 4, 4))


def test_fixed_shape_and_free_shape_inputs():
    ct = ViT3d(1, 8, 48, 1, 4, shape=(16, 16, 16))
    free = ViT3d(1, 8, 48, 1, 4)
    assert ct.fixed_grid == (2, 2, 2) and free.fixed_grid is None
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, 16, 16, 16\)"):
        ct(torch.zeros(1, 1, 16, 16, 24))
    assert free(torch.zeros(1, 1, 16, 16, 24)).shape == (1, 48)
    with pytest.raises(ValueError, match="multiple of 8"):
        free(torch.zeros(1, 1, 16, 16, 20))
    with pytest.raises(ValueError, match="multiple of patch 8"):
        ViT3d(1, 8, 48, 1, 4, shape=(16, 16, 20))


def test_embed_hook_feature_layers_and_positions():
    torch.manual_seed(0)
    vit = ViT3d(1, 8, 48, 3, 4, feature_layers=[1, 3]).eval()
    x = torch.randn(2, 1, 16, 24, 16)
    with torch.no_grad():
        maps = vit.stages(x)
        assert [m.shape for m in maps] == [(2, 48, 2, 3, 2)] * 2
        assert torch.equal(maps[-1], vit.feature_maps(x)[-1])
        assert not torch.equal(vit.stages(x, embed_hook=torch.zeros_like)[-1], maps[-1])
    with torch.inference_mode():
        pos = vit.positions((2, 3, 2), x)
    assert torch.equal(pos, sincos_3d(48, (2, 3, 2))) and not pos.is_inference()
    assert vit.positions((2, 3, 2), x) is pos  # cached per grid, device and dtype
    with pytest.raises(ValueError, match="increasing block numbers"):
        ViT3d(1, 8, 48, 3, 4, feature_layers=[3, 1])
