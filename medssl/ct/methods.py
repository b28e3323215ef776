"""Recipe builders of the CT self-supervised methods: recipe dict -> (encoder, method).

The recipe's `data` section fixes the encoder's input contract: `shape`, `spacing_mm` and
`windows` are passed to the encoder factory (with `encoder.overrides` on top), so the cache the
modality builds and the encoder agree by construction.
"""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


def build_ct_encoder(cfg: dict) -> nn.Module:
    """The recipe's encoder, with the input contract of its `data` section."""
    data = cfg["data"]
    contract = {k: data[k] for k in ("shape", "spacing_mm", "windows") if data.get(k) is not None}
    return create_encoder(cfg["encoder"]["name"], **{**contract, **(cfg["encoder"].get("overrides") or {})})


@register_method("dagman")
def build_dagman(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.ct.dagman import DAGMaN

    encoder = build_ct_encoder(cfg)
    m, h, d = cfg["masking"], cfg["head"], cfg["distillation"]
    method = DAGMaN(
        encoder, mask_ratio=m["ratio"], mask_patch_size=m["patch_size"], mask_temperature=m["temperature"],
        sam_heads=cfg["sam"]["num_heads"], head_out_dim=h["out_dim"], head_hidden_dim=h["hidden_dim"],
        head_bottleneck_dim=h["bottleneck_dim"], student_temp=d["student_temp"], teacher_temp=d["teacher_temp"],
        center_momentum=d["center_momentum"], teacher_noise=d["teacher_noise"],
        loss_weights=cfg.get("loss_weights"), seed=cfg.get("seed", 0),
    )
    return encoder, method


@register_method("simmim_ct")
def build_simmim_ct(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.ct.simmim import SimMIM3D

    encoder = build_ct_encoder(cfg)
    m = cfg["masking"]
    return encoder, SimMIM3D(encoder, mask_ratio=m["ratio"], mask_patch_size=m["patch_size"], seed=cfg.get("seed", 0))
