"""The octa500 layout on small replicas of OCTA-500's folders (written by the synthetic writer)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from medssl.retina.octa500 import (
    Octa500Error,
    index_octa500,
    parse_splits,
    read_text_labels,
)
from medssl.retina.synthetic import generate_octa_cohort, write_octa500_replica

IDS_3MM = [10301, 10302, 10440, 10441, 10450, 10451, 10500]
IDS_6MM = [10001, 10180, 10181, 10200, 10201, 10300]


def _write(root: Path, fov: str, ids, **kw) -> Path:
    return write_octa500_replica(root, generate_octa_cohort(len(ids), 32, seed=len(ids)), ids, fov=fov,
                                 projections=("OCTA(FULL)",), **kw)


@pytest.fixture(scope="module")
def replica(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("octa500")
    _write(root, "3mm", IDS_3MM)
    _write(root, "6mm", IDS_6MM, sex_column="Sex", label_format="tsv")
    (root / "OCTA_3mm" / "Projection Maps" / "OCTA(FULL)" / "10302.bmp").unlink()
    (root / "Label" / "GT_FAZ" / "10440.bmp").unlink()
    return root


def test_official_splits_per_field_of_view(replica):
    rows, skipped = index_octa500(replica, task="disease", fov="3mm")
    split = {r["record_id"]: r["split"] for r in rows}
    assert split == {"octa500-10301": "train", "octa500-10440": "train", "octa500-10441": "val",
                     "octa500-10450": "val", "octa500-10451": "test", "octa500-10500": "test"}
    assert any("10302.bmp" in p and r == "projection map missing" for p, r in skipped)
    rows6, _ = index_octa500(replica, task="disease", fov="6mm")
    assert [r["split"] for r in rows6] == ["train", "train", "val", "val", "test", "test"]
    assert parse_splits("official", "6mm", [10180, 10181, 10200, 10201, 10999]) == {
        10180: "train", 10181: "val", 10200: "val", 10201: "test", 10999: ""}


def test_rows_carry_subject_demographics_and_geometry(replica):
    rows, _ = index_octa500(replica, task="disease", fov="6mm")
    r = rows[0]
    assert r["record_id"] == r["subject_id"] == "octa500-10001"
    assert Path(r["path"]).name == "10001.bmp" and Path(r["path"]).parent.name == "OCTA(FULL)"
    assert r["labels"] in ("NORMAL", "DR") and r["labels"] == r["disease"]
    assert r["sex"] in ("M", "F") and r["eye"] in ("OD", "OS") and r["age"].isdigit()
    assert (r["fov"], r["fov_mm"], r["width"], r["height"]) == ("6mm", "6", "32", "32")
    assert float(r["pixel_size_mm"]) == pytest.approx(6 / 32)
    assert r["site"].startswith("synthetic_") and r["image_type"] == "octa" and r["mask_path"] == ""
    assert len({x["subject_id"] for x in rows}) == len(rows)


@pytest.mark.parametrize("task,folder", [("vessel", "GT_LargeVessel"), ("capillary", "GT_Capillary"),
                                         ("artery", "GT_Artery"), ("vein", "GT_Vein"), ("cavf", "GT_CAVF")])
def test_segmentation_tasks_point_at_their_ground_truth(replica, task, folder):
    rows, _ = index_octa500(replica, task=task, fov="3mm")
    assert len(rows) == 6
    for r in rows:
        mask = Path(r["mask_path"])
        assert mask.is_file() and mask.parent.name == folder and mask.stem == r["record_id"].split("-")[1]
        assert r["labels"] == "" and r["task"] == task


def test_missing_ground_truth_is_skipped_with_a_reason(replica):
    rows, skipped = index_octa500(replica, task="faz", fov="3mm")
    assert "octa500-10440" not in {r["record_id"] for r in rows} and len(rows) == 5
    assert any(p.endswith("10440.bmp") and "GT_FAZ/10440.bmp missing" in r for p, r in skipped)
    none_rows, _ = index_octa500(replica, fov="3mm")  # no task: every projection map
    assert len(none_rows) == 6 and all(r["mask_path"] == "" for r in none_rows)


def test_first_release_names_per_fov_ground_truth_and_root_as_fov_folder(tmp_path):
    _write(tmp_path, "3mm", [10301, 10460], label_dir="per_fov")
    (tmp_path / "OCTA_3mm").rename(tmp_path / "OCTA_3M")
    rows, _ = index_octa500(tmp_path, task="vessel", fov="3mm")
    assert [Path(r["mask_path"]).parent.parent.name for r in rows] == ["OCTA_3M", "OCTA_3M"]
    rows2, _ = index_octa500(tmp_path / "OCTA_3M", task="disease", fov="3mm")
    assert [r["split"] for r in rows2] == ["train", "test"]


def test_shared_label_file_is_filtered_to_the_field_of_view(tmp_path):
    _write(tmp_path, "3mm", [10301, 10302])
    _write(tmp_path, "6mm", [10001])
    lines = [(tmp_path / f"OCTA_{f}" / "Text labels.csv").read_text().splitlines() for f in ("3mm", "6mm")]
    for f in ("3mm", "6mm"):
        (tmp_path / f"OCTA_{f}" / "Text labels.csv").unlink()
    (tmp_path / "Label" / "Text labels.csv").write_text("\n".join(lines[0] + lines[1][1:]) + "\n")
    rows, skipped = index_octa500(tmp_path, task="disease", fov="6mm")
    assert [r["record_id"] for r in rows] == ["octa500-10001"]
    assert not skipped  # the 3 mm subjects are not reported as missing 6 mm maps


def test_text_label_formats(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("ID,Gender,OS/OD,Age,Disease\n10301.0,Male,od,12,normal\n10302,F,OS,70,\"DR, CNV\"\n"
                   "abc,F,OS,1,AMD\n")
    table, bad = read_text_labels(csv)
    assert table[10301] == {"sex": "M", "age": "12", "eye": "OD", "disease": "NORMAL"}
    assert table[10302]["disease"] == "CNV;DR"
    assert bad and "abc" in bad[0][1]
    txt = tmp_path / "b.txt"
    txt.write_text("ID Sex OS/OD Age Disease\n10001 F OD 55 AMD\n")
    assert read_text_labels(txt)[0][10001]["disease"] == "AMD"
    (tmp_path / "c.csv").write_text("Name,Disease\nx,AMD\n")
    with pytest.raises(Octa500Error, match="no ID column"):
        read_text_labels(tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("ID,Disease\n10001,AMD\n10001,DR\n")
    with pytest.raises(Octa500Error, match="appears twice"):
        read_text_labels(tmp_path / "d.csv")


def test_xlsx_without_openpyxl_says_to_export_csv(tmp_path):
    try:
        import openpyxl  # noqa: F401
        pytest.skip("openpyxl is installed")
    except ImportError:
        pass
    x = tmp_path / "Text labels.xlsx"
    x.write_bytes(b"PK\x03\x04")
    with pytest.raises(Octa500Error, match=r"openpyxl.*export the sheet to CSV"):
        read_text_labels(x)


def test_configurable_splits(replica):
    rows, _ = index_octa500(replica, task="disease", fov="6mm", splits="proportional")
    assert Counter(r["split"] for r in rows) == {"train": 4, "val": 1, "test": 1}
    rows, _ = index_octa500(replica, task="disease", fov="3mm", splits="train=10301-10441;test=10450+10500")
    assert [r["split"] for r in rows] == ["train", "train", "train", "test", "", "test"]
    with pytest.raises(Octa500Error, match="unknown split"):
        index_octa500(replica, fov="3mm", splits="dev=10301-10500")
    with pytest.raises(Octa500Error, match="expected"):
        index_octa500(replica, fov="3mm", splits="train=a-b")


def test_errors_name_the_problem(replica, tmp_path):
    with pytest.raises(Octa500Error, match="unknown OCTA-500 task"):
        index_octa500(replica, task="layers")
    with pytest.raises(Octa500Error, match="unknown projection"):
        index_octa500(replica, projection="OCTA(DEEP)")
    with pytest.raises(Octa500Error, match=r"Projection Maps/OCT\(FULL\).*found: OCTA\(FULL\)"):
        index_octa500(replica, projection="oct(full)")
    with pytest.raises(Octa500Error, match="no OCTA_3mm folder"):
        index_octa500(tmp_path)
    fov = tmp_path / "OCTA_3mm"
    shutil.copytree(replica / "OCTA_3mm" / "Projection Maps", fov / "Projection Maps")
    with pytest.raises(Octa500Error, match="no 'Text labels' file"):
        index_octa500(tmp_path, task="disease")
    with pytest.raises(Octa500Error, match="no GT_FAZ folder"):
        index_octa500(tmp_path, task="faz")


def test_registered_layout_with_options(replica):
    import inspect

    import medssl.retina.modality  # noqa: F401  (registers the layouts)
    from medssl.data.layouts import LAYOUTS

    indexer = LAYOUTS["octa500"]
    assert {"fov", "projection", "splits"} <= set(inspect.signature(indexer).parameters)
    rows, _ = indexer(replica, task="faz", fov="6mm", projection="OCTA(FULL)")
    assert len(rows) == 6 and all(r["mask_path"] for r in rows)
