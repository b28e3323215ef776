"""Segmentation at native resolution: sliding windows cover every pixel and reproduce a known answer,
training tiles come from the full images, large images are tiled and never silently shrunk, and scores
are computed inside the field of view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medssl.bench.inputs import ContractError
from medssl.bench.segmentation import per_record_scores, pixel_scores
from medssl.bench.tiling import (
    ResolutionError,
    TilingSettings,
    encoder_tile,
    plan_resolution,
    sample_tiles,
    sliding_window_probabilities,
    train_tiled_segmenter,
)
from medssl.registry import create_encoder

TILE = (32, 32)


class PixelModel(nn.Module):
    """logits = 40 (x - 0.5) per pixel; refuses any input that is not exactly one tile."""

    def __init__(self, tile=TILE):
        super().__init__()
        self.tile = tuple(tile)
        self.scale = nn.Parameter(torch.tensor(40.0))
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        assert tuple(x.shape[-2:]) == self.tile, f"model fed {tuple(x.shape)}, not a {self.tile} tile"
        return self.scale * (x[:, :1] - 0.5)


def thin_lines(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w) bool: 1-px horizontal, vertical and diagonal lines at random places."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    for r in rng.choice(h, 4, replace=False):
        m[r, :] = True
    for c in rng.choice(w, 4, replace=False):
        m[:, c] = True
    d = np.arange(min(h, w))
    m[d, d] = True
    return m


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("shape", [(150, 97), (20, 97), (64, 64)])
def test_sliding_windows_cover_every_pixel_and_reproduce_thin_lines(shape, blend):
    truth = thin_lines(*shape)
    image = truth[None].astype(np.float32)
    model = PixelModel()
    prob = sliding_window_probabilities(model, image, TILE, overlap=0.5, blend=blend, batch_size=7)
    assert prob.shape == shape and np.isfinite(prob).all()
    np.testing.assert_array_equal(prob >= 0.5, truth)  # the per-pixel answer, stitched back exactly
    assert all(s[-2:] == TILE for s in model.seen)  # the model only ever saw whole tiles
    # every pixel is covered: a constant model gives exactly that constant everywhere
    const = sliding_window_probabilities(PixelModel(), np.full((1, *shape), 0.6, np.float32), TILE, blend=blend)
    np.testing.assert_allclose(const, 1 / (1 + np.exp(-40 * 0.1)), rtol=1e-5)


def test_predictions_outside_the_field_of_view_are_background():
    truth = thin_lines(70, 90)
    fov = np.zeros_like(truth)
    fov[10:60, 20:80] = True
    prob = sliding_window_probabilities(PixelModel(), truth[None].astype(np.float32), TILE, fov=fov)
    assert (prob[~fov] == 0).all() and ((prob >= 0.5) == (truth & fov)).all()


def test_training_tiles_are_cut_at_native_resolution_inside_the_field_of_view():
    rng = np.random.default_rng(0)
    img = np.arange(100 * 120, dtype=np.float32).reshape(1, 100, 120)
    mask = (img % 7 == 0).astype(np.float32)
    fov = np.zeros((100, 120), bool)
    fov[40:60, 50:70] = True
    x, y = sample_tiles([img], [mask], [fov], TILE, 20, rng, flip=False)
    assert x.shape == (20, 1, 32, 32) and y.shape == (20, 1, 32, 32)
    for xi, yi in zip(x, y):
        top, left = divmod(int(xi[0, 0, 0]), 120)
        np.testing.assert_array_equal(xi[0], img[0, top:top + 32, left:left + 32])  # a crop, never resized
        np.testing.assert_array_equal(yi, mask[:, top:top + 32, left:left + 32])
        assert 40 - 16 <= top <= 60 - 16 and 50 - 16 <= left <= 70 - 16  # centred inside the field of view
    small = np.ones((1, 20, 50), np.float32)  # smaller than a tile on one side: zero-padded, not stretched
    xs, _ = sample_tiles([small], [small], None, TILE, 3, rng, flip=False)
    assert xs.shape == (3, 1, 32, 32) and xs[:, 0, 20:].sum() == 0 and xs[:, 0, :20].min() == 1


def test_a_small_encoder_is_tiled_not_shrunk():
    enc = create_encoder("retina_vit_tiny", image_size=32, embed_dim=32, depth=1, num_heads=2)
    assert encoder_tile(enc.spec.input) == (32, 32) and enc.spec.input["tile_size"] == [32, 32]
    rows = [{"path": "a.png", "height": "584", "width": "565"}, {"path": "b.png", "height": "60", "width": "60"}]
    auto = TilingSettings()
    assert plan_resolution(rows, enc.spec.input, auto, dataset="drive", encoder="vit", segmentation=True) == "tiles"
    with pytest.raises(ResolutionError, match=r"'vit' reads 32 x 32 px and dataset 'drive' has images up to "
                                              r"584 x 565 px \(1 of 2 .*shrink them 18.2x.*only segmentation"):
        plan_resolution(rows, enc.spec.input, auto, dataset="drive", encoder="vit", segmentation=False)
    with pytest.raises(ResolutionError, match="data.tiling: auto"):
        plan_resolution(rows, enc.spec.input, TilingSettings(mode="never"), dataset="drive", encoder="vit",
                        segmentation=True)
    allowed = TilingSettings(max_downscale=20)  # an explicit, written-down shrink is honoured
    assert plan_resolution(rows, enc.spec.input, allowed, dataset="drive", encoder="vit",
                           segmentation=False) == "resize"
    near = [{"path": "c.png", "height": "64", "width": "60"}]  # 2x: resized as before
    assert plan_resolution(near, enc.spec.input, auto, dataset="d", encoder="vit", segmentation=True) == "resize"
    assert plan_resolution(near, enc.spec.input, TilingSettings(mode="always"), dataset="d", encoder="vit",
                           segmentation=True) == "tiles"
    with pytest.raises(ContractError, match="tile_overlap"):
        TilingSettings.from_data({"tile_overlap": 1.0}, "datasets.d.data")


def test_scores_are_computed_inside_the_field_of_view():
    truth = np.zeros((1, 1, 20, 20), bool)
    truth[0, 0, 5:15, 10] = True
    pred = truth.copy()
    pred[0, 0, 0:3, :] = True  # false positives outside the field of view
    fov = np.zeros((20, 20), bool)
    fov[4:18, 2:18] = True
    prob = pred.astype(np.float32)
    inside = per_record_scores(pred, truth, None, 1.0, fovs=[fov], probs=prob)[0]
    assert inside.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    outside = per_record_scores(pred, truth, None, 1.0, probs=prob)[0]
    assert outside[0] < 0.5 and outside[5] < 1.0
    sens, spec, auc = pixel_scores(np.array([1, 0, 0, 1], bool), np.array([1, 1, 0, 0], bool),
                                   np.array([0.9, 0.4, 0.1, 0.6]))
    assert (sens, spec, auc) == (0.5, 0.5, 0.75)  # 3 of the 4 positive-negative pairs ordered


def test_tiled_training_learns_thin_lines_at_native_resolution():
    """A tiny conv encoder trained on random tiles of two 96 x 80 images finds 1-px lines on a third."""

    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1, stride=2)

        def feature_maps(self, x):
            h = torch.relu(self.a(x))
            return [h, torch.relu(self.b(h))]

    images, masks = [], []
    rng = np.random.default_rng(1)
    for seed in range(3):
        m = thin_lines(96, 80, seed)
        images.append((0.3 * m + 0.05 * rng.standard_normal(m.shape)).astype(np.float32)[None])
        masks.append(m[None].astype(np.float32))
    torch.manual_seed(0)  # the encoder's initialisation, independent of the tests run before this one
    model = train_tiled_segmenter(Convs(), images[:2], masks[:2], tile=TILE, mode="finetune", epochs=1,
                                  min_steps=40, lr=2e-2, batch_size=4, width=8, encoder_lr_scale=1.0)
    prob = sliding_window_probabilities(model, images[2], TILE)
    assert prob.shape == (96, 80)
    assert per_record_scores([prob[None] >= 0.5], [masks[2]], None, 1.0)[0, 0] > 0.7


def _drive_like(root, n: int = 4, size=(96, 80)) -> None:
    """A DRIVE-shaped folder of synthetic fundus-like images with thin dark lines and a round FOV."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.48 * min(h, w)) ** 2
    for d in ("images", "1st_manual", "mask"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lines = thin_lines(h, w, i) & fov
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[fov] = (180, 90, 40)
        rgb[lines] = (90, 40, 20)
        Image.fromarray(rgb).save(root / "images" / f"{21 + i}_training.tif")
        Image.fromarray(lines.astype(np.uint8) * 255).save(root / "1st_manual" / f"{21 + i}_manual1.gif")
        Image.fromarray(fov.astype(np.uint8) * 255).save(root / "mask" / f"{21 + i}_training_mask.gif")


def test_bench_segments_large_images_in_tiles_inside_the_field_of_view(tmp_path):
    from medssl.bench.runner import run_benchmark
    from medssl.data.manifest import write_manifest
    from medssl.retina.image_folder import index_image_folder

    _drive_like(tmp_path / "drive")
    rows, skipped = index_image_folder(tmp_path / "drive", task="segmentation")
    assert skipped == [] and all(r["fov_path"] for r in rows)
    for i, r in enumerate(rows):
        r["split"] = "train" if i < 3 else "test"
    write_manifest(rows, tmp_path / "manifest.csv")
    metrics = ["dice", "nsd", "hd95", "iou", "sensitivity", "specificity", "auroc"]
    cfg = {"n_bootstrap": 50, "cache_dir": str(tmp_path / "cache"),
           "encoders": [{"name": "vit", "ref": "random:retina_vit_tiny:0",
                         "overrides": {"image_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2}}],
           "datasets": {"drive": {"path": str(tmp_path / "manifest.csv")}},
           "tasks": [{"name": "vessels", "dataset": "drive", "kind": "segmentation", "metrics": metrics,
                      "train": {"split": "train"}, "eval": {"test": {"split": "test"}}}],
           "protocols": [{"kind": "segmentation", "decoder": "mask_decoder", "mode": "finetune",
                          "label_fractions": [1.0], "seeds": 1, "epochs": 1, "batch_size": 8, "width": 16}]}
    doc = run_benchmark(cfg, tmp_path / "out", progress=False)
    assert doc["errors"] == []
    assert any("segmented at native resolution in 32 x 32 tiles" in n and "field-of-view" in n for n in doc["notes"])
    got = {r["metric"]: r for r in doc["records"]}
    assert set(got) == set(metrics) and all(r["n_eval_records"] == 1 for r in got.values())
    assert all(r["value"] is not None for r in got.values())
    # an explicit shrink (tiling never, max_downscale 4): resized to the encoder's input, still scored in the FOV
    cfg["datasets"]["drive"]["data"] = {"tiling": "never", "max_downscale": 4}
    resized = run_benchmark(cfg, tmp_path / "out-resized", progress=False)
    assert resized["errors"] == [] and not any("tiles" in n for n in resized["notes"])
    assert {r["metric"] for r in resized["records"] if r["value"] is not None} == set(metrics)
    del cfg["datasets"]["drive"]["data"]
    # the same images for a classification task would be shrunk 3x: refused, with the way out named
    rows[0]["labels"] = rows[2]["labels"] = rows[3]["labels"] = "DR"
    write_manifest(rows, tmp_path / "manifest.csv")
    cfg["tasks"] = [{"name": "dr", "dataset": "drive", "kind": "binary", "labels": ["DR"],
                     "train": {"split": "train"}, "eval": {"test": {"split": "test"}}}]
    cfg["protocols"] = [{"kind": "linear_probe", "shots": ["all"], "seeds": 1}]
    with pytest.raises(ResolutionError, match="dataset 'drive' has images up to 96 x 80 px"):
        run_benchmark(cfg, tmp_path / "out2", progress=False)


def test_a_unet_arm_uses_its_own_decoder_beside_vit_arms_in_one_comparison(tmp_path, monkeypatch):
    """An encoder entry's `decoder` and `encoder_lr_scale` replace the protocol's for that encoder
    only, so a U-Net trained from scratch (the pyramid decoder over its skips, its encoder at the
    full learning rate) and a ViT (the mask decoder) are scored on the same draws and compared;
    bad values on an entry are errors naming them."""
    from medssl.bench.config import BenchConfigError
    from medssl.bench.runner import run_benchmark
    from medssl.data.manifest import write_manifest
    from medssl.retina.image_folder import index_image_folder

    _drive_like(tmp_path / "drive", n=3)
    rows, _ = index_image_folder(tmp_path / "drive", task="segmentation")
    for i, r in enumerate(rows):
        r["split"] = "train" if i < 2 else "test"
    write_manifest(rows, tmp_path / "manifest.csv")
    cfg = {"n_bootstrap": 20, "cache_dir": str(tmp_path / "cache"),
           "encoders": [{"name": "vit", "ref": "random:retina_vit_tiny:0",
                         "overrides": {"image_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2}},
                        {"name": "unet", "ref": "random:retina_unet_small:0", "decoder": "pyramid",
                         "encoder_lr_scale": 1.0, "overrides": {"image_size": 32, "widths": [4, 8, 16]}}],
           "datasets": {"drive": {"path": str(tmp_path / "manifest.csv")}},
           "tasks": [{"name": "vessels", "dataset": "drive", "kind": "segmentation", "metrics": ["dice"],
                      "train": {"split": "train"}, "eval": {"test": {"split": "test"}}}],
           "protocols": [{"kind": "segmentation", "decoder": "mask_decoder", "mode": "finetune",
                          "label_fractions": [1.0], "seeds": 1, "epochs": 1, "batch_size": 4, "width": 8}]}
    from medssl.bench import tiling

    trained = []  # (encoder class, decoder, encoder_lr_scale) of every segmenter the run trains
    real_train = tiling.train_tiled_segmenter

    def spy(encoder, *args, **kwargs):
        trained.append((type(encoder).__name__, kwargs["decoder"], kwargs["encoder_lr_scale"]))
        return real_train(encoder, *args, **kwargs)

    monkeypatch.setattr(tiling, "train_tiled_segmenter", spy)
    doc = run_benchmark(cfg, tmp_path / "out", progress=False)
    assert doc["errors"] == []
    assert sorted(trained) == [("RetinaViT", "mask_decoder", 0.1), ("UNetEncoder", "pyramid", 1.0)]
    assert {r["encoder"] for r in doc["records"]} == {"vit", "unet"}
    assert [(c["encoder_a"], c["encoder_b"]) for c in doc["comparisons"]] == [("vit", "unet")]
    cfg["encoders"][1]["encoder_lr_scale"] = -1  # refused while reading the config, before any training
    with pytest.raises(BenchConfigError, match=r"encoders\[1\]\.encoder_lr_scale: expected a positive number"):
        run_benchmark(cfg, tmp_path / "out2", progress=False)
    cfg["encoders"][1]["encoder_lr_scale"], cfg["encoders"][1]["decoder"] = 1.0, ""
    with pytest.raises(BenchConfigError, match=r"encoders\[1\]\.decoder"):
        run_benchmark(cfg, tmp_path / "out2", progress=False)
