"""A wheel is a complete install: built from this tree, installed into a fresh virtual environment
outside it, it resolves every packaged recipe and benchmark example and writes readable checkpoints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, sys
from pathlib import Path
import medssl
from medssl.bench.config import load_bench_config
from medssl.engine.config import packaged_yaml, resolve_recipe

assert not Path(medssl.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), medssl.__file__
recipes = packaged_yaml(exclude_prefix="bench_")
benches = packaged_yaml(prefix="bench_")
for name in recipes:
    resolve_recipe(name)
for name in benches:
    load_bench_config(name)
print(json.dumps({"medssl": medssl.__file__, "recipes": sorted(recipes), "benches": sorted(benches)}))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh venv with medssl installed from a wheel of this tree; the dependencies come from
    the test's own environment through a path entry (no downloads, and not the editable install,
    whose finder that path entry does not run)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: setuptools writes build/ and egg-info into the tree it builds
    shutil.copytree(REPO / "medssl", src / "medssl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp / "dist"), str(src)], check=True, cwd=tmp, capture_output=True)
    wheel = next((tmp / "dist").glob("medssl-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True, capture_output=True)
    return env_dir


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env


def test_wheel_resolves_every_recipe_and_bench_example(wheel_env, tmp_path):
    import json

    from medssl.engine.config import packaged_yaml

    out = subprocess.run([str(wheel_env / "bin" / "python"), "-c", CHECK, str(REPO)], cwd=tmp_path,
                         capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["medssl"]).resolve().is_relative_to(wheel_env.resolve())
    assert found["recipes"] == sorted(packaged_yaml(exclude_prefix="bench_"))
    assert found["benches"] == sorted(packaged_yaml(prefix="bench_"))
    assert "ecg_jepa" in found["recipes"] and "bench_ecg_demo" in found["benches"]


def test_wheel_cli_names_a_recipe_it_does_not_have(wheel_env, tmp_path):
    """The installed `medssl` lists the packaged recipes when a name is unknown (an empty list was
    the symptom of a wheel without recipes)."""
    out = subprocess.run([str(wheel_env / "bin" / "medssl"), "pretrain", "no_such_recipe", "--data", "x.csv"],
                         cwd=tmp_path, capture_output=True, text=True, env=_clean_env())
    assert out.returncode == 2
    assert "ecg_jepa" in out.stderr and "mae_ecg" in out.stderr
