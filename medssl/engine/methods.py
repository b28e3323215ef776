"""Method builders: recipe dict -> (encoder, SSL method module). One small function per method."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medssl.registry import create_encoder

MethodBuilder = Callable[[dict], tuple[nn.Module, nn.Module]]
_BUILDERS: dict[str, MethodBuilder] = {}


def register_method(name: str):
    def wrap(fn: MethodBuilder) -> MethodBuilder:
        _BUILDERS[name] = fn
        return fn

    return wrap


def build_method(cfg: dict) -> tuple[nn.Module, nn.Module]:
    """(encoder, method) for `cfg["method"]`; method(x) returns the scalar training loss."""
    name = cfg.get("method")
    if name not in _BUILDERS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[name](cfg)


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
        cross_pattern_attention=encoder.cross_pattern_attention,
    )
    m = cfg["masking"]
    if m["kind"] == "random":
        masker = RandomPatchMasker(tuple(m["ratio"]))
    elif m["kind"] == "multiblock":
        masker = MultiBlockPatchMasker(m["n_blocks"], tuple(m["block_scale"]))
    else:
        raise ValueError(f"masking.kind must be random or multiblock, got {m['kind']!r}")
    return encoder, JEPA(encoder, predictor, masker, seed=cfg.get("seed", 0))
