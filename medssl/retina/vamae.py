"""VAMAE: vessel-aware masked autoencoding of OCTA en-face images.

Abolade I, Mireku P, Chibundu K, Ododo P, Idoko E, Omoigui P, Odelola S. "VAMAE: Vessel-Aware
Masked Autoencoders for OCT Angiography", arXiv:2604.06583, 2026.

What the paper specifies (abstract and published summaries; the method section's equations and
hyper-parameters were not available to us):
- a ViT masked autoencoder (MAE encoder-decoder) pretrained on OCTA images (OCTA-500);
- "hybrid" vessel-aware masking that prefers vessel-rich patches while staying stochastic, with
  per-patch importance from multi-scale Frangi vesselness and skeleton cues;
- reconstruction of several complementary targets: intensity, vesselness and skeleton maps.

What medssl chose where the paper is not available or silent, in one place (each is a
constructor argument or a recipe key):
- the priors (`medssl.retina.vessel_prior.vessel_priors`, computed once per image and cached with
  the preprocessed data): vesselness = 2-D Frangi, maximum over scales sigma = 1, 2, 3 px of
  scale-normalised Hessians, beta 0.5, c = half the largest Hessian norm over all pixels and
  scales, bright vessels on a dark background, in [0, 1] and not rescaled; skeleton = Guo-Hall
  thinning of the vesselness thresholded by Otsu's method (binary).
- importance of patch i: w_v * v_i / max_j v_j + w_s * s_i / max_j s_j, where v_i, s_i are the
  means of the vesselness and skeleton maps over the patch (average pooling, p x p) and the maxima
  run over the image's patches (so both cues lie in [0, 1]; an image without vessels gets zero
  importance everywhere); defaults w_v = w_s = 0.5 (`medssl.retina.vessel_prior.patch_importance`,
  whose torch path runs batched on the batch's device).
- sampling probabilities: q = (1 - floor) * softmax(importance / temperature) + floor / N, so
  every patch keeps probability >= floor / N (it can always be masked) and a high temperature
  tends to uniform masking; defaults temperature 0.25, floor 0.1.
- the masked set: `n_masked(N, ratio)` patches drawn without replacement with probabilities q
  (Gumbel top-k: the largest log q_i + Gumbel noise), the same count in every sample so batches
  stay dense; default ratio 0.75 (MAE's). The probabilities are
  `medssl.retina.vessel_prior.masking_probabilities`, the same function the data layer uses.
- targets and losses: the decoder predicts, per patch, C_img intensity channels and one channel
  per prior target (p x p values each). Intensity: MSE on masked patches, optionally against
  per-patch normalised pixels (MAE's norm_pix_loss, on by default). Vesselness (expected in
  [0, 1]): MSE on masked patches. Skeleton (binary): binary cross-entropy with logits on masked
  patches ("bce", default) or MSE ("mse"). Total = sum of weight * target loss; default weights
  intensity 1.0, vesselness 0.5, skeleton 0.5.
- architecture and optimisation (recipes/vamae_octa.yaml): MAE's, i.e. ViT-B/16 at 224 x 224
  (1 channel), a 512-wide 8-deep decoder, AdamW blr 1.5e-4, weight decay 0.05, 800 epochs with
  40 warm-up; the paper's own sizes and schedule were not available.
- priors come with the batch: x is (B, C_img + n_priors, H, W), the image channels first, then
  the prior maps in the order of `priors` (what the retina data hook returns when the recipe's
  `data.priors` lists them); the encoder sees only the image channels.

What the tests check of the paper's claim (tests/retina/test_vamae.py): on synthetic OCTA
images with known vessels, with priors computed from the image, the default masker masks the
vessel-richest quarter of the patches ~0.91 of the time (a uniform mask: 0.75) and the masked area
holds 1.13-1.18 times the image's vessel density; uniform masking shows neither.

With a `UniformPatchMasker` and targets ("intensity",) the same module is plain MAE (He et al.,
CVPR 2022): the `mae_octa` baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from medssl.retina.mae2d import (
    MaskedImageDecoder,
    MaskSplit,
    masked_bce,
    masked_mse,
    n_masked,
    patchify,
    split_from_scores,
)
from medssl.retina.vessel_prior import masking_probabilities, patch_importance
from medssl.ssl.random import step_generator

VAMAE_PAPER = (
    "Abolade I, Mireku P, Chibundu K, Ododo P, Idoko E, Omoigui P, Odelola S. VAMAE: Vessel-Aware Masked "
    "Autoencoders for OCT Angiography. arXiv:2604.06583, 2026"
)
PRIOR_TARGETS = ("vesselness", "skeleton")


def gumbel_top_k(probs: Tensor, k: int, generator: torch.Generator) -> MaskSplit:
    """k indices per row drawn without replacement with probabilities `probs` (B, N) (Gumbel top-k:
    the k largest log p_i + G_i, G_i standard Gumbel); noise from the CPU `generator`."""
    u = torch.rand(probs.shape, generator=generator).clamp_(1e-12, 1.0 - 1e-7).to(probs.device)
    gumbel = -torch.log(-torch.log(u))
    return split_from_scores(torch.log(probs.clamp_min(1e-30)) + gumbel, k)


class VesselAwareMasker:
    """VAMAE's masking: `ratio` of the patches hidden, drawn with probabilities that favour
    vessel-rich patches (see the module docstring).

    __call__(batch_size, n_patches, generator, priors={"vesselness": (B, H, W), "skeleton": ...})
    -> MaskSplit.
    """

    def __init__(self, ratio: float = 0.75, *, patch_size: int, temperature: float = 0.25, floor: float = 0.1,
                 weights: tuple[float, float] = (0.5, 0.5)):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        masking_probabilities(torch.zeros(1, 2), temperature, floor)  # validates both
        self.ratio = float(ratio)
        self.patch_size = int(patch_size)
        self.temperature = float(temperature)
        self.floor = float(floor)
        self.weights = (float(weights[0]), float(weights[1]))

    @property
    def needs(self) -> tuple[str, ...]:
        return ("vesselness",) + (("skeleton",) if self.weights[1] else ())

    def probabilities(self, priors: Mapping[str, Tensor]) -> Tensor:
        """(B, N) masking probabilities from prior maps (B, H, W)."""
        v = priors["vesselness"]
        s = priors["skeleton"] if "skeleton" in priors else torch.zeros_like(v)
        imp = patch_importance(v, s, self.patch_size, self.weights)
        return masking_probabilities(imp, self.temperature, self.floor)

    def __call__(self, batch_size: int, n_patches: int, generator: torch.Generator,
                 priors: Mapping[str, Tensor] | None = None) -> MaskSplit:
        missing = [name for name in self.needs if not priors or name not in priors]
        if missing:
            raise ValueError(f"vessel-aware masking needs the prior map(s) {missing} with the batch")
        probs = self.probabilities(priors)
        if probs.shape != (batch_size, n_patches):
            raise ValueError(f"priors give {tuple(probs.shape)} patch probabilities, expected {(batch_size, n_patches)}")
        return gumbel_top_k(probs, n_masked(n_patches, self.ratio), generator)


class VesselAwareMAE(nn.Module):
    """forward(x, *, step, rank) -> scalar loss; x: (B, C_img + len(priors), H, W).

    encoder: a `medssl.retina.encoders.RetinaViT` (or any module with in_chans, grid, patch_size,
    n_prefix, n_patches and encode(x, keep_idx)); decoder: a `MaskedImageDecoder` with
    n_targets = C_img + number of prior targets; masker: `VesselAwareMasker` or `UniformPatchMasker`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: MaskedImageDecoder,
        masker,
        *,
        targets: Sequence[str] = ("intensity", "vesselness", "skeleton"),
        weights: Mapping[str, float] | None = None,
        priors: Sequence[str] = ("vesselness", "skeleton"),
        norm_pix: bool = True,
        skeleton_loss: str = "bce",
        seed: int = 0,
    ):
        super().__init__()
        self.encoder, self.decoder, self.masker = encoder, decoder, masker
        self.targets = tuple(targets)
        self.priors = tuple(priors)
        weights = dict(weights or {t: 1.0 for t in self.targets})
        if "intensity" not in self.targets or len(set(self.targets)) != len(self.targets):
            raise ValueError(f"targets must include 'intensity' once, got {list(self.targets)}")
        bad = [t for t in self.targets if t != "intensity" and (t not in PRIOR_TARGETS or t not in self.priors)]
        if bad:
            raise ValueError(f"target(s) {bad} need prior channel(s) of that name in the batch; priors: {list(self.priors)}")
        if set(weights) != set(self.targets):
            raise ValueError(f"loss weights {sorted(weights)} must name exactly the targets {sorted(self.targets)}")
        needs = getattr(masker, "needs", ())
        if any(n not in self.priors for n in needs):
            raise ValueError(f"the masker needs prior(s) {list(needs)}; the batch carries {list(self.priors)}")
        if skeleton_loss not in ("bce", "mse"):
            raise ValueError(f"skeleton_loss must be 'bce' or 'mse', got {skeleton_loss!r}")
        n_targets = encoder.in_chans + len(self.targets) - 1
        if decoder.n_targets != n_targets:
            raise ValueError(f"decoder predicts {decoder.n_targets} channels per patch, targets need {n_targets}")
        self.weights = {t: float(weights[t]) for t in self.targets}
        self.norm_pix = norm_pix
        self.skeleton_loss = skeleton_loss
        self.seed = seed

    def split_batch(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(B, C_img + n_priors, H, W) -> image (B, C_img, H, W), {prior name: (B, H, W)}."""
        c = self.encoder.in_chans
        if x.ndim != 4 or x.shape[1] != c + len(self.priors):
            raise ValueError(
                f"expected a batch (B, {c} image channel(s) + {len(self.priors)} prior(s) {list(self.priors)}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return x[:, :c], {name: x[:, c + i] for i, name in enumerate(self.priors)}

    def sample_mask(self, priors: Mapping[str, Tensor], batch_size: int, step: int = 0, rank: int = 0) -> MaskSplit:
        gen = step_generator(self.seed, step, rank)
        return self.masker(batch_size, self.encoder.n_patches, gen, priors)

    def predict(self, image: Tensor, mask: MaskSplit) -> Tensor:
        """(B, N, n_targets, p * p) predictions of every patch from the visible ones."""
        return self.decoder(self.encoder.encode(image, mask.keep_idx), mask.keep_idx)

    def target_losses(self, x: Tensor, mask: MaskSplit | None = None, *, step: int = 0, rank: int = 0) -> dict[str, Tensor]:
        """{target: loss on the masked patches}, unweighted."""
        image, priors = self.split_batch(x)
        mask = (mask if mask is not None else self.sample_mask(priors, x.shape[0], step, rank)).to(x.device)
        pred = self.predict(image, mask).float()
        p, c = self.encoder.patch_size, self.encoder.in_chans
        out = {"intensity": masked_mse(pred[:, :, :c], patchify(image.float(), p), mask.masked, norm_target=self.norm_pix)}
        for i, name in enumerate(t for t in self.targets if t != "intensity"):
            target = patchify(priors[name][:, None].float(), p)
            slot = pred[:, :, c + i: c + i + 1]
            if name == "skeleton" and self.skeleton_loss == "bce":
                out[name] = masked_bce(slot, target.clamp(0, 1), mask.masked)
            else:
                out[name] = masked_mse(slot, target, mask.masked)
        return out

    def forward(self, x: Tensor, mask: MaskSplit | None = None, *, step: int = 0, rank: int = 0) -> Tensor:
        losses = self.target_losses(x, mask, step=step, rank=rank)
        return sum(self.weights[t] * losses[t] for t in self.targets)
