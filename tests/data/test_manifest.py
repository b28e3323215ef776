import pytest

from medssl.data.manifest import (
    ManifestError, join_labels, manifest_fingerprint, read_manifest, split_labels, write_manifest,
)


def _rows():
    return [
        {"record_id": "a", "subject_id": "S1", "path": "/x/a", "split": "train", "labels": "MI;NORM", "site": "s"},
        {"record_id": "b", "subject_id": "S2", "path": "/x/b", "split": "test", "labels": "", "extra": 3},
    ]


def test_roundtrip_keeps_required_columns_first_and_extra_columns(tmp_path):
    path = write_manifest(_rows(), tmp_path / "m.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["record_id", "subject_id", "path", "split", "labels"]
    rows = read_manifest(path)
    assert rows[0]["site"] == "s" and rows[1]["extra"] == "3" and rows[1]["site"] == ""
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_columns_are_errors_naming_the_file(tmp_path):
    with pytest.raises(ManifestError, match="lacks subject_id"):
        write_manifest([{"record_id": "a", "path": "p", "split": "train", "labels": ""}], tmp_path / "m.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,path\na,p\n")
    with pytest.raises(ManifestError, match=r"bad\.csv.*subject_id"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


def test_labels_join_sorted_unique_and_split_ignores_blanks():
    assert join_labels(["NORM", "MI", "MI"]) == "MI;NORM"
    assert split_labels(" MI ; ;NORM") == ["MI", "NORM"]
    assert split_labels("") == []


def test_fingerprint_changes_with_content():
    rows = _rows()
    changed = [dict(rows[0], labels="NORM"), rows[1]]
    assert manifest_fingerprint(rows) == manifest_fingerprint([dict(r) for r in rows])
    assert manifest_fingerprint(rows) != manifest_fingerprint(changed)
