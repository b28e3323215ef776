"""The `medssl` command, run in-process through `medssl.cli.main`: output, exit codes, files.

Bad input must end with exit code 2 and one `medssl: error: ...` line that names the offending
file or key, never a traceback (unless --debug); input folders must never be written to.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from medssl.cli import main

SHARED_ECG = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg"
ERROR_PREFIX = "medssl: error: "


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of everything under `folder` (folders included)."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def _assert_one_line_error(stderr: str, *fragments: str) -> str:
    """stderr holds exactly one `medssl: error:` line, containing every fragment, and no traceback."""
    assert "Traceback" not in stderr
    errors = _error_lines(stderr)
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    """3 synthetic subjects, 1 record each: a WFDB folder with labels.csv."""
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    out = tmp_path_factory.mktemp("cli-cohort")
    write_wfdb_cohort(generate_cohort(3, records_per_subject=1, seed=5), out)
    return out


@pytest.fixture()
def bad_wfdb_folder(small_cohort, tmp_path) -> Path:
    """good.hea/.dat, nodat.hea without its .dat, badhdr.hea that does not parse (+ its .dat)."""
    src = sorted(small_cohort.rglob("*.hea"))
    folder = tmp_path / "hospital"
    folder.mkdir()
    for hea, name in zip(src, ("good", "nodat", "badhdr")):
        text = hea.read_text().replace(hea.stem, name)  # record and signal-file names
        (folder / f"{name}.hea").write_text(text)
        if name != "nodat":
            shutil.copy(hea.with_suffix(".dat"), folder / f"{name}.dat")
    (folder / "badhdr.hea").write_text("this is @@ not a WFDB header\n")
    return folder


# --- encoders ---------------------------------------------------------------------------------


def test_encoders_table_lists_ecg_encoders_with_input_contract(capsys):
    assert main(["encoders", "--modality", "ecg"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "modality", "dim", "input"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert {"ecg_jepa_base", "ecg_jepa_tiny"} <= set(rows)
    for name, dim in (("ecg_jepa_base", "768"), ("ecg_jepa_tiny", "128")):
        cells = rows[name].split()
        assert cells[1] == "ecg" and cells[2] == dim
        assert "leads=I/II/V1/V2/V3/V4/V5/V6" in rows[name]
        assert "sampling_rate=250" in rows[name]
        assert "num_samples=2500" in rows[name]


def test_encoders_filter_by_modality(capsys):
    assert main(["encoders", "--modality", "mri"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "modality", "dim", "input", "description"]
    assert len(out) > 1 and all(line.split()[1] == "mri" for line in out[1:])


# --- data synth / data index ------------------------------------------------------------------


def test_synth_then_index_writes_a_subject_split_manifest_and_leaves_input_alone(tmp_path, capsys):
    data = tmp_path / "D"
    assert main(["data", "synth", "--out", str(data), "--subjects", "6"]) == 0
    assert (data / "labels.csv").is_file()
    _, labels = _read_csv(data / "labels.csv")
    capsys.readouterr()

    before = _snapshot(data)
    manifest = tmp_path / "M.csv"
    assert main(["data", "index", "--layout", "synthetic", "--root", str(data), "--out", str(manifest)]) == 0
    out = capsys.readouterr()
    assert _snapshot(data) == before  # nothing written, touched or removed in the input folder
    assert f"wrote {manifest}" in out.out and "(0 skipped)" in out.out

    columns, rows = _read_csv(manifest)
    assert {"record_id", "subject_id", "path", "split", "labels", "site"} <= set(columns)
    assert sorted(r["record_id"] for r in rows) == sorted(r["record"] for r in labels)
    assert len({r["subject_id"] for r in rows}) == 6
    assert {r["site"] for r in rows} == {"site_a", "site_b"}
    assert all(r["split"] in ("train", "val", "test") for r in rows)
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["subject_id"], set()).add(r["split"])
        assert Path(r["path"] + ".hea").is_file()
    assert all(len(s) == 1 for s in split_of.values()), split_of  # no subject in two splits
    by_record = {r["record"]: r for r in labels}
    for r in rows:
        assert r["labels"] == by_record[r["record_id"]]["labels"]
        assert r["subject_id"] == by_record[r["record_id"]]["subject_id"]


def test_synth_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    data = tmp_path / "D"
    data.mkdir()
    (data / "old.txt").write_text("keep me")
    assert main(["data", "synth", "--out", str(data), "--subjects", "2"]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(data), "not an empty folder")
    assert [p.name for p in data.iterdir()] == ["old.txt"]


def test_synth_rejects_a_non_positive_subject_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", str(tmp_path / "D"), "--subjects", "0"])
    assert exc.value.code == 2
    assert "--subjects" in capsys.readouterr().err
    assert not (tmp_path / "D").exists()


def test_index_wfdb_skips_bad_records_and_says_why(bad_wfdb_folder, tmp_path, capsys):
    before = _snapshot(bad_wfdb_folder)
    manifest = tmp_path / "M.csv"
    code = main(["data", "index", "--layout", "wfdb", "--root", str(bad_wfdb_folder), "--out", str(manifest)])
    out = capsys.readouterr()
    assert code == 0
    assert "Traceback" not in out.err and not _error_lines(out.err)
    _, rows = _read_csv(manifest)
    assert [r["record_id"] for r in rows] == ["good"]
    skipped = {line.split(":", 1)[0].removeprefix("skipped "): line
               for line in out.err.splitlines() if line.startswith("skipped ")}
    assert set(skipped) == {str(bad_wfdb_folder / "nodat"), str(bad_wfdb_folder / "badhdr")}
    assert "signal file nodat.dat not found" in skipped[str(bad_wfdb_folder / "nodat")]
    assert "header badhdr.hea does not parse" in skipped[str(bad_wfdb_folder / "badhdr")]
    assert "(2 skipped, listed in" in out.out
    _, listed = _read_csv(manifest.with_suffix(".skipped.csv"))
    assert {r["path"] for r in listed} == set(skipped)
    assert _snapshot(bad_wfdb_folder) == before


def test_index_wfdb_with_only_bad_records_exits_2(bad_wfdb_folder, tmp_path, capsys):
    (bad_wfdb_folder / "good.hea").unlink()
    (bad_wfdb_folder / "good.dat").unlink()
    manifest = tmp_path / "M.csv"
    code = main(["data", "index", "--layout", "wfdb", "--root", str(bad_wfdb_folder), "--out", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2
    _assert_one_line_error(err, str(bad_wfdb_folder), "no usable records")
    assert not manifest.exists()


def test_index_unknown_layout_exits_2_naming_the_known_layouts(small_cohort, tmp_path, capsys):
    code = main(["data", "index", "--layout", "dicomm", "--root", str(small_cohort), "--out", str(tmp_path / "M.csv")])
    assert code == 2
    _assert_one_line_error(capsys.readouterr().err, "'dicomm'", "synthetic", "wfdb", "octa500", "fomo60k")


def test_index_missing_root_exits_2_naming_the_path(tmp_path, capsys):
    root = tmp_path / "no_such_folder"
    code = main(["data", "index", "--layout", "wfdb", "--root", str(root), "--out", str(tmp_path / "M.csv")])
    assert code == 2
    line = _assert_one_line_error(capsys.readouterr().err, str(root))
    assert line.startswith(f"{ERROR_PREFIX}{root}")
    assert not (tmp_path / "M.csv").exists()


# --- embed ------------------------------------------------------------------------------------


def test_embed_random_encoder_writes_embeddings_and_ids(small_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    manifest = tmp_path / "M.csv"
    assert main(["data", "index", "--layout", "synthetic", "--root", str(small_cohort), "--out", str(manifest)]) == 0
    _, rows = _read_csv(manifest)
    before = _snapshot(small_cohort)
    out_npz = tmp_path / "E.npz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["embed", "--checkpoint", "random:ecg_jepa_tiny:1", "--data", str(manifest),
                     "--out", str(out_npz)])
    assert code == 0
    assert not [w for w in caught if "not writable" in str(w.message)]
    out = capsys.readouterr()
    assert "(0 records skipped)" in out.out

    with np.load(out_npz) as z:
        emb, record_id, subject_id = z["embeddings"], z["record_id"], z["subject_id"]
    assert emb.shape == (len(rows), 128) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert list(record_id) == [r["record_id"] for r in rows]
    assert list(subject_id) == [r["subject_id"] for r in rows]
    assert not np.allclose(emb[0], emb[1])  # different records, different embeddings
    assert any((tmp_path / "cache" / "ecg").iterdir())  # the cache went to MEDSSL_CACHE
    assert _snapshot(small_cohort) == before

    # Same seed, same encoder, same embeddings (now read back from the cache).
    again = tmp_path / "E2.npz"
    assert main(["embed", "--checkpoint", "random:ecg_jepa_tiny:1", "--data", str(small_cohort),
                 "--out", str(again)]) == 0
    with np.load(again) as z:
        np.testing.assert_allclose(z["embeddings"], emb, rtol=1e-5, atol=1e-6)


def test_embed_unknown_random_encoder_exits_2(small_cohort, tmp_path, capsys):
    code = main(["embed", "--checkpoint", "random:nope", "--data", str(small_cohort), "--out", str(tmp_path / "E.npz")])
    assert code == 2
    _assert_one_line_error(capsys.readouterr().err, "unknown encoder 'nope'", "ecg_jepa_tiny")
    assert not (tmp_path / "E.npz").exists()


def test_embed_missing_checkpoint_folder_exits_2_naming_it(small_cohort, tmp_path, capsys):
    ckpt = tmp_path / "runs" / "missing"
    code = main(["embed", "--checkpoint", str(ckpt), "--data", str(small_cohort), "--out", str(tmp_path / "E.npz")])
    assert code == 2
    line = _assert_one_line_error(capsys.readouterr().err, str(ckpt))
    assert line.startswith(f"{ERROR_PREFIX}{ckpt}")
    assert not (tmp_path / "E.npz").exists()


# --- pretrain errors --------------------------------------------------------------------------


def test_pretrain_unknown_recipe_key_exits_2_without_traceback(capsys):
    assert main(["pretrain", "ecg_jepa", "variant=cpu", "optim.lrr=1"]) == 2
    line = _assert_one_line_error(capsys.readouterr().err, "unknown recipe key 'optim.lrr'")
    assert line.startswith(f"{ERROR_PREFIX}unknown recipe key 'optim.lrr'")


def test_pretrain_unknown_recipe_exits_2_listing_known_recipes(capsys):
    assert main(["pretrain", "no_such_recipe"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "no_such_recipe", "ecg_jepa")


def test_debug_lets_the_exception_propagate(capsys):
    with pytest.raises((ValueError, KeyError), match="optim.lrr"):
        main(["--debug", "pretrain", "ecg_jepa", "variant=cpu", "optim.lrr=1"])
    assert not _error_lines(capsys.readouterr().err)


# --- real records -----------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_ECG.is_dir(), reason="no ../shared/data/ecg (real PhysioNet sample records)")
def test_real_records_index_and_embed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    before = _snapshot(SHARED_ECG)
    manifest = tmp_path / "real.csv"
    assert main(["data", "index", "--layout", "wfdb", "--root", str(SHARED_ECG), "--out", str(manifest)]) == 0
    out = capsys.readouterr()
    _, rows = _read_csv(manifest)
    ids = {r["record_id"] for r in rows}
    assert {"100", "s0010_re", "a103l"} <= ids
    assert "test01_00s" not in ids
    test01 = [line for line in out.err.splitlines() if "test01_00s" in line]
    assert len(test01) == 1 and "no standard ECG lead" in test01[0]
    by_id = {r["record_id"]: r for r in rows}
    assert by_id["100"]["leads"] == "II;V5"  # MLII read as II
    assert by_id["s0010_re"]["leads"].split(";")[:2] == ["I", "II"]  # lower-case names matched

    out_npz = tmp_path / "real.npz"
    code = main(["embed", "--checkpoint", "random:ecg_jepa_tiny", "--data", str(manifest), "--out", str(out_npz)])
    out = capsys.readouterr()
    assert code == 0
    assert "Traceback" not in out.err and not _error_lines(out.err)
    line_100 = [line for line in out.err.splitlines() if line.startswith(f"skipped {SHARED_ECG / '100'}:")]
    assert len(line_100) == 1
    assert "missing lead(s)" in line_100[0]
    for lead in ("I", "V1", "V6"):
        assert f" {lead}," in line_100[0] or f" {lead};" in line_100[0] or line_100[0].endswith(f" {lead}")
    assert line_100[0].count(str(SHARED_ECG / "100")) == 1  # the path is not repeated
    with np.load(out_npz) as z:
        assert "s0010_re" in list(z["record_id"])
        assert "100" not in list(z["record_id"])
        assert z["embeddings"].shape == (len(z["record_id"]), 128)
    assert _snapshot(SHARED_ECG) == before  # nothing written to the shared folder


# --- pretrain end to end ----------------------------------------------------------------------


@pytest.mark.slow
def test_pretrain_then_embed_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    data, manifest, run = tmp_path / "D", tmp_path / "M.csv", tmp_path / "run"
    assert main(["data", "synth", "--out", str(data), "--subjects", "6", "--seed", "2"]) == 0
    assert main(["data", "index", "--layout", "synthetic", "--root", str(data), "--out", str(manifest)]) == 0
    capsys.readouterr()

    code = main(["pretrain", "ecg_jepa", "variant=cpu", "optim.epochs=1", "data.batch_size=4",
                 "encoder.overrides.depth=1", "--data", str(manifest), "--split", "train,val,test",
                 "--out", str(run)])
    out = capsys.readouterr()
    assert code == 0, out.err
    folders = [line.removeprefix("checkpoint: ") for line in out.out.splitlines() if line.startswith("checkpoint: ")]
    assert len(folders) == 1
    ckpt = Path(folders[0])
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "card.json").is_file()

    out_npz = tmp_path / "E.npz"
    assert main(["embed", "--checkpoint", str(ckpt), "--data", str(manifest), "--out", str(out_npz)]) == 0
    _, rows = _read_csv(manifest)
    with np.load(out_npz) as z:
        assert z["embeddings"].shape == (len(rows), 128)
        assert np.isfinite(z["embeddings"]).all()
        assert list(z["record_id"]) == [r["record_id"] for r in rows]


@pytest.mark.slow
def test_pretrain_keeps_lightning_info_off_the_terminal(small_cohort, tmp_path):
    """A fresh process (Lightning imported inside the command) prints no Lightning INFO lines."""
    import os

    env = {**os.environ, "MEDSSL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "medssl.cli", "pretrain", "ecg_jepa", "variant=cpu", "optim.epochs=1",
         "data.batch_size=2", "encoder.overrides.depth=1", "--data", str(small_cohort),
         "--split", "train,val,test", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "checkpoint: " in proc.stdout
    assert "GPU available" not in proc.stderr and "Traceback" not in proc.stderr


def test_index_lists_skipped_records_next_to_the_manifest_and_adds_physiological_targets(tiny_cohort_dir, tmp_path):
    import csv

    out = tmp_path / "m.csv"
    assert main(["data", "index", "--layout", "synthetic", "--root", str(tiny_cohort_dir), "--out", str(out),
                 "--physio-targets"]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["heart_rate_bpm"]) for r in rows if r["heart_rate_bpm"]]
    assert len(rates) >= len(rows) - 1 and all(35 < hr < 200 for hr in rates)
    assert not out.with_suffix(".skipped.csv").exists()


def test_synth_writes_another_modality_with_its_manifest(tmp_path, capsys):
    from medssl.data.manifest import read_manifest

    out = tmp_path / "octa"
    assert main(["data", "synth", "--modality", "retina", "--out", str(out), "--option", "n_subjects=6",
                 "--option", "size=32", "--option", "task=vessel"]) == 0
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 6 and all(r["mask_path"] for r in rows)
    assert main(["data", "synth", "--modality", "retina", "--out", str(tmp_path / "x"), "--option", "bogus=1"]) == 2
    assert "bogus: not a setting of the retina generator" in capsys.readouterr().err


def test_version_and_help_do_not_import_torch():
    """`medssl --version` answers, and neither it nor `--help` pays for importing torch."""
    import subprocess
    import sys

    code = ("import sys\nfrom medssl.cli import main\n"
            "try:\n    main([sys.argv[1]])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    for flag in ("--version", "--help"):
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        if flag == "--version":
            assert out.stdout.startswith("medssl ")


def test_package_exports_resolve_lazily():
    import medssl

    assert callable(medssl.run_benchmark) and callable(medssl.run_audit) and callable(medssl.embed_arrays)
    assert "load_encoder" in dir(medssl)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        medssl.nope  # noqa: B018
