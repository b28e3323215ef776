"""Method builders: recipe dict -> (encoder, SSL method module). One small function per method."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MethodBuilder = Callable[[dict], tuple[nn.Module, nn.Module]]
_BUILDERS: dict[str, MethodBuilder] = {}


def register_method(name: str):
    def wrap(fn: MethodBuilder) -> MethodBuilder:
        _BUILDERS[name] = fn
        return fn

    return wrap


_BUILTIN_METHOD_MODULES = (
    "medssl.ecg.methods", "medssl.ecg.methods_contrastive", "medssl.ecg.methods_masked",
    "medssl.mri.methods", "medssl.retina.methods", "medssl.ct.methods",
)


def _ensure_builtin_methods() -> None:
    # Importing the modality method modules runs their @register_method decorators.
    from medssl.registry import import_optional_modules

    import_optional_modules(_BUILTIN_METHOD_MODULES)


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
    return _BUILDERS[name](cfg)
