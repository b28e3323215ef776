import warnings

import numpy as np
import pytest
from scipy import ndimage

from medssl.bench.segmentation_metrics import (
    dice,
    hausdorff95,
    image_diagonal_mm,
    normalized_surface_dice,
    surface_distances,
)


def _cube_pair():
    """A 4x4x4 cube and the same cube shifted by one voxel along axis 0."""
    truth = np.zeros((10, 10, 10), bool)
    truth[2:6, 2:6, 2:6] = True
    return np.roll(truth, 1, axis=0), truth


def test_shifted_cube_hand_values():
    pred, truth = _cube_pair()
    assert dice(pred, truth) == pytest.approx(2 * 48 / 128)  # overlap 3x4x4 of two 64-voxel cubes
    # 56 surface voxels per cube (64 - 2^3 interior); 36 are shared, 20 lie one voxel from the other surface
    d_pt, d_tp = surface_distances(pred, truth)
    assert d_pt.size == d_tp.size == 56
    assert np.count_nonzero(d_pt == 0) == 36 and np.count_nonzero(d_pt == 1) == 20
    assert normalized_surface_dice(pred, truth, tolerance_mm=0.0) == pytest.approx(72 / 112)
    assert normalized_surface_dice(pred, truth, tolerance_mm=1.0) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, truth, tolerance_mm=0.99) == pytest.approx(72 / 112)
    assert hausdorff95(pred, truth) == pytest.approx(1.0)
    assert hausdorff95(pred, truth, spacing_mm=3.0) == pytest.approx(3.0)  # 1 voxel * spacing


def test_anisotropic_spacing_hand_values():
    pred, truth = _cube_pair()  # shift along axis 0
    sp = (2.0, 0.5, 0.5)
    # the 16 voxels of the leading face are 2 mm (one voxel along axis 0) from the other surface;
    # the 4 inner voxels of the trailing face are 0.5 mm from a side face of the other cube
    assert hausdorff95(pred, truth, sp) == pytest.approx(2.0)
    assert normalized_surface_dice(pred, truth, 0.5, sp) == pytest.approx(2 * (36 + 4) / 112)
    assert normalized_surface_dice(pred, truth, 2.0, sp) == pytest.approx(1.0)
    # the same shift along an axis with 0.5 mm voxels is four times closer
    pred1, truth1 = np.moveaxis(pred, 0, 1), np.moveaxis(truth, 0, 1)
    assert hausdorff95(pred1, truth1, sp) == pytest.approx(0.5)
    assert normalized_surface_dice(pred1, truth1, 0.5, sp) == pytest.approx(1.0)
    assert dice(pred, truth) == dice(pred1, truth1)  # Dice ignores spacing


def test_2d_square():
    t = np.zeros((8, 8), bool)
    t[2:5, 2:5] = True
    p = np.zeros_like(t)
    p[2:5, 3:6] = True
    assert dice(p, t) == pytest.approx(2 * 6 / 18)
    assert hausdorff95(p, t, (1.0, 2.5)) == pytest.approx(2.5)
    assert dice(t.astype(np.uint8), t.astype(int)) == 1.0  # 0/1 integers accepted


def test_empty_conventions():
    full = np.zeros((6, 6, 6), bool)
    full[1:4, 1:4, 1:4] = True
    empty = np.zeros_like(full)
    assert dice(empty, empty) == 1.0
    assert normalized_surface_dice(empty, empty, 1.0) == 1.0
    assert hausdorff95(empty, empty) == 0.0
    for a, b in ((full, empty), (empty, full)):
        assert dice(a, b) == 0.0
        assert normalized_surface_dice(a, b, 5.0) == 0.0
        assert hausdorff95(a, b) == float("inf")
        diag = image_diagonal_mm(full.shape, (1.0, 2.0, 2.0))
        assert diag == pytest.approx(np.sqrt(25 + 100 + 100))
        assert hausdorff95(a, b, (1.0, 2.0, 2.0), empty_mm=diag) == pytest.approx(diag)
    assert np.isinf(surface_distances(full, empty)[0]).all()


def test_identical_and_edge_touching_masks():
    m = np.zeros((5, 5), bool)
    m[:, :3] = True  # touches the array border: border voxels there are surface voxels
    assert dice(m, m) == 1.0 and hausdorff95(m, m) == 0.0
    assert normalized_surface_dice(m, m, 0.0) == 1.0
    d_pt, _ = surface_distances(m, m)
    assert d_pt.size == 5 * 3 - 3 * 1  # only the 3 voxels of column 1 rows 1..3 are interior


def test_bad_inputs():
    a = np.zeros((4, 4), bool)
    with pytest.raises(ValueError):
        dice(a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        dice(np.full((4, 4), 2), a)
    with pytest.raises(ValueError):
        dice(np.zeros(4, bool), np.zeros(4, bool))
    with pytest.raises(ValueError):
        hausdorff95(a, a, spacing_mm=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        normalized_surface_dice(a, a, -1.0)


try:  # MONAI is the reference implementation; the metrics themselves need only scipy
    import monai.metrics as monai_metrics
    import torch
except ImportError:  # pragma: no cover
    monai_metrics = None


def _blob(rng, shape):
    return ndimage.binary_opening(ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5)


@pytest.mark.skipif(monai_metrics is None, reason="monai not installed")
def test_matches_monai_on_random_blobs_with_anisotropic_spacing():
    rng = np.random.default_rng(0)
    compared = 0
    for i in range(6):
        shape = (18, 20, 14) if i % 2 else (40, 36)
        a, b = _blob(rng, shape), _blob(rng, shape)
        if not (a.any() and b.any()):
            continue
        sp = [float(x) for x in rng.uniform(0.4, 3.0, len(shape))]
        tol = float(rng.uniform(0.5, 3.0))
        ta = torch.from_numpy(a[None, None].astype(np.float32))
        tb = torch.from_numpy(b[None, None].astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nsd_ref = monai_metrics.compute_surface_dice(ta, tb, [tol], include_background=True, spacing=sp).item()
            hd_ref = monai_metrics.compute_hausdorff_distance(
                ta, tb, include_background=True, percentile=95, spacing=sp).item()
        assert normalized_surface_dice(a, b, tol, sp) == pytest.approx(nsd_ref, abs=1e-6)
        assert hausdorff95(a, b, sp) == pytest.approx(hd_ref, rel=1e-5)
        compared += 1
    assert compared >= 4
