"""OrganMNIST3D reader on small fake .npz files: rows, items, checks."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.ct.organmnist import (
    ORGANMNIST3D_CLASSES,
    OrganMNISTError,
    index_organmnist3d,
    load_item,
    read_organmnist3d,
)


def fake_npz(path, size: int = 28, n=(4, 2, 3), **override):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 11).reshape(k, 1).astype(np.uint8)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_classes_follow_medmnist_order():
    assert len(ORGANMNIST3D_CLASSES) == 11
    assert ORGANMNIST3D_CLASSES[0] == "liver" and ORGANMNIST3D_CLASSES[7] == "lung-right"
    assert ORGANMNIST3D_CLASSES[10] == "pancreas"


def test_rows_and_items(tmp_path):
    arrays = fake_npz(tmp_path / "organmnist3d.npz")
    rows, skipped = index_organmnist3d(tmp_path)
    assert skipped == [] and len(rows) == 9
    assert [r["split"] for r in rows] == ["train"] * 4 + ["val"] * 2 + ["test"] * 3
    r = rows[5]  # val item 1
    assert r["record_id"] == r["subject_id"] == "organmnist3d-val-00001"
    assert r["labels"] == ORGANMNIST3D_CLASSES[1] and r["path"].endswith("organmnist3d.npz#val/1")
    item = load_item(r["path"])
    assert item.shape == (28, 28, 28) and item.dtype == np.float32
    np.testing.assert_allclose(item, arrays["val_images"][1] / 255.0)
    with pytest.raises(OrganMNISTError, match="index 7 beyond the 2 val images"):
        load_item(r["path"].replace("#val/1", "#val/7"))


def test_64_cubed_variant(tmp_path):
    fake_npz(tmp_path / "organmnist3d_64.npz", size=64, n=(1, 1, 1))
    rows, _ = index_organmnist3d(tmp_path)
    assert rows[0]["image_size"] == "64" and rows[0]["record_id"].startswith("organmnist3d_64-")


def test_clear_errors(tmp_path):
    fake_npz(tmp_path / "a.npz", test_labels=None)
    with pytest.raises(OrganMNISTError, match="missing key\\(s\\) test_labels"):
        read_organmnist3d(tmp_path / "a.npz")
    fake_npz(tmp_path / "b.npz", train_labels=np.full((4, 1), 11))
    with pytest.raises(OrganMNISTError, match="train_labels holds 11"):
        read_organmnist3d(tmp_path / "b.npz")
    fake_npz(tmp_path / "c.npz", val_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(OrganMNISTError, match="val_images has shape"):
        read_organmnist3d(tmp_path / "c.npz")
    (tmp_path / "d.npz").write_text("nope")
    with pytest.raises(OrganMNISTError, match="not a readable .npz"):
        read_organmnist3d(tmp_path / "d.npz")
    with pytest.raises(OrganMNISTError, match="no organmnist3d.npz"):
        index_organmnist3d(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)
