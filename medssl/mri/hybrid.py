"""AMAES reconstruction plus a contrastive term: the hybrid objective FOMO25 found to favour
classification.

"Towards Brain MRI Foundation Models for the Clinic: Findings from the FOMO25 Challenge"
(the FOMO25 organisers, arXiv:2604.11679; the MICCAI 2025 challenge on FOMO60K): no single pretraining
objective benefits all tasks; MAE favours segmentation, hybrid reconstruction-contrastive
objectives favour classification. The pooled bottleneck of a reconstruction-only U-Net is not
trained to be a global descriptor; this method adds that pressure to AMAES.

Per step, for a batch x (B, C, *S), all draws from the (seed, step, rank) generator:
1. two independent AMAES views of every volume (`medssl.mri.amaes.AmaesViews`): each its own
   random crop and spatial augmentation, intensity augmentation and cube mask;
2. both views (2B) through the encoder in one batch; the decoder reconstructs each view's target
   (AMAES's loss on both views, averaged);
3. each view's bottleneck, averaged over space (the encoder's pooled embedding), through a
   SimCLR projection head; NT-Xent (medssl.ssl.contrastive) between the two views of each
   volume, the other 2B - 2 views of the batch as negatives;
4. loss = reconstruction + weight * contrastive.

Choices (not fixed by a paper): the contrasted views are the masked, augmented inputs the
reconstruction already encodes (one encoder pass serves both terms, as in contrastive masked
autoencoders); temperature 0.1 and weight 0.1 in the recipe make the two terms start at similar
size (NT-Xent starts near log(2B - 1), the reconstruction MSE of z-scored voxels near 1); no
batch norm in the projector, as 3-D batches are small.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.mri.amaes import AmaesViews, pool_map, voxel_mse
from medssl.ssl.random import step_generator


class AMAESHybrid(nn.Module):
    """forward(x, *, step, rank) -> reconstruction + weight * NT-Xent. x: (B, C, *S), B >= 2."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, projector: nn.Module, views: AmaesViews,
                 contrastive: nn.Module, *, weight: float = 0.1, masked_only: bool = False, seed: int = 0):
        super().__init__()
        if weight < 0:
            raise ValueError(f"contrastive weight must be non-negative, got {weight}")
        self.encoder = encoder
        self.decoder = decoder
        self.projector = projector
        self.views = views
        self.contrastive = contrastive
        self.weight = float(weight)
        self.masked_only = masked_only
        self.seed = seed

    def draw(self, x: Tensor, step: int = 0, rank: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs, targets, masks) of both views stacked: view 1 is [:B], view 2 is [B:]."""
        g = step_generator(self.seed, step, rank)
        v1, v2 = self.views(x, g), self.views(x, g)
        return tuple(torch.cat([a, b]) for a, b in zip(v1, v2))

    def losses(self, x: Tensor, *, step: int = 0, rank: int = 0) -> dict[str, Tensor]:
        """{"reconstruction", "contrastive", "loss"} for this batch and (step, rank)."""
        if x.shape[0] < 2:
            raise ValueError("the contrastive term needs at least 2 volumes per batch (negatives)")
        inputs, targets, masks = self.draw(x, step, rank)
        maps = self.encoder.feature_maps(inputs)
        rec = voxel_mse(self.decoder(maps), targets, masks if self.masked_only else None)
        z1, z2 = self.projector(pool_map(maps[-1])).chunk(2)
        con = self.contrastive(z1, z2)
        return {"reconstruction": rec, "contrastive": con, "loss": rec + self.weight * con}

    def forward(self, x: Tensor, *, step: int = 0, rank: int = 0) -> Tensor:
        return self.losses(x, step=step, rank=rank)["loss"]
