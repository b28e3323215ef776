"""Retina preprocessing: reading, resizing, normalising, channel plans."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medssl.retina.preprocess import (
    RetinaPreprocess,
    channel_plan,
    intensity_mode,
    load_image,
    load_mask,
    normalise,
    resize_image,
    resize_mask,
)


def test_intensity_descriptions():
    assert intensity_mode(None) == "unit"
    assert intensity_mode("z-score per image") == "zscore"
    assert intensity_mode("ImageNet mean/std") == "imagenet"
    assert intensity_mode("min-max to [0, 1]") == "minmax"
    assert intensity_mode("[0, 1] (8-bit / 255)") == "unit"
    with pytest.raises(ValueError, match="not understood"):
        intensity_mode("hounsfield")


def test_channel_plans():
    assert channel_plan({"channels": 1}) == ("grey", ["img:0"])
    assert channel_plan({"channels": ["octa"], "priors": ["vesselness", "skeleton"]}) == (
        "grey", ["img:0", "vesselness", "skeleton"])
    assert channel_plan({"channels": ["b", "g", "r"]}) == ("rgb", ["img:2", "img:1", "img:0"])
    assert channel_plan({"channels": ["octa", "skeleton"], "priors": ["skeleton"]}) == ("grey", ["img:0", "skeleton"])
    for bad in ({"channels": 2}, {"channels": ["a", "b"]}, {"channels": 1, "priors": ["hessian"]}):
        with pytest.raises(ValueError):
            channel_plan(bad)


def test_read_grey_rgb_and_16_bit(tmp_path):
    Image.fromarray(np.full((4, 6), 255, np.uint8)).save(tmp_path / "g.png")
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.full((4, 6), 65535, np.uint16)).save(tmp_path / "w.png")
    assert load_image(tmp_path / "g.png").shape == (1, 4, 6) and load_image(tmp_path / "g.png").max() == 1.0
    c = load_image(tmp_path / "c.png", "rgb")
    assert c.shape == (3, 4, 6) and c[1].min() == 1.0 and c[0].max() == 0.0
    assert load_image(tmp_path / "c.png")[0, 0, 0] == pytest.approx(150 / 255, abs=2 / 255)  # luma of green
    assert load_image(tmp_path / "w.png").max() == pytest.approx(1.0)
    (tmp_path / "bad.png").write_bytes(b"xx")
    with pytest.raises(ValueError, match="bad.png: cannot read image"):
        load_image(tmp_path / "bad.png")


def test_masks_any_nonzero_pixel_and_nearest_resize(tmp_path):
    m = np.zeros((8, 8, 3), np.uint8)
    m[2:6, 2:6, 2] = 7
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.sum() == 16
    big = resize_mask(mask, (16, 16))
    assert big.sum() == 64 and set(np.unique(big)) == {False, True}


def test_resize_and_normalise():
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    y = resize_image(x, (4, 4))
    assert y.shape == (1, 4, 4) and 0 <= y.min() and y.max() <= 1
    z = normalise(y, "zscore")
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, abs=1e-4)
    mm = normalise(y, "minmax")
    assert mm.min() == 0 and mm.max() == pytest.approx(1.0)
    im = normalise(np.full((3, 2, 2), 0.485, np.float32), "imagenet")
    assert im[0].max() == pytest.approx(0.0, abs=1e-6)


def test_preprocess_for_an_encoder_with_priors(tmp_path):
    from medssl.retina.synthetic import generate_octa

    s = generate_octa(64, seed=2)
    Image.fromarray((s.image * 255).astype(np.uint8)).save(tmp_path / "o.bmp")
    Image.fromarray(s.vessel_mask.astype(np.uint8) * 255).save(tmp_path / "m.bmp")
    prep = RetinaPreprocess.for_encoder({"channels": ["octa"], "shape": [32, 32], "intensity": "zscore",
                                         "priors": ["vesselness", "skeleton"]},
                                        {"vessel_prior": {"sigmas": [1, 2]}})
    assert prep.priors.sigmas == (1.0, 2.0) and prep.n_channels == 3
    x = prep.image({"path": str(tmp_path / "o.bmp")})
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert abs(x[0].mean()) < 1e-4 and 0 <= x[1].min() and x[1].max() <= 1
    assert set(np.unique(x[2])) <= {0.0, 1.0}
    m = prep.mask({"path": str(tmp_path / "o.bmp"), "mask_path": str(tmp_path / "m.bmp")})
    assert m.shape == (1, 32, 32) and x[1][m[0] > 0].mean() > 2 * x[1][m[0] == 0].mean()
    with pytest.raises(ValueError, match="no mask_path"):
        prep.mask({"path": "x"})
    with pytest.raises(ValueError, match="spatial_dims=3"):
        RetinaPreprocess.for_encoder({"channels": 1, "shape": [8, 8, 8], "spatial_dims": 3})
    with pytest.raises(ValueError, match="unknown vessel prior setting"):
        RetinaPreprocess.for_encoder({"channels": 1, "shape": [8, 8]}, {"vessel_prior": {"sigma": 1}})
