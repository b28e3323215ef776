"""Small synthetic FOMO60K and FOMO25-task folders, written once per session (read-only in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHAPE = (32, 32, 32)


@pytest.fixture(scope="session")
def fomo60k_root(tmp_path_factory) -> Path:
    from medssl.mri.phantom import write_fomo60k_replica

    return write_fomo60k_replica(tmp_path_factory.mktemp("fomo60k"), subjects_per_site=3, seed=1, shape=SHAPE)


@pytest.fixture(scope="session")
def fomo_task_root(tmp_path_factory):
    """task number -> folder (4 subjects per site, 3 sites; task 1 at 40^3 so that infarcts, a few
    voxels across, survive thick slices)."""
    from medssl.mri.phantom import write_fomo_task_replica

    cache: dict[int, Path] = {}

    def get(task: int) -> Path:
        if task not in cache:
            cache[task] = write_fomo_task_replica(tmp_path_factory.mktemp(f"fomo-task{task}"), task,
                                                  subjects_per_site=4, seed=2,
                                                  shape=(40, 40, 40) if task == 1 else SHAPE)
        return cache[task]

    return get
