"""Recipe builders of the masked-modelling ECG methods: ST-MEM-style MAE and CoRe-ECG.

recipe dict -> (encoder, method); see recipes/mae_ecg.yaml and recipes/core_ecg.yaml.
"""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


def _lead_vit(cfg: dict) -> nn.Module:
    encoder = create_encoder(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    if not all(hasattr(encoder, a) for a in ("encode", "pool", "patchify", "norm")):
        raise ValueError(
            f"encoder {cfg['encoder']['name']!r} cannot encode a visible subset of tokens; "
            "masked-modelling recipes need an ecg_mae_vit_* encoder"
        )
    return encoder


def _decoder(cfg: dict, encoder: nn.Module, *, lead_wise: bool, cond_dim: int | None = None):
    from medssl.ssl.mae import PatchDecoder

    d = cfg["decoder"]
    return PatchDecoder(
        n_leads=encoder.n_leads, n_time=encoder.n_time, patch_size=encoder.patch_size,
        embed_dim=encoder.embed_dim, decoder_dim=d["dim"], depth=d["depth"], num_heads=d["num_heads"],
        lead_wise=lead_wise, cond_dim=cond_dim,
    )


@register_method("mae_ecg")
def build_mae_ecg(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.ssl.mae import MaskedAutoencoder, RandomLeadPatchMasker

    encoder = _lead_vit(cfg)
    decoder = _decoder(cfg, encoder, lead_wise=cfg["decoder"].get("lead_wise", True))
    masker = RandomLeadPatchMasker(cfg["masking"]["ratio"])
    method = MaskedAutoencoder(
        encoder, decoder, masker, norm_target=cfg["loss"]["norm_target"], seed=cfg.get("seed", 0)
    )
    return encoder, method


@register_method("core_ecg")
def build_core_ecg(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.ecg.core import CoReECG
    from medssl.ecg.dual_masking import SpatioTemporalDualMasker
    from medssl.ecg.frequency_augment import FrequencyDynamicAugment
    from medssl.ssl.contrastive import ProjectionHead

    encoder = _lead_vit(cfg)
    decoder = _decoder(cfg, encoder, lead_wise=False, cond_dim=encoder.embed_dim)
    p, a, m, lo = cfg["projector"], cfg["augment"], cfg["masking"], cfg["loss"]
    projector = ProjectionHead(encoder.embed_dim, p["hidden_dim"], p["out_dim"], batch_norm=p.get("batch_norm", False))
    augment = FrequencyDynamicAugment(
        a["p_max"], a["strength"], a["phase_strength"], a["gamma"], shared_across_leads=a["shared_across_leads"]
    )
    masker = SpatioTemporalDualMasker(
        encoder.leads, m["time_ratio"], m["lead_ratio"],
        break_linear_dependence=m["break_linear_dependence"], shared_time=m["shared_time"],
    )
    method = CoReECG(
        encoder, decoder, projector, augment, masker,
        temperature=lo["temperature"], w_con=lo["w_con"], w_rec=lo["w_rec"], norm_target=lo["norm_target"],
        cross_condition=lo["cross_condition"], seed=cfg.get("seed", 0),
    )
    return encoder, method
