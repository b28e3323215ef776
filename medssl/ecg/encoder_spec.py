"""What every ECG encoder factory does: resolve keyword overrides and write the input contract."""

from __future__ import annotations

from medssl.ecg.leads import parse_lead_set
from medssl import registry
from medssl.registry import EncoderSpec

ECG_NORMALISATION = "per-lead zero mean, unit variance after 0.67-40 Hz band-pass"


def resolve_hparams(name: str, defaults: dict, overrides: dict, *, int_lists: tuple[str, ...] = ()) -> dict:
    """`medssl.registry.resolve_hparams` (an unknown override is a TypeError naming the known
    ones), with lead names canonicalised ("v1" -> "V1")."""
    hparams = registry.resolve_hparams(name, defaults, overrides, int_lists=int_lists)
    hparams["leads"] = list(parse_lead_set(hparams["leads"]))
    return hparams


def ecg_encoder_spec(name: str, hparams: dict, embed_dim: int, paper: str, **input_extra) -> EncoderSpec:
    """The spec of an ECG encoder: leads, rate (Hz), samples, units (mV), normalisation, extras."""
    return EncoderSpec(
        name=name,
        modality="ecg",
        input={
            "leads": hparams["leads"],
            "sampling_rate": float(hparams["sampling_rate"]),
            "num_samples": int(hparams["num_samples"]),
            "units": "mV",
            "normalisation": ECG_NORMALISATION,
            **input_extra,
        },
        embed_dim=int(embed_dim),
        hparams=hparams,
        paper=paper,
    )
