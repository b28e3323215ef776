"""Fine-tuning FOMO25 task models: explicit input adaptation, learning, the checkpoint card, and
one preprocessing path for training and prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.checkpoint import clone_random_encoder, save_checkpoint
from medssl.mri.finetune import (
    FinetuneSettings,
    _Batches,
    finetune_task,
    task_encoder,
    train_task_model,
)
from medssl.mri.fomo_task import index_fomo_task, parse_task
from medssl.mri.modality import mri_array_cache, preprocess_row
from medssl.mri.predict import FomoPredictor
from medssl.mri.task_model import (
    PooledTaskModel,
    SegmentationTaskModel,
    load_task_checkpoint,
    predict_array,
    pyramid_widths,
)

TINY = {"widths": [8, 16], "shape": [32, 32, 32]}


def test_pretrained_single_channel_encoder_is_adapted_explicitly(tmp_path):
    pretrained = clone_random_encoder("mri_unet_tiny", seed=0, **TINY)
    save_checkpoint(pretrained, tmp_path / "pre")
    encoder, note = task_encoder(str(tmp_path / "pre"), parse_task(1))
    assert encoder.spec.input["channels"] == ["flair", "adc", "dwi_b1000", "swi_or_t2s"]
    assert encoder.spec.hparams["channels"] == encoder.spec.input["channels"]
    assert "adapted from channels ['any']" in note and "divided by 4" in note
    w = pretrained.input_conv.weight.detach()
    assert torch.allclose(encoder.input_conv.weight, w.repeat(1, 4, 1, 1, 1) / 4)
    x = torch.randn(1, 1, 16, 16, 16)  # four identical sequences: the pretrained features, unchanged
    with torch.no_grad():
        assert torch.allclose(encoder(x.repeat(1, 4, 1, 1, 1)), pretrained(x), atol=1e-5)
    with pytest.raises(ValueError, match="overrides apply to random"):
        task_encoder(str(tmp_path / "pre"), parse_task(1), {"widths": [8]})
    rnd, note = task_encoder("random:mri_unet_tiny:0", parse_task(3), TINY)
    assert rnd.spec.input["channels"] == ["t1", "t2"] and rnd.input_conv.in_channels == 2 and note is None
    with pytest.raises(ValueError, match="drop the channels override"):
        task_encoder("random:mri_unet_tiny:0", parse_task(3), {"channels": ["flair"]})


def _toy_segmentation(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(0, 0.3, (n, 1, 12, 12, 12)).astype(np.float32)
    m = np.zeros_like(x)
    for i in range(n):
        a, b, c = rng.integers(1, 7, 3)
        x[i, 0, a:a + 4, b:b + 4, c:c + 4] += 2.0
        m[i, 0, a:a + 4, b:b + 4, c:c + 4] = 1.0
    return x, m


def test_training_loops_learn_toy_segmentation_and_regression():
    from medssl.bench.segmentation_metrics import dice

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x, m = _toy_segmentation(8, rng)
    task = parse_task(2)
    encoder = clone_random_encoder("mri_unet_tiny", seed=0, widths=[8, 16], shape=[12, 12, 12])
    model = SegmentationTaskModel(encoder, pyramid_widths(encoder, [12, 12, 12]))
    s = FinetuneSettings(epochs=10, batch_size=4, lr=1e-2, patch_size=(12, 12, 12), device="cpu")
    history = train_task_model(model, _Batches(x, m, task, s, (12, 12, 12)), task, s, torch.device("cpu"))
    assert history[-1] < 0.6 * history[0]
    card = {"head": {"type": "unet_decoder"},
            "inference": {"patch_size": [12, 12, 12], "overlap": 0.5, "mode": "gaussian", "sw_batch_size": 2}}
    scores = [dice(predict_array(model, card, x[i]) >= 0.5, m[i, 0] > 0.5) for i in range(len(x))]
    assert np.mean(scores) > 0.7, scores

    # regression: the age is the volume's mean level, standardised targets, read back in years
    level = rng.uniform(-1, 1, 12).astype(np.float32)
    xr = (rng.normal(0, 0.3, (12, 2, 8, 8, 8)) + level[:, None, None, None, None]).astype(np.float32)
    encoder = clone_random_encoder("mri_unet_tiny", seed=0, widths=[8, 16], shape=[8, 8, 8], channels=["t1", "t2"])
    model = PooledTaskModel(encoder)
    task = parse_task(3)
    s = FinetuneSettings(epochs=8, batch_size=4, lr=1e-2, device="cpu")
    train_task_model(model, _Batches(xr, level, task, s, None), task, s, torch.device("cpu"))
    card = {"head": {"type": "pooled"}, "target": {"type": "age_years", "mean": 50.0, "std": 10.0}}
    ages = np.array([predict_array(model, card, xr[i]) for i in range(len(xr))])
    assert np.corrcoef(ages, 50 + 10 * level)[0, 1] > 0.8


def test_finetune_writes_a_task_checkpoint_and_trains_on_the_predictor_preprocessing(fomo_task_root, tmp_path):
    root = fomo_task_root(3)
    rows, _ = index_fomo_task(root, 3)
    rows[0] = {**rows[0], "age": ""}  # no target: skipped, counted
    settings = FinetuneSettings(epochs=1, batch_size=4, lr=1e-3, shape=(32, 32, 32), workers=1, encoder_overrides=TINY)
    folder = finetune_task(rows, 3, "random:mri_unet_tiny:0", tmp_path / "task3", settings,
                           cache_root=tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.safetensors"]  # no pickle
    card = json.loads((folder / "card.json").read_text())
    ages = [float(r["age"]) for r in rows[1:]]
    assert card["kind"] == "fomo-task-model" and card["task"] == {"number": 3, "name": "brain_age", "kind": "regression"}
    assert card["sequences"] == ["t1", "t2"] and card["encoder"]["input"]["channels"] == ["t1", "t2"]
    assert card["target"]["type"] == "age_years"
    assert card["target"]["mean"] == pytest.approx(np.mean(ages), abs=1e-3)
    assert card["target"]["std"] == pytest.approx(np.std(ages), abs=1e-3)
    assert card["preprocess"]["shape"] == [32, 32, 32] and card["preprocess"]["channels"] == ["t1", "t2"]
    assert card["training"]["n_sessions"] == len(rows) - 1 and card["training"]["n_skipped"] == 1
    assert card["input_adaptation"] is None and card["encoder_source"] == "random:mri_unet_tiny:0"
    assert len(card["training"]["loss_per_epoch"]) == 1 and np.isfinite(card["training"]["final_loss"])

    model, _ = load_task_checkpoint(folder)
    predictor = FomoPredictor(folder, "cpu")
    # the cached training input of a session is exactly what the predictor computes from its files
    cache = mri_array_cache(rows[1:3], predictor.preprocess, tmp_path / "cache", workers=1)
    x, _ = preprocess_row(rows[1], predictor.preprocess)
    np.testing.assert_array_equal(np.asarray(cache.signals[0]), x)
    age = predictor.predict_row(rows[1])
    assert isinstance(age, float) and age == pytest.approx(predict_array(model, card, x), rel=1e-5)


def test_finetune_refuses_what_it_cannot_train(fomo_task_root, tmp_path):
    rows, _ = index_fomo_task(fomo_task_root(1), 1)
    negatives = [r for r in rows if r["infarct"] == "0"]
    with pytest.raises(ValueError, match="both classes"):
        finetune_task(negatives, 1, "random:mri_unet_tiny:0", tmp_path / "x", FinetuneSettings(encoder_overrides=TINY))
    with pytest.raises(ValueError, match="need at least 2"):
        finetune_task(rows, 3, "random:mri_unet_tiny:0", tmp_path / "x")  # task 1 rows for task 3
    with pytest.raises(ValueError, match="multiple of 4"):
        finetune_task(rows, 1, "random:mri_unet_tiny:0", tmp_path / "x",
                      FinetuneSettings(shape=(30, 32, 32), encoder_overrides={"widths": [8, 16, 32]}))
    with pytest.raises(ValueError, match="head must be"):
        FinetuneSettings(head="transformer")
    vit = clone_random_encoder("mri_vit3d_tiny", seed=0, depth=1)
    with pytest.raises(ValueError, match="not a ViT"):
        pyramid_widths(vit, [32, 32, 32])
    assert not (tmp_path / "x").exists()
