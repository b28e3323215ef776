"""ECG augmentations for contrastive pretraining, on batches x (B, n_leads, T).

Each augmentation is a small callable class `aug(x, generator) -> Tensor` that draws its random
parameters per sample from the given CPU `torch.Generator` (so a method seeded by
(seed, step, rank) repeats its views on resume) and returns a new tensor on x's device; x is
never modified. Amplitudes are in the input's units (per-lead standardised signals in medssl).

Mehari & Strodthoff ("Self-supervised representation learning from 12-lead ECG data", Comput.
Biol. Med. 2022; code github.com/tmehari/ecg-selfsupervised) compared GaussianNoise,
GaussianBlur, RandomResizedCrop, TimeOut, ChannelResize, DynamicTimeWarp, BaselineWander,
PowerlineNoise, EMNoise and BaselineShift, and pretrained SimCLR/BYOL/SwAV with the best pair:
RandomResizedCrop (crop ratio 0.5-1.0, resized to the 250-sample, 2.5 s at 100 Hz, window) +
TimeOut (zero a 20-40 % span). `paper_simclr_ecg_augment` builds that pipeline. Their
ChannelResize (magnitude 0.5-2), GaussianNoise (scale 0.005) and BaselineWander (< 0.5 Hz)
are here as `AmplitudeScale`, `GaussianNoise` and `BaselineWander`; `LeadDropout` (zero whole
leads) is an addition in the spirit of CLOCS-style lead-wise views (Kiyasseh et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _check_range(name: str, r: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    a, b = float(r[0]), float(r[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {tuple(r)}")
    return a, b


def _check_batch(x: Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"expected a batch (batch, leads, samples), got shape {tuple(x.shape)}")


class RandomTimeCrop:
    """Time shift: a window of `length` samples at a random start per sample -> (B, L, length).

    Inputs no longer than `length` are returned unchanged (a copy)."""

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length = int(length)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        b, _, t = x.shape
        if t <= self.length:
            return x.clone()
        start = torch.randint(0, t - self.length + 1, (b,), generator=generator).to(x.device)
        idx = start[:, None] + torch.arange(self.length, device=x.device)[None]
        return torch.gather(x, 2, idx[:, None, :].expand(-1, x.shape[1], -1))


class RandomResizedCrop:
    """Crop a random span of `scale` (fraction of T, drawn per sample) at a random position and
    resize it, by linear interpolation, to `output_size` samples (default: T) -> (B, L, out).

    Mehari & Strodthoff's RandomResizedCrop, crop ratio 0.5-1.0: a time stretch of 1-2x."""

    def __init__(self, scale: Sequence[float] = (0.5, 1.0), output_size: int | None = None):
        self.scale = _check_range("scale", scale, 1e-6, 1.0)
        if output_size is not None and output_size < 2:
            raise ValueError(f"output_size must be at least 2, got {output_size}")
        self.output_size = output_size

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        b, n_leads, t = x.shape
        out = self.output_size or t
        length = (_uniform((b,), *self.scale, generator) * t).round().clamp(2, t)
        start = (torch.rand(b, generator=generator, dtype=torch.float64) * (t - length + 1)).floor()
        pos = start[:, None] + torch.linspace(0, 1, out, dtype=torch.float64)[None] * (length[:, None] - 1)
        lo = pos.floor().long().clamp(0, t - 1)
        hi = (lo + 1).clamp(max=t - 1)
        w = (pos - lo).to(x.dtype).to(x.device)[:, None, :]
        lo, hi = lo.to(x.device)[:, None, :].expand(-1, n_leads, -1), hi.to(x.device)[:, None, :].expand(-1, n_leads, -1)
        return torch.gather(x, 2, lo) * (1 - w) + torch.gather(x, 2, hi) * w


class GaussianNoise:
    """Add white Gaussian noise of standard deviation `std` (input units) to every sample."""

    def __init__(self, std: float = 0.05):
        if std < 0:
            raise ValueError(f"std must be non-negative, got {std}")
        self.std = float(std)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        return x + self.std * noise.to(device=x.device, dtype=x.dtype)


class AmplitudeScale:
    """Scale each lead by its own factor, log-uniform in `magnitude` (ChannelResize, 0.5-2)."""

    def __init__(self, magnitude: Sequence[float] = (0.5, 2.0)):
        self.magnitude = _check_range("magnitude", magnitude, 1e-6, math.inf)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        lo, hi = (math.log(m) for m in self.magnitude)
        factor = _uniform(x.shape[:2], lo, hi, generator).exp()
        return x * factor.to(device=x.device, dtype=x.dtype)[..., None]


class BaselineWander:
    """Add a slow baseline drift: a sum of cosines at k * `fdelta` Hz (k = 1 .. fc / fdelta) with
    random phases and weights, scaled per sample to a peak amplitude drawn from U(0, `max_amplitude`)
    and per lead by a gain drawn from U(-1, 1) (so no lead drifts by more than max_amplitude).

    Mehari & Strodthoff's BaselineWander (after Clifford et al.), cut-off fc = 0.5 Hz.
    `sampling_rate` is the input's rate in Hz.
    """

    def __init__(self, sampling_rate: float, max_amplitude: float = 0.5, fc: float = 0.5, fdelta: float = 0.01):
        if sampling_rate <= 0 or max_amplitude < 0 or not 0 < fdelta <= fc < sampling_rate / 2:
            raise ValueError(
                f"bad baseline wander settings: sampling_rate={sampling_rate}, max_amplitude={max_amplitude}, "
                f"fc={fc}, fdelta={fdelta}"
            )
        self.sampling_rate = float(sampling_rate)
        self.max_amplitude = float(max_amplitude)
        self.freqs = torch.arange(1, int(round(fc / fdelta)) + 1, dtype=torch.float64) * fdelta

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        b, n_leads, t = x.shape
        k = len(self.freqs)
        phase = _uniform((b, k), 0.0, 2 * math.pi, generator)
        weight = _uniform((b, k), 0.0, 1.0, generator)
        amp = _uniform((b,), 0.0, self.max_amplitude, generator)
        gain = _uniform((b, n_leads), -1.0, 1.0, generator)
        time = torch.arange(t, dtype=torch.float64) / self.sampling_rate
        wave = (weight[:, :, None] * torch.cos(2 * math.pi * self.freqs[None, :, None] * time + phase[:, :, None])).sum(1)
        wave = wave / wave.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) * amp[:, None]
        drift = gain[:, :, None] * wave[:, None, :]
        return x + drift.to(device=x.device, dtype=x.dtype)


class TimeOut:
    """Zero a contiguous span of a random fraction (`ratio`) of the samples, in all leads
    (Mehari & Strodthoff's TimeOut, 0.2-0.4 in their SimCLR runs)."""

    def __init__(self, ratio: Sequence[float] = (0.2, 0.4)):
        self.ratio = _check_range("ratio", ratio, 0.0, 1.0)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        b, _, t = x.shape
        length = (_uniform((b,), *self.ratio, generator) * t).floor().long()
        start = (torch.rand(b, generator=generator, dtype=torch.float64) * (t - length + 1)).floor().long()
        pos = torch.arange(t)[None]
        masked = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        return x.masked_fill(masked.to(x.device)[:, None, :], 0.0)


class LeadDropout:
    """Zero each lead independently with probability `p`; at least one lead per sample is kept."""

    def __init__(self, p: float = 0.2):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.p = float(p)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        _check_batch(x)
        b, n_leads, _ = x.shape
        u = torch.rand((b, n_leads), generator=generator)
        drop = u < self.p
        keeper = u.argmax(dim=1)  # the lead least likely to be dropped stays
        drop[torch.arange(b), keeper] = False
        return x.masked_fill(drop.to(x.device)[:, :, None], 0.0)


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, augmentations: Sequence):
        self.augmentations = list(augmentations)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        for aug in self.augmentations:
            x = aug(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(type(a).__name__ for a in self.augmentations)})"


AUGMENTATIONS = {
    "random_time_crop": RandomTimeCrop,
    "random_resized_crop": RandomResizedCrop,
    "gaussian_noise": GaussianNoise,
    "amplitude_scale": AmplitudeScale,
    "baseline_wander": BaselineWander,
    "time_out": TimeOut,
    "lead_dropout": LeadDropout,
}


def build_augment(specs: Sequence[dict], *, sampling_rate: float | None = None) -> Compose:
    """A pipeline from recipe entries such as `{name: time_out, ratio: [0.2, 0.4]}`.

    `sampling_rate` (the encoder's input rate) is passed to augmentations that need it."""
    augs = []
    for spec in specs:
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}")
        if name == "baseline_wander" and "sampling_rate" not in kwargs:
            if sampling_rate is None:
                raise ValueError("baseline_wander needs the input's sampling_rate")
            kwargs["sampling_rate"] = sampling_rate
        augs.append(AUGMENTATIONS[name](**kwargs))
    return Compose(augs)


def paper_simclr_ecg_augment(window: int = 250) -> Compose:
    """Mehari & Strodthoff's SimCLR views: a random `window` (2.5 s at 100 Hz), a random
    resized crop of 50-100 % of it back to `window` samples, then TimeOut of 20-40 %."""
    return Compose([RandomTimeCrop(window), RandomResizedCrop((0.5, 1.0)), TimeOut((0.2, 0.4))])
