"""Recipe builders of the contrastive ECG methods (SimCLR, TS2Vec): recipe dict -> (encoder, method)."""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


def _encoder(cfg: dict) -> nn.Module:
    return create_encoder(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))


@register_method("simclr_ecg")
def build_simclr_ecg(cfg: dict) -> tuple[nn.Module, nn.Module]:
    """SimCLR: encoder + `projector` {hidden_dim, out_dim, batch_norm} + `augment` (a list of
    medssl.ecg.augment entries) + NT-Xent with `loss.temperature`."""
    from medssl.ecg.augment import build_augment
    from medssl.ssl.contrastive import NTXentLoss, ProjectionHead
    from medssl.ssl.simclr import SimCLR

    encoder = _encoder(cfg)
    p = cfg["projector"]
    projector = ProjectionHead(encoder.spec.embed_dim, p["hidden_dim"], p["out_dim"], batch_norm=p.get("batch_norm", False))
    augment = build_augment(cfg["augment"], sampling_rate=encoder.spec.input["sampling_rate"])
    loss = NTXentLoss(cfg["loss"]["temperature"])
    return encoder, SimCLR(encoder, projector, augment, loss, seed=cfg.get("seed", 0))


@register_method("ts2vec_ecg")
def build_ts2vec_ecg(cfg: dict) -> tuple[nn.Module, nn.Module]:
    """TS2Vec: encoder + hierarchical contrastive loss {alpha, temporal_unit} + `masking.p`.
    With `swa: true` the saved encoder is the stochastic weight average, as in the paper's code."""
    from medssl.ssl.contrastive import HierarchicalContrastiveLoss
    from medssl.ssl.ts2vec import TS2Vec

    encoder = _encoder(cfg)
    loss_cfg = cfg["loss"]
    method = TS2Vec(
        encoder,
        HierarchicalContrastiveLoss(loss_cfg["alpha"], loss_cfg["temporal_unit"]),
        mask_p=cfg["masking"]["p"], temporal_unit=loss_cfg["temporal_unit"], swa=cfg.get("swa", True),
        seed=cfg.get("seed", 0),
    )
    return (method.averaged_encoder if method.averaged_encoder is not None else encoder), method
