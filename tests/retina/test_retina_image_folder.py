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


def test_a_drive_folder_is_indexed_as_found(tmp_path):
    """DRIVE as shipped: <split>/images/21_training.tif, 1st_manual/21_manual1.gif, mask/21_training_mask.gif."""
    for split, ids in (("training", (21, 22, 23)), ("test", (1, 2))):
        base = tmp_path / split
        for i in ids:
            kind = "training" if split == "training" else "test"
            _png(base / "images" / f"{i:02d}_{kind}.tif", mode="RGB")
            _png(base / "1st_manual" / f"{i:02d}_manual1.gif", 255)
            _png(base / "2nd_manual" / f"{i:02d}_manual2.gif", 255)
            _png(base / "mask" / f"{i:02d}_{kind}_mask.gif", 255)
    rows, skipped = index_image_folder(tmp_path, task="segmentation")
    assert skipped == []
    assert [(r["record_id"], r["split"], r["subject_id"]) for r in rows] == [
        ("test/images/01_test.tif", "test", "1"), ("test/images/02_test.tif", "test", "2"),
        ("training/images/21_training.tif", "train", "21"), ("training/images/22_training.tif", "train", "22"),
        ("training/images/23_training.tif", "train", "23")]
    r = rows[2]
    assert r["mask_path"].endswith("training/1st_manual/21_manual1.gif")  # the first observer, not 2nd_manual
    assert r["fov_path"].endswith("training/mask/21_training_mask.gif")
    assert (r["height"], r["width"]) == ("20", "24")
    # one split folder given as the root: splits drawn per subject; other folders by option
    alone, _ = index_image_folder(tmp_path / "training", task="segmentation")
    assert len(alone) == 3 and all(x["split"] in ("train", "val", "test") for x in alone)
    second, _ = index_image_folder(tmp_path / "training", task="segmentation", masks="2nd_manual")
    assert second[0]["mask_path"].endswith("2nd_manual/21_manual2.gif")


def test_discovery_pairs_other_naming_schemes_and_refuses_ambiguity(tmp_path):
    # HRF: images/01_dr.JPG, manual1/01_dr.tif, mask/01_dr_mask.tif (three images per number)
    for name in ("01_dr", "01_g", "02_h"):
        _png(tmp_path / "hrf" / "images" / f"{name}.JPG", mode="RGB")
        _png(tmp_path / "hrf" / "manual1" / f"{name}.tif", 255)
        _png(tmp_path / "hrf" / "mask" / f"{name}_mask.tif", 255)
    rows, skipped = index_image_folder(tmp_path / "hrf", task="segmentation")
    assert skipped == [] and [Path(r["mask_path"]).name for r in rows] == ["01_dr.tif", "01_g.tif", "02_h.tif"]
    assert [Path(r["fov_path"]).name for r in rows] == ["01_dr_mask.tif", "01_g_mask.tif", "02_h_mask.tif"]
    # CHASE_DB1-like: two eyes of one child; subject=number makes them one subject
    for eye in ("L", "R"):
        _png(tmp_path / "chase" / "images" / f"Image_01{eye}.jpg", mode="RGB")
        _png(tmp_path / "chase" / "labels" / f"Image_01{eye}_1stHO.png", 255)
    rows, _ = index_image_folder(tmp_path / "chase", task="segmentation", subject="number")
    assert [r["subject_id"] for r in rows] == ["1", "1"] and rows[0]["split"] == rows[1]["split"]
    assert [Path(r["mask_path"]).name for r in rows] == ["Image_01L_1stHO.png", "Image_01R_1stHO.png"]
    assert all(r["fov_path"] == "" for r in rows)
    # two candidate masks for one image: the row is skipped, naming both
    _png(tmp_path / "amb" / "images" / "5_training.png")
    _png(tmp_path / "amb" / "1st_manual" / "5_manual1.png", 255)
    _png(tmp_path / "amb" / "1st_manual" / "5_gt.png", 255)
    rows, skipped = index_image_folder(tmp_path / "amb", task="segmentation")
    assert rows == [] and "several mask files match" in skipped[0][1] and "5_gt.png" in skipped[0][1]
    with pytest.raises(ImageFolderError, match="no image folder"):
        (tmp_path / "empty" / "stuff").mkdir(parents=True)
        index_image_folder(tmp_path / "empty")
    with pytest.raises(ImageFolderError, match="mask folder not found"):
        index_image_folder(tmp_path / "hrf", masks="nope")


def test_a_fov_column_in_the_csv(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "a_fov.png", 255)
    (tmp_path / "images.csv").write_text("image,fov\na.png,a_fov.png\n")
    rows, _ = index_image_folder(tmp_path)
    assert rows[0]["fov_path"] == str(tmp_path / "a_fov.png")
    (tmp_path / "images.csv").write_text("image,fov\na.png,gone.png\n")
    rows, skipped = index_image_folder(tmp_path)
    assert rows == [] and "field-of-view mask" in skipped[0][1]
