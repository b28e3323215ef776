"""Modality plug-ins: what a modality (ECG, brain MRI, retina, CT, or a third party's) brings, in one place.

A modality package declares one :class:`Modality` in a module of its own (medssl's: ``medssl.<name>.modality``,
as ``MODALITY = register_modality(Modality(...))``); importing that module also registers its dataset
layouts (``medssl.data.layouts.register_layout``). Its other registrations (encoders, SSL methods,
segmentation decoders, checkpoint importers) run when the modules named in ``Modality.registers``
are imported, which :func:`load_registrations` does the first time a registry is read, so that
``medssl --help`` or indexing a folder does not import torch.

Discovery: the built-in modalities (:data:`BUILTIN_MODULES`, in this order), then every entry point
of the group :data:`ENTRY_POINT_GROUP` (``medssl.modalities``; its object is a :class:`Modality`),
then any :func:`register_modality` call made at run time. A third-party package adds a modality
with, in its ``pyproject.toml``::

    [project.entry-points."medssl.modalities"]
    eeg = "medssl_eeg.modality:MODALITY"      # the entry point's name is the modality's

and nothing in medssl changes. Hooks (shapes in the encoder's input layout, float32; see
:mod:`medssl.data.modalities` for the full contracts):

    inputs(rows, spec_input, data_cfg, cache_root) -> ArrayCache        model-ready arrays
    masks(...) -> ArrayCache                                             segmentation targets (optional)
    contract_problems(spec_input, rows) -> list[str]                     what rows lack (optional)
    write_synthetic(folder, **params) -> (rows, skipped)                 ground-truth data (optional)
    fit_encoder(encoder, rows) -> (encoder, note)                        explicit adaptation (optional)
    native(rows, spec_input, data_cfg, shape=None) -> NativeImages       images at own resolution (optional)
    view_augment(specs, spec_input, example) -> augment(x, generator)    privacy audit views (optional)
    add_cli(subparsers) -> None                                          extra `medssl` subcommands (optional)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

BUILTIN_MODULES: tuple[str, ...] = ("medssl.ecg.modality", "medssl.mri.modality", "medssl.retina.modality",
                                    "medssl.ct.modality")
BUILTIN_NAMES: tuple[str, ...] = tuple(m.split(".")[1] for m in BUILTIN_MODULES)
ENTRY_POINT_GROUP = "medssl.modalities"


@dataclass(frozen=True)
class Modality:
    """One modality's plug-in (module docstring). ``registers``: modules of the modality's own
    package whose import registers its encoders, methods, decoders and importers."""

    name: str
    inputs: Callable[..., Any]
    masks: Callable[..., Any] | None = None
    contract_problems: Callable[[Mapping[str, Any], Sequence[dict]], list[str]] | None = None
    write_synthetic: Callable[..., tuple[list[dict], list[tuple[str, str]]]] | None = None
    fit_encoder: Callable[[Any, Sequence[dict]], tuple[Any, str | None]] | None = None
    native: Callable[..., Any] | None = None
    view_augment: Callable[[Sequence[dict] | None, Mapping[str, Any], Any], Callable] | None = None
    registers: tuple[str, ...] = ()
    add_cli: Callable[[Any], None] | None = None

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name.islower():
            raise ValueError(f"modality name {self.name!r}: use lower-case letters, digits and underscores")


_MODALITIES: dict[str, Modality] = {}
_state = {"discovered": False, "registered": set(), "loading": set()}


def register_modality(modality: Modality) -> Modality:
    """Add a modality (its module's ``MODALITY``); a second, different one under the same name is refused."""
    known = _MODALITIES.get(modality.name)
    if known is not None and known is not modality:
        raise ValueError(f"modality {modality.name!r} is already registered (by {known.inputs.__module__})")
    _MODALITIES[modality.name] = modality
    return modality


def _import_builtin(module: str) -> None:
    """Import a built-in modality module; only its own absence (a trimmed install) is skipped."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not module.startswith(e.name):
            raise


def _discover() -> None:
    if _state["discovered"]:
        return
    _state["discovered"] = True
    for module in BUILTIN_MODULES:
        _import_builtin(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _state["loading"].add(ep.name)  # its module may register encoders while it is imported
        modality = ep.load()
        if not isinstance(modality, Modality):
            raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) is not a medssl.plugins.Modality")
        register_modality(modality)


def modalities() -> dict[str, Modality]:
    """Every modality: built-in, from entry points, registered at run time (name -> plug-in)."""
    _discover()
    return dict(_MODALITIES)


def modality_names() -> list[str]:
    return list(modalities())


def is_modality(name: str) -> bool:
    """Whether ``name`` is a modality, or one being loaded (an entry point, named as its
    modality, whose module registers encoders or methods as it is imported)."""
    return name in modalities() or name in _state["loading"]


def get_modality(name: str) -> Modality:
    """The plug-in of modality ``name``; an unknown name is an error listing the known ones."""
    found = modalities().get(name)
    if found is None:
        raise ValueError(f"unknown modality {name!r}; known: {', '.join(modalities()) or 'none'}")
    return found


def load_registrations() -> None:
    """Import every modality's ``registers`` modules (its encoders, methods, decoders, importers),
    once per modality."""
    for name, modality in modalities().items():
        if name in _state["registered"]:
            continue
        for module in modality.registers:
            importlib.import_module(module)
        _state["registered"].add(name)
