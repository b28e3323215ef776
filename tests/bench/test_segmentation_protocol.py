"""The segmentation protocol: decoder on any encoder's feature maps, training, per-record scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medssl.bench.segmentation import (
    SCORE_COLUMNS,
    build_segmenter,
    per_record_scores,
    predict_masks,
    train_segmenter,
)


class TinyConvEncoder(nn.Module):
    """Two strided conv stages; feature_maps fine to coarse, as the protocol expects."""

    def __init__(self, dims: int = 2, channels: int = 1):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.s1 = nn.Sequential(conv(channels, 8, 3, stride=2, padding=1), nn.GELU())
        self.s2 = nn.Sequential(conv(8, 16, 3, stride=2, padding=1), nn.GELU())

    def feature_maps(self, x):
        a = self.s1(x)
        return [a, self.s2(a)]

    def forward(self, x):
        return self.feature_maps(x)[-1].flatten(2).mean(-1)


def _disks(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(size * 0.3, size * 0.7, 2).tolist() + [rng.uniform(3, size / 4)]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        masks[i, 0] = m
        images[i, 0] += 2.0 * m
    return images, masks


@pytest.mark.parametrize("dims,shape", [(2, (1, 32, 32)), (3, (1, 16, 16, 16)), (2, (1, 30, 22))])
def test_decoder_returns_logits_at_input_resolution(dims, shape):
    model = build_segmenter(TinyConvEncoder(dims), shape, mode="finetune", width=8)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 1, *shape[1:])


def test_frozen_mode_leaves_the_encoder_untouched_and_training_learns_the_masks():
    torch.manual_seed(0)
    encoder = TinyConvEncoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images, masks = _disks(24, 32, seed=0)
    model = train_segmenter(encoder, images[:16], masks[:16], mode="frozen", epochs=15, lr=3e-3, batch_size=8,
                            width=8)
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the caller's copy too
    scores = per_record_scores(predict_masks(model, images[16:]), masks[16:], None, tolerance_mm=1.0)
    untrained = build_segmenter(encoder, images.shape[1:], width=8)
    baseline = per_record_scores(predict_masks(untrained, images[16:]), masks[16:], None, tolerance_mm=1.0)
    assert scores[:, 0].mean() > 0.7 > baseline[:, 0].mean()


def test_min_steps_gives_a_tiny_draw_a_training_budget(monkeypatch):
    from medssl.bench import segmentation

    steps = []
    real = segmentation.cosine_schedule
    monkeypatch.setattr(segmentation, "cosine_schedule", lambda step, total, base: steps.append(total) or
                        real(step, total, base))
    images, masks = _disks(2, 16, seed=4)
    train_segmenter(TinyConvEncoder(), images, masks, epochs=1, batch_size=8, width=4, min_steps=5)
    assert len(steps) == 5 and set(steps) == {5}


def test_finetune_mode_trains_the_encoder_and_is_seeded():
    images, masks = _disks(8, 16, seed=1)
    encoder = TinyConvEncoder()
    a = train_segmenter(encoder, images, masks, mode="finetune", epochs=2, batch_size=4, seed=3, width=8)
    b = train_segmenter(encoder, images, masks, mode="finetune", epochs=2, batch_size=4, seed=3, width=8)
    assert not torch.equal(a.encoder.s1[0].weight, encoder.s1[0].weight)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_per_record_score_conventions():
    truth = np.zeros((3, 1, 10, 10), bool)
    truth[0, 0, 2:5, 2:5] = True
    truth[1, 0, 2:5, 2:5] = True
    pred = np.zeros_like(truth)
    pred[0, 0, 2:5, 2:5] = True  # perfect
    # record 1: nothing predicted on a lesion; record 2: both empty
    s = per_record_scores(pred, truth, (0.5, 0.5), tolerance_mm=1.0)
    assert SCORE_COLUMNS == ("dice", "nsd", "hd95", "iou", "sensitivity", "specificity", "auroc")
    assert s[0, :6].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0] and np.isnan(s[0, 6])  # no probabilities given
    assert s[1, 0] == 0 and s[1, 1] == 0 and s[1, 2] == pytest.approx(np.sqrt(2) * 9 * 0.5)  # image diagonal
    assert s[1, 3] == 0
    assert s[2, :6].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert s[1, 4] == 0.0  # sensitivity: every lesion pixel missed
    half = np.zeros((1, 1, 10, 10), bool)
    half[0, 0, 2:5, 2:8] = True
    third = np.zeros_like(half)
    third[0, 0, 2:5, 2:4] = True  # |P & T| = 6, |P | T| = 18: IoU 1/3, Dice 1/2
    assert per_record_scores(third, half, None, 1.0)[0, [0, 3]] == pytest.approx([0.5, 1 / 3])


def test_an_encoder_without_feature_maps_or_an_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="no feature_maps"):
        build_segmenter(nn.Linear(3, 3), (1, 8, 8))
    with pytest.raises(ValueError, match="unknown segmentation decoder 'nope'; known: .*pyramid"):
        build_segmenter(TinyConvEncoder(), (1, 8, 8), decoder="nope")


def test_the_retina_mask_decoder_plugs_in_by_name():
    from medssl.registry import create_encoder

    encoder = create_encoder("retina_vit_tiny", image_size=32, depth=1)
    images, masks = _disks(4, 32, seed=2)
    model = train_segmenter(encoder, images, masks, decoder="mask_decoder", epochs=1, batch_size=4, width=8)
    assert type(model.decoder).__name__ == "PromptFreeMaskDecoder"
    assert predict_masks(model, images).shape == masks.shape
