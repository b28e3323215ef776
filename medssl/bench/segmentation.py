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
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.blocks import UnetBasicBlock
from torch import Tensor, nn
from torch.nn import functional as F

from medssl.bench.segmentation_metrics import (
    dice,
    hausdorff95,
    image_diagonal_mm,
    normalized_surface_dice,
)
from medssl.nn.schedules import cosine_schedule

SEGMENTATION_MODES = ("frozen", "finetune")
SCORE_COLUMNS = ("dice", "nsd", "hd95", "iou", "sensitivity", "specificity", "auroc")


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


class Segmenter(nn.Module):
    """encoder.feature_maps -> :class:`FeaturePyramidDecoder`: (B, C, *S) -> (B, 1, *S) logits."""

    def __init__(self, encoder: nn.Module, decoder: FeaturePyramidDecoder, frozen: bool):
        super().__init__()
        self.encoder, self.decoder, self.frozen = encoder, decoder, frozen

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen:
            with torch.no_grad():
                maps = [m.detach() for m in self.encoder.feature_maps(x)]
        else:
            maps = self.encoder.feature_maps(x)
        return self.decoder(maps)

    def train(self, mode: bool = True) -> Segmenter:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self


# name -> builder(encoder (a private copy), input_shape (C, *S), mode, width) -> a module with
# `.encoder` and `.decoder` whose forward gives (B, 1, *S) logits.
DecoderBuilder = Callable[[nn.Module, Sequence[int], str, int], nn.Module]
_DECODERS: dict[str, DecoderBuilder] = {}
_DECODER_MODULES = ("medssl.retina.mask_decoder", "medssl.ct.segmentation")


def register_decoder(name: str, builder: DecoderBuilder) -> DecoderBuilder:
    """Make a segmentation decoder selectable by name (the protocol's ``decoder`` setting)."""
    _DECODERS[name] = builder
    return builder


def known_decoders() -> list[str]:
    from medssl.registry import import_optional_modules

    import_optional_modules(_DECODER_MODULES)
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
    in_encoder = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in in_encoder], "lr": lr}]
    if mode == "finetune":
        groups.append({"params": list(model.encoder.parameters()), "lr": lr * encoder_lr_scale})
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def fit_segmenter(model: nn.Module, opt: torch.optim.Optimizer, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                  total: int) -> nn.Module:
    """Run ``total`` optimiser steps of Dice + BCE (``DiceCELoss(sigmoid=True)``) on the batches
    (x (B, C, *S) float32, y (B, 1, *S) in {0, 1}), learning rates on a cosine decay; eval mode after."""
    loss_fn = DiceCELoss(sigmoid=True)
    model.train()
    for step, (xb, yb) in enumerate(batches):
        if step >= total:
            break
        x = torch.from_numpy(np.asarray(xb, dtype=np.float32))
        y = torch.from_numpy(np.asarray(yb, dtype=np.float32))
        factor = cosine_schedule(step, total, 1.0)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def train_segmenter(encoder: nn.Module, images: np.ndarray, masks: np.ndarray, *, mode: str = "frozen",
                    epochs: int = 20, lr: float = 1e-3, batch_size: int = 8, encoder_lr_scale: float = 0.1,
                    weight_decay: float = 1e-4, seed: int = 0, width: int = 32, decoder: str = "pyramid",
                    min_steps: int = 0) -> nn.Module:
    """Train a segmenter (:func:`build_segmenter`) on images (N, C, *S) float32 and masks
    (N, 1, *S) in {0, 1}, for ``epochs`` passes or at least ``min_steps`` optimiser steps (so a
    draw of one or two images still gets a training budget)."""
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(f"need as many masks as images (got {len(images)} images, {len(masks)} masks)")
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

        def batches():
            for _ in range(epochs):
                order = rng.permutation(n)
                for start in range(0, n, bs):
                    idx = np.sort(order[start:start + bs])
                    yield images[idx], masks[idx]

        return fit_segmenter(model, opt, batches(), epochs * steps_per_epoch)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """(N, 1, *S) float32 sigmoid probabilities of images (N, C, *S)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))
        out.append(torch.sigmoid(model(x).float()).numpy())
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
