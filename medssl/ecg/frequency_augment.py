"""Frequency Dynamic Augmentation (FDA) of CoRe-ECG (Qin et al., "CoRe-ECG: Advancing
Self-Supervised Representation Learning for 12-Lead ECG via Contrastive and Reconstructive
Synergy", arXiv:2604.11359, 2026).

The paper's abstract states the idea: perturb ECG signals "adaptively ... based on their
frequency-domain importance", instead of uniform (often non-physiological) time-domain
distortions. The exact formula was not available to us; this module implements the idea as
follows (our choices, each a constructor argument):

1. Spectrum: X = rFFT of every lead along time, (B, L, F) with F = T // 2 + 1 bins.
2. Importance of a bin: its magnitude normalised by the largest magnitude of that sample,
   imp in [0, 1]. With `shared_across_leads` (default) the magnitude is first averaged over
   leads, so every lead gets the same importance map.
3. Each bin is perturbed with probability `p_max * (1 - imp) ** gamma`: the dominant bands
   (heart-rate harmonics, QRS energy) are rarely touched, weak bands often.
4. A perturbed bin is multiplied by g * exp(i phi), with amplitude gain
   g = 1 + strength * (1 - imp) * u and phase phi = phase_strength * pi * (1 - imp) * v,
   u, v ~ U(-1, 1): the less important, the larger the change. DC and Nyquist bins keep phase 0.
5. Back to time with the inverse rFFT (same length).

With `shared_across_leads`, the bins chosen and their multipliers are the same for every lead of a
sample. The map is then one linear, time-invariant filter applied to all leads, so the lead
algebra (III = II - I, aVR = -(I + II) / 2, ...) of a 12-lead input still holds in the view:
the augmentation cannot produce a physiologically impossible lead combination.

Usage, like the augmentations of `medssl.ecg.augment`: `fda(x, generator) -> Tensor`,
x: (B, L, T); random numbers from the CPU generator; x is not modified.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def spectral_importance(x: Tensor, *, shared_across_leads: bool = True) -> Tensor:
    """Importance of every rFFT bin: magnitude / the sample's largest magnitude, in [0, 1].

    x: (B, L, T) -> (B, 1, F) when shared across leads (magnitude averaged over leads), else
    (B, L, F) (normalised per lead). F = T // 2 + 1.
    """
    mag = torch.fft.rfft(x.float(), dim=-1).abs()
    if shared_across_leads:
        mag = mag.mean(dim=1, keepdim=True)
    return mag / mag.amax(dim=-1, keepdim=True).clamp_min(1e-12)


class FrequencyDynamicAugment:
    """Importance-weighted random perturbation of ECG spectra (see the module docstring).

    p_max: largest per-bin perturbation probability (reached at zero importance).
    strength: largest relative amplitude change (gain in [1 - strength, 1 + strength]).
    phase_strength: largest phase shift as a fraction of pi.
    gamma: exponent on (1 - importance) in the probability; larger spares more bins.
    """

    def __init__(
        self,
        p_max: float = 0.5,
        strength: float = 0.5,
        phase_strength: float = 0.25,
        gamma: float = 1.0,
        *,
        shared_across_leads: bool = True,
    ):
        if not 0.0 <= p_max <= 1.0:
            raise ValueError(f"p_max must lie in [0, 1], got {p_max}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must lie in [0, 1] (gains stay non-negative), got {strength}")
        if not 0.0 <= phase_strength <= 1.0:
            raise ValueError(f"phase_strength must lie in [0, 1], got {phase_strength}")
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.p_max = float(p_max)
        self.strength = float(strength)
        self.phase_strength = float(phase_strength)
        self.gamma = float(gamma)
        self.shared_across_leads = shared_across_leads

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.ndim != 3:
            raise ValueError(f"expected a batch (batch, leads, samples), got shape {tuple(x.shape)}")
        t = x.shape[-1]
        spec = torch.fft.rfft(x.float(), dim=-1)
        imp = spectral_importance(x, shared_across_leads=self.shared_across_leads).cpu()
        slack = 1.0 - imp  # (B, 1 or L, F)
        shape = slack.shape
        chosen = torch.rand(shape, generator=generator) < self.p_max * slack.pow(self.gamma)
        u = 2 * torch.rand(shape, generator=generator) - 1
        v = 2 * torch.rand(shape, generator=generator) - 1
        gain = torch.where(chosen, 1 + self.strength * slack * u, torch.ones_like(slack))
        phase = torch.where(chosen, self.phase_strength * math.pi * slack * v, torch.zeros_like(slack))
        phase[..., 0] = 0.0
        if t % 2 == 0:
            phase[..., -1] = 0.0
        factor = torch.polar(gain, phase).to(x.device)
        return torch.fft.irfft(spec * factor, n=t, dim=-1).to(x.dtype)
