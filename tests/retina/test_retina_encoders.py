"""The retina ViT encoders: shapes, pooling, feature maps, masked encoding, registry rebuild."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.registry import create_encoder, list_encoders

SMALL = dict(embed_dim=32, depth=2, num_heads=2)


def test_registered_with_the_paper_sizes():
    assert {"retina_vit_tiny", "retina_vit_base", "retina_vit_large"} <= set(list_encoders("retina"))
    # One block each, to stay fast; width, heads, patch and input size are the defaults.
    for name, (width, heads, depth) in {"retina_vit_base": (768, 12, 12), "retina_vit_large": (1024, 16, 24)}.items():
        enc = create_encoder(name, depth=1)
        hp = enc.spec.hparams
        assert (hp["embed_dim"], hp["num_heads"], hp["patch_size"], hp["image_size"]) == (width, heads, 16, [224, 224])
        assert enc.grid == (14, 14) and enc.spec.input["input_shape"] == [1, 224, 224]
        assert enc.transformer.blocks[0].attn.num_heads == heads
    from medssl.registry import encoder_entry

    assert "RETFound" in encoder_entry("retina_vit_large").description


def test_forward_shapes_backward_and_contract():
    torch.manual_seed(0)
    enc = create_encoder("retina_vit_tiny", **SMALL)
    spec = enc.spec
    assert spec.modality == "retina"
    assert spec.input["shape"] == [64, 64] and spec.input["channels"] == 1 and spec.input["spatial_dims"] == 2
    assert spec.input["patch_size"] == 8 and spec.input["priors"] == []
    from medssl.retina.preprocess import intensity_mode

    assert intensity_mode(spec.input["intensity"]) == "zscore"  # the data layer reads the contract
    x = torch.randn(3, 1, 64, 64)
    tokens = enc.forward_features(x)
    assert tokens.shape == (3, 64, 32)
    pooled = enc(x)
    assert pooled.shape == (3, 32) and torch.isfinite(pooled).all()
    pooled.pow(2).sum().backward()
    assert enc.patch_embed.weight.grad.abs().sum() > 0 and enc.cls_token.grad.abs().sum() > 0
    assert not enc.pos_embed.requires_grad  # fixed sin-cos positions
    with pytest.raises(ValueError, match=r"expected input \(batch, 1, 64, 64\)"):
        enc(torch.randn(2, 3, 64, 64))


def test_mean_pool_is_the_normed_mean_of_patch_tokens_and_cls_pool_the_cls_token():
    torch.manual_seed(0)
    enc = create_encoder("retina_vit_tiny", **SMALL).eval()
    x = torch.randn(2, 1, 64, 64)
    h, _ = enc._run(x)
    assert torch.allclose(enc(x), enc.norm(h[:, 1:].mean(1)), atol=1e-6)
    torch.manual_seed(0)
    cls = create_encoder("retina_vit_tiny", **SMALL, pool="cls").eval()
    assert torch.allclose(cls(x), enc.encode(x)[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="cls_token=True"):
        create_encoder("retina_vit_tiny", **SMALL, pool="cls", cls_token=False)
    no_cls = create_encoder("retina_vit_tiny", **SMALL, cls_token=False)
    assert no_cls.forward_features(x).shape == (2, 64, 32) and no_cls.pos_embed.shape == (1, 64, 32)


def test_feature_maps_are_the_token_grid_at_the_requested_depths():
    torch.manual_seed(0)
    enc = create_encoder("retina_vit_tiny", **SMALL, feature_layers=[1, 2]).eval()
    x = torch.randn(2, 1, 64, 64)
    maps = enc.feature_maps(x)
    assert [m.shape for m in maps] == [(2, 32, 8, 8)] * 2
    # The last map is the layer-normed patch tokens laid out row-major on the 8 x 8 grid.
    tokens = enc.forward_features(x)
    assert torch.allclose(maps[1][:, :, 2, 5], tokens[:, 2 * 8 + 5], atol=1e-6)
    assert not torch.allclose(maps[0], maps[1])
    assert len(create_encoder("retina_vit_tiny", **SMALL).feature_maps(x)) == 1


def test_encoding_a_visible_subset_equals_dropping_the_hidden_tokens():
    torch.manual_seed(0)
    enc = create_encoder("retina_vit_tiny", embed_dim=32, depth=1, num_heads=2).eval()
    x = torch.randn(2, 1, 64, 64)
    keep = torch.tensor([[0, 5, 9, 63], [1, 2, 3, 4]])
    out = enc.encode(x, keep)
    assert out.shape == (2, 5, 32)
    # The same result from a hand-made sequence [cls, kept patch tokens] through the blocks.
    t = enc.patch_tokens(x)
    seq = enc._with_prefix(torch.stack([t[i, keep[i]] for i in range(2)]))
    for blk in enc.transformer.blocks:
        seq = blk(seq)
    assert torch.allclose(out, enc.norm(seq), atol=1e-6)


def test_spec_hparams_rebuild_the_encoder_through_json():
    enc = create_encoder("retina_vit_tiny", **SMALL, image_size=[32, 48], in_chans=3, feature_layers=(1, 2),
                         pixel_size_mm=0.01)
    hparams = json.loads(json.dumps(enc.spec.hparams))
    again = create_encoder("retina_vit_tiny", **hparams)
    assert again.spec == enc.spec
    assert enc.spec.input["input_shape"] == [3, 32, 48] and enc.spec.input["pixel_size_mm"] == 0.01
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}
    assert enc(torch.randn(1, 3, 32, 48)).shape == (1, 32)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="unknown argument.*colour"):
        create_encoder("retina_vit_tiny", colour=True)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        create_encoder("retina_vit_tiny", image_size=[60, 64])
    with pytest.raises(ValueError, match="feature_layers"):
        create_encoder("retina_vit_tiny", feature_layers=[9])
