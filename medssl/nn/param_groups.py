"""Optimizer parameter groups: which parameters decay, and per-layer learning-rate scales.

The one helper behind pretraining's AdamW (`medssl.engine.module.param_groups`), layer-wise
learning-rate decay fine-tuning (`medssl.bench.finetune.layerwise_lr_groups`, MAE's
`param_groups_lrd`) and the MRI task fine-tuning's encoder learning-rate scale
(`medssl.mri.finetune`):

- `no_weight_decay_ids(module, names, match=..., norm_layers=...)`: the parameters that get no
  weight decay: 1-D parameters (norm scales, biases, tokens of one vector), parameters named
  `bias`, with `norm_layers` every parameter of a LayerNorm / GroupNorm / BatchNorm-family layer,
  and parameters matching one of `names`: `match="contains"` tests the qualified name
  (`transformer.pos_embed`, a recipe's `optim.no_weight_decay` parts), `match="suffix"` the end of
  the parameter's own name (`pos_embed`, `cls_token`).
- `param_groups(layers, weight_decay, ...)`: for each layer (a list of parameters, in order), a
  group with `weight_decay` and then, given `no_decay`, one with weight decay 0 of the parameters
  in it; frozen parameters (`requires_grad=False`) are left out and empty groups dropped unless
  `keep_empty`. With `lr`, layer i's groups get `lr * lr_scales[i]`, plus `lr_scale` and
  `layer_id` with `layer_keys`, and `base_lr` (the scheduled peak) with `base_lr`.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence

from torch import nn

NORM_LAYERS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
MATCHES = ("contains", "suffix")


def no_weight_decay_ids(module: nn.Module, names: Iterable[str] = (), *, match: str = "contains",
                        norm_layers: bool = False) -> set[int]:
    """ids of `module`'s parameters that get no weight decay (the rules in the module docstring)."""
    if match not in MATCHES:
        raise ValueError(f"match must be one of {MATCHES}, got {match!r}")
    names = tuple(names)
    out = set()
    for mod_name, m in module.named_modules():
        norm = norm_layers and isinstance(m, NORM_LAYERS)
        for p_name, p in m.named_parameters(recurse=False):
            if match == "contains":
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                named = any(k in full for k in names)
            else:
                named = any(p_name.endswith(k) for k in names)
            if p.ndim <= 1 or p_name == "bias" or norm or named:
                out.add(id(p))
    return out


def param_groups(layers: Sequence[Iterable[nn.Parameter]], weight_decay: float, *,
                 no_decay: Container[int] | None = None, lr: float | None = None,
                 lr_scales: Sequence[float] | None = None, keep_empty: bool = False,
                 layer_keys: bool = False, base_lr: bool = False) -> list[dict]:
    """Optimizer groups over `layers` (see the module docstring). Without `no_decay` every
    parameter decays (one group per layer); `lr_scales` defaults to 1 for every layer."""
    scales = [1.0] * len(layers) if lr_scales is None else [float(s) for s in lr_scales]
    if len(scales) != len(layers):
        raise ValueError(f"{len(scales)} learning-rate scales for {len(layers)} layers")
    groups = []
    for i, (params, scale) in enumerate(zip(layers, scales)):
        params = [p for p in params if p.requires_grad]
        split = [(weight_decay, params)] if no_decay is None else [
            (weight_decay, [p for p in params if id(p) not in no_decay]),
            (0.0, [p for p in params if id(p) in no_decay]),
        ]
        for wd, ps in split:
            if not ps and not keep_empty:
                continue
            g = {"params": ps}
            if lr is not None:
                g["lr"] = lr * scale
                if base_lr:
                    g["base_lr"] = lr * scale
            g["weight_decay"] = wd
            if layer_keys:
                g["lr_scale"] = scale
                g["layer_id"] = i
            groups.append(g)
    return groups
