"""Vessel priors for vessel-aware masking (VAMAE): Frangi vesselness, skeletons, patch importance.

VAMAE (Abolade, Mireku et al., "Vessel-Aware Masked Autoencoders for OCTA", 2026) masks the
patches of an OCTA image with probabilities that grow with how much vasculature they hold. This
module computes the per-pixel priors once per image (they are cached with the preprocessed data,
see `medssl.retina.modality`) and turns them into per-patch masking probabilities.

Choices the paper leaves open, made here:
- Vesselness is Frangi et al. (MICCAI 1998) for 2-D images, multi-scale (max over scales) on
  scale-normalised Hessians (sigma^2 * second derivatives of a Gaussian-smoothed image).
  `c` (the structureness scale) defaults to half of the largest Hessian Frobenius norm over all
  pixels AND all scales, as Frangi suggests ("half the maximum Hessian norm"); one value for all
  scales keeps the scales comparable, so the scale of the strongest response tracks the vessel's
  calibre. The result lies in [0, 1] by construction and is not rescaled.
- The skeleton is the Guo-Hall (1989) two-subiteration thinning (algorithm A1 in Lam, Lee and
  Suen, "Thinning methodologies - a comprehensive survey", IEEE TPAMI 14(9), 1992) of the
  vesselness thresholded by Otsu's method, applied through 256-entry lookup tables on the
  8-neighbourhood code, so each pass is a few whole-array operations.
- Patch importance pools each prior by its per-patch mean, scales each pooled map by its maximum
  over the image's patches (so the two weights are comparable), and mixes them with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

PRIOR_NAMES: tuple[str, ...] = ("vesselness", "skeleton")


def hessian_eigenvalues(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (l1, l2) of the scale-normalised Hessian (sigma^2 * second derivatives of the
    image smoothed by a Gaussian of `sigma` px) of a 2-D image, ordered by magnitude,
    |l1| <= |l2|; each (H, W) float64."""
    # Central differences of the smoothed image: exactly zero on constant regions, unlike
    # sampled Gaussian-derivative kernels, whose taps do not sum to zero.
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma, mode="nearest")
    gy, gx = np.gradient(smooth)
    s2 = sigma * sigma
    hyy, hxy = (g * s2 for g in np.gradient(gy))
    hxx = np.gradient(gx, axis=1) * s2
    half_trace = 0.5 * (hxx + hyy)
    root = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy ** 2)
    a, b = half_trace + root, half_trace - root
    swap = np.abs(a) > np.abs(b)
    return np.where(swap, b, a), np.where(swap, a, b)


def frangi_scale_responses(
    image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 3.0), beta: float = 0.5,
    c: float | None = None, black_ridges: bool = False,
) -> np.ndarray:
    """Frangi vesselness of a 2-D image at each scale: (n_scales, H, W) float32 in [0, 1].

    image: (H, W) intensities (any range); sigmas: Gaussian scales in pixels (about a vessel's
    radius / sqrt(2) for the best response); beta: blob-vs-line sensitivity (Frangi's 0.5);
    c: structureness scale, default half the largest Hessian norm over pixels and scales;
    black_ridges: False for bright vessels on a dark background (OCTA, FA), True for dark vessels
    (fundus photographs' green channel).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"frangi vesselness needs a 2-D image, got shape {img.shape}")
    if not sigmas or any(s <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be positive, got {tuple(sigmas)}")
    eig = [hessian_eigenvalues(img, float(s)) for s in sigmas]
    norms = [np.sqrt(l1 * l1 + l2 * l2) for l1, l2 in eig]
    if c is None:
        c = 0.5 * max(float(n.max()) for n in norms)
    out = np.zeros((len(sigmas), *img.shape), dtype=np.float32)
    if c <= 1e-12:  # a flat image has no structure at any scale
        return out
    for k, ((l1, l2), s) in enumerate(zip(eig, norms)):
        rb2 = (l1 / np.where(l2 == 0, 1.0, l2)) ** 2
        v = np.exp(-rb2 / (2 * beta * beta)) * (1.0 - np.exp(-(s * s) / (2 * c * c)))
        wrong_polarity = l2 > 0 if not black_ridges else l2 < 0
        v[wrong_polarity | (l2 == 0)] = 0.0
        out[k] = v
    return out


def frangi_vesselness(
    image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 3.0), beta: float = 0.5,
    c: float | None = None, black_ridges: bool = False,
) -> np.ndarray:
    """Multi-scale Frangi vesselness (max over scales): (H, W) float32 in [0, 1]; see
    :func:`frangi_scale_responses` for the arguments."""
    return frangi_scale_responses(image, sigmas, beta, c, black_ridges).max(axis=0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of `values` (the one maximising between-class variance)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


# Neighbours x1..x8 of the Guo-Hall papers: E, NE, N, NW, W, SW, S, SE as (row, column) offsets.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _guo_hall_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations, indexed by the code sum(x_i << (i - 1))."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [None] + [bool(code >> i & 1) for i in range(8)] + [bool(code & 1)]  # x[1..8], x[9] = x[1]
        crossing = sum((not x[2 * i - 1]) and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
        n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
        n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
        n = min(n1, n2)
        if crossing != 1 or not 2 <= n <= 3:
            continue
        first[code] = not ((x[2] or x[3] or not x[8]) and x[1])
        second[code] = not ((x[6] or x[7] or not x[4]) and x[5])
    return first, second


_DELETE_FIRST, _DELETE_SECOND = _guo_hall_tables()


def _simple_table() -> np.ndarray:
    """Codes of simple points (Hilditch crossing number 1, which preserves 8-connected topology
    when the point is removed) that are not end points."""
    table = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [None] + [bool(code >> i & 1) for i in range(8)] + [bool(code & 1)]
        crossing = sum((not x[2 * i - 1]) and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
        table[code] = crossing == 1 and bin(code).count("1") >= 2
    return table


_SIMPLE = _simple_table()


def _thin_blocks(img: np.ndarray) -> None:
    """Remove, one at a time, simple pixels of 2 x 2 blocks that Guo-Hall keeps at junctions
    (its condition 2 <= N <= 3 protects them); blocks whose every pixel is needed stay."""
    padded = np.pad(img, 1)
    view = padded[1:-1, 1:-1]  # img's pixels, edited in place below
    weights = np.zeros((3, 3), np.int64)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        weights[1 + dy, 1 + dx] = 1 << bit
    while True:
        blocks = np.argwhere(view[:-1, :-1] & view[1:, :-1] & view[:-1, 1:] & view[1:, 1:])
        changed = False
        for y, x in blocks:
            if not view[y:y + 2, x:x + 2].all():
                continue
            for py, px in ((y, x), (y, x + 1), (y + 1, x), (y + 1, x + 1)):
                if _SIMPLE[int((padded[py:py + 3, px:px + 3] * weights).sum())]:
                    view[py, px] = False
                    changed = True
                    break
        if not changed:
            img[...] = view
            return


def _neighbour_codes(img: np.ndarray) -> np.ndarray:
    """8-neighbourhood code sum(x_i << (i - 1)) of every pixel, (H, W) uint8."""
    h, w = img.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = img
    code = np.zeros(img.shape, dtype=np.uint8)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        code |= padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] << bit
    return code


def skeletonize(mask: np.ndarray, max_iterations: int | None = None) -> np.ndarray:
    """Guo-Hall thinning of a 2-D binary mask to 8-connected, one-pixel-wide centrelines:
    (H, W) bool, a subset of `mask` with the same connected components and holes. Simple pixels
    of 2 x 2 blocks left at junctions are then removed one by one; a block remains only where
    every pixel of it is needed for connectivity."""
    img = np.asarray(mask, dtype=bool).copy()
    if img.ndim != 2:
        raise ValueError(f"skeletonize needs a 2-D mask, got shape {img.shape}")
    limit = max_iterations if max_iterations is not None else img.size
    for _ in range(limit):
        changed = False
        for table in (_DELETE_FIRST, _DELETE_SECOND):
            delete = img & table[_neighbour_codes(img)]
            if delete.any():
                img[delete] = False
                changed = True
        if not changed:
            break
    _thin_blocks(img)
    return img


def vessel_priors(
    image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 3.0), beta: float = 0.5, c: float | None = None,
    black_ridges: bool = False, threshold: float | None = None,
) -> dict[str, np.ndarray]:
    """{"vesselness": (H, W) float32 in [0, 1], "skeleton": (H, W) bool} of a 2-D image.

    The skeleton thins the vesselness above `threshold` (default: Otsu's threshold of the
    vesselness); the other arguments are those of :func:`frangi_vesselness`.
    """
    v = frangi_vesselness(image, sigmas, beta, c, black_ridges)
    if threshold is None:
        threshold = otsu_threshold(v) if v.max() > 0 else 1.0
    return {"vesselness": v, "skeleton": skeletonize(v >= max(float(threshold), 1e-6))}


def _pool(x, patch_size: int):
    """Per-patch means of (..., H, W) in row-major patch order: (..., n_patches)."""
    *lead, h, w = x.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch size {patch_size}")
    x = x.reshape(*lead, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.mean(axis=(-3, -1)).reshape(*lead, (h // patch_size) * (w // patch_size))


def patch_importance(vesselness, skeleton, patch_size: int, weights: tuple[float, float] = (0.5, 0.5)):
    """Vessel importance of each patch: (n_patches,) for (H, W) priors, (B, n_patches) for (B, H, W).

    Each prior is averaged over each patch (row-major patch order, as a ViT flattens its grid),
    divided by its maximum over the image's patches (an image without vessels gives zeros), then
    mixed: w_v * vesselness + w_s * skeleton density. With the default weights the result lies in
    [0, 1]. Takes and returns numpy arrays or torch tensors alike.
    """
    torch_in = not isinstance(vesselness, np.ndarray)
    if torch_in:
        import torch

        v = vesselness.float()
        s = skeleton.float() if torch.is_tensor(skeleton) else torch.as_tensor(np.asarray(skeleton), dtype=torch.float32)
        pv, ps = _pool_torch(v, patch_size), _pool_torch(s.to(v.device), patch_size)
        norm = [p / p.amax(dim=-1, keepdim=True).clamp_min(1e-12) for p in (pv, ps)]
    else:
        pv = _pool(np.asarray(vesselness, dtype=np.float32), patch_size)
        ps = _pool(np.asarray(skeleton, dtype=np.float32), patch_size)
        norm = [p / np.maximum(p.max(axis=-1, keepdims=True), 1e-12) for p in (pv, ps)]
    return weights[0] * norm[0] + weights[1] * norm[1]


def _pool_torch(x, patch_size: int):
    *lead, h, w = x.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of patch size {patch_size}")
    x = x.reshape(*lead, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.mean(dim=(-3, -1)).reshape(*lead, (h // patch_size) * (w // patch_size))


def masking_probabilities(importance, temperature: float = 1.0, floor: float = 0.1):
    """Probability of masking each patch, over the last axis: (1 - floor) * softmax(importance /
    temperature) + floor / n_patches. Sums to 1; every patch keeps at least floor / n_patches, so
    background patches are still masked sometimes; a lower temperature concentrates masking on
    the most vascular patches. numpy in, numpy out; torch in, torch out."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")
    if isinstance(importance, np.ndarray):
        z = np.asarray(importance, dtype=np.float64) / temperature
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        p = z / z.sum(axis=-1, keepdims=True)
        return ((1.0 - floor) * p + floor / p.shape[-1]).astype(np.float32)
    import torch

    p = torch.softmax(importance.float() / temperature, dim=-1)
    return (1.0 - floor) * p + floor / p.shape[-1]
