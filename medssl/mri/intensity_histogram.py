"""A non-learned baseline for brain MRI: the tissue-intensity histogram, run as a frozen "encoder".

:class:`IntensityHistogram` reads the same preprocessed input as the U-Net encoders (one channel,
z-scored over its non-zero voxels, background 0) and returns, per volume, the fraction of its
non-zero voxels in each of ``bins`` equal-width intensity bins over ``[low, high]`` z-units
(values outside go to the end bins) and the fraction of the grid that is non-zero (a size proxy).
On a T1 image the bins separate CSF (dark), grey matter and white matter (bright), so the
histogram tracks the tissue proportions that change with age (atrophy: more CSF, less white
matter), the classic hand-made brain-age feature. It has no parameters and no randomness.

It is not one of the built-in encoders (it has nothing to train, so the registry's contract test,
which checks gradients and seed dependence, does not apply): :func:`register` adds it to the
registry of the running process as ``mri_intensity_histogram``, after which a bench config can
name it as an encoder (``ref: mri_intensity_histogram``) and ``medssl bench``'s probes score it
on the same subject draws, metrics and bootstrap as the learned encoders
(``benchmarks/real_ixi_brain_age.py`` does this).
"""

from __future__ import annotations

import torch
from torch import nn

from medssl.registry import EncoderSpec, list_encoders, register_encoder

__all__ = ["IntensityHistogram", "mri_intensity_histogram", "register", "NAME"]

NAME = "mri_intensity_histogram"


class IntensityHistogram(nn.Module):
    """(B, C, D, H, W) z-scored volumes -> (B, C * (bins + 1)) histogram features (see module doc)."""

    def __init__(self, *, bins: int = 24, low: float = -2.5, high: float = 3.5, channels=("any",),
                 shape=(32, 32, 32), spacing_mm=(1.0, 1.0, 1.0)):
        super().__init__()
        if bins < 2 or not high > low:
            raise ValueError(f"need bins >= 2 and high > low, got bins={bins}, low={low}, high={high}")
        self.bins, self.low, self.high = int(bins), float(low), float(high)
        self.in_channels = len(channels)
        self.register_buffer("edges", torch.linspace(self.low, self.high, self.bins + 1)[1:-1], persistent=False)
        dim = self.in_channels * (self.bins + 1)
        shape = [int(s) for s in shape]
        self.spec = EncoderSpec(
            name=NAME, modality="mri",
            input={"channels": list(channels), "spatial_dims": 3, "shape": shape,
                   "input_shape": [len(channels), *shape], "spacing_mm": [float(s) for s in spacing_mm],
                   "intensity": "z-score over brain voxels", "divisible_by": 1},
            embed_dim=dim,
            hparams={"bins": self.bins, "low": self.low, "high": self.high, "channels": list(channels),
                     "shape": shape, "spacing_mm": [float(s) for s in spacing_mm]},
            license="Apache-2.0; no weights (a fixed feature extractor)",
            provenance="non-learned tissue-intensity histogram (medssl.mri.intensity_histogram)",
            paper="",
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"IntensityHistogram: expected (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        v = x.detach().float().flatten(2)  # (B, C, V)
        nonzero = v != 0
        idx = torch.bucketize(v.clamp(self.low, self.high), self.edges)  # (B, C, V) in [0, bins)
        counts = torch.zeros(*v.shape[:2], self.bins, dtype=torch.float32, device=v.device)
        counts.scatter_add_(2, idx, nonzero.float())
        n = nonzero.sum(dim=2, keepdim=True).clamp_min(1).float()
        frac = nonzero.float().mean(dim=2, keepdim=True)
        return torch.cat([counts / n, frac], dim=2).flatten(1)  # (B, C * (bins + 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, dim): one "token", the histogram."""
        return self._features(x)[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x)


def mri_intensity_histogram(**overrides) -> IntensityHistogram:
    """Tissue-intensity histogram of a z-scored brain MRI (non-learned baseline; see the module doc)."""
    return IntensityHistogram(**overrides)


def register() -> str:
    """Add ``mri_intensity_histogram`` to this process's encoder registry (idempotent); its name."""
    if NAME not in list_encoders():
        register_encoder(mri_intensity_histogram, modality="mri", name=NAME)
    return NAME
