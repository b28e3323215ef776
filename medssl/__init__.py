"""medssl: self-supervised foundation models for medicine (ECG, brain MRI, OCTA/retina, CT)."""

from medssl.checkpoint import load_encoder, save_checkpoint
from medssl.registry import EncoderSpec, create_encoder, list_encoders, register_encoder

__version__ = "0.1.0"
__all__ = [
    "EncoderSpec",
    "create_encoder",
    "list_encoders",
    "load_encoder",
    "register_encoder",
    "save_checkpoint",
]
