"""Import of SwinUNETR Swin weights (MONAI) into `ct_swin_base`, through an explicit key map.

The self-supervised weights of Tang et al. ("Self-Supervised Pre-Training of Swin Transformers for
3D Medical Image Analysis", CVPR 2022), released by Project-MONAI/research-contributions as
`model_swinvit.pt`, are a `.pt` dict whose `state_dict` holds the Swin backbone under a `module.`
prefix (DDP), in the layout MONAI's `SwinUNETR.load_from` reads:

    module.patch_embed.proj.{weight,bias}
    module.layers{1-4}.0.blocks.{j}.{norm1, attn.relative_position_bias_table,
        attn.relative_position_index, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight,bias}
    module.layers{1-4}.0.downsample.{reduction.weight, norm.weight, norm.bias}

`load_from` copies these into `swinViT.*`, renaming `mlp.fc1`/`mlp.fc2` to MONAI's
`mlp.linear1`/`mlp.linear2`; this map does the same into `CTSwinEncoder.swin.*`. Also read: the
same keys under `module.swinViT.`/`swinViT.` (checkpoints of the research-contributions pretraining
code after its `swin_vit` -> `swinViT` rename, with or without DDP) or `module.swin_vit.`/`swin_vit.`
(before it). The SSL heads of that code (`rotation_*`, `contrastive_*`, `conv`) and the decoder of
a whole SwinUNETR (`encoder{1,2,3,4,10}`, `decoder{1-5}`, `out`) are not part of the encoder: they
are skipped and listed in the provenance. Any other key, or a missing backbone key, is an error.

The architecture (feature size, input channels, depths, heads, window, patch) is read from the
tensors. The input contract is Tang et al.'s pretraining: HU clipped to [-1000, 1000] and scaled to
[0, 1] (`ScaleIntensityRanged(a_min=-1000, a_max=1000)`), 96^3 sub-volumes, RAS; the spacing, which
their pretraining did not resample, is set to their fine-tuning spacing 1.5 x 1.5 x 2.0 mm.
Files are read with `torch.load(weights_only=True)`: tensors only, no code runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from medssl.checkpoint import CheckpointError, register_importer

_BLOCK_PARTS = {  # release name -> MONAI name inside a block
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "attn.relative_position_bias_table": "attn.relative_position_bias_table",
    "attn.relative_position_index": "attn.relative_position_index",
    "attn.qkv.weight": "attn.qkv.weight", "attn.qkv.bias": "attn.qkv.bias",
    "attn.proj.weight": "attn.proj.weight", "attn.proj.bias": "attn.proj.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.linear1.weight", "mlp.fc1.bias": "mlp.linear1.bias",
    "mlp.fc2.weight": "mlp.linear2.weight", "mlp.fc2.bias": "mlp.linear2.bias",
}
_BLOCK_KEY = re.compile(r"^layers([1-4])\.0\.blocks\.(\d+)\.(.+)$")
_DOWN_KEY = re.compile(r"^layers([1-4])\.0\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$")
_FIXED = {"patch_embed.proj.weight": "swin.patch_embed.proj.weight",
          "patch_embed.proj.bias": "swin.patch_embed.proj.bias"}
_BACKBONE_PREFIXES = ("module.swinViT.", "module.swin_vit.", "module.", "swinViT.", "swin_vit.", "")
_NOT_ENCODER = re.compile(
    r"^(module\.)?(rotation_pre|rotation_head|contrastive_pre|contrastive_head|conv"
    r"|encoder(1|2|3|4|10)|decoder[1-5]|out)\."
)
TANG_WINDOW = [-1000.0, 1000.0]
TANG_SPACING_MM = [1.5, 1.5, 2.0]
# What the release's pretraining did to every CT (research-contributions SwinUNETR/Pretrain/utils/
# data_utils.py, defaults in main.py): written into the imported spec as `release_preprocessing`.
RELEASE_PREPROCESSING = ("RAS orientation; HU clipped to [-1000, 1000] and scaled to [0, 1] "
                         "(ScaleIntensityRanged, clip=True); no resampling in pretraining (fine-tuning: "
                         "1.5 x 1.5 x 2.0 mm); 96^3 crops (SwinUNETR/Pretrain/utils/data_utils.py)")


def _backbone_prefix(keys) -> str | None:
    keys = set(keys)
    for prefix in _BACKBONE_PREFIXES:
        if f"{prefix}patch_embed.proj.weight" in keys:
            return prefix
    return None


def swinunetr_key_map(keys: Sequence[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(release key -> medssl key, skipped non-encoder keys, unknown keys) for a SwinUNETR state dict."""
    keys = list(keys)
    prefix = _backbone_prefix(keys)
    mapping, skipped, unknown = {}, [], []
    for key in keys:
        core = key[len(prefix):] if prefix is not None and key.startswith(prefix) else None
        if core is not None and core in _FIXED:
            mapping[key] = _FIXED[core]
        elif core is not None and (m := _BLOCK_KEY.match(core)) and m[3] in _BLOCK_PARTS:
            mapping[key] = f"swin.layers{m[1]}.0.blocks.{m[2]}.{_BLOCK_PARTS[m[3]]}"
        elif core is not None and (m := _DOWN_KEY.match(core)):
            mapping[key] = f"swin.layers{m[1]}.0.downsample.{m[2]}"
        elif _NOT_ENCODER.match(key):
            skipped.append(key)
        else:
            unknown.append(key)
    return mapping, skipped, unknown


def _state_dict(obj, path: Path) -> Mapping[str, Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if isinstance(obj, Mapping) and _backbone_prefix(obj) is not None:
        return obj
    top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no SwinUNETR Swin weights found (no `patch_embed.proj.weight` under "
                          f"{', '.join(repr(p) for p in _BACKBONE_PREFIXES if p)}; top-level: {top})")


def _read(path: Path) -> Mapping[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code in it, or not a torch file at all
        raise CheckpointError(f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__})") from None
    return _state_dict(obj, path)


def _architecture(ours: Mapping[str, Tensor], path: Path) -> dict:
    """The `ct_swin_base` hyper-parameters the tensors imply (depths, heads, window, patch, width)."""
    w = ours["swin.patch_embed.proj.weight"]
    if w.ndim != 5 or len(set(w.shape[2:])) != 1:
        raise CheckpointError(f"{path}: patch embedding weight of shape {tuple(w.shape)} is not a cubic 3-D patch")
    depths, heads, windows = [], [], set()
    for stage in range(1, 5):
        blocks = sorted({int(k.split(".")[4]) for k in ours if k.startswith(f"swin.layers{stage}.0.blocks.")})
        if not blocks or blocks != list(range(len(blocks))):
            raise CheckpointError(f"{path}: stage {stage} has blocks {blocks}, expected 0..n-1")
        depths.append(len(blocks))
        table = ours.get(f"swin.layers{stage}.0.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise CheckpointError(f"{path}: missing the relative position bias table of stage {stage}")
        heads.append(int(table.shape[1]))
        side = round(table.shape[0] ** (1 / 3))
        if side**3 != table.shape[0] or side % 2 == 0:
            raise CheckpointError(f"{path}: relative position table of {table.shape[0]} rows is not (2w-1)^3")
        windows.add((side + 1) // 2)
    if len(windows) != 1:
        raise CheckpointError(f"{path}: stages use different windows {sorted(windows)}")
    return dict(feature_size=int(w.shape[0]), in_channels=int(w.shape[1]), patch_size=int(w.shape[2]),
                depths=depths, num_heads=heads, window_size=windows.pop())


def import_swinunetr(
    path: str | Path, *, windows: Sequence | None = None, shape: Sequence[int] = (96, 96, 96),
    spacing_mm: Sequence[float] = TANG_SPACING_MM,
) -> torch.nn.Module:
    """A `ct_swin_base`-architecture encoder holding a SwinUNETR checkpoint's Swin weights.

    windows: the input channels' HU windows (default: Tang et al.'s [-1000, 1000] HU for each
    input channel). Raises CheckpointError naming unknown, missing or misshapen keys.
    """
    from medssl.registry import create_encoder

    path = Path(path)
    state = _read(path)
    mapping, skipped, unknown = swinunetr_key_map(list(state))
    if unknown:
        raise CheckpointError(f"{path}: unexpected key(s) for a SwinUNETR Swin encoder: {unknown[:8]}"
                              + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""))
    ours = {mapping[k]: v for k, v in state.items() if k in mapping}
    arch = _architecture(ours, path)
    in_channels = arch.pop("in_channels")
    windows = [list(TANG_WINDOW)] * in_channels if windows is None else list(windows)
    if len(windows) != in_channels:
        raise CheckpointError(f"{path}: the weights take {in_channels} input channel(s), {len(windows)} window(s) given")
    encoder = create_encoder("ct_swin_base", windows=windows, shape=list(shape), spacing_mm=list(spacing_mm),
                             intensity="HU clipped to the window, scaled to [0,1] (Tang et al. 2022)", **arch)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise CheckpointError(f"{path}: missing key(s) for {encoder.spec.name}: {missing[:8]}"
                              + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    for k, v in ours.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    encoder.load_state_dict({k: v.to(expected[k].dtype) for k, v in ours.items()}, strict=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    note = f"; skipped {len(skipped)} non-encoder key(s) ({_summary(skipped)})" if skipped else ""
    encoder.spec.provenance = (f"imported from the SwinUNETR checkpoint {path.name} (sha256 {digest}...), "
                               f"{len(ours)} tensors{note}")
    encoder.spec.license = "weights: the checkpoint's licence (MONAI research-contributions: Apache-2.0); architecture: Apache-2.0"
    encoder.spec.paper = ("Tang Y et al. Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image "
                          "Analysis. CVPR 2022")
    encoder.spec.input["release_preprocessing"] = RELEASE_PREPROCESSING
    return encoder.eval()


def _summary(keys: list[str]) -> str:
    heads = sorted({_NOT_ENCODER.match(k)[2] for k in keys})
    return ", ".join(heads)


def looks_like_swinunetr(path: Path) -> bool:
    """A `.pt`/`.pth`/`.ckpt` file whose tensors include a SwinUNETR Swin patch embedding."""
    if not (path.is_file() and path.suffix in (".pt", ".pth", ".ckpt")):
        return False
    try:
        _read(path)
    except CheckpointError:
        return False
    return True


register_importer("swinunetr", looks_like_swinunetr, import_swinunetr)
