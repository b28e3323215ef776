"""Recipe builders of the OCTA masked-autoencoding methods: VAMAE and the plain-MAE baseline.

recipe dict -> (encoder, method); see recipes/vamae_octa.yaml and recipes/mae_octa.yaml. The
batch a method receives is (B, C_img + len(data.priors), H, W): the image channels the encoder
takes, then the prior maps the recipe's `data.priors` lists, in that order. `data.shape` sets the
encoder's input size (`image_size`).
"""

from __future__ import annotations

from torch import nn

from medssl.engine.methods import register_method
from medssl.registry import create_encoder


def _encoder(cfg: dict) -> nn.Module:
    overrides = dict(cfg["encoder"].get("overrides") or {})
    shape = cfg.get("data", {}).get("shape")
    if shape is not None:
        shape = [int(s) for s in shape]
        if "image_size" in overrides and [int(s) for s in overrides["image_size"]] != shape:
            raise ValueError(f"encoder.overrides.image_size {overrides['image_size']} differs from data.shape {shape}")
        overrides["image_size"] = shape
    encoder = create_encoder(cfg["encoder"]["name"], **overrides)
    if not all(hasattr(encoder, a) for a in ("encode", "grid", "patch_size", "n_prefix", "in_chans")):
        raise ValueError(
            f"encoder {cfg['encoder']['name']!r} cannot encode a visible subset of patches; "
            "OCTA masked-autoencoding recipes need a retina_vit_* encoder"
        )
    return encoder


def _decoder(cfg: dict, encoder: nn.Module, n_targets: int):
    from medssl.retina.mae2d import MaskedImageDecoder

    d = cfg["decoder"]
    return MaskedImageDecoder(
        grid=encoder.grid, patch_size=encoder.patch_size, embed_dim=encoder.embed_dim, n_prefix=encoder.n_prefix,
        n_targets=n_targets, decoder_dim=d["dim"], depth=d["depth"], num_heads=d["num_heads"],
    )


@register_method("vamae")
def build_vamae(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.retina.vamae import VesselAwareMAE, VesselAwareMasker

    encoder = _encoder(cfg)
    m, lo = cfg["masking"], cfg["loss"]
    weights = dict(lo["weights"])
    targets = ["intensity", *(t for t in weights if t != "intensity")]
    masker = VesselAwareMasker(
        m["ratio"], patch_size=encoder.patch_size, temperature=m["temperature"], floor=m["floor"],
        weights=(m["importance_weights"]["vesselness"], m["importance_weights"]["skeleton"]),
    )
    decoder = _decoder(cfg, encoder, encoder.in_chans + len(targets) - 1)
    method = VesselAwareMAE(
        encoder, decoder, masker, targets=targets, weights=weights, priors=cfg["data"]["priors"],
        norm_pix=lo["norm_pix"], skeleton_loss=lo.get("skeleton_loss", "bce"), seed=cfg.get("seed", 0),
    )
    return encoder, method


@register_method("mae_octa")
def build_mae_octa(cfg: dict) -> tuple[nn.Module, nn.Module]:
    from medssl.retina.mae2d import UniformPatchMasker
    from medssl.retina.vamae import VesselAwareMAE

    encoder = _encoder(cfg)
    decoder = _decoder(cfg, encoder, encoder.in_chans)
    method = VesselAwareMAE(
        encoder, decoder, UniformPatchMasker(cfg["masking"]["ratio"]), targets=["intensity"],
        weights={"intensity": 1.0}, priors=cfg["data"].get("priors") or [], norm_pix=cfg["loss"]["norm_pix"],
        seed=cfg.get("seed", 0),
    )
    return encoder, method
