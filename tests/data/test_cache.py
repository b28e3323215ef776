import numpy as np
import pytest

from medssl.data.cache import NoUsableRecordsError, build_array_cache


def _rows(n):
    return [{"record_id": f"r{i}", "subject_id": f"S{i}", "path": f"/nowhere/r{i}", "split": "train", "labels": ""}
            for i in range(n)]


def test_builds_once_then_reads_the_memory_map(tmp_path):
    calls = []

    def load(row):
        calls.append(row["record_id"])
        return np.full((1, 2, 3), float(row["record_id"][1:]), dtype=np.float32)

    kw = dict(settings={"a": 1}, settings_key="k1", modality="ecg", cache_root=tmp_path, workers=1)
    first = build_array_cache(_rows(4), load, **kw)
    assert first.signals.shape == (4, 2, 3) and first.signals[2, 0, 0] == 2
    assert isinstance(first.signals, np.memmap) and not first.signals.flags.writeable
    again = build_array_cache(_rows(4), load, **kw)
    assert len(calls) == 4 and again.folder == first.folder
    other = build_array_cache(_rows(4), load, **{**kw, "settings_key": "k2"})
    assert other.folder != first.folder and len(calls) == 8
    assert not [p for p in (tmp_path / "ecg").iterdir() if p.name.startswith(".")]


def test_bad_records_are_skipped_with_reasons(tmp_path):
    def load(row):
        if row["record_id"] == "r1":
            raise ValueError(f"{row['path']}: broken header")
        return np.zeros((1, 1, 5), dtype=np.float32) if row["record_id"] != "r2" else np.zeros((1, 1, 4), np.float32)

    cache = build_array_cache(_rows(4), load, settings={}, settings_key="k", modality="ecg", cache_root=tmp_path,
                              workers=1)
    assert [r["record_id"] for r in cache.rows] == ["r0", "r3"]
    reasons = dict(cache.skipped)
    assert "broken header" in reasons["/nowhere/r1"] and "shape" in reasons["/nowhere/r2"]


def test_nothing_usable_is_an_error(tmp_path):
    def load(row):
        raise ValueError("bad")

    with pytest.raises(NoUsableRecordsError, match="none of the 2 records"):
        build_array_cache(_rows(2), load, settings={}, settings_key="k", modality="ecg", cache_root=tmp_path,
                          workers=1)


class WindowsOfRecordNumber:
    """Picklable loader: record r<i> gives i + 1 windows whose values are the record number."""

    def __call__(self, row):
        i = int(row["record_id"][1:])
        if i == 5:
            raise ValueError(f"{row['path']}: shorter than one window")
        return np.full((i % 3 + 1, 2, 4), float(i), dtype=np.float32)


def test_parallel_build_keeps_manifest_order_and_one_index_row_per_window(tmp_path):
    rows = _rows(11)
    cache = build_array_cache(rows, WindowsOfRecordNumber(), settings={}, settings_key="w", modality="ecg",
                              cache_root=tmp_path, workers=2, chunk_size=3)
    expected = [(f"r{i}", w) for i in range(11) if i != 5 for w in range(i % 3 + 1)]
    assert [(r["record_id"], int(r["window"])) for r in cache.rows] == expected
    assert cache.signals.shape == (len(expected), 2, 4)
    assert [float(cache.signals[j, 0, 0]) for j in range(len(expected))] == [float(r[1:]) for r, _ in expected]
    assert all(r["subject_id"] == "S" + r["record_id"][1:] for r in cache.rows)
    assert cache.skipped == [("/nowhere/r5", "/nowhere/r5: shorter than one window")]
    assert not list(cache.folder.glob("shard_*"))


def test_batched_fetch_returns_rows_in_the_sampler_order():
    import torch
    from torch.utils.data import DataLoader

    from medssl.data.array_dataset import ArrayDataset, collate_batch

    array = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    loader = DataLoader(ArrayDataset(array), batch_size=4, sampler=[7, 2, 9, 0, 5, 5, 1], collate_fn=collate_batch)
    batches = list(loader)
    assert torch.equal(batches[0], torch.from_numpy(array[[7, 2, 9, 0]]))
    assert torch.equal(batches[1], torch.from_numpy(array[[5, 5, 1]]))


def test_outputs_get_ordinary_permissions_not_tempfile_private_ones(tmp_path):
    import os
    import stat

    from medssl.io import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}")
        cache = build_array_cache(_rows(2), WindowsOfRecordNumber(), settings={}, settings_key="p", modality="ecg",
                                  cache_root=tmp_path / "c", workers=1)
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(cache.folder.stat().st_mode) == 0o755


def test_cache_key_follows_files_inside_a_folder_and_mask_files(tmp_path):
    from medssl.data.cache import cache_key

    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"a" * 10)
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(b"m")
    rows = [{"record_id": "r", "subject_id": "s", "path": f"{series}#ser-1", "split": "", "labels": "",
             "mask_path": str(mask)}]
    k0 = cache_key(rows, "settings")
    (series / "slice1.dcm").write_bytes(b"b" * 11)  # a series file changed in place
    k1 = cache_key(rows, "settings")
    mask.write_bytes(b"mm")
    assert len({k0, k1, cache_key(rows, "settings")}) == 3
