"""Import of RETFound-layout (timm ViT / MAE) checkpoints, on fake checkpoints with the release's
key names: an independent timm-style forward of the raw tensors is the reference."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from medssl.checkpoint import CheckpointError
from medssl.retina.importers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    import_retfound,
    interpolate_pos_embed,
    looks_like_retfound,
    retfound_key_map,
)

D, DEPTH, HEADS, P, GRID = 32, 2, 2, 16, 14  # tiny width and depth; RETFound's patch 16 and 14 x 14 grid


def fake_retfound_state(seed: int = 0, *, final: str = "norm", decoder: bool = True, head: bool = False,
                        d: int = D, depth: int = DEPTH, grid: int = GRID, chans: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    s = {"cls_token": r(1, 1, d), "pos_embed": r(1, 1 + grid * grid, d, scale=0.5),
         "patch_embed.proj.weight": r(d, chans, P, P), "patch_embed.proj.bias": r(d)}
    for i in range(depth):
        b = f"blocks.{i}."
        s |= {b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
              b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
              b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d), b + "mlp.fc1.weight": r(4 * d, d),
              b + "mlp.fc1.bias": r(4 * d), b + "mlp.fc2.weight": r(d, 4 * d), b + "mlp.fc2.bias": r(d)}
    s |= {f"{final}.weight": 1 + r(d), f"{final}.bias": r(d)}
    if decoder:
        s |= {"mask_token": r(1, 1, 16), "decoder_embed.weight": r(16, d), "decoder_embed.bias": r(16),
              "decoder_pos_embed": r(1, 1 + grid * grid, 16), "decoder_blocks.0.norm1.weight": r(16),
              "decoder_norm.weight": r(16), "decoder_pred.weight": r(P * P * 3, 16)}
    if head:
        s |= {"head.weight": r(5, d), "head.bias": r(5)}
    return s


def timm_forward(s: dict[str, torch.Tensor], x: torch.Tensor, final: str = "norm") -> torch.Tensor:
    """timm VisionTransformer.forward_features on the raw tensors: layer-normed [cls, patches]."""
    t = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)
    h = torch.cat([s["cls_token"].expand(x.shape[0], -1, -1), t], 1) + s["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    d = h.shape[-1]
    for i in range(depth):
        p = lambda n: s[f"blocks.{i}.{n}"]  # noqa: E731
        y = F.layer_norm(h, (d,), p("norm1.weight"), p("norm1.bias"), 1e-6)
        q, k, v = F.linear(y, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(*y.shape[:2], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v
        h = h + F.linear(att.transpose(1, 2).reshape(y.shape), p("attn.proj.weight"), p("attn.proj.bias"))
        y = F.layer_norm(h, (d,), p("norm2.weight"), p("norm2.bias"), 1e-6)
        h = h + F.linear(F.gelu(F.linear(y, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return F.layer_norm(h, (d,), s[f"{final}.weight"], s[f"{final}.bias"], 1e-6)


def save(tmp_path, state, name="RETFound_cfp_weights.pth", **extra):
    path = tmp_path / name
    torch.save({"model": state, "epoch": 799, "args": argparse.Namespace(blr=1.5e-4, mask_ratio=0.75), **extra}, path)
    return path


def test_imported_encoder_computes_what_the_timm_vit_computes(tmp_path):
    state = fake_retfound_state()
    enc, report = import_retfound(save(tmp_path, state), num_heads=HEADS, return_report=True)
    assert enc.spec.name == "retina_vit_tiny" and enc.spec.modality == "retina"
    hp = enc.spec.hparams
    assert (hp["embed_dim"], hp["depth"], hp["patch_size"], hp["image_size"], hp["in_chans"]) == (D, DEPTH, P, [224, 224], 3)
    assert enc.spec.input["input_shape"] == [3, 224, 224] and "ImageNet" in enc.spec.input["intensity"]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = timm_forward(state, x)
        assert torch.allclose(enc.encode(x), ref, atol=1e-5)
        # RETFound's global pooling: mean of the last block's patch tokens, then the final norm.
        assert enc(x).shape == (2, D)
    # Every key accounted for: mapped, or ignored on purpose (the MAE decoder).
    assert set(report.mapped) | set(report.ignored) == set(state)
    assert "mask_token" in report.ignored and "decoder_pred.weight" in report.ignored
    assert report.interpolated is None
    assert "sha256" in enc.spec.provenance and "RETFound" in enc.spec.paper
    # The spec rebuilds the same architecture.
    from medssl.registry import create_encoder

    rebuilt = create_encoder(enc.spec.name, **enc.spec.hparams).spec.input
    assert rebuilt == {k: v for k, v in enc.spec.input.items() if k != "release_preprocessing"}


def test_positions_are_interpolated_bicubically_for_another_input_size(tmp_path):
    state = fake_retfound_state(1)
    path = save(tmp_path, state)
    enc, report = import_retfound(path, num_heads=HEADS, image_size=(112, 160), return_report=True)
    assert report.interpolated == ((14, 14), (7, 10))
    pos = enc.pos_embed.detach()
    assert pos.shape == (1, 1 + 70, D)
    assert torch.equal(pos[:, 0], state["pos_embed"][:, 0])  # cls slot kept
    grid = state["pos_embed"][0, 1:].reshape(14, 14, D).permute(2, 0, 1)[None]
    expected = F.interpolate(grid, size=(7, 10), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).reshape(70, D)
    assert torch.allclose(pos[0, 1:], expected, atol=1e-6)
    assert enc(torch.randn(1, 3, 112, 160)).shape == (1, D)
    # A smooth field survives interpolation: a linear ramp over the grid stays a ramp.
    ramp = torch.arange(14.0)[None, :, None].expand(14, 14, 1).reshape(1, 196, 1).expand(1, 196, 4)
    up = interpolate_pos_embed(torch.cat([torch.zeros(1, 1, 4), ramp], 1), 1, (28, 28))
    cols = up[0, 1:, 0].reshape(28, 28)[0]
    assert torch.all(cols[1:-1].diff() > 0)
    assert interpolate_pos_embed(state["pos_embed"], 1, (14, 14)) is not None
    assert torch.equal(interpolate_pos_embed(state["pos_embed"], 1, (14, 14)), state["pos_embed"])


def test_grey_adaptation_equals_rgb_on_the_replicated_normalised_image(tmp_path):
    state = fake_retfound_state(2)
    path = save(tmp_path, state)
    rgb = import_retfound(path, num_heads=HEADS)
    grey = import_retfound(path, num_heads=HEADS, in_chans=1)
    assert grey.spec.input["channels"] == 1 and "folded" in grey.spec.input["intensity"]
    from medssl.retina.preprocess import intensity_mode

    assert intensity_mode(grey.spec.input["intensity"]) == "unit"
    assert intensity_mode(rgb.spec.input["intensity"]) == "imagenet"
    assert "grey" in grey.spec.provenance
    g = torch.rand(2, 1, 224, 224)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        assert torch.allclose(grey(g), rgb((g.expand(-1, 3, -1, -1) - mean) / std), atol=1e-4)


def test_fine_tuned_layout_uses_fc_norm_and_ignores_the_head(tmp_path):
    state = fake_retfound_state(3, final="fc_norm", decoder=False, head=True)
    mapping, ignored, unknown = retfound_key_map(state)
    assert mapping["fc_norm.weight"] == "transformer.norm.weight" and unknown == []
    assert sorted(ignored) == ["head.bias", "head.weight"]
    enc = import_retfound(save(tmp_path, state), num_heads=HEADS)
    assert torch.equal(enc.transformer.norm.weight, state["fc_norm.weight"])
    # With both present, fc_norm wins and norm is ignored, explicitly.
    both = {**state, "norm.weight": torch.ones(D), "norm.bias": torch.zeros(D)}
    m2, ig2, _ = retfound_key_map(both)
    assert "norm.weight" in ig2 and m2["fc_norm.bias"] == "transformer.norm.bias"


def test_unknown_missing_and_unsafe_checkpoints_are_refused(tmp_path):
    state = fake_retfound_state(4)
    with pytest.raises(CheckpointError, match=r"unexpected key.*blocks\.0\.ls1\.gamma"):
        import_retfound(save(tmp_path, {**state, "blocks.0.ls1.gamma": torch.ones(D)}), num_heads=HEADS)
    broken = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(CheckpointError, match=r"missing key.*transformer\.blocks\.1\.mlp\.fc2\.bias"):
        import_retfound(save(tmp_path, broken, name="broken.pth"), num_heads=HEADS)
    with pytest.raises(CheckpointError, match="no RETFound/timm ViT state dict"):
        import_retfound(save(tmp_path, {"W_P.weight": torch.zeros(2, 2)}, name="other.pth"))

    class Payload:  # a pickle that would run code on load
        def __reduce__(self):
            return (print, ("pwned",))

    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": state, "x": Payload()}, unsafe)
    with pytest.raises(CheckpointError, match="tensor-only"):
        import_retfound(unsafe)


def test_the_importer_is_registered_and_claims_only_retfound_files(tmp_path):
    import medssl.checkpoint as ck

    assert ck._IMPORTERS["retfound"] == (looks_like_retfound, import_retfound)
    assert looks_like_retfound(save(tmp_path, fake_retfound_state(5)))
    assert not looks_like_retfound(save(tmp_path, {"encoder_blocks.blocks.0.norm1.weight": torch.ones(2)}, name="jepa.pth"))
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    assert not looks_like_retfound(text)
    assert not looks_like_retfound(tmp_path / "missing.pth")


@pytest.mark.slow
def test_real_vit_large_shapes_import(tmp_path):
    """RETFound's ViT-L/16 shapes (1024 wide, 24 deep): ~300M parameters, several seconds."""
    state = fake_retfound_state(6, d=1024, depth=24, decoder=False)
    enc = import_retfound(save(tmp_path, state))
    assert enc.spec.name == "retina_vit_large" and enc.spec.hparams["num_heads"] == 16
    assert enc.spec.hparams["depth"] == 24 and enc.grid == (14, 14)


def test_spec_states_the_release_preprocessing_and_the_data_path_applies_it(tmp_path):
    """RETFound_MAE util/datasets.py: RGB, ToTensor ([0, 1]), then ImageNet mean/std per channel."""
    import numpy as np

    from medssl.retina.preprocess import RetinaPreprocess, normalise

    enc = import_retfound(save(tmp_path, fake_retfound_state(3)), num_heads=HEADS)
    spec = enc.spec.input
    assert "ImageNet" in spec["release_preprocessing"] and "datasets.py" in spec["release_preprocessing"]
    prep = RetinaPreprocess.for_encoder(spec)
    assert (prep.colour, prep.intensity, prep.shape) == ("rgb", "imagenet", (224, 224))
    img = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    release_mean, release_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm IMAGENET_DEFAULT_*
    expected = (img - np.array(release_mean)[:, None, None]) / np.array(release_std)[:, None, None]
    assert np.allclose(normalise(img, prep.intensity), expected, atol=1e-6)
