"""Synthetic OCTA en-face images with exact ground truth, fast enough for tests and demos.

One image (a macula-centred superficial plexus, in the spirit of OCTA-500's projection maps):

- a foveal avascular zone (FAZ): an irregular disc (low angular harmonics) near the centre;
- vessel trees entering from outside the field of view, growing inwards as random walks and
  bifurcating recursively, each child thinner (radius x 0.7-0.85, near Murray's law's 0.79) and
  shorter; a branch stops where it reaches the FAZ or leaves the field; trees alternate between
  "artery" and "vein";
- vessels drawn as anti-aliased tubes: each pixel's distance to the nearest centreline sample of
  each calibre class (one Euclidean distance transform per tree level), coverage
  clip(r + 0.5 - d, 0, 1) and a brighter core;
- capillaries: the zero crossings of band-limited noise (a mesh of fine lines), absent from the
  FAZ and fading in over a few pixels around it;
- disease (a DR-like effect to classify): the FAZ enlarged x1.45-1.8 and 2-4 patches of
  capillary dropout in the parafovea;
- a site / device: blur, gain, gamma contrast, multiplicative speckle, additive noise, vignetting.

Ground truth (all (H, W) bool): `vessel_mask` (pixel centre inside a tube, tubes thinner than one
pixel counting as 0.5 px radius, or the centreline crossing the pixel), `skeleton` (the thinned centreline raster, inside the mask),
`faz_mask`, `capillary_mask` (capillary lines or vessels, like OCTA-500's GT_Capillary),
`artery_mask`, `vein_mask`. Pixels are `size` to a side; `fov_mm` only labels the pixel size.

A 128 x 128 image takes about 10-20 ms on one core. :func:`write_synthetic` writes a cohort as a
replica of OCTA-500's folders and indexes it through the `octa500` layout.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from medssl.retina.vessel_prior import skeletonize


@dataclass(frozen=True)
class SiteProfile:
    """How one device renders the same retina: blur (Gaussian sigma, px at 128 px), gain, gamma
    (>1 darkens mid-tones), speckle (std of multiplicative noise), noise (std of additive
    noise), background level and vignetting (fractional fall-off at the corners)."""

    name: str
    blur: float = 0.6
    gain: float = 1.0
    gamma: float = 1.0
    speckle: float = 0.15
    noise: float = 0.03
    background: float = 0.05
    vignette: float = 0.0


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile("A"),
    "B": SiteProfile("B", blur=1.1, gain=0.85, gamma=1.4, speckle=0.3, noise=0.06, background=0.1, vignette=0.25),
    "C": SiteProfile("C", blur=0.3, gain=1.1, gamma=0.8, speckle=0.1, noise=0.09, background=0.02, vignette=0.1),
}


@dataclass
class SyntheticOcta:
    """One synthetic OCTA image and its ground truth; all maps (H, W)."""

    image: np.ndarray  # float32 in [0, 1], the full-depth projection as the site renders it
    vessel_mask: np.ndarray
    skeleton: np.ndarray
    faz_mask: np.ndarray
    capillary_mask: np.ndarray
    artery_mask: np.ndarray
    vein_mask: np.ndarray
    disease: bool
    site: str
    faz_radius: float  # mean FAZ radius in pixels
    vessels: np.ndarray = field(repr=False)  # float32 clean vessel intensity (before the site)
    capillaries: np.ndarray = field(repr=False)  # float32 clean capillary intensity
    seed: int = 0

    def render(self, vessel_weight: float = 1.0, capillary_weight: float = 1.0, seed: int | None = None) -> np.ndarray:
        """The same retina through the same site, with the plexus components reweighted (e.g. a
        deep slab: vessels faint, capillaries kept); float32 (H, W) in [0, 1]."""
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        return _apply_site(np.maximum(vessel_weight * self.vessels, capillary_weight * self.capillaries),
                           SITES[self.site], rng)


def _band_noise(rng: np.random.Generator, n: int, period: float, rel_bandwidth: float = 0.35) -> np.ndarray:
    """Zero-mean, unit-std noise whose spectrum is an annulus around 1/period cycles per pixel."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.rfftfreq(n), indexing="ij"))
    f0 = 1.0 / period
    spectrum = np.exp(-0.5 * ((f - f0) / (rel_bandwidth * f0)) ** 2)
    white = np.fft.rfft2(rng.standard_normal((n, n)))
    out = np.fft.irfft2(white * spectrum, s=(n, n))
    return (out - out.mean()) / (out.std() + 1e-12)


def _smooth_blobs(rng: np.random.Generator, n: int, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    out = np.zeros((n, n), np.float32)
    for (cy, cx), r in zip(centres, radii):
        out = np.maximum(out, np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (r * r)) ** 2))
    return out


def _grow_trees(rng: np.random.Generator, n: int, centre: np.ndarray, faz_boundary, scale: float,
                n_trees: int, max_depth: int) -> dict[str, np.ndarray]:
    """Centreline samples every 0.5 px of vessel trees grown level by level (all branches of a
    level at once): {"points" (S, 2) (y, x), "radius" (S,), "level" (S,), "tree" (S,)}.

    A branch is a random walk of its heading; it ends where its length is used up, where it
    would touch the FAZ, or where it has left the field (past the first 30 % of its length).
    A branch that did not end in the FAZ bifurcates (two children at +-20-45 degrees, radius
    x 0.7-0.85, length x 0.65-0.85); some also get a thinner side branch from their middle.
    """
    step = 0.5
    phi = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n_trees) / n_trees + rng.normal(0, 0.15, n_trees)
    start = centre + 0.62 * n * np.stack([np.sin(phi), np.cos(phi)], 1)
    heading = phi + np.pi + rng.choice([-1.0, 1.0], n_trees) * rng.uniform(0.15, 0.45, n_trees)
    radius = rng.uniform(1.1, 1.6, n_trees) * scale
    length = rng.uniform(0.3, 0.4, n_trees) * n
    depth = np.zeros(n_trees, int)
    tree = np.arange(n_trees)
    out: dict[str, list] = {"points": [], "radius": [], "level": [], "tree": []}
    margin = 0.15 * n
    while len(start):
        n_steps = int(np.ceil(length.max() / step))
        angles = heading[:, None] + np.cumsum(rng.normal(0.0, 0.06, (len(start), n_steps)), 1)
        path = start[:, None, :] + np.cumsum(step * np.stack([np.sin(angles), np.cos(angles)], -1), 1)
        rel = path - centre
        in_faz = np.hypot(rel[..., 0], rel[..., 1]) < faz_boundary(np.arctan2(rel[..., 0], rel[..., 1])) \
            + radius[:, None]
        k = np.arange(n_steps)
        gone = ((path < -margin) | (path > n + margin)).any(-1) & (k > 0.3 * length[:, None] / step)
        over = k >= (length / step)[:, None]
        stop = np.where((in_faz | gone | over).any(1), np.argmax(in_faz | gone | over, 1), n_steps)
        alive = k < stop[:, None]
        out["points"].append(path[alive])
        for key, value in (("radius", radius), ("level", depth), ("tree", tree)):
            out[key].append(np.broadcast_to(value[:, None], alive.shape)[alive])
        last = np.maximum(stop - 1, 0)
        rows = np.arange(len(start))
        end, end_heading = path[rows, last], angles[rows, last]
        hit_faz = in_faz[rows, np.minimum(stop, n_steps - 1)] & (stop < n_steps)
        in_field = ((end >= 0) & (end < n)).all(1)
        split = (stop > 1) & ~hit_faz & (depth < max_depth) & (radius >= 0.45 * scale) & (in_field | (depth == 0))
        side = (stop > 12) & (depth + 2 <= max_depth) & (rng.random(len(start)) < 0.3)
        s_idx = (rng.random(len(start)) * np.maximum(stop - 8, 1)).astype(int) + 4
        s_idx = np.minimum(s_idx, np.maximum(stop - 1, 0))
        sign = rng.choice([-1.0, 1.0], len(start))
        i2, i_side = np.flatnonzero(split), np.flatnonzero(side)
        start = np.concatenate([end[i2], end[i2], path[i_side, s_idx[i_side]]])
        heading = np.concatenate([end_heading[i2] - rng.uniform(0.35, 0.8, len(i2)),
                                  end_heading[i2] + rng.uniform(0.35, 0.8, len(i2)),
                                  angles[i_side, s_idx[i_side]] + sign[i_side] * rng.uniform(0.9, 1.4, len(i_side))])
        radius = np.concatenate([radius[i2] * rng.uniform(0.7, 0.85, len(i2)),
                                 radius[i2] * rng.uniform(0.7, 0.85, len(i2)), radius[i_side] * 0.6])
        length = np.concatenate([length[i2] * rng.uniform(0.65, 0.85, len(i2)),
                                 length[i2] * rng.uniform(0.65, 0.85, len(i2)), length[i_side] * 0.6])
        depth = np.concatenate([depth[i2] + 1, depth[i2] + 1, depth[i_side] + 2])
        tree = np.concatenate([tree[i2], tree[i2], tree[i_side]])
    return {key: np.concatenate(v) if v else np.zeros((0, 2) if key == "points" else 0) for key, v in out.items()}


def _draw_tubes(n: int, pts: np.ndarray, radius: np.ndarray, groups: np.ndarray, pad: int):
    """(intensity, mask, centreline, nearest-sample index) of tubes around the samples; samples
    of one group are drawn with one distance transform, groups combined by maximum. Only
    pixels within reach of a tube (EDT distance <= its largest radius + 1.5) are computed."""
    m = n + 2 * pad
    intensity = np.zeros((m, m), np.float32)
    mask = np.zeros((m, m), bool)
    centre = np.zeros((m, m), bool)
    owner = np.full((m, m), -1, np.int64)
    best = np.full((m, m), np.inf, np.float32)
    pts = pts.astype(np.float32) + pad  # padded-grid coordinates
    radius = radius.astype(np.float32)
    cell = np.floor(pts + 0.5).astype(np.int64)  # pixel containing each sample
    keep = ((cell >= 0) & (cell < m)).all(1)
    for g in np.unique(groups[keep]):
        idx = np.flatnonzero(keep & (groups == g))
        raster = np.zeros((m, m), bool)
        sample_at = np.full((m, m), -1, np.int64)
        raster[cell[idx, 0], cell[idx, 1]] = True
        sample_at[cell[idx, 0], cell[idx, 1]] = idx
        dist, (iy, ix) = ndimage.distance_transform_edt(~raster, return_indices=True)
        py, px = np.nonzero(dist <= radius[idx].max() + 1.5)
        nearest = sample_at[iy[py, px], ix[py, px]]
        d = np.hypot(py - pts[nearest, 0], px - pts[nearest, 1])
        r = radius[nearest]
        cover = np.clip(r + 0.5 - d, 0.0, 1.0)
        core = np.sqrt(np.clip(1.0 - (d / np.maximum(r, 0.5)) ** 2, 0.0, 1.0))
        intensity[py, px] = np.maximum(intensity[py, px], cover * (0.7 + 0.3 * core))
        inside = (d <= np.maximum(r, 0.5)) | raster[py, px]  # centre in the tube, or the centreline crosses it
        mask[py[inside], px[inside]] = True
        centre |= raster
        closer = inside & (d - r < best[py, px])
        owner[py[closer], px[closer]] = nearest[closer]
        best[py[closer], px[closer]] = (d - r)[closer]
    crop = (slice(pad, pad + n), slice(pad, pad + n))
    return intensity[crop], mask[crop], centre[crop], owner[crop]


def _apply_site(clean: np.ndarray, site: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    n = clean.shape[0]
    img = ndimage.gaussian_filter(clean, site.blur * n / 128) if site.blur > 0 else clean
    img = site.background + (1.0 - site.background) * np.clip(img, 0, 1)
    if site.vignette:
        yy, xx = np.mgrid[:n, :n] / (n - 1) - 0.5
        img = img * (1.0 - site.vignette * (yy ** 2 + xx ** 2) / 0.5)
    img = site.gain * np.clip(img, 0, 1) ** site.gamma
    img = img * (1.0 + site.speckle * rng.standard_normal(img.shape)) + site.noise * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def generate_octa(size: int = 128, *, disease: bool = False, site: str = "A", seed: int = 0,
                  n_trees: int | None = None, max_depth: int = 4) -> SyntheticOcta:
    """One synthetic OCTA image with ground truth (see the module docstring).

    size: pixels per side; disease: enlarge the FAZ and drop capillaries in patches; site: a key
    of :data:`SITES`; n_trees: vessel trees entering the field (default 6-8); max_depth:
    bifurcation levels per tree.
    """
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    rng = np.random.default_rng(seed)
    n, scale = int(size), size / 128.0
    centre = np.array([n / 2, n / 2]) + rng.normal(0, 0.03 * n, 2)
    faz_r = rng.uniform(0.075, 0.1) * n * (rng.uniform(1.45, 1.8) if disease else 1.0)
    harmonics = [(k, rng.uniform(0.03, 0.08), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]

    def faz_boundary(theta):
        return faz_r * (1.0 + sum(a * np.cos(k * theta + ph) for k, a, ph in harmonics))

    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ry, rx = yy - centre[0], xx - centre[1]
    rho = np.hypot(ry, rx)
    faz = rho < faz_boundary(np.arctan2(ry, rx))

    k_trees = int(n_trees if n_trees is not None else rng.integers(6, 9))
    trees = _grow_trees(rng, n, centre, faz_boundary, scale, k_trees, max_depth)
    pts, radius, tree = trees["points"], trees["radius"], trees["tree"]
    pad = int(np.ceil(radius.max() if radius.size else 0)) + 2
    groups = np.minimum(trees["level"], 2)  # one distance transform per calibre class: 0 | 1 | 2+
    vessels, vmask, centreline, owner = _draw_tubes(n, pts, radius, groups, pad)
    vessels[faz], vmask[faz], centreline[faz] = 0.0, False, False

    density = np.clip((rho - faz_boundary(np.arctan2(ry, rx))) / (1.5 * scale) , 0.0, 1.0)
    if disease:
        k = int(rng.integers(2, 5))
        ang = rng.uniform(0, 2 * np.pi, k)
        dist = faz_r + rng.uniform(0.05, 0.22, k) * n
        blob_c = centre + np.stack([dist * np.sin(ang), dist * np.cos(ang)], 1)
        density = density * (1.0 - _smooth_blobs(rng, n, blob_c, rng.uniform(0.06, 0.1, k) * n))
    lines = np.clip(1.0 - np.abs(_band_noise(rng, n, period=6.0 * scale)) / 0.45, 0.0, 1.0) ** 1.5
    capillaries = (0.45 * lines * density).astype(np.float32)
    cap_mask = ((lines > 0.5) & (density > 0.5)) | vmask

    tree_of = np.where(owner >= 0, tree[np.maximum(owner, 0)] if tree.size else 0, -1)
    artery = vmask & (tree_of >= 0) & (tree_of % 2 == 0)
    vein = vmask & (tree_of >= 0) & (tree_of % 2 == 1)
    skel = skeletonize(centreline) & vmask
    image = _apply_site(np.maximum(vessels, capillaries), SITES[site], np.random.default_rng(seed + 1))
    return SyntheticOcta(image=image, vessel_mask=vmask, skeleton=skel, faz_mask=faz, capillary_mask=cap_mask,
                         artery_mask=artery, vein_mask=vein, disease=bool(disease), site=site,
                         faz_radius=float(faz_r), vessels=vessels, capillaries=capillaries, seed=int(seed))


def generate_octa_cohort(n_subjects: int, size: int = 128, *, seed: int = 0, disease_fraction: float = 0.5,
                         sites: Sequence[str] = ("A", "B")) -> list[SyntheticOcta]:
    """`n_subjects` images: diseased with probability `disease_fraction` (exactly
    round(n * fraction) of them, shuffled), sites assigned in turn; subject i is reproducible
    from (seed, i) alone."""
    rng = np.random.default_rng(seed)
    n_dis = int(round(n_subjects * disease_fraction))
    disease = rng.permutation(np.arange(n_subjects) < n_dis)
    seeds = np.random.SeedSequence(seed).generate_state(n_subjects)
    return [generate_octa(size, disease=bool(disease[i]), site=sites[i % len(sites)], seed=int(seeds[i]))
            for i in range(n_subjects)]


# ---------------------------------------------------------------------------------------------
# An OCTA-500-like replica on disk


FOV_FIRST_ID = {"3mm": 10301, "6mm": 10001}
# Slabs of the replica: (vessel weight, capillary weight) of each projection folder.
PROJECTIONS = {"OCTA(FULL)": (1.0, 1.0), "OCTA(ILM_OPL)": (1.0, 0.8), "OCTA(OPL_BM)": (0.3, 1.0)}


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float32) * 255), 0, 255).astype(np.uint8)


def _save_bmp(path: Path, array_u8: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array_u8, mode="L").save(path, format="BMP")


def write_octa500_replica(
    root: str | Path, samples: Sequence[SyntheticOcta], ids: Sequence[int], *, fov: str = "3mm",
    label_dir: str = "shared", label_format: str = "csv", projections: Sequence[str] = tuple(PROJECTIONS),
    sex_column: str = "Gender",
) -> Path:
    """Write `samples` under `root` in OCTA-500's folder layout and return the text-label file.

    `OCTA_<fov>/Projection Maps/<projection>/<id>.bmp` (8-bit grey), the 2-D ground truths
    `GT_LargeVessel`, `GT_Capillary`, `GT_Artery`, `GT_Vein`, `GT_FAZ` (0/255) and `GT_CAVF`
    (class map 0 background, 1 capillary, 2 artery, 3 vein, 4 FAZ, stored x 60) as `<id>.bmp`,
    under `root/Label/` (label_dir "shared", as the current release) or `OCTA_<fov>/` ("per_fov");
    and `OCTA_<fov>/Text labels.<csv|tsv|txt>` with ID, <sex_column>, OS/OD, Age, Disease and an
    extra Site column. Existing files of other IDs are kept, so both fields of view can share a root.
    """
    root = Path(root)
    if fov not in FOV_FIRST_ID:
        raise ValueError(f"fov must be one of {', '.join(FOV_FIRST_ID)}, got {fov!r}")
    if len(ids) != len(samples):
        raise ValueError(f"{len(ids)} ids for {len(samples)} samples")
    fov_dir = root / f"OCTA_{fov}"
    gt_root = root / "Label" if label_dir == "shared" else fov_dir
    unknown = [p for p in projections if p not in PROJECTIONS]
    if unknown:
        raise ValueError(f"unknown projection(s) {unknown}; known: {', '.join(PROJECTIONS)}")
    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    table = []
    for sid, s in zip(ids, samples):
        for proj in projections:
            image = s.image if proj == "OCTA(FULL)" else s.render(*PROJECTIONS[proj])
            _save_bmp(fov_dir / "Projection Maps" / proj / f"{sid}.bmp", _to_u8(image))
        cavf = np.zeros(s.image.shape, np.uint8)
        cavf[s.capillary_mask] = 1
        cavf[s.artery_mask] = 2
        cavf[s.vein_mask] = 3
        cavf[s.faz_mask] = 4
        for name, m in (("GT_LargeVessel", s.vessel_mask), ("GT_Capillary", s.capillary_mask),
                        ("GT_Artery", s.artery_mask), ("GT_Vein", s.vein_mask), ("GT_FAZ", s.faz_mask)):
            _save_bmp(gt_root / name / f"{sid}.bmp", np.where(m, 255, 0).astype(np.uint8))
        _save_bmp(gt_root / "GT_CAVF" / f"{sid}.bmp", cavf * 60)
        table.append([str(sid), "M" if rng.random() < 0.5 else "F", "OD" if rng.random() < 0.5 else "OS",
                      str(int(rng.integers(20, 80))), "DR" if s.disease else "NORMAL", f"synthetic_{s.site}"])
    header = ["ID", sex_column, "OS/OD", "Age", "Disease", "Site"]
    delim = {"csv": ",", "tsv": "\t", "txt": "\t"}[label_format]
    label_file = fov_dir / f"Text labels.{label_format}"
    old = []
    if label_file.is_file():
        with label_file.open(newline="") as f:
            old = [r for r in list(csv.reader(f, delimiter=delim))[1:] if r and r[0] not in {t[0] for t in table}]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delim, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(sorted(old + table, key=lambda r: int(r[0])))
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text(buf.getvalue())
    return label_file


def write_synthetic(
    folder: str | Path, *, n_subjects: int = 120, size: int = 128, seed: int = 0, task: str = "vessel",
    fov: str = "3mm", disease_fraction: float = 0.5, sites: Sequence[str] = ("A", "B"),
    projection: str = "OCTA(FULL)", splits: str = "proportional",
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Write a synthetic OCTA-500 replica to `folder` (once; an existing replica written with the
    same settings is reused, one with other settings is an error) and index it with the `octa500`
    layout for `task` (vessel, faz, disease, capillary, artery, vein, cavf or "" for none).

    Subjects get IDs from the field of view's first OCTA-500 ID (3mm: 10301, 6mm: 10001) and
    splits in the official proportions of that field of view (`splits="proportional"`; see
    `medssl.retina.octa500`). Returns (rows, skipped).
    """
    from medssl.io import atomic_write_json, make_temp_dir
    from medssl.retina.octa500 import index_octa500

    folder = Path(folder)
    settings = {"n_subjects": n_subjects, "size": size, "seed": seed, "fov": fov,
                "disease_fraction": disease_fraction, "sites": list(sites)}
    stamp = folder / "synthetic_octa.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != settings:
            raise ValueError(f"{folder}: holds a synthetic OCTA replica written with other settings "
                             f"({stamp.read_text().strip()}); choose another folder")
    else:
        if fov not in FOV_FIRST_ID:
            raise ValueError(f"fov must be one of {', '.join(FOV_FIRST_ID)}, got {fov!r}")
        unknown = [s for s in sites if s not in SITES]
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}; known: {', '.join(SITES)}")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(folder / "replica")
        try:
            samples = generate_octa_cohort(n_subjects, size, seed=seed, disease_fraction=disease_fraction,
                                           sites=sites)
            write_octa500_replica(tmp, samples, [FOV_FIRST_ID[fov] + i for i in range(n_subjects)], fov=fov)
            for entry in tmp.iterdir():
                target = folder / entry.name
                if target.exists():
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
                entry.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_json(stamp, settings)
    return index_octa500(folder, task=task or None, fov=fov, projection=projection, splits=splits)
