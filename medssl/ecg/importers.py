"""Importers of community ECG checkpoints into medssl encoders, through explicit key maps.

ECG-JEPA release (github.com/sehunfromdaegu/ECG_JEPA): a `.pt`/`.pth` file holding a dict whose
`encoder` entry is the state dict of its `MaskTransformer` (keys `W_P.*`, `pos_embed`,
`encoder_blocks.blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`, `norm.*`);
768 wide, 12 deep, 16 heads, 8 leads x 50 patches of 50 samples at 250 Hz. Its forward adds the
positional embedding before every block, and its `representation` is the mean over tokens of
the final LayerNorm: `EcgPatchTransformer` with the release's settings computes the same thing.
Files are read with `torch.load(weights_only=True)`: tensors only, no code runs.

Input contract (`RELEASE_PREPROCESSING`, written into the imported spec and honoured by
`medssl.ecg.dataset.preprocess_for_encoder`, hence by `medssl embed` and the bench): the release
trains and evaluates on raw amplitudes (mV, as stored) of leads I, II, V1-V6, resampled to 250 Hz
(`scipy.signal.resample` to 2500 samples for 10 s, in `ecg_data.py`), with no filter and no
standardisation (its datasets apply no transform). medssl resamples with a polyphase filter
instead of the FFT; both are band-limited and agree within the 0-125 Hz band.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor

from medssl.checkpoint import CheckpointError, register_importer
from medssl.registry import create_encoder

_BLOCK_KEY = re.compile(r"^encoder_blocks\.blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_FIXED = {
    "W_P.weight": "patch_embed.weight",
    "W_P.bias": "patch_embed.bias",
    "pos_embed": "pos_embed",
    "norm.weight": "transformer.norm.weight",
    "norm.bias": "transformer.norm.bias",
}


RELEASE_PREPROCESSING = {
    "leads": ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"],
    "sampling_rate": 250.0,
    "num_samples": 2500,
    "units": "mV",
    "bandpass_hz": None,
    "standardize": False,
    "normalisation": "none: raw amplitudes resampled to 250 Hz, no filter, no standardisation (ECG-JEPA release)",
    "release_preprocessing": ("leads I, II, V1-V6; scipy.signal.resample to 2500 samples (10 s at 250 Hz); no "
                              "filter; no standardisation (ECG_JEPA ecg_data.py)"),
}


def ecg_jepa_key_map(keys) -> tuple[dict[str, str], list[str]]:
    """Release key -> medssl key for every key the map knows; and the keys it does not know."""
    mapping, unknown = {}, []
    for key in keys:
        if key in _FIXED:
            mapping[key] = _FIXED[key]
        elif m := _BLOCK_KEY.match(key):
            mapping[key] = f"transformer.blocks.{m[1]}.{m[2]}.{m[3]}"
        else:
            unknown.append(key)
    return mapping, unknown


def _encoder_state(obj, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("encoder"), dict):
        return obj["encoder"]
    if isinstance(obj, dict) and any(k.startswith("encoder.") for k in obj):
        return {k[len("encoder."):]: v for k, v in obj.items() if k.startswith("encoder.")}
    raise CheckpointError(f"{path}: no `encoder` state dict found (top-level keys: {list(obj)[:8]})")


def looks_like_ecg_jepa_release(path: Path) -> bool:
    """A .pt/.pth tensor-only file whose encoder state has ECG-JEPA's patch projection `W_P`."""
    if not (path.is_file() and path.suffix in (".pt", ".pth")):
        return False
    try:
        state = _encoder_state(torch.load(path, map_location="cpu", weights_only=True, mmap=True), path)
    except Exception:  # noqa: BLE001 - not this format (or not readable): another importer may claim it
        return False
    return any(k.split(".")[-2:] == ["W_P", "weight"] for k in state)


def import_ecg_jepa_release(path: str | Path, *, num_heads: int = 16) -> torch.nn.Module:
    """An `ecg_jepa_base`-architecture encoder holding the release's weights.

    The architecture (width, depth, patch size, token grid, qkv bias) is read from the tensors;
    the head count is not stored in a state dict and defaults to the release's 16.
    Raises CheckpointError naming missing or unexpected keys.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, or not a torch file at all
        raise CheckpointError(f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__})") from None
    state = _encoder_state(obj, path)
    mapping, unknown = ecg_jepa_key_map(state)
    if unknown:
        raise CheckpointError(f"{path}: unexpected key(s) for an ECG-JEPA encoder: {unknown[:8]}")
    for required in ("W_P.weight", "pos_embed", "norm.weight"):
        if required not in state:
            raise CheckpointError(f"{path}: missing key {required!r}")
    embed_dim, patch_size = state["W_P.weight"].shape
    n_tokens = state["pos_embed"].reshape(-1, embed_dim).shape[0]
    depth = 1 + max(int(_BLOCK_KEY.match(k)[1]) for k in state if _BLOCK_KEY.match(k))
    n_leads = 8
    encoder = create_encoder(
        "ecg_jepa_base", embed_dim=int(embed_dim), depth=depth, num_heads=num_heads, patch_size=int(patch_size),
        num_samples=int(patch_size) * (n_tokens // n_leads), qkv_bias="encoder_blocks.blocks.0.attn.qkv.bias" in state,
    )
    ours = {mapping[k]: v.reshape(encoder.pos_embed.shape) if k == "pos_embed" else v for k, v in state.items()}
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(ours))
    if missing:
        raise CheckpointError(f"{path}: missing key(s) for {encoder.spec.name}: {missing[:8]}")
    for k, v in ours.items():
        if v.shape != encoder.state_dict()[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(encoder.state_dict()[k].shape)}")
    encoder.load_state_dict({k: v.float() for k, v in ours.items()}, strict=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    encoder.spec.provenance = f"imported from the ECG-JEPA public release checkpoint {path.name} (sha256 {digest}...)"
    encoder.spec.license = "weights: the ECG-JEPA release's licence (see its repository); architecture: Apache-2.0"
    encoder.spec.input.update({k: v for k, v in RELEASE_PREPROCESSING.items()
                               if k not in ("sampling_rate", "num_samples", "leads")})
    if encoder.spec.input["sampling_rate"] != RELEASE_PREPROCESSING["sampling_rate"]:
        raise CheckpointError(f"{path}: the encoder's contract says {encoder.spec.input['sampling_rate']} Hz; "
                              "the release's is 250 Hz")
    return encoder.eval()


register_importer("ecg_jepa_release", looks_like_ecg_jepa_release, import_ecg_jepa_release)
