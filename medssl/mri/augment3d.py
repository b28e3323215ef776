"""Random 3-D patches with AMAES's spatial and intensity augmentations, in torch, batched per step.

AMAES (Munk et al., ADSMI @ MICCAI 2024; code github.com/asbjrnmunk/amaes,
`src/augmentations/augmentation_composer.py`, the Yucca transforms it composes) pretrains with
"augmentation reversal": a spatial transform is applied to the patch, the result is copied as the
reconstruction target, and only then are intensity augmentations applied, to the input alone.
The network must undo the intensity corruption as well as fill the masked cubes. The settings
here are AMAES's "all" preset:

spatial (input and target alike; `RandomPatch3d` + `SpatialAugment`):
  elastic deformation p = 0.33 (alpha 200-600, sigma 20-30 voxels); rotation p = 0.2 per sample,
  then each axis with p = 0.66, angle uniform in +-30 degrees; scaling p = 0.2, factor 0.9-1.1;
  voxels sampled from outside the volume take the volume's minimum (Yucca's cval="min").
intensity (input only; `IntensityAugment`), in this order, each with its own probability:
  additive Gaussian noise (0.2, sigma 1e-4-1e-3), Gaussian blur (0.2, per channel 0.5, sigma
  0-1 voxel), multiplicative noise (0.2, sigma 1e-4-1e-3), motion ghosting (0.2, k-space lines
  every 2-10 scaled by 0.85-0.95 along one axis), Gibbs ringing (0.2, k-space cut to the central
  75-100 % along one axis), simulated low resolution (0.2, per channel 0.5, per axis 0.33, zoom
  0.5-1), bias field (0.33, Yucca's quadratic field), gamma (0.2, gamma 0.5-2, inverted 5 %).
  Each result is clipped to the range of its input (AMAES sets clip_to_input_range=True).

Where medssl differs, on purpose:
- AMAES's volumes are min-max normalised to [0, 1] and its noise levels, gamma and bias field are
  written for that range; medssl's are z-scored. Each channel is therefore rescaled to [0, 1] by
  its own minimum and maximum, augmented, and mapped back, so every setting keeps its meaning.
- Gibbs ringing's cut is a fraction of the axis (AMAES: 96-128 lines of a 128 patch), so it still
  acts on 32^3 or 96^3 patches.
- The elastic displacement field (batchgenerators: uniform(-1, 1) noise per voxel, Gaussian
  filtered with sigma, times alpha) is drawn on a grid 4x coarser with the variance that
  block-averaging gives and filtered with sigma / 4, then upsampled: the same field statistics
  at 1/64 of the cost (the field is smooth at sigma >= 20 voxels).
- Low resolution is simulated by nearest downsampling and trilinear (not cubic) upsampling.
- A sample's patch is cropped at a uniformly random position from the cached volume; without a
  spatial transform this is an exact integer crop, with one the patch is resampled trilinearly
  (grid_sample) around the same centre.

Every random choice comes from the generator passed in (medssl.ssl.random.step_generator): the
scalars from it directly, noise fields from a device generator seeded from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor


def device_generator(generator: torch.Generator, device: torch.device | str) -> torch.Generator:
    """A generator on `device` seeded from `generator`: bulk noise drawn where it is used."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _p(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def _from_config(cls, cfg: dict | None):
    if cfg is None:
        return None
    known = {f.name for f in fields(cls)}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


# ---------------------------------------------------------------------------------------------
# Spatial: random patch, rotation, scaling, elastic deformation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpatialAugment:
    """AMAES's spatial augmentation settings (Yucca `Spatial`); angles in degrees, lengths in voxels."""

    p_rotation: float = 0.2
    p_rotation_per_axis: float = 0.66
    rotation_deg: float = 30.0
    p_scale: float = 0.2
    scale: tuple[float, float] = (0.9, 1.1)
    p_deform: float = 0.33
    deform_alpha: tuple[float, float] = (200.0, 600.0)
    deform_sigma: tuple[float, float] = (20.0, 30.0)

    @classmethod
    def from_config(cls, cfg: dict | None) -> SpatialAugment | None:
        return _from_config(cls, cfg)


def rotation_matrix(angles_rad: tuple[float, float, float]) -> Tensor:
    """(3, 3) rotation about the three voxel axes in turn (R0 @ R1 @ R2), float64."""
    mats = []
    for axis, a in enumerate(angles_rad):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = torch.eye(3, dtype=torch.float64)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        mats.append(m)
    return mats[0] @ mats[1] @ mats[2]


@dataclass
class PatchDraw:
    """One sample's patch: its start in the volume, and the spatial transform (None: plain crop)."""

    start: tuple[int, int, int]
    matrix: Tensor | None = None  # (3, 3) applied to centred output coordinates
    deform: tuple[float, float] | None = None  # (alpha, sigma)


def _gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    radius = max(int(truncate * sigma + 0.5), 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _filter_matrix(n: int, kernel: Tensor, mode: str) -> Tensor:
    """(n, n) matrix M with (M @ v) = v filtered by the 1-D `kernel` (odd length), borders per
    `mode`: "constant" (zeros beyond) or "reflect" (scipy's half-sample mirror, d c b a | a b c d)."""
    r = kernel.numel() // 2
    i = torch.arange(n)[:, None]
    j = i + torch.arange(-r, r + 1)[None, :]  # (n, 2r + 1) source indices
    weights = kernel[None, :].expand(n, -1)
    if mode == "constant":
        inside = (j >= 0) & (j < n)
        j, weights = j.clamp(0, n - 1), weights * inside
    elif mode == "reflect":
        j = j % (2 * n)
        j = torch.where(j >= n, 2 * n - 1 - j, j)
    else:
        raise ValueError(f"unknown border mode {mode!r}")
    m = torch.zeros(n, n, dtype=kernel.dtype)
    m.scatter_add_(1, j, weights.contiguous())
    return m


def separable_filter(v: Tensor, kernel: Tensor, mode: str = "constant") -> Tensor:
    """Filter the last three axes of v (..., D, H, W) with the same 1-D kernel along each, as
    three small matrix products (a direct 1-D conv3d is slow on CPU)."""
    for axis in (-3, -2, -1):
        m = _filter_matrix(v.shape[axis], kernel, mode).to(v)
        v = torch.movedim(torch.movedim(v, axis, -1) @ m.T, -1, axis)
    return v


def elastic_displacement(patch: tuple[int, int, int], alpha: float, sigma: float, gen: torch.Generator,
                         device: torch.device | str) -> Tensor:
    """(3, *patch) voxel displacements with batchgenerators' statistics (see the module docstring)."""
    coarse = [math.ceil(p / 4) + 1 for p in patch]
    noise = torch.randn((3, 1, *coarse), generator=gen, device=device) / (8 * math.sqrt(3.0))
    smooth = separable_filter(noise, _gaussian_kernel(sigma / 4))
    return F.interpolate(smooth, size=patch, mode="trilinear", align_corners=True)[:, 0] * alpha


class RandomPatch3d:
    """(B, C, *S) cached volumes -> (B, C, *patch) patches at random positions, each optionally
    rotated, scaled and deformed (`SpatialAugment`; None = plain crops)."""

    def __init__(self, patch_size: tuple[int, int, int] | list[int], spatial: SpatialAugment | None = None):
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be [D, H, W], got {list(patch_size)}")
        self.spatial = spatial

    def draw(self, volume_shape: tuple[int, ...], batch_size: int, g: torch.Generator) -> list[PatchDraw]:
        if any(s < p for s, p in zip(volume_shape, self.patch_size)):
            raise ValueError(
                f"cached volumes {tuple(volume_shape)} are smaller than the patch {self.patch_size}: "
                "lower data.patch_size or raise data.shape"
            )
        draws = []
        sp = self.spatial
        for _ in range(batch_size):
            start = tuple(_randint(g, 0, s - p) for s, p in zip(volume_shape, self.patch_size))
            matrix, deform = None, None
            if sp is not None:
                if _p(g, sp.p_deform):
                    deform = (_u(g, *sp.deform_alpha), _u(g, *sp.deform_sigma))
                if _p(g, sp.p_rotation):
                    limit = math.radians(sp.rotation_deg)
                    angles = tuple(_u(g, -limit, limit) if _p(g, sp.p_rotation_per_axis) else 0.0 for _ in range(3))
                    matrix = rotation_matrix(angles)
                if _p(g, sp.p_scale):
                    s = _u(g, *sp.scale)
                    matrix = (matrix if matrix is not None else torch.eye(3, dtype=torch.float64)) * s
            draws.append(PatchDraw(start, matrix, deform))
        return draws

    def __call__(self, x: Tensor, g: torch.Generator, draws: list[PatchDraw] | None = None) -> Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected volumes (batch, channels, D, H, W), got {tuple(x.shape)}")
        draws = draws if draws is not None else self.draw(tuple(x.shape[2:]), x.shape[0], g)
        dg = None
        out = []
        for b, d in enumerate(draws):
            if d.matrix is None and d.deform is None:
                (s0, s1, s2), (p0, p1, p2) = d.start, self.patch_size
                out.append(x[b, :, s0:s0 + p0, s1:s1 + p1, s2:s2 + p2])
                continue
            if d.deform is not None and dg is None:
                dg = device_generator(g, x.device)
            out.append(self._resample(x[b], d, dg))
        return torch.stack(out)

    def _resample(self, v: Tensor, d: PatchDraw, dg: torch.Generator | None) -> Tensor:
        """Sample one (C, *S) volume on the transformed patch grid, trilinearly."""
        sizes = v.shape[1:]
        axes = [torch.arange(p, dtype=torch.float32, device=v.device) - (p - 1) / 2 for p in self.patch_size]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, *patch), centred
        if d.matrix is not None:
            coords = torch.einsum("ij,j...->i...", d.matrix.to(coords), coords)
        centre = torch.tensor([s + (p - 1) / 2 for s, p in zip(d.start, self.patch_size)], device=v.device)
        coords = coords + centre.reshape(3, 1, 1, 1)
        if d.deform is not None:
            coords = coords + elastic_displacement(self.patch_size, *d.deform, dg, v.device)
        norm = torch.stack([2 * coords[i] / max(sizes[i] - 1, 1) - 1 for i in range(3)])
        grid = norm.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x, y, z) = (W, H, D) order
        low = v.flatten(1).min(dim=1).values.reshape(-1, 1, 1, 1)
        sampled = F.grid_sample((v - low)[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return sampled[0] + low


# ---------------------------------------------------------------------------------------------
# Intensity: AMAES's eight corruptions, on [0, 1]-rescaled channels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensityAugment:
    """AMAES's intensity augmentation settings and their application (see the module docstring).

    __call__(x (B, C, D, H, W), generator) -> a new augmented tensor; x is not modified.
    """

    p_additive_noise: float = 0.2
    additive_sigma: tuple[float, float] = (1e-4, 1e-3)
    p_blur: float = 0.2
    p_blur_per_channel: float = 0.5
    blur_sigma: tuple[float, float] = (0.0, 1.0)
    p_multiplicative_noise: float = 0.2
    multiplicative_sigma: tuple[float, float] = (1e-4, 1e-3)
    p_ghosting: float = 0.2
    ghosting_alpha: tuple[float, float] = (0.85, 0.95)
    ghosting_every: tuple[int, int] = (2, 10)
    p_ringing: float = 0.2
    ringing_keep: tuple[float, float] = (0.75, 1.0)
    p_lowres: float = 0.2
    p_lowres_per_channel: float = 0.5
    p_lowres_per_axis: float = 0.33
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    p_bias_field: float = 0.33
    p_gamma: float = 0.2
    p_gamma_invert: float = 0.05
    gamma: tuple[float, float] = (0.5, 2.0)

    @classmethod
    def from_config(cls, cfg: dict | None) -> IntensityAugment | None:
        return _from_config(cls, cfg)

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        dg = device_generator(g, x.device)
        return torch.stack([self.augment_sample(v, g, dg) for v in x])

    def augment_sample(self, v: Tensor, g: torch.Generator, dg: torch.Generator) -> Tensor:
        """One (C, D, H, W) sample: rescale each channel to [0, 1], corrupt, map back."""
        lo = v.flatten(1).min(dim=1).values.reshape(-1, 1, 1, 1)
        span = (v.flatten(1).max(dim=1).values.reshape(-1, 1, 1, 1) - lo).clamp_min(1e-8)
        u = (v - lo) / span
        steps = (self._additive, self._blur, self._multiplicative, self._ghosting, self._ringing,
                 self._lowres, self._bias_field, self._gamma)
        for step in steps:
            u = step(u, g, dg)
        return u * span + lo

    @staticmethod
    def _clip(new: Tensor, old: Tensor) -> Tensor:
        flat = old.flatten(1)
        return new.clamp(flat.min(dim=1).values.reshape(-1, 1, 1, 1), flat.max(dim=1).values.reshape(-1, 1, 1, 1))

    def _additive(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_additive_noise):
            return u
        sigma = _u(g, *self.additive_sigma)
        return self._clip(u + sigma * torch.randn(u.shape, generator=dg, device=u.device), u)

    def _blur(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_blur):
            return u
        out = u.clone()
        for c in range(u.shape[0]):
            if _p(g, self.p_blur_per_channel):
                sigma = _u(g, *self.blur_sigma)
                if sigma > 0.05:  # below, the truncated kernel is a delta
                    out[c] = separable_filter(u[c], _gaussian_kernel(sigma), "reflect")
        return self._clip(out, u)

    def _multiplicative(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_multiplicative_noise):
            return u
        sigma = _u(g, *self.multiplicative_sigma)
        return self._clip(u + u * sigma * torch.randn(u.shape, generator=dg, device=u.device), u)

    def _ghosting(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_ghosting):
            return u
        alpha = _u(g, *self.ghosting_alpha)
        every = _randint(g, *self.ghosting_every)
        dim = 1 + _randint(g, 0, 2)
        n = u.shape[dim]
        # Scaling k-space lines of one axis only touches that axis: a 1-D FFT along it suffices.
        k = torch.fft.fft(u, dim=dim)
        scale = torch.ones(n, device=u.device)
        scale[torch.arange(0, n - 1, every)] = alpha
        shape = [1, 1, 1, 1]
        shape[dim] = n
        return self._clip(torch.fft.ifft(k * scale.reshape(shape), dim=dim).abs(), u)

    def _ringing(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_ringing):
            return u
        keep_frac = _u(g, *self.ringing_keep)
        dim = 1 + _randint(g, 0, 2)
        n = u.shape[dim]
        keep = max(int(round(keep_frac * n)), 1)
        k = torch.fft.fftshift(torch.fft.fft(u, dim=dim), dim=dim)
        lo, hi = math.ceil(n / 2) - math.ceil(keep / 2), math.ceil(n / 2) + math.ceil(keep / 2)
        band = torch.zeros(n, device=u.device)
        band[max(lo, 0):min(hi, n)] = 1.0
        shape = [1, 1, 1, 1]
        shape[dim] = n
        k = k * band.reshape(shape)
        return self._clip(torch.fft.ifft(torch.fft.ifftshift(k, dim=dim), dim=dim).abs(), u)

    def _lowres(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_lowres):
            return u
        out = u.clone()
        size = tuple(u.shape[1:])
        for c in range(u.shape[0]):
            if not _p(g, self.p_lowres_per_channel):
                continue
            zoom = _u(g, *self.lowres_zoom)
            axes = [_p(g, self.p_lowres_per_axis) for _ in range(3)]
            if not any(axes):
                continue
            low = tuple(max(int(round(s * zoom)), 1) if a else s for s, a in zip(size, axes))
            small = F.interpolate(u[c][None, None], size=low, mode="nearest")
            out[c] = F.interpolate(small, size=size, mode="trilinear", align_corners=False)[0, 0]
        return self._clip(out, u)

    def _bias_field(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_bias_field):
            return u
        size = u.shape[1:]
        centre = [_randint(g, 0, s - 1) for s in size]
        field = torch.ones(size, device=u.device)
        for axis, (s, c) in enumerate(zip(size, centre)):
            t = (torch.arange(s, dtype=torch.float32, device=u.device) - c) ** 2 / s**2
            shape = [1, 1, 1]
            shape[axis] = s
            field = field - t.reshape(shape)
        return self._clip(u * field, u)

    def _gamma(self, u: Tensor, g, dg) -> Tensor:
        if not _p(g, self.p_gamma):
            return u
        invert = _p(g, self.p_gamma_invert)
        out = -u if invert else u.clone()
        lo_g, hi_g = self.gamma
        for c in range(u.shape[0]):
            # batchgenerators' augment_gamma: half the draws below 1, half above.
            if lo_g < 1 and _p(g, 0.5):
                gamma = _u(g, lo_g, 1.0)
            else:
                gamma = _u(g, max(lo_g, 1.0), hi_g)
            ch = out[c]
            mn = ch.min()
            rng = ch.max() - mn
            out[c] = ((ch - mn) / (rng + 1e-7)) ** gamma * rng + mn
        out = -out if invert else out
        return self._clip(out, u)
