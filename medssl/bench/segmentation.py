"""The segmentation protocol: an encoder's feature maps + a U-Net-style decoder, trained on a few
labelled images or volumes (2-D or 3-D), scored per record with Dice, NSD and HD95.

* :class:`FeaturePyramidDecoder` reads ``encoder.feature_maps(x)`` (a list of (B, C_i, *S_i) maps,
  fine to coarse; a ViT gives its token grid) and decodes from the coarsest map up: at each finer
  map, upsample (linear interpolation), concatenate the skip, then two conv-norm-LeakyReLU blocks
  (MONAI's ``UnetBasicBlock``, instance norm, as nnU-Net/AMAES decoders); then upsample by 2 (one
  conv block each) until the input resolution, and a 1x1 convolution to one logit channel. Channel
  widths and the number of 2x steps are read from one forward pass on a zero input, so any encoder
  with ``feature_maps`` plugs in, whatever its strides (a ViT at 1/16 gets four 2x steps).
* :func:`train_segmenter`: ``mode="frozen"`` trains the decoder only (encoder in eval mode, no
  gradients: a linear-probe analogue for dense tasks); ``mode="finetune"`` trains encoder and
  decoder, the encoder at ``encoder_lr_scale`` x the decoder's learning rate. Loss Dice + BCE on
  logits (``monai.losses.DiceCELoss`` with sigmoid; the usual nnU-Net/MAE-SAM2 choice). AdamW,
  cosine decay, CPU by default, deterministic under ``seed``.
* other decoders plug in by name (:func:`register_decoder`), e.g. the prompt-free mask decoder of
  :mod:`medssl.retina.mask_decoder` for ViT encoders (``decoder: mask_decoder``) and MONAI's
  SwinUNETR decoder for the CT Swin encoders (``decoder: swin_unetr``, :mod:`medssl.ct.segmentation`).
* :func:`predict_masks`: sigmoid >= 0.5 masks, batched; :func:`predict_probabilities`: the
  sigmoid probabilities themselves.
* frozen feature maps are computed once per image: with ``mode="frozen"`` the encoder's output on
  an image never changes during training (eval mode, no gradients, and nothing augments the
  input in :func:`train_segmenter`), so :func:`train_segmenter` runs the encoder over the training
  images once (:func:`frozen_feature_maps`) and trains the decoder on those maps instead of
  re-encoding every batch at every step; :class:`FeatureMapCache` keeps them across trainings
  (the benchmark's label fractions x seeds, and its evaluation images), keyed by a hash of the
  encoder's weights and of the images. The same decoder training results, up to float rounding
  of the encoder run on other batch compositions (``tests/bench/test_segmentation_cache.py``).
  Not in the tiled path (:mod:`medssl.bench.tiling`): random tile crops and flips change the
  encoder's input at every step there. ``cache_features=False`` (or
  :data:`CACHE_FROZEN_FEATURES` = False) recomputes them at every step, as before.
* images larger than an encoder's input are segmented at their own resolution, in tiles
  (:mod:`medssl.bench.tiling`: training on random tiles, sliding-window inference).
* :func:`per_record_scores`: (n, 7) Dice, NSD at ``tolerance_mm``, HD95, IoU (Jaccard =
  Dice / (2 - Dice)), sensitivity, specificity and pixel AUROC per record, the conventions of
  :mod:`medssl.bench.segmentation_metrics` (both empty: 1, 1, 0, 1); an empty
  prediction against a non-empty truth gets HD95 = the image diagonal (BraTS' worst case) so means
  stay finite. With a field-of-view mask per record every score is computed inside it (pixels
  outside count neither as prediction nor as truth, and are not ranked by the AUROC).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.blocks import UnetBasicBlock
from torch import Tensor, nn
from torch.nn import functional as F

from medssl.bench.column_metrics import SEGMENTATION_SCORES
from medssl.bench.segmentation_metrics import (
    dice,
    hausdorff95,
    image_diagonal_mm,
    normalized_surface_dice,
)
from medssl.nn.schedules import cosine_schedule
from medssl.nn.segmenter import Segmenter

SEGMENTATION_MODES = ("frozen", "finetune")
# Compute a frozen encoder's feature maps once per image (module docstring); False: at every step.
CACHE_FROZEN_FEATURES = True
FEATURE_CACHE_MAX_BYTES = 4 << 30  # maps of one (encoder, images) set larger than this are not kept
SCORE_COLUMNS = SEGMENTATION_SCORES  # the metric table's segmentation columns, in score-table order


def _block(dims: int, cin: int, cout: int) -> nn.Module:
    return UnetBasicBlock(dims, cin, cout, kernel_size=3, stride=1, norm_name="instance")


class FeaturePyramidDecoder(nn.Module):
    """Decoder over the feature maps of an encoder; see the module docstring.

    feature_shapes: [(C_i, *S_i)] of ``encoder.feature_maps`` fine to coarse; input_spatial: the
    input's spatial shape. Output: (B, 1, *input_spatial) logits.
    """

    def __init__(self, feature_shapes: Sequence[Sequence[int]], input_spatial: Sequence[int], width: int = 32):
        super().__init__()
        self.dims = len(input_spatial)
        self.input_spatial = tuple(int(s) for s in input_spatial)
        shapes = [tuple(int(v) for v in s) for s in feature_shapes]
        coarse_to_fine = shapes[::-1]
        self.stem = _block(self.dims, coarse_to_fine[0][0], width)
        self.merges = nn.ModuleList(_block(self.dims, width + c[0], width) for c in coarse_to_fine[1:])
        finest = shapes[0][1:]
        n_up = max(0, math.ceil(math.log2(max(i / f for i, f in zip(self.input_spatial, finest)))))
        self.ups = nn.ModuleList(_block(self.dims, width, width) for _ in range(n_up))
        self.head = (nn.Conv3d if self.dims == 3 else nn.Conv2d)(width, 1, kernel_size=1)
        self._mode = "trilinear" if self.dims == 3 else "bilinear"

    def _resize(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return F.interpolate(x, size=tuple(size), mode=self._mode, align_corners=False)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        maps = list(maps)[::-1]
        h = self.stem(maps[0])
        for merge, skip in zip(self.merges, maps[1:]):
            h = merge(torch.cat([self._resize(h, skip.shape[2:]), skip], dim=1))
        for up in self.ups:
            size = [min(2 * s, t) for s, t in zip(h.shape[2:], self.input_spatial)]
            h = up(self._resize(h, size))
        if tuple(h.shape[2:]) != self.input_spatial:
            h = self._resize(h, self.input_spatial)
        return self.head(h)


# name -> builder(encoder (a private copy), input_shape (C, *S), mode, width) -> a module with
# `.encoder` and `.decoder` whose forward gives (B, 1, *S) logits.
DecoderBuilder = Callable[[nn.Module, Sequence[int], str, int], nn.Module]
_DECODERS: dict[str, DecoderBuilder] = {}  # modalities register theirs (medssl.plugins)


def register_decoder(name: str, builder: DecoderBuilder) -> DecoderBuilder:
    """Make a segmentation decoder selectable by name (the protocol's ``decoder`` setting)."""
    _DECODERS[name] = builder
    return builder


def known_decoders() -> list[str]:
    from medssl.plugins import load_registrations

    load_registrations()
    return sorted(_DECODERS)


def build_segmenter(encoder: nn.Module, input_shape: Sequence[int], *, mode: str = "frozen", width: int = 32,
                    decoder: str = "pyramid") -> nn.Module:
    """A segmenter on a deep copy of ``encoder`` for inputs (C, *S) = ``input_shape``: the
    :class:`FeaturePyramidDecoder` by default, or a registered decoder by name (e.g.
    ``mask_decoder``, the prompt-free mask decoder of :mod:`medssl.retina.mask_decoder`)."""
    if mode not in SEGMENTATION_MODES:
        raise ValueError(f"unknown segmentation mode {mode!r}; known: {', '.join(SEGMENTATION_MODES)}")
    if not hasattr(encoder, "feature_maps"):
        raise ValueError(f"encoder {getattr(getattr(encoder, 'spec', None), 'name', type(encoder).__name__)} has no "
                         f"feature_maps(x): it cannot feed a segmentation decoder")
    if decoder not in _DECODERS and decoder not in known_decoders():
        raise ValueError(f"unknown segmentation decoder {decoder!r}; known: {', '.join(known_decoders())}")
    return _DECODERS[decoder](copy.deepcopy(encoder).float(), tuple(input_shape), mode, width)


def _pyramid(encoder: nn.Module, input_shape: Sequence[int], mode: str, width: int) -> Segmenter:
    with torch.no_grad():
        was = encoder.training
        encoder.eval()
        maps = encoder.feature_maps(torch.zeros(1, *input_shape))
        encoder.train(was)
    decoder = FeaturePyramidDecoder([m.shape[1:] for m in maps], input_shape[1:], width=width)
    frozen = mode == "frozen"
    if frozen:
        encoder.requires_grad_(False)
    return Segmenter(encoder, decoder, frozen)


register_decoder("pyramid", _pyramid)


def segmenter_optimiser(model: nn.Module, *, mode: str, lr: float, encoder_lr_scale: float,
                        weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the decoder at ``lr`` and, when fine-tuning, the encoder at ``lr * encoder_lr_scale``
    (each group remembers its ``base_lr`` for the cosine schedule)."""
    from medssl.nn.param_groups import param_groups

    in_encoder = {id(p) for p in model.encoder.parameters()}
    layers, scales = [[p for p in model.parameters() if id(p) not in in_encoder]], [1.0]
    if mode == "finetune":
        layers.append(list(model.encoder.parameters()))
        scales.append(encoder_lr_scale)
    return torch.optim.AdamW(param_groups(layers, weight_decay, lr=lr, lr_scales=scales, base_lr=True),
                             weight_decay=weight_decay)


def cacheable(model: nn.Module) -> bool:
    """Whether ``model``'s encoder is frozen and it can decode precomputed feature maps."""
    return bool(getattr(model, "frozen", False)) and hasattr(model, "encode") and hasattr(model, "decode")


@torch.no_grad()
def frozen_feature_maps(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> list[Tensor]:
    """``model.encode`` of every image (N, C, *S), in batches: one (N, C_i, *S_i) float32 tensor per
    feature map. The model's encoder must be frozen (:func:`cacheable`); it stays in eval mode."""
    if not cacheable(model):
        raise ValueError("feature maps are cached only for a frozen encoder with encode/decode")
    was = model.training
    model.eval()
    parts: list[list[Tensor]] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start:start + batch_size], dtype=np.float32))
        parts.append([m.float() for m in model.encode(x)])
    model.train(was)
    return [torch.cat(level) for level in zip(*parts)]


def _fingerprint(encoder: nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in encoder.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _array_fingerprint(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{a.dtype}:{a.shape}".encode())
    h.update(a.view(np.uint8).data)
    return h.hexdigest()


def _maps_fit(model: nn.Module, images: np.ndarray, max_bytes: int) -> bool:
    """Whether the feature maps of every image would take at most ``max_bytes`` (one image measured)."""
    first = frozen_feature_maps(model, images[:1])
    return sum(m.numel() * m.element_size() for m in first) * len(images) <= max_bytes


class FeatureMapCache:
    """Frozen feature maps of whole image sets, computed once and reused (in memory): key = hash
    of the encoder's weights (state dict) + hash of the images (+ decoder and input shape).

    :meth:`maps` gives [(N, C_i, *S_i)] for every image of ``images`` (index them with the rows a
    training or an evaluation uses), or None where caching does not apply (an encoder that is not
    frozen in ``mode``, a decoder without encode/decode, maps larger than ``max_bytes``)."""

    def __init__(self, max_bytes: int = FEATURE_CACHE_MAX_BYTES):
        self.max_bytes = max_bytes
        self._maps: dict[tuple, list[Tensor] | None] = {}
        self.hits = self.misses = 0

    def maps(self, encoder: nn.Module, images: np.ndarray, *, mode: str = "frozen", decoder: str = "pyramid",
             width: int = 32, batch_size: int = 16) -> list[Tensor] | None:
        if mode != "frozen" or not CACHE_FROZEN_FEATURES or len(images) == 0 or images.dtype == object:
            return None
        key = (_fingerprint(encoder), _array_fingerprint(images), decoder, tuple(images.shape[1:]))
        if key in self._maps:
            self.hits += 1
            return self._maps[key]
        self.misses += 1
        with torch.random.fork_rng():  # building the probe segmenter must not move anyone's RNG
            model = build_segmenter(encoder, images.shape[1:], mode=mode, width=width, decoder=decoder)
        maps = None
        if cacheable(model) and _maps_fit(model, images, self.max_bytes):
            maps = frozen_feature_maps(model, images, batch_size)
        self._maps[key] = maps
        return maps


def fit_segmenter(model: nn.Module, opt: torch.optim.Optimizer, batches: Iterable[tuple],
                  total: int) -> nn.Module:
    """Run ``total`` optimiser steps of Dice + BCE (``DiceCELoss(sigmoid=True)``) on the batches
    (x (B, C, *S) float32, y (B, 1, *S) in {0, 1}[, the frozen encoder's feature maps of x: then
    ``model.decode(x, maps)`` replaces ``model(x)``]), learning rates on a cosine decay; eval mode after."""
    loss_fn = DiceCELoss(sigmoid=True)
    model.train()
    for step, (xb, yb, *cached) in enumerate(batches):
        if step >= total:
            break
        x = torch.from_numpy(np.asarray(xb, dtype=np.float32))
        y = torch.from_numpy(np.asarray(yb, dtype=np.float32))
        factor = cosine_schedule(step, total, 1.0)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        logits = model.decode(x, cached[0]) if cached and cached[0] is not None else model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def train_segmenter(encoder: nn.Module, images: np.ndarray, masks: np.ndarray, *, mode: str = "frozen",
                    epochs: int = 20, lr: float = 1e-3, batch_size: int = 8, encoder_lr_scale: float = 0.1,
                    weight_decay: float = 1e-4, seed: int = 0, width: int = 32, decoder: str = "pyramid",
                    min_steps: int = 0, cache_features: bool | None = None,
                    feature_maps: Sequence[Tensor] | None = None) -> nn.Module:
    """Train a segmenter (:func:`build_segmenter`) on images (N, C, *S) float32 and masks
    (N, 1, *S) in {0, 1}, for ``epochs`` passes or at least ``min_steps`` optimiser steps (so a
    draw of one or two images still gets a training budget).

    With a frozen encoder the feature maps of the images are computed once, before the first step
    (``cache_features``, default :data:`CACHE_FROZEN_FEATURES`), or taken from ``feature_maps``
    ([(N, C_i, *S_i)] of these images, e.g. from a :class:`FeatureMapCache`); the decoder then
    trains on them. False: the encoder runs on every batch at every step."""
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"need as many masks as images (got {len(images)} images, {len(masks)} masks)")
    cache_features = CACHE_FROZEN_FEATURES if cache_features is None else cache_features
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_segmenter(encoder, images.shape[1:], mode=mode, width=width, decoder=decoder)
        opt = segmenter_optimiser(model, mode=mode, lr=lr, encoder_lr_scale=encoder_lr_scale,
                                  weight_decay=weight_decay)
        rng = np.random.default_rng(seed)
        n = len(images)
        bs = min(batch_size, n)
        steps_per_epoch = math.ceil(n / bs)
        epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
        maps = None
        if feature_maps is not None and cache_features and cacheable(model):
            maps = list(feature_maps)
        elif cache_features and cacheable(model) and _maps_fit(model, images, FEATURE_CACHE_MAX_BYTES):
            maps = frozen_feature_maps(model, images)
        if maps is not None and any(len(m) != n for m in maps):
            raise ValueError(f"feature_maps hold {[len(m) for m in maps]} images, not the {n} given")

        def batches():
            for _ in range(epochs):
                order = rng.permutation(n)
                for start in range(0, n, bs):
                    idx = np.sort(order[start:start + bs])
                    if maps is None:
                        yield images[idx], masks[idx]
                    else:
                        t = torch.from_numpy(idx)
                        yield images[idx], masks[idx], [m[t] for m in maps]

        from medssl.progress import progress

        total = epochs * steps_per_epoch
        return fit_segmenter(model, opt, progress(batches(), desc="segmentation training", total=total, unit="step"),
                             total)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray, batch_size: int = 8,
                          feature_maps: Sequence[Tensor] | None = None) -> np.ndarray:
    """(N, 1, *S) float32 sigmoid probabilities of images (N, C, *S); ``feature_maps``: the frozen
    encoder's maps of these images ([(N, C_i, *S_i)], :class:`FeatureMapCache`), decoded directly."""
    model.eval()
    use = feature_maps is not None and cacheable(model)
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))
        logits = (model.decode(x, [m[start:start + batch_size] for m in feature_maps]) if use else model(x))
        out.append(torch.sigmoid(logits.float()).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, *images.shape[2:]), dtype=np.float32)


@torch.no_grad()
def predict_masks(model: nn.Module, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, 1, *S) bool masks: sigmoid(logits) >= 0.5."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))
        out.append((model(x) >= 0).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1, *images.shape[2:]), dtype=bool)


def pixel_scores(pred: np.ndarray, truth: np.ndarray, prob: np.ndarray | None = None) -> tuple[float, float, float]:
    """(sensitivity, specificity, AUROC) of one record's pixels (already restricted to the field of
    view): sensitivity = TP / (TP + FN) (1 without positives: nothing was missed), specificity
    = TN / (TN + FP) (1 without negatives), AUROC of ``prob`` against ``truth`` (Mann-Whitney, ties
    averaged; NaN with one class or without probabilities)."""
    pred, truth = np.asarray(pred, bool).ravel(), np.asarray(truth, bool).ravel()
    tp = int(np.count_nonzero(pred & truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(np.count_nonzero(~pred & ~truth))
    fp = int(np.count_nonzero(pred & ~truth))
    sens = tp / (tp + fn) if tp + fn else 1.0
    spec = tn / (tn + fp) if tn + fp else 1.0
    auc = float("nan")
    if prob is not None and 0 < tp + fn < truth.size:
        from medssl.bench.metrics import _rank_auroc

        auc = float(_rank_auroc(truth[:, None], np.asarray(prob, np.float64).ravel()[:, None])[0])
    return sens, spec, auc


def per_record_scores(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray], spacing_mm: Sequence[float] | None,
                      tolerance_mm: float, fovs: Sequence[np.ndarray | None] | None = None,
                      probs: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(n, 7) Dice, NSD at ``tolerance_mm``, HD95 (mm), IoU, sensitivity, specificity, pixel AUROC
    per record (columns :data:`SCORE_COLUMNS`). pred, truth: per record (1, *S) masks (an (n, 1, *S)
    array, or a list when records differ in size); fovs: per record a (*S) bool field-of-view mask
    or None (scores inside it); probs: per record (1, *S) probabilities (else AUROC is NaN)."""
    out = np.zeros((len(pred), len(SCORE_COLUMNS)))
    for i, (p, t) in enumerate(zip(pred, truth)):
        p, t = np.asarray(p[0], bool), np.asarray(t[0]) > 0.5
        prob = None if probs is None else np.asarray(probs[i][0], np.float32)
        fov = None if fovs is None or fovs[i] is None else np.asarray(fovs[i], bool)
        if fov is not None:
            if fov.shape != t.shape:
                raise ValueError(f"record {i}: field of view {fov.shape} and mask {t.shape} differ in shape")
            p, t = p & fov, t & fov
        worst = image_diagonal_mm(t.shape, spacing_mm)
        d = dice(p, t)
        inside = (lambda a: a[fov]) if fov is not None else (lambda a: a)
        sens, spec, auc = pixel_scores(inside(p), inside(t), None if prob is None else inside(prob))
        out[i] = (d, normalized_surface_dice(p, t, tolerance_mm, spacing_mm),
                  hausdorff95(p, t, spacing_mm, empty_mm=worst), d / (2.0 - d), sens, spec, auc)
    return out
