"""CT encoders: shapes, gradients, the input contract, MONAI's numbers, and the SwinUNETR builder."""

from __future__ import annotations

import monai.networks.nets.swin_unetr as monai_swin
import pytest
import torch

from medssl.ct.encoders import CTSwinEncoder, build_swin_unetr
from medssl.nn.pos_embed import sincos_3d
from medssl.registry import create_encoder, list_encoders

TINY = ["ct_swin_tiny", "ct_vit3d_tiny"]


def test_ct_encoders_are_registered():
    assert set(list_encoders(modality="ct")) >= {"ct_swin_base", "ct_swin_tiny", "ct_vit3d_base", "ct_vit3d_tiny"}


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_and_feature_maps(name):
    torch.manual_seed(0)
    enc = create_encoder(name)
    spec = enc.spec
    assert spec.modality == "ct" and spec.input["spatial_dims"] == 3
    assert spec.input["shape"] == [32, 32, 32] and spec.input["input_shape"] == [1, 32, 32, 32]
    assert spec.input["channels"] == ["lung"] and spec.input["windows"] == ["lung"]
    assert spec.input["intensity"] == "HU windowed to [0,1]" and len(spec.input["spacing_mm"]) == 3
    x = torch.rand(2, 1, 32, 32, 32)
    pooled = enc(x)
    assert pooled.shape == (2, spec.embed_dim) and torch.isfinite(pooled).all()
    tokens = enc.forward_features(x)
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[2] == spec.embed_dim
    maps = enc.feature_maps(x)
    assert [m.shape[1] for m in maps] == enc.stage_channels
    for m, stride in zip(maps, enc.stage_strides):
        assert m.shape[2:] == (32 // stride,) * 3 and torch.isfinite(m).all()
    assert all(a.shape[2] >= b.shape[2] for a, b in zip(maps, maps[1:]))  # fine to coarse
    pooled.pow(2).sum().backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_swin_shapes_follow_swinunetr():
    enc = create_encoder("ct_swin_tiny")
    maps = enc.feature_maps(torch.rand(1, 1, 32, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(12, 16, 16, 16), (24, 8, 8, 8), (48, 4, 4, 4), (96, 2, 2, 2),
                                                  (192, 1, 1, 1)]
    assert enc.spec.embed_dim == 192


@pytest.mark.parametrize("name,overrides", [(n, {}) for n in TINY + ["ct_swin_base"]]
                         + [("ct_vit3d_base", dict(depth=2, feature_layers=[1, 2]))])
def test_spec_hparams_rebuild_the_encoder(name, overrides):
    enc = create_encoder(name, **overrides)
    again = create_encoder(name, **enc.spec.hparams)
    assert again.spec == enc.spec
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}


def test_base_sizes():
    swin = create_encoder("ct_swin_base")
    assert swin.spec.hparams["feature_size"] == 48 and swin.spec.hparams["window_size"] == 7
    assert swin.spec.hparams["depths"] == [2, 2, 2, 2] and swin.spec.hparams["num_heads"] == [3, 6, 12, 24]
    assert swin.spec.input["shape"] == [96, 96, 96] and swin.spec.embed_dim == 768
    vit = create_encoder("ct_vit3d_base", depth=1)  # 12 blocks of 768 take seconds to initialise
    assert vit.spec.embed_dim == 768 and vit.fixed_grid == (6, 6, 6) and vit.spec.hparams["num_heads"] == 12
    assert vit.feature_layers == [1]  # UNETR's taps [3, 6, 9, 12] that exist at depth 1


def _rearrange(x, pattern):  # einops.rearrange for the two patterns MONAI's SwinTransformer uses
    return x.permute(0, 2, 3, 4, 1) if pattern.split()[1] == "c" else x.permute(0, 4, 1, 2, 3)


def test_swin_stages_equal_monai_forward(monkeypatch):
    """The einops-free stage loop computes MONAI's SwinTransformer.forward exactly."""
    monkeypatch.setattr(monai_swin, "rearrange", _rearrange)
    torch.manual_seed(1)
    enc = create_encoder("ct_swin_tiny").eval()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        ours = enc.feature_maps(x)
        ref = monai_swin.SwinTransformer.forward(enc.swin, x, True)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_embed_hook_edits_the_patch_embedding():
    enc = create_encoder("ct_swin_tiny").eval()
    x = torch.rand(1, 1, 32, 32, 32)
    seen = []

    def hook(grid):
        seen.append(grid.shape)
        return torch.zeros_like(grid)

    with torch.no_grad():
        zeroed = enc.stages(x, embed_hook=hook)[-1]
        blank = enc.stages(torch.zeros_like(x))[-1]  # zero input -> patch embedding == conv bias only
    assert seen == [(1, 12, 16, 16, 16)]
    assert not torch.allclose(zeroed, enc.stages(x)[-1])
    assert not torch.allclose(zeroed, blank)  # the hook replaced the embedding, bias included


def test_bad_inputs_are_named():
    enc = create_encoder("ct_swin_tiny")
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, 32, 32, 32\), got \(1, 1, 32, 32, 16\)"):
        enc(torch.rand(1, 1, 32, 32, 16))
    with pytest.raises(ValueError, match="multiple of 32"):
        create_encoder("ct_swin_tiny", shape=[48, 32, 32])
    with pytest.raises(ValueError, match="multiple of patch 8"):
        create_encoder("ct_vit3d_tiny", shape=[36, 32, 32])
    with pytest.raises(TypeError, match="unknown argument.*depth"):
        create_encoder("ct_swin_tiny", depth=1)


def test_windows_set_the_channels():
    enc = create_encoder("ct_swin_tiny", windows=["lung", "mediastinum", [-1000, 1000]])
    assert enc.in_channels == 3
    assert enc.spec.input["channels"] == ["lung", "mediastinum", "hu[-1000,1000]"]
    assert enc.spec.input["input_shape"] == [3, 32, 32, 32]
    assert enc(torch.rand(1, 3, 32, 32, 32)).shape == (1, 192)


def test_sincos_3d_positions_are_distinct():
    pos = sincos_3d(96, (4, 4, 4))
    assert pos.shape == (64, 96)
    assert torch.cdist(pos, pos).add(torch.eye(64)).min() > 0.1


def test_swin_unetr_shares_the_encoder_weights():
    enc = create_encoder("ct_swin_tiny")
    assert isinstance(enc, CTSwinEncoder)
    seg = build_swin_unetr(enc, out_channels=3, norm_name="batch")  # instance norm needs >= 64^3
    assert seg.swinViT is enc.swin
    seg_state = seg.state_dict()
    for k, v in enc.swin.state_dict().items():
        assert seg_state[f"swinViT.{k}"].data_ptr() == v.data_ptr()
    with torch.no_grad():
        enc.swin.patch_embed.proj.bias.add_(1.0)  # an edit to the encoder is an edit to the segmenter
    assert torch.equal(seg.swinViT.patch_embed.proj.bias, enc.swin.patch_embed.proj.bias)
    with torch.no_grad():
        out = seg.eval()(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32) and torch.isfinite(out).all()
