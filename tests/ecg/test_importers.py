"""Import of the ECG-JEPA public release checkpoint through the explicit key map."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from medssl.checkpoint import CheckpointError, load_encoder
from medssl.ecg.importers import import_ecg_jepa_release

C, P, T = 8, 50, 50  # leads, patches per lead, samples per patch (the release's layout)


def fake_release_state(dim=32, depth=2, qkv_bias=False, seed=0) -> dict[str, torch.Tensor]:
    """A state dict with the release's exact `MaskTransformer` key layout and random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.1  # noqa: E731
    state = {"W_P.weight": r(dim, T), "W_P.bias": r(dim), "pos_embed": r(C * P, dim),
             "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        b = f"encoder_blocks.blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim),
            b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
            b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
            b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim),
        })
        if qkv_bias:
            state[b + "attn.qkv.bias"] = r(3 * dim)
    return state


def release_representation(state, x, num_heads) -> torch.Tensor:
    """The release's forward, written out: W_P, then for each block (x + pos) -> pre-norm block
    with the row/column attention mask, final LayerNorm, mean over tokens."""
    bs = x.shape[0]
    h = x.reshape(bs, C * P, T) @ state["W_P.weight"].T + state["W_P.bias"]
    allowed = torch.zeros(C * P, C * P)
    for i in range(C):
        allowed[i * P:(i + 1) * P, i * P:(i + 1) * P] = 1
    for i in range(P):
        allowed[i::P, i::P] = 1
    bias = torch.where(allowed == 1, 0.0, float("-inf"))
    dim = h.shape[-1]
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder_blocks"))
    for i in range(depth):
        b = f"encoder_blocks.blocks.{i}."
        h = h + state["pos_embed"]
        y = F.layer_norm(h, (dim,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-5)
        qkv = y @ state[b + "attn.qkv.weight"].T + state.get(b + "attn.qkv.bias", 0)
        q, k, v = qkv.reshape(bs, C * P, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * (dim // num_heads) ** -0.5 + bias, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(bs, C * P, dim)
        h = h + y @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        y = F.layer_norm(h, (dim,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-5)
        y = F.gelu(y @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"])
        h = h + y @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"]
    h = F.layer_norm(h, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-5)
    return h.mean(1)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_every_tensor_lands_where_it_should(tmp_path, qkv_bias):
    state = fake_release_state(qkv_bias=qkv_bias)
    path = tmp_path / "epoch100.pth"
    torch.save({"encoder": state, "epoch": 99}, path)
    enc = load_encoder(path)
    ours = enc.state_dict()
    assert enc.spec.hparams["depth"] == 2 and enc.spec.embed_dim == 32
    assert torch.equal(ours["patch_embed.weight"], state["W_P.weight"])
    assert torch.equal(ours["pos_embed"], state["pos_embed"])
    assert torch.equal(ours["transformer.norm.bias"], state["norm.bias"])
    for i in range(2):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            key = f"encoder_blocks.blocks.{i}.{part}.weight"
            assert torch.equal(ours[f"transformer.blocks.{i}.{part}.weight"], state[key]), key
    assert ("transformer.blocks.0.attn.qkv.bias" in ours) == qkv_bias
    assert "ECG-JEPA public release" in enc.spec.provenance


def test_imported_encoder_reproduces_the_release_representation(tmp_path):
    state = fake_release_state(dim=32, depth=2)
    torch.save({"encoder": state}, tmp_path / "ecg_jepa.pt")
    enc = import_ecg_jepa_release(tmp_path / "ecg_jepa.pt", num_heads=4)
    x = torch.randn(2, C, P * T, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), release_representation(state, x, num_heads=4), rtol=0, atol=1e-5)


def test_unexpected_and_missing_keys_are_reported(tmp_path):
    state = fake_release_state()
    state["encoder_blocks.blocks.0.attn.rope.freqs"] = torch.zeros(3)
    torch.save({"encoder": state}, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match=r"a\.pth: unexpected key.*rope"):
        load_encoder(tmp_path / "a.pth")
    state = fake_release_state()
    del state["encoder_blocks.blocks.1.mlp.fc2.bias"]
    torch.save({"encoder": state}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"b\.pth: missing key.*blocks\.1\.mlp\.fc2\.bias"):
        load_encoder(tmp_path / "b.pth")


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"encoder": Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pth: cannot be read as a tensor-only checkpoint"):
        load_encoder(path)


def test_unknown_file_formats_are_named(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="weights.bin: not a checkpoint folder"):
        load_encoder(path)


def test_imported_contract_is_the_releases_preprocessing_and_the_data_path_honours_it(tmp_path):
    """The release (ECG_JEPA ecg_data.py) feeds raw amplitudes of I, II, V1-V6 resampled to 250 Hz
    with scipy.signal.resample, no filter, no standardisation: so must medssl for its weights."""
    import numpy as np
    import scipy.signal as sps

    from medssl.ecg.dataset import preprocess_for_encoder
    from medssl.ecg.record import EcgRecord
    from medssl.registry import create_encoder

    path = tmp_path / "epoch100.pth"
    torch.save({"encoder": fake_release_state()}, path)
    spec = import_ecg_jepa_release(path, num_heads=4).spec.input
    assert spec["leads"] == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert (spec["sampling_rate"], spec["num_samples"], spec["units"]) == (250.0, 2500, "mV")
    assert spec["bandpass_hz"] is None and spec["standardize"] is False
    assert "band-pass" not in spec["normalisation"] and "no standardisation" in spec["normalisation"]
    assert "ecg_data.py" in spec["release_preprocessing"]
    # a recipe's filter does not override the contract (the bench passes data.bandpass through)
    prep = preprocess_for_encoder(spec, bandpass_low=0.67, bandpass_high=40.0)
    assert (prep.bandpass_low, prep.bandpass_high, prep.standardize) == (None, None, False)
    # 10 s at 500 Hz with a DC offset and baseline wander, which a 0.67 Hz high-pass and a z-score remove
    t = np.arange(5000) / 500.0
    scale = np.linspace(0.5, 1.5, 8)[:, None]
    signal = (scale * (0.8 + 0.3 * np.sin(2 * np.pi * 0.2 * t) + 0.5 * np.sin(2 * np.pi * 7.0 * t))).astype(np.float32)
    record = EcgRecord(signal=signal, lead_names=tuple(spec["leads"]), sampling_rate=500.0, record_id="r", path="")
    x = prep(record)
    release = sps.resample(signal.astype(np.float64), 2500, axis=1)
    assert x.shape == (8, 2500)
    assert np.abs(x - release)[:, 50:-50].max() < 0.01  # polyphase vs FFT resampling: equal in-band
    assert np.allclose(x.mean(axis=1), 0.8 * scale[:, 0], atol=0.05)  # the offset is still there
    # medssl's own encoders keep their contract: 0.67-40 Hz band-pass and a per-lead z-score
    native = preprocess_for_encoder(create_encoder("ecg_jepa_tiny").spec.input)
    assert (native.bandpass_low, native.bandpass_high, native.standardize) == (0.67, 40.0, True)
