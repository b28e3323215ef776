"""Recipe builders of the brain-MRI SSL methods: recipe dict -> (encoder, method).

- "amaes": AMAES (recipes/amaes_mri.yaml; medssl.mri.amaes);
- "amaes_hybrid": AMAES + NT-Xent between two views (recipes/amaes_hybrid_mri.yaml; medssl.mri.hybrid);
- "mae3d_vit": MAE on a 3-D ViT (recipes/mae3d_vit_mri.yaml; medssl.mri.mae3d).

Data keys read from the recipe's `data` section: `patch_size` [D, H, W], the crop every step
draws from the cached volumes of size `shape` (the MRI data layer's business). The encoder's
`shape` override defaults to `patch_size`, so its card states the patch it was trained on.
"""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


def _encoder(cfg: dict, *, needs: tuple[str, ...], kind: str) -> nn.Module:
    overrides = dict(cfg["encoder"].get("overrides") or {})
    overrides.setdefault("shape", list(cfg["data"]["patch_size"]))
    encoder = create_encoder(cfg["encoder"]["name"], **overrides)
    if not all(hasattr(encoder, a) for a in needs):
        raise ValueError(f"encoder {cfg['encoder']['name']!r} does not fit method {cfg['method']!r}: it needs {kind}")
    return encoder


def _patch(cfg: dict, spatial_cfg: dict | None):
    from medssl.mri.augment3d import RandomPatch3d, SpatialAugment

    return RandomPatch3d(cfg["data"]["patch_size"], SpatialAugment.from_config(spatial_cfg))


def _amaes_parts(cfg: dict):
    from medssl.mri.amaes import AmaesViews, CubeMasker
    from medssl.mri.augment3d import IntensityAugment
    from medssl.mri.unet_decoder import UNetDecoder3d

    encoder = _encoder(cfg, needs=("feature_maps", "widths"), kind="a U-Net encoder (mri_unet_*)")
    d, m, a = cfg["decoder"], cfg["masking"], cfg.get("augment") or {}
    decoder = UNetDecoder3d(encoder.widths, encoder.in_channels, skips=d["skips"], convs_per_stage=d["convs_per_stage"])
    views = AmaesViews(
        _patch(cfg, a.get("spatial")), IntensityAugment.from_config(a.get("intensity")),
        CubeMasker(m["ratio"], m["token_size"]), m.get("fill_value", 0.0),
    )
    return encoder, decoder, views


@register_method("amaes")
def build_amaes(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.mri.amaes import AMAES

    encoder, decoder, views = _amaes_parts(cfg)
    method = AMAES(encoder, decoder, views, masked_only=cfg["loss"]["masked_only"], seed=cfg.get("seed", 0))
    return encoder, method


@register_method("amaes_hybrid")
def build_amaes_hybrid(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.mri.hybrid import AMAESHybrid
    from medssl.ssl.contrastive import NTXentLoss, ProjectionHead

    encoder, decoder, views = _amaes_parts(cfg)
    p, c = cfg["projector"], cfg["contrastive"]
    projector = ProjectionHead(encoder.embed_dim, p["hidden_dim"], p["out_dim"], batch_norm=p.get("batch_norm", False))
    method = AMAESHybrid(
        encoder, decoder, projector, views, NTXentLoss(c["temperature"]), weight=c["weight"],
        masked_only=cfg["loss"]["masked_only"], seed=cfg.get("seed", 0),
    )
    return encoder, method


@register_method("mae3d_vit")
def build_mae3d_vit(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.mri.mae3d import MAEDecoder3d, MaskedAutoencoder3d
    from medssl.ssl.masking import RandomPatchMasker

    encoder = _encoder(cfg, needs=("encode", "patch_size"), kind="a 3-D ViT encoder (mri_vit3d_*)")
    d, ratio = cfg["decoder"], float(cfg["masking"]["ratio"])
    decoder = MAEDecoder3d(encoder.embed_dim, encoder.patch_size, encoder.in_channels, decoder_dim=d["dim"],
                           depth=d["depth"], num_heads=d["num_heads"])
    patch = _patch(cfg, (cfg.get("augment") or {}).get("spatial"))
    method = MaskedAutoencoder3d(encoder, decoder, RandomPatchMasker((ratio, ratio)), patch,
                                 norm_target=cfg["loss"]["norm_target"], seed=cfg.get("seed", 0))
    return encoder, method
