"""Method builders: recipe dict -> (encoder, SSL method module). One small function per method."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MethodBuilder = Callable[[dict], tuple[nn.Module, nn.Module]]
_BUILDERS: dict[str, MethodBuilder] = {}
_MODALITY: dict[str, str | None] = {}  # method -> the modality of the encoders it trains


def register_method(name: str, modality: str | None = None):
    """Register a method builder; `modality` (default: the modality package it is defined in,
    e.g. medssl.ecg.* -> "ecg") is checked against the recipe's encoder before building."""
    from medssl.plugins import BUILTIN_NAMES

    def wrap(fn: MethodBuilder) -> MethodBuilder:
        parts = fn.__module__.split(".")
        _BUILDERS[name] = fn
        _MODALITY[name] = modality or (parts[1] if len(parts) > 2 and parts[0] == "medssl"
                                       and parts[1] in BUILTIN_NAMES else None)
        return fn

    return wrap


def _ensure_builtin_methods() -> None:
    # Importing the modalities' registering modules runs their @register_method decorators.
    from medssl.plugins import load_registrations

    load_registrations()


def build_method(cfg: dict) -> tuple[nn.Module, nn.Module]:
    """(encoder, method) for `cfg["method"]`.

    The method is an nn.Module whose forward(x, *, step, rank) returns the scalar training loss
    for a batch x (B, ...) of preprocessed inputs; it may define update_target(momentum) for an
    EMA target network. Augmentations and masks are drawn inside the method, from generators
    seeded by (seed, step, rank), so a resumed run repeats them.
    """
    _ensure_builtin_methods()
    name = cfg.get("method")
    if name not in _BUILDERS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_BUILDERS))}")
    check_encoder_modality(name, (cfg.get("encoder") or {}).get("name"))
    return _BUILDERS[name](cfg)


def check_encoder_modality(method: str, encoder: str | None) -> None:
    """ValueError naming both modalities when `encoder` (a registry name) is of another modality
    than the encoders `method` trains (e.g. ecg_jepa with encoder.name=mri_unet_tiny)."""
    from medssl.registry import encoder_entry, list_encoders

    _ensure_builtin_methods()
    want = _MODALITY.get(method)
    if not want or not encoder:
        return
    got = encoder_entry(encoder).modality  # an unknown name is an error naming the known ones
    if got != want:
        raise ValueError(f"encoder.name={encoder!r} is of modality {got}, but method {method!r} trains {want} "
                         f"encoders ({', '.join(list_encoders(want))})")
