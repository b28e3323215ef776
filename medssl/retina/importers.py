"""Import of RETFound-layout checkpoints (timm ViT / MAE keys) into medssl's retina ViT.

RETFound (Zhou Y et al., "A foundation model for generalizable disease detection from retinal
images", Nature 2023; github.com/rmaphoh/RETFound_MAE) releases MAE-pretrained ViT-L/16 weights
(1024 wide, 24 deep, 16 heads, 224 x 224 RGB, qkv bias, LayerNorm eps 1e-6) as a `.pth` file
whose `model` entry is a timm-style state dict:

    cls_token (1, 1, D)                 pos_embed (1, 1 + N, D)   [cls slot first]
    patch_embed.proj.weight (D, C, p, p), patch_embed.proj.bias (D,)
    blocks.{i}.norm1.*, blocks.{i}.attn.qkv.*, blocks.{i}.attn.proj.*, blocks.{i}.norm2.*,
    blocks.{i}.mlp.fc1.*, blocks.{i}.mlp.fc2.*
    norm.*  (MAE pretraining)  or  fc_norm.*  (fine-tuned with global pooling)
    mask_token, decoder_*  (the MAE decoder)  and  head.*  (a fine-tuned classifier): ignored.

`retfound_key_map` maps every key explicitly; a key it does not know is an error, never silently
dropped. Positions are interpolated bicubically over the patch grid (cls slot kept) when the
target input size differs (as RETFound's own `interpolate_pos_embed` does). Images are expected as
RETFound was trained: RGB in [0, 1], then ImageNet mean/std per channel. With `in_chans=1` the
patch embedding is adapted exactly for grey images: the kernel becomes sum_c W_c / std_c and the
bias b - sum_c (sum W_c) mean_c / std_c, so a [0, 1] grey image gives what RETFound computes on
that image replicated to RGB and ImageNet-normalised.

Files are read with `torch.load(weights_only=True)` (tensors and plain containers only; MAE's
saved `args` Namespace is allowed as a plain attribute holder); no code in the file runs.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.checkpoint import CheckpointError, register_importer
from medssl.registry import create_encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RETFOUND_RGB_INTENSITY = "RGB in [0,1], then ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) per channel"
RETFOUND_GREY_INTENSITY = "unit [0,1] grey (RETFound's per-channel colour normalisation is folded into the patch embedding)"
# RETFound_MAE util/datasets.py, build_transform (evaluation): RGB, bicubic resize of the short
# side to input/0.875, centre crop to the input size, ToTensor ([0, 1]), ImageNet mean/std.
RELEASE_PREPROCESSING = ("RGB; bicubic resize to 256 and centre crop to 224 (evaluation); [0, 1]; ImageNet "
                         "mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) per channel "
                         "(RETFound_MAE util/datasets.py)")
RETFOUND_PAPER = (
    "Zhou Y, Chia MA, Wagner SK, et al. A foundation model for generalizable disease detection from "
    "retinal images. Nature 622, 156-163 (2023) (RETFound)"
)

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")
_FIXED = {
    "cls_token": "cls_token",
    "pos_embed": "pos_embed",
    "patch_embed.proj.weight": "patch_embed.weight",
    "patch_embed.proj.bias": "patch_embed.bias",
}
_IGNORED = re.compile(r"^(mask_token|decoder_.*|head\..*)$")


@dataclass
class ImportReport:
    """What happened to every key of the checkpoint."""

    mapped: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    interpolated: tuple[tuple[int, int], tuple[int, int]] | None = None
    adapted_channels: str | None = None


def retfound_key_map(keys) -> tuple[dict[str, str], list[str], list[str]]:
    """(checkpoint key -> medssl key, keys ignored on purpose, unknown keys).

    `fc_norm.*` (fine-tuned with global pooling) takes the final LayerNorm's place; `norm.*` does
    when there is no fc_norm (MAE pretraining), and is ignored otherwise.
    """
    keys = list(keys)
    final = "fc_norm" if any(k.startswith("fc_norm.") for k in keys) else "norm"
    mapping, ignored, unknown = {}, [], []
    for key in keys:
        if key in _FIXED:
            mapping[key] = _FIXED[key]
        elif m := _BLOCK_KEY.match(key):
            mapping[key] = f"transformer.blocks.{m[1]}.{m[2]}.{m[3]}"
        elif key in (f"{final}.weight", f"{final}.bias"):
            mapping[key] = "transformer.norm." + key.split(".")[1]
        elif _IGNORED.match(key) or key in ("norm.weight", "norm.bias"):
            ignored.append(key)
        else:
            unknown.append(key)
    return mapping, ignored, unknown


def interpolate_pos_embed(pos: Tensor, n_prefix: int, grid: tuple[int, int]) -> Tensor:
    """(1, n_prefix + n*n, D) positions on a square n x n grid -> (1, n_prefix + gh*gw, D), bicubic
    over the grid (align_corners=False); prefix (cls) positions unchanged."""
    pos = pos.reshape(1, -1, pos.shape[-1])
    prefix, tokens = pos[:, :n_prefix], pos[:, n_prefix:]
    n = math.isqrt(tokens.shape[1])
    if n * n != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} position tokens do not form a square grid")
    if (n, n) == tuple(grid):
        return pos
    d = tokens.shape[-1]
    img = tokens.reshape(1, n, n, d).permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([prefix, img.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos.dtype)], dim=1)


def fold_imagenet_norm_to_grey(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """RGB patch embedding (D, 3, p, p) on ImageNet-normalised input -> grey (D, 1, p, p) on [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=weight.dtype)
    std = torch.tensor(IMAGENET_STD, dtype=weight.dtype)
    w = (weight / std[None, :, None, None]).sum(dim=1, keepdim=True)
    b = bias - (weight.sum(dim=(2, 3)) * (mean / std)[None]).sum(dim=1)
    return w, b


def _state_from(obj, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if isinstance(obj, dict) and "patch_embed.proj.weight" in obj:
        return obj
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{path}: no RETFound/timm ViT state dict (`model` entry with patch_embed.proj.weight); found {keys}")


def read_torch_file(path: str | Path, *, mmap: bool = False):
    """torch.load(weights_only=True) with argparse.Namespace allowed; errors name the file."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # a pickle with code in it, or not a torch file at all
        raise CheckpointError(f"{path}: cannot be read as a tensor-only checkpoint ({type(e).__name__})") from None


def convert_retfound_state(
    state: dict[str, Tensor],
    *,
    image_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
    num_heads: int | None = None,
    pool: str = "mean",
    source: str = "checkpoint",
) -> tuple[dict[str, Tensor], dict, ImportReport]:
    """RETFound/timm ViT state -> (medssl state dict, create_encoder kwargs, report).

    image_size: the model input size (default: the checkpoint's grid x patch size); in_chans:
    1 folds the RGB patch embedding for grey input (see module docstring), None keeps the
    checkpoint's channels; num_heads: not stored in a state dict, default width / 64 (ViT-L: 16).
    """
    mapping, ignored, unknown = retfound_key_map(state)
    if unknown:
        raise CheckpointError(f"{source}: unexpected key(s) for a RETFound ViT: {unknown[:8]}")
    for required in ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight"):
        if required not in state:
            raise CheckpointError(f"{source}: missing key {required!r}")
    embed_dim, c_ckpt, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(_BLOCK_KEY.match(k)[1]) for k in state if _BLOCK_KEY.match(k))
    n_prefix = 1 if "cls_token" in state else 0
    n_pos = state["pos_embed"].reshape(-1, embed_dim).shape[0] - n_prefix
    n = math.isqrt(n_pos)
    if n * n != n_pos:
        raise CheckpointError(f"{source}: pos_embed holds {n_pos} patch positions, not a square grid")
    image_size = tuple(int(s) for s in (image_size or (n * patch, n * patch)))
    report = ImportReport(mapped=mapping, ignored=sorted(ignored))
    ours = {mapping[k]: v.float() for k, v in state.items() if k in mapping}
    grid = (image_size[0] // patch, image_size[1] // patch)
    if (n, n) != grid:
        ours["pos_embed"] = interpolate_pos_embed(ours["pos_embed"], n_prefix, grid)
        report.interpolated = ((n, n), grid)
    channels = c_ckpt if in_chans is None else int(in_chans)
    intensity = RETFOUND_RGB_INTENSITY
    if channels != c_ckpt:
        if not (c_ckpt == 3 and channels == 1):
            raise CheckpointError(f"{source}: cannot adapt a {c_ckpt}-channel patch embedding to {channels} channels")
        ours["patch_embed.weight"], ours["patch_embed.bias"] = fold_imagenet_norm_to_grey(
            ours["patch_embed.weight"], ours["patch_embed.bias"])
        report.adapted_channels = "RGB -> grey: ImageNet normalisation folded into the patch embedding"
        intensity = RETFOUND_GREY_INTENSITY
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state else 4 * embed_dim
    hparams = dict(
        in_chans=channels, image_size=list(image_size), patch_size=int(patch), embed_dim=int(embed_dim),
        depth=depth, num_heads=int(num_heads or max(embed_dim // 64, 1)), mlp_ratio=hidden / embed_dim,
        cls_token=bool(n_prefix), pool=pool, intensity=intensity,
    )
    return ours, hparams, report


def _encoder_name(embed_dim: int) -> str:
    return {1024: "retina_vit_large", 768: "retina_vit_base"}.get(embed_dim, "retina_vit_tiny")


def import_retfound(
    path: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
    num_heads: int | None = None,
    pool: str = "mean",
    return_report: bool = False,
):
    """A `retina_vit_*` encoder holding a RETFound-layout checkpoint's weights (eval mode).

    The architecture is read from the tensors (see `convert_retfound_state` for the options);
    the registered name follows the width (1024: retina_vit_large, 768: retina_vit_base, other:
    retina_vit_tiny), with every hyper-parameter overridden from the checkpoint. Raises
    CheckpointError naming unexpected, missing or mis-shaped keys. With `return_report`, returns
    (encoder, ImportReport).
    """
    path = Path(path)
    state = _state_from(read_torch_file(path), path)
    ours, hparams, report = convert_retfound_state(
        state, image_size=image_size, in_chans=in_chans, num_heads=num_heads, pool=pool, source=str(path))
    encoder = create_encoder(_encoder_name(hparams["embed_dim"]), **hparams)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(ours))
    if missing:
        raise CheckpointError(f"{path}: missing key(s) for {encoder.spec.name}: {missing[:8]}")
    for k, v in ours.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    encoder.load_state_dict(ours, strict=True)
    with path.open("rb") as f:  # streamed: a ViT-L checkpoint is over a gigabyte
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    notes = [f"{len(report.ignored)} key(s) ignored (MAE decoder / classifier head)"]
    if report.interpolated:
        notes.append(f"positions interpolated {report.interpolated[0]} -> {report.interpolated[1]}")
    if report.adapted_channels:
        notes.append(report.adapted_channels)
    encoder.spec.provenance = f"imported from the RETFound-layout checkpoint {path.name} (sha256 {digest}...); " + "; ".join(notes)
    encoder.spec.license = "weights: the RETFound release's licence (see its repository); architecture: Apache-2.0"
    encoder.spec.paper = RETFOUND_PAPER
    encoder.spec.input["release_preprocessing"] = RELEASE_PREPROCESSING
    encoder.eval()
    return (encoder, report) if return_report else encoder


def looks_like_retfound(path: Path) -> bool:
    """A .pth/.pt file holding a timm ViT state dict (directly or under `model`)."""
    if not (path.is_file() and path.suffix in (".pt", ".pth")):
        return False
    try:
        obj = read_torch_file(path, mmap=True)
        _state_from(obj, path)
    except CheckpointError:
        return False
    return True


register_importer("retfound", looks_like_retfound, import_retfound)
