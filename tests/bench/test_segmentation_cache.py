"""Frozen feature maps computed once per image give the decoder training of the uncached path.

The cached path runs the frozen encoder over the images once (other batch compositions than the
training batches) and trains the decoder on those maps; the uncached path re-encodes every batch.
On the project's CPU both give bit-identical decoder weights and probabilities; the tests allow
1e-5 absolute (float rounding of the encoder's matmuls can depend on the batch size elsewhere).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.bench import segmentation as seg
from medssl.bench.segmentation import FeatureMapCache, predict_probabilities, train_segmenter
from test_segmentation_protocol import _disks  # the same noisy-disk images and masks

ATOL = 1e-5


class TinyConvEncoder(torch.nn.Module):
    """Two strided conv stages; feature_maps fine to coarse."""

    def __init__(self):
        super().__init__()
        self.s1 = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.GELU())
        self.s2 = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.GELU())

    def feature_maps(self, x):
        a = self.s1(x)
        return [a, self.s2(a)]


def _max_param_diff(a, b) -> float:
    sa, sb = a.decoder.state_dict(), b.decoder.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def _encoders():
    from medssl.registry import create_encoder

    torch.manual_seed(0)
    yield "pyramid", TinyConvEncoder()
    torch.manual_seed(0)
    yield "mask_decoder", create_encoder("retina_vit_tiny", image_size=32, depth=2)


@pytest.mark.parametrize("decoder", ["pyramid", "mask_decoder"])
def test_cached_feature_maps_train_the_same_decoder_as_recomputing_them(decoder):
    encoder = dict(_encoders())[decoder]
    images, masks = _disks(10, 32, seed=1)
    kw = dict(decoder=decoder, epochs=3, batch_size=4, width=8, seed=2)
    plain = train_segmenter(encoder, images, masks, cache_features=False, **kw)
    cached = train_segmenter(encoder, images, masks, cache_features=True, **kw)
    assert _max_param_diff(plain, cached) <= ATOL
    np.testing.assert_allclose(predict_probabilities(cached, images), predict_probabilities(plain, images),
                               rtol=0, atol=ATOL)


def test_the_run_cache_is_keyed_by_weights_and_images_and_feeds_training_and_evaluation():
    encoder = TinyConvEncoder()
    images, masks = _disks(12, 32, seed=3)
    cache = FeatureMapCache()
    maps = cache.maps(encoder, images, decoder="pyramid", width=8)
    assert [tuple(m.shape) for m in maps] == [(12, 8, 16, 16), (12, 16, 8, 8)]
    assert cache.maps(encoder, images.copy(), decoder="pyramid", width=8) is maps  # same weights + data
    assert (cache.hits, cache.misses) == (1, 1)
    other = _disks(12, 32, seed=4)[0]
    assert cache.maps(encoder, other, decoder="pyramid", width=8) is not maps
    changed = TinyConvEncoder()
    changed.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        changed.s1[0].bias.add_(1.0)
    assert cache.maps(changed, images, decoder="pyramid", width=8) is not maps
    assert cache.maps(encoder, images, mode="finetune", decoder="pyramid", width=8) is None

    tr, ev = np.arange(0, 8), np.arange(8, 12)
    kw = dict(decoder="pyramid", epochs=2, batch_size=4, width=8, seed=5)
    plain = train_segmenter(encoder, images[tr], masks[tr], cache_features=False, **kw)
    cached = train_segmenter(encoder, images[tr], masks[tr], feature_maps=[m[tr] for m in maps], **kw)
    assert _max_param_diff(plain, cached) <= ATOL
    np.testing.assert_allclose(predict_probabilities(cached, images[ev], feature_maps=[m[ev] for m in maps]),
                               predict_probabilities(plain, images[ev]), rtol=0, atol=ATOL)


def test_finetuning_and_the_switch_recompute_the_maps(monkeypatch):
    encoder = TinyConvEncoder()
    images, masks = _disks(4, 16, seed=6)
    calls = []
    real = seg.frozen_feature_maps
    monkeypatch.setattr(seg, "frozen_feature_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    train_segmenter(encoder, images, masks, mode="finetune", epochs=1, batch_size=2, width=4)
    assert not calls
    monkeypatch.setattr(seg, "CACHE_FROZEN_FEATURES", False)
    train_segmenter(encoder, images, masks, epochs=1, batch_size=2, width=4)
    assert not calls and FeatureMapCache().maps(encoder, images) is None
    monkeypatch.setattr(seg, "CACHE_FROZEN_FEATURES", True)
    train_segmenter(encoder, images, masks, epochs=1, batch_size=2, width=4)
    assert calls
