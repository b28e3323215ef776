"""One encoder registry for every modality, in the manner of timm's `register_model`.

A registered factory is a small function that takes keyword overrides and returns an
`nn.Module` carrying an `EncoderSpec` as `.spec`. Every encoder exposes:

- `forward_features(x) -> (batch, n_tokens, dim)` token features;
- `forward(x) -> (batch, dim)` the pooled embedding.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn


@dataclass
class EncoderSpec:
    """What an encoder is and what it takes.

    input: the input contract. ECG: {"leads": [...], "sampling_rate": Hz, "num_samples": int,
        "units": "mV", "normalisation": ...}; images: {"channels", "spacing_mm" or "pixel_size_mm",
        "patch_size", "intensity"}.
    hparams: the factory's keyword arguments as resolved; `create_encoder(name, **hparams)`
        rebuilds the same architecture.
    """

    name: str
    modality: str
    input: dict[str, Any]
    embed_dim: int
    hparams: dict[str, Any] = field(default_factory=dict)
    license: str = "Apache-2.0 (architecture); weights: none (random initialisation)"
    provenance: str = "randomly initialised by medssl"
    paper: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderSpec:
        return cls(**d)


@dataclass(frozen=True)
class _Entry:
    name: str
    modality: str
    factory: Callable[..., nn.Module]
    description: str
    spec: Callable[..., EncoderSpec] | None = None  # (**overrides) -> the factory's spec, without building


_REGISTRY: dict[str, _Entry] = {}


class UnknownEncoderError(KeyError, ValueError):
    """No encoder of that name is registered (a KeyError for lookups, a ValueError as bad input)."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def resolve_hparams(name: str, defaults: dict[str, Any], overrides: dict[str, Any], *,
                    int_lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """An encoder's hyper-parameters: `defaults` (in their order) updated by `overrides`, the one
    resolver every registered factory's spec function starts from (as timm's `build_model_with_cfg`
    merges a default config with kwargs). An override not among the defaults is a TypeError
    "NAME: unknown argument(s) a, b; known: x, y, ...". Keys in `int_lists` not None become lists
    of ints (JSON-stable, so a card's hparams rebuild an equal spec); a value there that is not a
    list or tuple is a TypeError naming the key."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"{name}: unknown argument(s) {', '.join(sorted(unknown))}; known: {', '.join(defaults)}")
    hparams = {**defaults, **overrides}
    for key in int_lists:
        value = hparams.get(key)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{name}: {key} takes a list of integers, got {value!r}")
        hparams[key] = [int(v) for v in value]
    return hparams


def per_axis(value: Any, n: int, kind: Callable[[Any], Any] = int) -> list:
    """A size given once or per axis, as a list: `[kind(v) for v in value]` for a list or tuple,
    else `[kind(value)] * n`."""
    return [kind(v) for v in (value if isinstance(value, (list, tuple)) else [value] * n)]


def register_encoder(fn: Callable[..., nn.Module] | None = None, *, modality: str, name: str | None = None,
                     spec: Callable[..., EncoderSpec] | None = None):
    """Decorator registering an encoder factory under its function name (or `name`).

    spec: optional ``spec(**overrides) -> EncoderSpec``, the spec the factory's module would carry,
    computed from the hyper-parameters alone (no weights built): :func:`encoder_spec` and
    ``medssl encoders`` read it; without one they build the encoder to read its spec.

    >>> @register_encoder(modality="ecg")
    ... def my_encoder(**overrides) -> nn.Module: ...
    """
    from medssl.plugins import is_modality, modality_names

    if not is_modality(modality):
        raise ValueError(f"unknown modality {modality!r} (a medssl.plugins.Modality registers one); "
                         f"known: {', '.join(modality_names())}")

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not f:
            raise ValueError(f"encoder {key!r} is already registered")
        doc = (f.__doc__ or "").strip().splitlines()
        _REGISTRY[key] = _Entry(key, modality, f, doc[0] if doc else "", spec)
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_builtin_encoders() -> None:
    # Importing the modalities' registering modules runs their @register_encoder decorators.
    from medssl.plugins import load_registrations

    load_registrations()


def list_encoders(modality: str | None = None, pattern: str = "*") -> list[str]:
    """Registered encoder names, sorted; filtered by modality and a shell-style pattern."""
    _ensure_builtin_encoders()
    return sorted(
        n for n, e in _REGISTRY.items()
        if (modality is None or e.modality == modality) and fnmatch.fnmatch(n, pattern)
    )


def encoder_entry(name: str) -> _Entry:
    _ensure_builtin_encoders()
    if name not in _REGISTRY:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def encoder_spec(name: str, **overrides: Any) -> EncoderSpec:
    """The :class:`EncoderSpec` that ``create_encoder(name, **overrides).spec`` would be, from the
    registered spec function when the encoder declares one (no weights built), else by building the
    encoder (on the meta device where its factory allows: nothing allocated or initialised)."""
    entry = encoder_entry(name)
    if entry.spec is not None:
        return entry.spec(**overrides)
    import torch

    try:
        with torch.device("meta"):
            return create_encoder(name, **overrides).spec
    except (RuntimeError, NotImplementedError):
        return create_encoder(name, **overrides).spec


def create_encoder(name: str, **overrides: Any) -> nn.Module:
    """Build a registered encoder, untrained. Overrides are passed to the factory (e.g. `depth=2`).

    With pretrained weights: ``medssl.create_encoder(name, pretrained=folder)``
    (:func:`medssl.checkpoint.create_encoder`), or :func:`medssl.checkpoint.load_encoder`.
    """
    try:
        model = encoder_entry(name).factory(**overrides)
    except (TypeError, ValueError, RuntimeError):
        bad = _mistyped_override(name, overrides)
        if bad:
            raise TypeError(bad) from None
        raise
    if not isinstance(getattr(model, "spec", None), EncoderSpec):
        raise TypeError(f"factory {name!r} returned a module without an EncoderSpec `.spec`")
    return model


def _mistyped_override(name: str, overrides: dict[str, Any]) -> str | None:
    """A message naming the first override whose value is not of its default's kind (a number
    where the default is a number, a bool for a bool, a list for a list, text for text), or None."""
    import torch

    if not overrides:
        return None
    defaults = None
    for device in ("meta", "cpu"):  # the default hparams, without allocating weights where possible
        try:
            with torch.device(device):
                defaults = encoder_entry(name).factory().spec.hparams
            break
        except Exception:  # noqa: BLE001 - some factories compute on tensors; no defaults: keep the factory's error
            continue
    if defaults is None:
        return None
    kinds = ((bool, (bool,), "true or false"), (int, (int,), "an integer"), (float, (int, float), "a number"),
             (str, (str,), "text"), (list, (list, tuple), "a list"), (tuple, (list, tuple), "a list"))
    for key, value in overrides.items():
        default = defaults.get(key)
        for kind, accepted, words in kinds:
            if isinstance(default, kind):
                if (isinstance(value, bool) and kind is not bool) or not isinstance(value, accepted):
                    return f"{name}: override {key!r} takes {words} (default {default!r}), got {value!r}"
                break
    return None
