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


@pytest.fixture(scope="session")
def checkpoints(fomo_task_root, tmp_path_factory):
    """task -> a task checkpoint fine-tuned for one epoch on sites A and C (widths 8, 16; 32^3),
    shared by the predict and container tests."""
    import json

    from medssl.cli import main
    from medssl.mri.finetune import FinetuneSettings, finetune_task
    from medssl.mri.fomo_task import index_fomo_task

    out, cache = tmp_path_factory.mktemp("fomo-ckpt"), tmp_path_factory.mktemp("fomo-ckpt-cache")
    # task 3 through the command line: train on sites A and C, score site B at the end
    assert main(["fomo", "finetune", "--task", "3", "--data", str(fomo_task_root(3)), "--encoder",
                 "random:mri_unet_tiny:0", "--encoder-override", "widths=[8, 16]", "--encoder-override",
                 "shape=[32, 32, 32]", "--shape", "32", "32", "32", "--epochs", "1", "--batch-size", "4", "--lr",
                 "1e-3", "--val-site", "siteB", "--workers", "1", "--cache-dir", str(cache), "--out",
                 str(out / "task3")]) == 0
    card = json.loads((out / "task3" / "card.json").read_text())
    assert card["training"]["n_sessions"] == 8 and card["training"]["validation"]["n_sessions"] == 4
    assert {"mae_years", "pearson_r"} <= set(card["training"]["validation"])
    folders = {3: out / "task3"}
    for task in (1, 2):
        rows, _ = index_fomo_task(fomo_task_root(task), task)
        settings = FinetuneSettings(epochs=1, batch_size=4, lr=1e-3, shape=(32, 32, 32), workers=1,
                                    patch_size=(16, 16, 16) if task == 2 else None,
                                    encoder_overrides={"widths": [8, 16], "shape": [32, 32, 32]})
        folders[task] = finetune_task([r for r in rows if r["site"] != "siteB"], task, "random:mri_unet_tiny:0",
                                      out / f"task{task}", settings, cache_root=cache)
    return folders
