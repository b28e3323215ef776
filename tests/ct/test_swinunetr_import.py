"""Import of SwinUNETR self-supervised weights (`model_swinvit.pt` layout) into ct_swin_base."""

from __future__ import annotations

import itertools

import pytest
import torch

from medssl.checkpoint import CheckpointError
from medssl.ct.importers import (
    import_swinunetr,
    looks_like_swinunetr,
    swinunetr_key_map,
)

BLOCK_PARTS = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
               "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight",
               "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def relative_position_index(w: int) -> torch.Tensor:
    """Swin's (w^3, w^3) index into the (2w-1)^3 relative position table, written out independently:
    entry (i, j) numbers the offset coords[i] - coords[j] + (w - 1) in base 2w - 1."""
    coords = torch.tensor(list(itertools.product(range(w), repeat=3)))
    rel = coords[:, None, :] - coords[None, :, :] + (w - 1)
    return (rel[..., 0] * (2 * w - 1) + rel[..., 1]) * (2 * w - 1) + rel[..., 2]


def fake_model_swinvit(feature=48, depths=(2, 2, 2, 2), heads=(3, 6, 12, 24), window=7, in_ch=1, patch=2,
                       prefix="module.", seed=0) -> dict[str, torch.Tensor]:
    """Random tensors under the key layout of Tang et al.'s model_swinvit.pt (as SwinUNETR.load_from reads it)."""
    g = torch.Generator().manual_seed(seed)
    sd = {f"{prefix}patch_embed.proj.weight": torch.randn(feature, in_ch, patch, patch, patch, generator=g),
          f"{prefix}patch_embed.proj.bias": torch.randn(feature, generator=g)}
    index = relative_position_index(window)
    for stage in range(1, 5):
        dim, h = feature * 2 ** (stage - 1), heads[stage - 1]
        shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,),
                  "attn.relative_position_bias_table": ((2 * window - 1) ** 3, h),
                  "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
                  "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,), "norm2.weight": (dim,),
                  "norm2.bias": (dim,), "mlp.fc1.weight": (4 * dim, dim), "mlp.fc1.bias": (4 * dim,),
                  "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,)}
        for j in range(depths[stage - 1]):
            for part in BLOCK_PARTS:
                key = f"{prefix}layers{stage}.0.blocks.{j}.{part}"
                sd[key] = index.clone() if part.endswith("index") else torch.randn(shapes[part], generator=g)
        down = f"{prefix}layers{stage}.0.downsample."
        sd[down + "reduction.weight"] = torch.randn(2 * dim, 8 * dim, generator=g)
        sd[down + "norm.weight"] = torch.randn(8 * dim, generator=g)
        sd[down + "norm.bias"] = torch.randn(8 * dim, generator=g)
    return sd


def _save(path, state):
    torch.save({"state_dict": state}, path)
    return path


def test_imports_the_released_layout_key_for_key(tmp_path):
    fake = fake_model_swinvit()
    path = _save(tmp_path / "model_swinvit.pt", fake)
    assert looks_like_swinunetr(path)
    enc = import_swinunetr(path)
    assert enc.spec.name == "ct_swin_base"
    h = enc.spec.hparams
    assert (h["feature_size"], h["window_size"], h["depths"], h["num_heads"]) == (48, 7, [2, 2, 2, 2], [3, 6, 12, 24])
    assert enc.spec.input["windows"] == [[-1000.0, 1000.0]] and enc.spec.input["shape"] == [96, 96, 96]
    assert "model_swinvit.pt" in enc.spec.provenance
    swin = enc.swin
    # Every released tensor sits where SwinUNETR.load_from puts it (fc1/fc2 -> MONAI's linear1/linear2).
    assert torch.equal(swin.patch_embed.proj.weight, fake["module.patch_embed.proj.weight"])
    assert torch.equal(swin.layers3[0].blocks[1].mlp.linear1.weight, fake["module.layers3.0.blocks.1.mlp.fc1.weight"])
    assert torch.equal(swin.layers4[0].blocks[0].attn.relative_position_bias_table,
                       fake["module.layers4.0.blocks.0.attn.relative_position_bias_table"])
    assert torch.equal(swin.layers2[0].downsample.reduction.weight, fake["module.layers2.0.downsample.reduction.weight"])
    ours = enc.state_dict()
    assert len(ours) == len(fake)
    mapping, skipped, unknown = swinunetr_key_map(list(fake))
    assert not skipped and not unknown
    for key, tensor in fake.items():
        assert torch.equal(ours[mapping[key]], tensor), key


def test_matches_monai_swinunetr_load_from(tmp_path):
    """MONAI's own loader is the reference: both put every tensor in the same MONAI parameter."""
    from monai.networks.nets import SwinUNETR

    fake = fake_model_swinvit(feature=12, heads=(1, 2, 4, 8), window=4, seed=1)
    path = _save(tmp_path / "small.pt", fake)
    enc = import_swinunetr(path, shape=[32, 32, 32])
    ref = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, num_heads=(1, 2, 4, 8), window_size=4)
    ref.load_from(torch.load(path, weights_only=True))
    ours = enc.swin.state_dict()
    assert set(ours) == set(ref.swinViT.state_dict())
    for k, v in ref.swinViT.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert enc(torch.rand(1, 1, 32, 32, 32)).shape == (1, 192)


def test_other_prefixes_and_ssl_heads(tmp_path):
    fake = fake_model_swinvit(feature=12, heads=(1, 2, 4, 8), window=4, prefix="module.swinViT.")
    fake["module.rotation_head.weight"] = torch.zeros(4, 192)
    fake["module.contrastive_head.weight"] = torch.zeros(512, 192)
    fake["module.conv.0.weight"] = torch.zeros(96, 192, 3, 3, 3)
    enc = import_swinunetr(_save(tmp_path / "ssl_head.pt", fake), shape=[32, 32, 32])
    assert torch.equal(enc.swin.patch_embed.proj.bias, fake["module.swinViT.patch_embed.proj.bias"])
    assert "skipped 3 non-encoder key(s)" in enc.spec.provenance and "rotation_head" in enc.spec.provenance


def test_unknown_missing_and_misshapen_keys_are_errors(tmp_path):
    small = dict(feature=12, heads=(1, 2, 4, 8), window=4)
    extra = fake_model_swinvit(**small)
    extra["module.layers1.0.blocks.0.attn.qkv.scale"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected key.*layers1\.0\.blocks\.0\.attn\.qkv\.scale"):
        import_swinunetr(_save(tmp_path / "extra.pt", extra))
    missing = fake_model_swinvit(**small)
    del missing["module.layers2.0.blocks.1.norm2.bias"]
    with pytest.raises(CheckpointError, match=r"missing key.*swin\.layers2\.0\.blocks\.1\.norm2\.bias"):
        import_swinunetr(_save(tmp_path / "missing.pt", missing), shape=[32, 32, 32])
    bad = fake_model_swinvit(**small)
    bad["module.layers1.0.blocks.0.mlp.fc1.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"mlp\.linear1\.bias has shape \(7,\), expected \(48,\)"):
        import_swinunetr(_save(tmp_path / "bad.pt", bad), shape=[32, 32, 32])


class _NotATensor:
    pass


def test_refuses_pickled_code_and_other_layouts(tmp_path):
    code = tmp_path / "code.pt"
    torch.save({"state_dict": {}, "obj": _NotATensor()}, code)
    with pytest.raises(CheckpointError, match="tensor-only"):
        import_swinunetr(code)
    assert not looks_like_swinunetr(code)
    ecg = tmp_path / "ecg.pt"
    torch.save({"encoder": {"W_P.weight": torch.zeros(4, 2)}}, ecg)
    assert not looks_like_swinunetr(ecg)
    with pytest.raises(CheckpointError, match="no SwinUNETR Swin weights"):
        import_swinunetr(ecg)


def test_spec_states_the_release_preprocessing_and_the_data_path_applies_it(tmp_path):
    """Tang et al.'s pretraining (SwinUNETR/Pretrain/utils/data_utils.py): RAS, then
    ScaleIntensityRanged(a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True), 96^3 crops."""
    import numpy as np
    from monai.transforms import ScaleIntensityRange

    from medssl.ct.modality import CTInputSettings
    from medssl.ct.windowing import window_channels

    enc = import_swinunetr(_save(tmp_path / "model_swinvit.pt", fake_model_swinvit()))
    spec = enc.spec.input
    assert "[-1000, 1000]" in spec["release_preprocessing"] and "data_utils.py" in spec["release_preprocessing"]
    settings = CTInputSettings.from_spec(spec)
    assert list(settings.shape) == [96, 96, 96]
    hu = np.linspace(-2500, 2500, 101, dtype=np.float32)
    release = np.asarray(ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True)(hu))
    assert np.allclose(window_channels(hu, settings.windows)[0], release, atol=1e-6)
