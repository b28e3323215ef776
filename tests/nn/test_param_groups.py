"""The one parameter-group helper gives the groups the three former helpers gave."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.bench.finetune import encoder_layers, layerwise_lr_groups
from medssl.engine.module import param_groups as pretrain_groups
from medssl.mri.finetune import _param_groups as mri_groups
from medssl.nn.param_groups import no_weight_decay_ids, param_groups
from medssl.registry import create_encoder

_NAMES = ("pos_embed", "cls_token", "mask_token", "sep_embed", "lead_embed")
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


# The three former helpers, verbatim but for names: the reference the shared helper must reproduce.
def _former_pretrain(module, weight_decay, no_weight_decay=()):
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in no_weight_decay)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _former_no_decay_ids(module):
    out = set()
    for m in module.modules():
        for p_name, p in m.named_parameters(recurse=False):
            if (p.ndim <= 1 or p_name == "bias" or isinstance(m, _NORMS) or any(p_name.endswith(k) for k in _NAMES)):
                out.add(id(p))
    return out


def _former_lrd(encoder, base_lr, decay, weight_decay, *, head=None):
    layers = encoder_layers(encoder)
    if head is not None:
        layers[-1] = layers[-1] + list(head.parameters())
    top = len(layers) - 1
    no_decay = _former_no_decay_ids(encoder) | (_former_no_decay_ids(head) if head is not None else set())
    groups = []
    for i, params in enumerate(layers):
        scale = decay ** (top - i)
        for wd, pick in ((weight_decay, lambda p: id(p) not in no_decay), (0.0, lambda p: id(p) in no_decay)):
            ps = [p for p in params if p.requires_grad and pick(p)]
            if ps:
                groups.append({"params": ps, "lr": base_lr * scale, "weight_decay": wd, "lr_scale": scale,
                               "layer_id": i})
    return groups


def _former_mri(model, lr, encoder_scale, weight_decay):
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
    groups = [{"params": rest, "lr": lr, "base_lr": lr, "weight_decay": weight_decay}]
    if enc:
        groups.append({"params": enc, "lr": lr * encoder_scale, "base_lr": lr * encoder_scale,
                       "weight_decay": weight_decay})
    return groups


def _named(model, groups):
    ids = {id(p): n for n, p in model.named_parameters()}
    return [{**{k: v for k, v in g.items() if k != "params"}, "params": [ids[id(p)] for p in g["params"]]}
            for g in groups]


class _Toy(nn.Module):
    """Edge cases: a lead embedding (2-D, named), a LayerNorm with 2-D scale, a frozen layer."""

    def __init__(self):
        super().__init__()
        self.lead_embed = nn.Parameter(torch.zeros(12, 8))
        self.stem = nn.Linear(8, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.LayerNorm((2, 4))) for _ in range(3))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return x.mean(1)


MODELS = ["retina_vit_tiny", "mri_vit3d_tiny", "ct_vit3d_tiny", "mri_unet_tiny", "ecg_jepa_tiny", "ecg_mae_vit_tiny",
          "ecg_resnet1d_tiny", "toy"]


def _model(name):
    torch.manual_seed(0)
    return _Toy() if name == "toy" else create_encoder(name, **({"depth": 2} if "vit" in name else {}))


@pytest.mark.parametrize("name", MODELS)
def test_groups_are_those_of_the_former_helpers(name):
    enc = _model(name)
    for extra in ((), ("pos_embed", "cls_token"), ("norm",)):
        assert _named(enc, pretrain_groups(enc, 0.05, extra)) == _named(enc, _former_pretrain(enc, 0.05, extra))
    head = nn.Linear(enc.spec.embed_dim if name != "toy" else 8, 3)
    holder = nn.ModuleDict({"encoder": enc, "head": head})
    if name not in ("mri_unet_tiny",):  # the U-Net has no block list for LLRD
        new = layerwise_lr_groups(enc, 1e-3, 0.75, 0.05, head=head)
        assert _named(holder, new) == _named(holder, _former_lrd(enc, 1e-3, 0.75, 0.05, head=head))
    assert _named(holder, mri_groups(holder, 1e-3, 0.1, 0.01)) == _named(holder, _former_mri(holder, 1e-3, 0.1, 0.01))
    enc.requires_grad_(False)  # a frozen encoder: its group is left out
    assert _named(holder, mri_groups(holder, 1e-3, 0.1, 0.01)) == _named(holder, _former_mri(holder, 1e-3, 0.1, 0.01))


def test_no_decay_rules():
    toy = _Toy()
    names = {id(p): n for n, p in toy.named_parameters()}
    plain = {names[i] for i in no_weight_decay_ids(toy)}
    assert "lead_embed" not in plain and "blocks.0.1.weight" not in plain and "stem.bias" in plain
    assert "norm.weight" in plain and "stem.weight" not in plain
    named = {names[i] for i in no_weight_decay_ids(toy, ["lead_embed", "blocks.1"], match="contains")}
    assert {"lead_embed", "blocks.1.0.weight", "blocks.1.1.weight"} <= named and "blocks.0.0.weight" not in named
    suffix = {names[i] for i in no_weight_decay_ids(toy, ["lead_embed", "blocks.1"], match="suffix", norm_layers=True)}
    assert "lead_embed" in suffix and "blocks.1.0.weight" not in suffix and "blocks.0.1.weight" in suffix
    with pytest.raises(ValueError, match="match must be"):
        no_weight_decay_ids(toy, match="prefix")


def test_param_groups_layers_and_keys():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    g = param_groups([list(a.parameters()), list(b.parameters())], 0.1, no_decay={id(a.bias), id(b.bias)},
                     lr=2.0, lr_scales=[0.5, 1.0], layer_keys=True)
    assert [(len(x["params"]), x["lr"], x["weight_decay"], x["layer_id"]) for x in g] == [
        (1, 1.0, 0.1, 0), (1, 1.0, 0.0, 0), (1, 2.0, 0.1, 1), (1, 2.0, 0.0, 1)]
    assert param_groups([[]], 0.1, no_decay=set(), keep_empty=True) == [
        {"params": [], "weight_decay": 0.1}, {"params": [], "weight_decay": 0.0}]
    with pytest.raises(ValueError, match="2 learning-rate scales for 1 layers"):
        param_groups([[]], 0.1, lr_scales=[1, 2])
