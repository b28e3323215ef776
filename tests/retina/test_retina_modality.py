"""The retina modality's hooks: aligned inputs and masks through the cache, contracts, synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl.data.modalities import modality_data

SPEC = {"channels": ["octa"], "spatial_dims": 2, "shape": [32, 32], "intensity": "zscore",
        "priors": ["vesselness", "skeleton"], "pixel_size_mm": 3 / 32}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retina-synth")
    rows, skipped = modality_data("retina").write_synthetic(folder, n_subjects=10, size=48, seed=2, task="vessel")
    return folder, rows, skipped


def test_write_synthetic_indexes_an_octa500_replica(synth):
    folder, rows, skipped = synth
    assert not skipped and len(rows) == 10
    assert (folder / "OCTA_3mm" / "Projection Maps" / "OCTA(OPL_BM)" / "10301.bmp").is_file()
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(Path(r["mask_path"]).parent.name == "GT_LargeVessel" for r in rows)
    again, _ = modality_data("retina").write_synthetic(folder, n_subjects=10, size=48, seed=2, task="disease")
    assert {r["labels"] for r in again} == {"NORMAL", "DR"}
    with pytest.raises(ValueError, match="other settings"):
        modality_data("retina").write_synthetic(folder, n_subjects=11, size=48, seed=2)


def test_inputs_carry_priors_and_masks_align(synth, tmp_path):
    _, rows, _ = synth
    hooks = modality_data("retina")
    x = hooks.inputs(rows, SPEC, {}, tmp_path)
    m = hooks.masks(rows, SPEC, {}, tmp_path)
    assert x.signals.shape == (10, 3, 32, 32) and m.signals.shape == (10, 1, 32, 32)
    assert [r["record_id"] for r in x.rows] == [r["record_id"] for r in m.rows] == [r["record_id"] for r in rows]
    img, vessel, skel = x.signals[:, 0], x.signals[:, 1], x.signals[:, 2]
    assert np.abs(img.mean(axis=(1, 2))).max() < 1e-4  # z-scored per image
    assert vessel.min() >= 0 and vessel.max() <= 1 and set(np.unique(skel)) <= {0.0, 1.0}
    masks = m.signals[:, 0] > 0.5
    assert set(np.unique(m.signals)) == {0.0, 1.0}
    assert img[masks].mean() > img[~masks].mean() + 0.5  # masks sit on the bright vessels
    assert vessel[masks].mean() > 2 * vessel[~masks].mean()
    assert hooks.inputs(rows, SPEC, {}, tmp_path).folder == x.folder  # cached
    other = hooks.inputs(rows, SPEC, {"vessel_prior": {"sigmas": [1.0]}}, tmp_path)
    assert other.folder != x.folder


def test_recipe_priors_follow_the_encoder_channels(synth, tmp_path):
    _, rows, _ = synth
    hooks = modality_data("retina")
    spec = {"channels": 1, "shape": [32, 32], "intensity": "[0,1] then per-image z-score", "priors": []}
    plain = hooks.inputs(rows[:3], spec, {}, tmp_path)
    both = hooks.inputs(rows[:3], {**spec, "priors": ["vesselness"]}, {"priors": ["vesselness", "skeleton"]}, tmp_path)
    assert plain.signals.shape == (3, 1, 32, 32) and both.signals.shape == (3, 3, 32, 32)
    assert np.allclose(plain.signals[:, 0], both.signals[:, 0])
    assert set(np.unique(both.signals[:, 2])) <= {0.0, 1.0} and both.signals[:, 1].max() <= 1


def test_bad_images_and_masks_are_skipped_by_both_hooks(tmp_path):
    rows = []
    for i in range(3):
        img, mask = tmp_path / f"{i}.png", tmp_path / f"{i}_m.png"
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(img)
        Image.fromarray(np.eye(16, dtype=np.uint8) * 255).save(mask)
        rows.append({"record_id": str(i), "subject_id": str(i), "path": str(img), "split": "", "labels": "",
                     "mask_path": str(mask)})
    (tmp_path / "1.png").write_bytes(b"broken")
    (tmp_path / "2_m.png").unlink()
    spec = {"channels": 1, "shape": [8, 8]}
    hooks = modality_data("retina")
    x, m = hooks.inputs(rows, spec, {}, tmp_path / "c"), hooks.masks(rows, spec, {}, tmp_path / "c")
    assert [r["record_id"] for r in x.rows] == [r["record_id"] for r in m.rows] == ["0"]
    assert {p for p, _ in x.skipped} == {p for p, _ in m.skipped} == {rows[1]["path"], rows[2]["path"]}
    assert x.signals.shape == (1, 1, 8, 8) and m.signals[0, 0].sum() == 8  # the diagonal, nearest-resized


def test_contract_problems(synth):
    _, rows, _ = synth
    problems = modality_data("retina").contract_problems
    assert problems(SPEC, rows) == []
    assert "spatial_dims=3" in problems({**SPEC, "spatial_dims": 3, "shape": [8, 8, 8]}, rows)[0]
    assert "unknown prior" in problems({**SPEC, "priors": ["hessian"]}, rows)[0]
    scale = problems({**SPEC, "pixel_size_mm": 6 / 32 * 2}, rows)
    assert len(scale) == 1 and scale[0].startswith("scale: 10 of 10 rows give 0.09375 mm")
    kinds = problems({**SPEC, "image_type": ["fundus"]}, rows)
    assert kinds == ["image type: 10 of 10 rows are octa; encoder reads fundus"]


def _fundus(tmp_path, name: str, size=(70, 90), fov_radius: float = 0.45) -> dict:
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    fov = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (fov_radius * min(h, w)) ** 2
    img = tmp_path / f"{name}.png"
    Image.fromarray(((xx * 2 + yy) % 256 * fov).astype(np.uint8)).save(img)
    row = {"record_id": name, "subject_id": name, "path": str(img), "split": "", "labels": ""}
    if fov_radius:
        Image.fromarray(fov.astype(np.uint8) * 255).save(tmp_path / f"{name}_fov.png")
        row["fov_path"] = str(tmp_path / f"{name}_fov.png")
    return row


def test_tile_grid_covers_the_image_with_the_last_tiles_flush():
    from medssl.retina.modality import TileGrid

    grid = TileGrid.from_data({"stride": 16}, (32, 32))
    origins = grid.origins((70, 90))
    assert {y for y, _ in origins} == {0, 16, 32, 38} and {x for _, x in origins} == {0, 16, 32, 48, 58}
    assert TileGrid.from_data(True, (32, 32)).stride == (16, 16)
    with pytest.raises(ValueError, match="data.tiles: unknown key"):
        TileGrid.from_data({"size": 3}, (32, 32))
    with pytest.raises(ValueError, match="min_fov"):
        TileGrid.from_data({"min_fov": 2}, (32, 32))


def test_pretraining_tiles_are_cut_at_native_resolution_inside_the_field_of_view(tmp_path):
    from medssl.retina.modality import TileGrid
    from medssl.retina.preprocess import RetinaPreprocess

    rows = [_fundus(tmp_path, "a"), _fundus(tmp_path, "b", fov_radius=0), _fundus(tmp_path, "small", size=(20, 20))]
    spec = {"channels": 1, "spatial_dims": 2, "shape": [32, 32], "intensity": "zscore"}
    hooks = modality_data("retina")
    data = {"tiles": {"stride": 16, "min_fov": 0.9}}
    x = hooks.inputs(rows, spec, data, tmp_path / "c")
    grid = TileGrid.from_data(data["tiles"], (32, 32))
    n_all = len(grid.origins((70, 90)))
    per_image = {rid: sum(r["record_id"] == rid for r in x.rows) for rid in ("a", "b")}
    assert per_image["b"] == n_all and 0 < per_image["a"] < n_all  # corners outside the FOV dropped
    assert x.signals.shape == (per_image["a"] + per_image["b"], 1, 32, 32)
    assert [p for p, _ in x.skipped] == [rows[2]["path"]] and "smaller than the 32 x 32 px tile" in x.skipped[0][1]
    # a tile is the native image normalised as a whole, then cut: no resizing, no per-tile z-score
    whole = RetinaPreprocess.for_encoder(spec).native_image(rows[1])
    b_tiles = x.signals[[i for i, r in enumerate(x.rows) if r["record_id"] == "b"]]
    assert np.allclose(b_tiles[0], whole[:, :32, :32]) and np.allclose(b_tiles[-1], whole[:, -32:, -32:])
    with pytest.raises(ValueError, match="segmentation targets"):
        hooks.masks(rows, spec, data, tmp_path / "c")
