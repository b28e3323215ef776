"""One entry point for every modality: the callable that turns a manifest row into an encoder's input.

``medssl.preprocessor(encoder)`` returns a :class:`Preprocessor`: ``prep(row)`` reads the record of
one manifest row (``path``, and the modality's other columns) and gives ``(n_items, *input_shape)``
float32, ready for ``encoder(torch.from_numpy(x))``: ECG ``(n_windows, n_leads, num_samples)``
(one window per record unless ``window_stride`` is set), brain MRI ``(1, C, D, H, W)``, OCTA/retina
``(1, C, H, W)``, CT ``(1, C, *shape)``. It is the same code the caches of pretraining, embedding,
the benchmark and the audit run (the modality's loader), so a notebook sees what the model saw:

* ``ecg``: :func:`medssl.ecg.dataset.preprocess_for_encoder` (the contract's leads, rate, length and
  declared filter; the recipe's ``bandpass``/``notch_hz`` where given) + ``EcgWindowLoader``;
* ``mri``: :func:`medssl.mri.modality.preprocess_for` (``MriPreprocess.for_encoder`` with the
  recipe's ``shape``/``spacing_mm``/``crop_foreground``) + ``preprocess_row``;
* ``retina``: ``RetinaPreprocess.for_encoder`` (colour, prior channels, intensity) + its image loader;
* ``ct``: ``CTInputSettings.from_spec`` (shape, spacing, HU windows) + ``CTLoader``.

``data_cfg`` is a recipe's ``data`` section; given a checkpoint folder, the card's recipe supplies it,
so the preprocessing is the one the encoder was trained with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Preprocessor", "preprocessor"]


@dataclass(frozen=True)
class Preprocessor:
    """``prep(row) -> (n_items, *input_shape)`` float32 for one manifest row. ``settings``: the
    modality's preprocessing settings (what the caches key on); ``input``: the encoder's contract."""

    modality: str
    settings: Mapping[str, Any]
    input: Mapping[str, Any]
    load: Callable[[dict], np.ndarray] = field(repr=False)

    def __call__(self, row: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(self.load(dict(row)), dtype=np.float32)


def _ecg(spec_input: Mapping, data_cfg: Mapping) -> Preprocessor:
    from medssl.ecg.dataset import EcgWindowLoader, preprocess_for_encoder

    settings = {}
    if data_cfg.get("bandpass") is not None:
        settings["bandpass_low"], settings["bandpass_high"] = data_cfg["bandpass"]
    for key in ("notch_hz", "window_stride"):
        if data_cfg.get(key) is not None:
            settings[key] = data_cfg[key]
    prep = preprocess_for_encoder(dict(spec_input), **settings)
    return Preprocessor("ecg", prep.to_dict(), dict(spec_input), EcgWindowLoader(prep))


class _MriRow:
    def __init__(self, prep):
        self.prep = prep

    def __call__(self, row: dict) -> np.ndarray:
        from medssl.mri.modality import preprocess_row

        return preprocess_row(row, self.prep)[0][None]


def _mri(spec_input: Mapping, data_cfg: Mapping) -> Preprocessor:
    from medssl.mri.modality import preprocess_for

    prep = preprocess_for(spec_input, data_cfg)
    return Preprocessor("mri", prep.to_dict(), dict(spec_input), _MriRow(prep))


class _RetinaRow:
    def __init__(self, prep):
        self.prep = prep

    def __call__(self, row: dict) -> np.ndarray:
        return self.prep.image(row)[None]


def _retina(spec_input: Mapping, data_cfg: Mapping) -> Preprocessor:
    from medssl.retina.preprocess import RetinaPreprocess

    prep = RetinaPreprocess.for_encoder(spec_input, data_cfg)
    return Preprocessor("retina", prep.to_dict(), dict(spec_input), _RetinaRow(prep))


def _ct(spec_input: Mapping, data_cfg: Mapping) -> Preprocessor:
    from medssl.ct.modality import CTInputSettings, CTLoader

    settings = CTInputSettings.from_spec(spec_input, data_cfg)
    return Preprocessor("ct", settings.to_dict(), dict(spec_input), CTLoader(settings, "image", data_cfg.get("salt")))


_BUILDERS: dict[str, Callable[[Mapping, Mapping], Preprocessor]] = {
    "ecg": _ecg, "mri": _mri, "retina": _retina, "ct": _ct}


def _spec_and_data(encoder) -> tuple[Any, Mapping[str, Any]]:
    from medssl.registry import EncoderSpec

    if isinstance(encoder, (str, Path)) and Path(encoder).is_dir():
        from medssl.checkpoint import _encoder_spec_dict, read_card

        folder = Path(encoder)
        spec = EncoderSpec.from_dict(_encoder_spec_dict(folder))
        data = ((read_card(folder).get("recipe") or {}).get("data") or {}) if (folder / "card.json").is_file() else {}
        return spec, data
    if isinstance(encoder, str):
        from medssl.registry import encoder_spec

        return encoder_spec(encoder), {}
    if isinstance(encoder, EncoderSpec):
        return encoder, {}
    spec = getattr(encoder, "spec", None)
    if isinstance(spec, EncoderSpec):
        return spec, {}
    raise TypeError(f"preprocessor() takes an encoder (with .spec), an EncoderSpec, a registered encoder name or a "
                    f"checkpoint folder, got {type(encoder).__name__}")


def preprocessor(encoder, data_cfg: Mapping[str, Any] | None = None) -> Preprocessor:
    """The callable that turns a manifest row into ``encoder``'s input (see the module docstring).

    ``encoder``: a built encoder (``medssl.load_encoder``, ``create_encoder``), its ``EncoderSpec``,
    a registered encoder name, or a checkpoint folder (its card's recipe ``data`` section is then
    the default ``data_cfg``). ``data_cfg``: a recipe's ``data`` section (``bandpass``, ``notch_hz``
    and ``window_stride`` for ECG; ``shape``, ``spacing_mm``, ``crop_foreground`` for MRI; ``priors``,
    ``vessel_prior`` for retina; ``salt`` for CT DICOM pseudonyms), replacing the checkpoint's.
    """
    spec, default_data = _spec_and_data(encoder)
    builder = _BUILDERS.get(spec.modality)
    if builder is None:
        raise ValueError(f"no preprocessor for modality {spec.modality!r} (encoder {spec.name}); "
                         f"known: {', '.join(_BUILDERS)}")
    return builder(spec.input, dict(default_data if data_cfg is None else data_cfg))
