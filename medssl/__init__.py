"""medssl: self-supervised foundation models for medicine (ECG, brain MRI, OCTA/retina, CT).

The public names below are imported on first use (PEP 562), so ``import medssl`` and
``medssl --help`` do not pay for torch until something needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "EncoderSpec": "medssl.registry",
    "create_encoder": "medssl.checkpoint",  # the registry's, plus pretrained=FOLDER
    "list_encoders": "medssl.registry",
    "register_encoder": "medssl.registry",
    "load_encoder": "medssl.checkpoint",
    "preprocessor": "medssl.preprocessing",
    "save_checkpoint": "medssl.checkpoint",
    "embed_arrays": "medssl.engine.embed",
    "run_benchmark": "medssl.bench.runner",
    "run_audit": "medssl.privacy.audit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medssl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
