"""AMAES: masked autoencoding of 3-D brain MRI with augmentation reversal.

Munk, Ambsdorf, Llambias, Nielsen, "AMAES: Augmented Masked Autoencoder Pretraining on Public
Brain MRI Data for 3D-Native Segmentation", ADSMI @ MICCAI 2024 (code: github.com/asbjrnmunk/amaes;
the FOMO25 baseline codebase, github.com/fomo25/baseline-codebase, is a rewrite of it).

One step, for a batch of cached volumes x (B, C, *S), every draw from the (seed, step, rank)
generator:
1. a random patch per sample (96^3 on GPU here; AMAES: 128^3), spatially augmented (AMAES's
   spatial preset; `medssl.mri.augment3d`): this patch is the reconstruction target;
2. the input is the target with AMAES's intensity augmentations applied (the target is not
   augmented: "augmentation reversal");
3. the patch is cut into token cubes of 4^3 voxels and 60 % of them, drawn per sample, are masked:
   N - int(N * 0.4) of the N cubes (AMAES's `generate_random_mask`), the same cubes in every
   channel; masked voxels of the input are set to 0 (AMAES's mask token; medssl's volumes are
   z-scored, so 0 is the mean brain intensity, where AMAES's [0, 1] volumes put background);
4. the U-Net encoder reads the masked input, a lightweight decoder without skip connections
   (`medssl.mri.unet_decoder`, one conv per stage) predicts the full patch;
5. loss: mean squared error over ALL voxels (AMAES's default), or over the masked voxels only
   (`masked_only`; AMAES's `--loss_masked_tokens_only`, which zeroes the unmasked voxels and
   still divides by all voxels: medssl divides by the masked ones, the true mean).

Augmentations and masks run in float32 with autocast off; the networks run under whatever
precision the trainer set.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.mri.augment3d import IntensityAugment, RandomPatch3d
from medssl.ssl.masked_loss import masked_mean
from medssl.ssl.random import step_generator


class CubeMasker:
    """Random masks of token cubes over a 3-D patch.

    __call__(batch_size, spatial (D, H, W), generator) -> (B, 1, D, H, W) bool, True = masked.
    Exactly n_tokens - int(n_tokens * (1 - ratio)) of the (D/t)(H/t)(W/t) cubes are masked in
    every sample, positions drawn independently per sample.
    """

    def __init__(self, ratio: float = 0.6, token_size: int = 4):
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
        if token_size < 1:
            raise ValueError(f"token_size must be positive, got {token_size}")
        self.ratio = float(ratio)
        self.token_size = int(token_size)

    def token_grid(self, spatial: tuple[int, int, int]) -> tuple[int, int, int]:
        t = self.token_size
        if any(s % t for s in spatial):
            raise ValueError(f"patch {tuple(spatial)} is not a multiple of the {t}^3 mask cubes")
        return tuple(s // t for s in spatial)

    def n_masked(self, n_tokens: int) -> int:
        return n_tokens - int(n_tokens * (1 - self.ratio))

    def token_mask(self, batch_size: int, spatial: tuple[int, int, int], generator: torch.Generator) -> Tensor:
        """(B, D/t, H/t, W/t) bool, True = masked cube."""
        grid = self.token_grid(spatial)
        n = grid[0] * grid[1] * grid[2]
        order = torch.argsort(torch.rand(batch_size, n, generator=generator), dim=1)
        masked = torch.zeros(batch_size, n, dtype=torch.bool)
        masked.scatter_(1, order[:, : self.n_masked(n)], True)
        return masked.reshape(batch_size, *grid)

    def __call__(self, batch_size: int, spatial: tuple[int, int, int], generator: torch.Generator) -> Tensor:
        t = self.token_size
        cubes = self.token_mask(batch_size, spatial, generator)
        voxels = cubes.repeat_interleave(t, 1).repeat_interleave(t, 2).repeat_interleave(t, 3)
        return voxels[:, None]


def voxel_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over all voxels, or with `mask` (B, 1, *spatial) bool over the masked
    voxels only (of every channel). pred, target: (B, C, *spatial)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    err = (pred.float() - target.float()).pow(2)
    if mask is None:
        return err.mean()
    return masked_mean(err, mask)


def pool_map(fmap: Tensor) -> Tensor:
    """(B, C, *spatial) -> (B, C): global average, the encoders' pooled embedding."""
    return fmap.flatten(2).mean(dim=2)


class AmaesViews:
    """The AMAES input pipeline: (B, C, *S) volumes -> (input, target, mask), all (B, ., *patch).

    patch: random crops with the spatial augmentation (applied to input and target);
    intensity: the intensity augmentation (input only; None: off);
    masker: token-cube masks; masked input voxels are set to `fill_value`.
    """

    def __init__(self, patch: RandomPatch3d, intensity: IntensityAugment | None, masker: CubeMasker,
                 fill_value: float = 0.0):
        self.patch = patch
        self.intensity = intensity
        self.masker = masker
        self.fill_value = float(fill_value)

    def __call__(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            target = self.patch(x.float(), generator)
            augmented = self.intensity(target, generator) if self.intensity is not None else target
            mask = self.masker(x.shape[0], tuple(target.shape[2:]), generator).to(x.device)
            inputs = augmented.masked_fill(mask, self.fill_value)
        return inputs, target, mask


class AMAES(nn.Module):
    """forward(x, *, step, rank) -> scalar reconstruction loss. x: (B, C, *S) cached volumes.

    encoder: a U-Net encoder with `feature_maps` (medssl.mri.unet_encoder.UNetEncoder3d);
    decoder: maps -> (B, C, *patch) (medssl.mri.unet_decoder.UNetDecoder3d, no skips in AMAES).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, views: AmaesViews, *, masked_only: bool = False,
                 seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.views = views
        self.masked_only = masked_only
        self.seed = seed

    def draw(self, x: Tensor, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(input, target, mask) of this (step, rank): a pure function of (seed, step, rank, x)."""
        return self.views(x, step_generator(self.seed, step, rank))

    def reconstruction_loss(self, inputs: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        pred = self.decoder(self.encoder.feature_maps(inputs))
        return voxel_mse(pred, target, mask if self.masked_only else None)

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        return self.reconstruction_loss(*self.draw(x, step, rank))
