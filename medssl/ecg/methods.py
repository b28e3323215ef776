"""Recipe builders of the ECG self-supervised methods: recipe dict -> (encoder, method)."""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


@register_method("ecg_jepa")
def build_ecg_jepa(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.ecg.encoders import JepaPredictor
    from medssl.ssl.jepa import JEPA
    from medssl.ssl.masking import MultiBlockPatchMasker, RandomPatchMasker

    encoder = create_encoder(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    p = cfg["predictor"]
    predictor = JepaPredictor(
        n_leads=encoder.n_leads, n_time=encoder.n_time, embed_dim=encoder.embed_dim,
        predictor_dim=p["dim"], depth=p["depth"], num_heads=p["num_heads"],
    )
    m = cfg["masking"]
    if m["kind"] == "random":
        masker = RandomPatchMasker(tuple(m["ratio"]))
    elif m["kind"] == "multiblock":
        masker = MultiBlockPatchMasker(m["n_blocks"], tuple(m["block_scale"]))
    else:
        raise ValueError(f"masking.kind must be random or multiblock, got {m['kind']!r}")
    return encoder, JEPA(encoder, predictor, masker, seed=cfg.get("seed", 0))
