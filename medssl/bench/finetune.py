"""End-to-end fine-tuning of a pretrained encoder with a linear head (the ``finetune`` protocol).

The recipe is the layer-wise learning-rate decay (LLRD) fine-tuning of BEiT (Bao et al., "BEiT:
BERT Pre-Training of Image Transformers", ICLR 2022) and MAE (He et al., "Masked Autoencoders Are
Scalable Vision Learners", CVPR 2022; ``util/lr_decay.py`` of their code), applied to every
registered ECG encoder:

* :func:`encoder_layers` splits an encoder's parameters into ``L + 2`` ordered layers:
  layer 0 = everything registered before the block list (patch embedding, learned positions,
  lead/SEP embeddings, a CNN stem), layers 1..L = the L blocks, layer L + 1 = everything
  registered after the blocks (a final LayerNorm), which shares the head's layer.
  **Block-list rule**: the first ``nn.ModuleList`` / ``nn.Sequential`` met in depth-first
  registration order (``named_modules``) whose children are all of one class, are composite
  (have submodules of their own) and hold parameters, and which together hold at least half of the
  encoder's parameters. This finds ``transformer.blocks`` of ECG-JEPA / ST-MEM ViTs (one
  ``Block`` each), ``stages`` of the xresnet1d (one stage of bottlenecks each; the stem of mixed
  conv/pool layers is skipped) and ``blocks`` of TS2Vec (one dilated block each).
* :func:`layerwise_lr_groups`: AdamW parameter groups, layer ``i`` (0..L+1) scaled by
  ``decay ** (L + 1 - i)`` as in MAE: the embedding (layer 0) gets ``base_lr * decay**(L+1)``,
  block ``j`` (0-based, layer ``j + 1``) gets ``base_lr * decay**(L - j)`` (so the last block and
  the head both get ``base_lr``), and the head with the post-block layer (L + 1) gets ``base_lr``.
  Biases, 1-D parameters (norm weights, SEP tokens), norm layers and position/lead/token
  embeddings get no weight decay.
* :func:`finetune_classifier`: a deep copy of the encoder + a linear head on its pooled embedding
  (``encoder(x)``, (B, D)), trained with AdamW (per-group LLRD learning rates, linear warm-up over
  the first 10% of steps, then cosine decay to 0), BCE-with-logits for binary/multilabel,
  cross-entropy for multiclass, MSE on standardised targets for regression. ``mode="full"``
  trains everything; ``mode="last_blocks"`` trains the last ``n_last`` blocks, the post-block
  layer and the head, the rest frozen (``requires_grad=False``; modules whose own parameters are
  all frozen run in eval mode, so frozen BatchNorm statistics stay put). CPU; deterministic under
  ``seed`` (initialisation, shuffling and dropout draw from a forked, seeded RNG).
* :func:`predict`: probabilities (sigmoid / softmax) or de-standardised regression predictions.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.nn.param_groups import no_weight_decay_ids, param_groups
from medssl.nn.schedules import cosine_schedule

__all__ = ["FINETUNE_KINDS", "FINETUNE_MODES", "FinetuneModel", "encoder_layers", "find_block_list",
           "finetune_classifier", "layerwise_lr_groups", "predict"]

FINETUNE_MODES = ("full", "last_blocks")
FINETUNE_KINDS = ("binary", "multiclass", "multilabel", "regression")
_NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "sep_embed", "lead_embed")


def find_block_list(encoder: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name, container) of the encoder's block list (the rule in the module docstring).

    Raises ValueError when no container fits.
    """
    total = sum(p.numel() for p in encoder.parameters())
    for name, m in encoder.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) == 0:
            continue
        children = list(m.children())
        if len({type(c) for c in children}) != 1:
            continue
        if not all(any(True for _ in c.children()) and any(True for _ in c.parameters()) for c in children):
            continue
        if 2 * sum(p.numel() for p in m.parameters()) >= total:
            return name, m
    raise ValueError(f"{type(encoder).__name__}: no block list found (a ModuleList/Sequential of one block class "
                     f"holding at least half of the parameters)")


def encoder_layers(encoder: nn.Module) -> list[list[nn.Parameter]]:
    """The encoder's parameters in ``L + 2`` layers: [before the blocks, block 1, ..., block L,
    after the blocks] (registration order; see the module docstring for the block-list rule)."""
    _, blocks = find_block_list(encoder)
    block_of = {id(p): i for i, blk in enumerate(blocks.children()) for p in blk.parameters()}
    n = len(blocks)
    layers: list[list[nn.Parameter]] = [[] for _ in range(n + 2)]
    seen_block = False
    for p in encoder.parameters():
        if id(p) in block_of:
            seen_block = True
            layers[block_of[id(p)] + 1].append(p)
        else:
            layers[n + 1 if seen_block else 0].append(p)
    return layers


def _no_decay_ids(module: nn.Module) -> set[int]:
    return no_weight_decay_ids(module, _NO_DECAY_NAMES, match="suffix", norm_layers=True)


def layerwise_lr_groups(encoder: nn.Module, base_lr: float, decay: float, weight_decay: float, *,
                        head: nn.Module | None = None) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay (MAE's ``param_groups_lrd``).

    Layer ``i`` of :func:`encoder_layers` (0 = embedding, 1..L = blocks, L+1 = after the blocks)
    gets ``lr = base_lr * decay ** (L + 1 - i)``; ``head``'s parameters join layer L + 1
    (``base_lr``). Each layer gives up to two groups, with ``weight_decay`` and without (biases,
    1-D parameters, norm layers, position/lead/SEP/CLS/mask tokens). Frozen parameters
    (``requires_grad=False``) are left out. Group keys: ``params``, ``lr``, ``weight_decay``,
    ``lr_scale``, ``layer_id``.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"layer decay must be in (0, 1], got {decay!r}")
    layers = encoder_layers(encoder)
    if head is not None:
        layers[-1] = layers[-1] + list(head.parameters())
    top = len(layers) - 1  # L + 1
    no_decay = _no_decay_ids(encoder) | (_no_decay_ids(head) if head is not None else set())
    return param_groups(layers, weight_decay, no_decay=no_decay, lr=base_lr,
                        lr_scales=[decay ** (top - i) for i in range(len(layers))], layer_keys=True)


class FinetuneModel(nn.Module):
    """encoder (B, ...) -> (B, D) pooled embedding -> Linear head -> (B, n_out) logits
    (regression: standardised predictions; ``y_mean``/``y_std`` undo the standardisation)."""

    def __init__(self, encoder: nn.Module, n_out: int, kind: str):
        super().__init__()
        self.encoder = encoder
        self.kind = kind
        dim = int(encoder.spec.embed_dim) if hasattr(encoder, "spec") else int(encoder.embed_dim)
        self.head = nn.Linear(dim, n_out)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("y_mean", torch.zeros(n_out))
        self.register_buffer("y_std", torch.ones(n_out))
        self.train_losses: list[float] = []  # mean training loss of each epoch

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def _targets(train_y: np.ndarray, kind: str, n: int) -> tuple[Tensor, int]:
    y = np.asarray(train_y)
    if y.shape[0] != n:
        raise ValueError(f"train_y has {y.shape[0]} rows, train_x {n}")
    if kind == "multiclass":
        cls = y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64)
        n_out = y.shape[1] if y.ndim == 2 else int(cls.max()) + 1
        return torch.from_numpy(np.asarray(cls, dtype=np.int64)), n_out
    y = y.reshape(n, -1).astype(np.float32)
    return torch.from_numpy(y), y.shape[1]


def _set_trainable(model: FinetuneModel, mode: str, n_last: int) -> None:
    layers = encoder_layers(model.encoder)
    n_blocks = len(layers) - 2
    if mode == "full":
        keep = set(range(len(layers)))
    else:
        if isinstance(n_last, bool) or not isinstance(n_last, int) or not 0 <= n_last <= n_blocks:
            raise ValueError(f"n_last must be an int in [0, {n_blocks}] (the encoder's blocks), got {n_last!r}")
        keep = set(range(n_blocks + 1 - n_last, n_blocks + 2))
    for i, params in enumerate(layers):
        for p in params:
            p.requires_grad_(i in keep)


def _train_mode(model: FinetuneModel) -> None:
    model.train()
    for m in model.encoder.modules():
        own = list(m.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            m.eval()


def finetune_classifier(encoder: nn.Module, train_x, train_y, *, kind: str, epochs: int = 10, batch_size: int = 32,
                        base_lr: float = 1e-3, decay: float = 0.75, seed: int = 0, mode: str = "full",
                        n_last: int = 1, weight_decay: float = 0.05, warmup_fraction: float = 0.1) -> FinetuneModel:
    """Fine-tune a deep copy of ``encoder`` with a linear head; returns the model (eval mode;
    ``model.train_losses``: the mean training loss of each epoch).

    train_x: (N, n_leads, n_samples) float (preprocessed, e.g. the array cache's windows);
    train_y: binary/multilabel (N,) or (N, C) 0/1; multiclass (N, C) one-hot or (N,) class ids;
    regression (N,) or (N, T) float. ``epochs`` passes over shuffled batches of ``batch_size``
    (a size-1 tail batch joins the one before, for BatchNorm). See the module docstring.
    """
    if kind not in FINETUNE_KINDS:
        raise ValueError(f"kind must be one of {FINETUNE_KINDS}, got {kind!r}")
    if mode not in FINETUNE_MODES:
        raise ValueError(f"mode must be one of {FINETUNE_MODES}, got {mode!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    n = len(train_x)
    if n == 0:
        raise ValueError("no training rows")
    y, n_out = _targets(train_y, kind, n)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FinetuneModel(copy.deepcopy(encoder).cpu().float(), n_out, kind)
        if kind == "regression":
            mean, std = y.mean(dim=0), y.std(dim=0, unbiased=False)
            model.y_mean.copy_(mean)
            model.y_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
            y = (y - model.y_mean) / model.y_std
        _set_trainable(model, mode, n_last)
        groups = layerwise_lr_groups(model.encoder, base_lr, decay, weight_decay, head=model.head)
        opt = torch.optim.AdamW(groups, lr=base_lr, betas=(0.9, 0.999))
        starts = list(range(0, n, batch_size))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        bounds = [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]
        total = epochs * len(bounds)
        warmup = math.floor(warmup_fraction * total)
        gen = torch.Generator().manual_seed(seed)
        step = 0
        _train_mode(model)
        for _ in range(epochs):
            epoch_loss = 0.0
            order = torch.randperm(n, generator=gen).numpy()
            for s, e in bounds:
                idx = np.sort(order[s:e])
                xb = torch.from_numpy(np.array(train_x[idx], dtype=np.float32))
                factor = cosine_schedule(step, total, 1.0, warmup)
                for g in opt.param_groups:
                    g["lr"] = base_lr * g["lr_scale"] * factor
                out = model(xb)
                yb = y[idx]
                if kind == "multiclass":
                    loss = F.cross_entropy(out, yb)
                elif kind == "regression":
                    loss = F.mse_loss(out, yb)
                else:
                    loss = F.binary_cross_entropy_with_logits(out, yb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite fine-tuning loss at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                epoch_loss += float(loss.detach()) * (e - s)
            model.train_losses.append(epoch_loss / n)
    return model.eval()


@torch.no_grad()
def predict(model: FinetuneModel, x, batch_size: int = 64) -> np.ndarray:
    """Scores (N, n_out) float64 for inputs ``x`` (N, n_leads, n_samples): sigmoid probabilities
    (binary/multilabel), softmax probabilities (multiclass) or predictions in target units
    (regression)."""
    model.eval()
    out = []
    for s in range(0, len(x), batch_size):
        z = model(torch.from_numpy(np.array(x[s:s + batch_size], dtype=np.float32)))
        if model.kind == "multiclass":
            z = z.softmax(dim=1)
        elif model.kind == "regression":
            z = z * model.y_std + model.y_mean
        else:
            z = z.sigmoid()
        out.append(z.double().numpy())
    if not out:
        return np.zeros((0, model.head.out_features))
    return np.concatenate(out)
