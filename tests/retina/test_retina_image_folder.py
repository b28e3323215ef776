"""The image-folder layout: images, masks and a CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl.retina.image_folder import ImageFolderError, index_image_folder


def _png(path: Path, value: int = 100, size=(20, 24), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
    Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    _png(tmp_path / "img" / "a_left.png")
    _png(tmp_path / "img" / "a_right.png", mode="RGB")
    _png(tmp_path / "img" / "b.png")
    _png(tmp_path / "masks" / "a_left.png", 255)
    _png(tmp_path / "masks" / "b.png", 255)
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "images.csv").write_text(
        "image,mask,subject_id,labels,split,site,grade\n"
        "img/a_left.png,masks/a_left.png,s1,DR,,clinic1,2\n"
        "img/a_right.png,,s1,DR;HTN,,clinic1,\n"
        "img/b.png,masks/b.png,s2,,test,clinic2,0\n"
        "img/missing.png,,s3,,,clinic2,1\n"
        "img/broken.png,,s4,,,clinic2,1\n"
        "img/b.png-gone,masks/none.png,s5,,,clinic2,1\n")
    return tmp_path


def test_rows_splits_and_skips(folder):
    rows, skipped = index_image_folder(folder)
    ids = [r["record_id"] for r in rows]
    assert ids == ["img/a_left.png", "img/a_right.png", "img/b.png"]
    a, a2, b = rows
    assert a["subject_id"] == a2["subject_id"] == "s1" and a["split"] == a2["split"] in ("train", "val", "test")
    assert b["split"] == "test" and b["site"] == "clinic2" and b["grade"] == "0"
    assert a2["labels"] == "DR;HTN" and a2["mask_path"] == "" and Path(a["mask_path"]).is_file()
    assert (a["height"], a["width"]) == ("20", "24") and Path(a["path"]).is_absolute()
    reasons = dict(skipped)
    assert reasons[str(folder / "img" / "missing.png")] == "image file missing"
    assert "not a readable image" in reasons[str(folder / "img" / "broken.png")]
    assert len(skipped) == 3


def test_segmentation_and_column_tasks(folder):
    seg, skipped = index_image_folder(folder, task="segmentation")
    assert [r["record_id"] for r in seg] == ["img/a_left.png", "img/b.png"] and all(r["labels"] == "" for r in seg)
    assert (str(folder / "img" / "a_right.png"), "no mask") in skipped
    graded, skipped = index_image_folder(folder, task="grade")
    assert [(r["record_id"], r["labels"]) for r in graded] == [("img/a_left.png", "2"), ("img/b.png", "0")]
    with pytest.raises(ImageFolderError, match="neither 'segmentation' nor a column"):
        index_image_folder(folder, task="stage")


def test_without_subject_column_each_image_is_a_subject(tmp_path):
    _png(tmp_path / "x" / "one.png")
    _png(tmp_path / "x" / "two.png")
    (tmp_path / "labels.csv").write_text("image\nx/one.png\nx/two.png\n")
    rows, _ = index_image_folder(tmp_path)
    assert [r["subject_id"] for r in rows] == ["one", "two"]


def test_csv_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="CSV not found"):
        index_image_folder(tmp_path)
    _png(tmp_path / "a.png")
    (tmp_path / "images.csv").write_text("file\na.png\n")
    with pytest.raises(ImageFolderError, match="no 'image' column"):
        index_image_folder(tmp_path)
    (tmp_path / "images.csv").write_text("image,split\na.png,training\n")
    with pytest.raises(ImageFolderError, match="not train, val or test"):
        index_image_folder(tmp_path)
    (tmp_path / "images.csv").write_text("image,subject_id,split\na.png,s,train\nb.png,s,test\n")
    with pytest.raises(ImageFolderError, match="subject s is in split test here and train on line 2"):
        index_image_folder(tmp_path)
    (tmp_path / "images.csv").write_text("image\na.png\na.png\n")
    with pytest.raises(ImageFolderError, match="already listed on line 2"):
        index_image_folder(tmp_path)


def test_registered_layout(folder):
    import medssl.retina.modality  # noqa: F401  (registers the layouts)
    from medssl.data.layouts import LAYOUTS

    rows, _ = LAYOUTS["image-folder"](folder, labels=str(folder / "images.csv"), split_seed="3")
    assert len(rows) == 3
