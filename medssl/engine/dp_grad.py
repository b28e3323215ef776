"""Per-sample losses and gradients for DP-SGD (see :mod:`medssl.engine.dp`).

A method can be trained with DP-SGD when its batch loss is the mean of independent per-sample
losses: :class:`PerSampleLoss` says how to draw a step's masks for a batch and evaluate one
sample alone; :func:`per_sample_gradients` differentiates every sample's loss with respect to
the method's trainable parameters at once (`torch.func.vmap` over `grad`, through
`functional_call`: exact for any architecture, including decoders that fold leads into the
batch dimension), and :func:`dp_backward` hands them to Opacus's DPOptimizer as `p.grad_sample`.
:func:`per_sample_loss_of` refuses, with the reason, methods whose loss couples the samples of a
batch (contrastive losses) and layers that do (BatchNorm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["DPUnsupported", "PerSampleLoss", "dp_backward", "per_sample_gradients", "per_sample_loss_of",
           "register_per_sample_loss"]


class DPUnsupported(ValueError):
    """The recipe asks for DP-SGD with a method or setting it cannot be given for."""


@dataclass(frozen=True)
class PerSampleLoss:
    """How one sample's loss of a method is evaluated, for a method whose batch loss is the mean
    of independent per-sample losses.

    draw(method, batch_size, step, rank) -> tuple of tensors, each (B, ...): the step's random
    draws (masks), one row per sample, exactly those `forward(x, step=step, rank=rank)` would draw.
    kwargs(draws) -> forward kwargs for a batch of one, from one sample's rows (no batch dim).
    """

    draw: Callable[[nn.Module, int, int, int], tuple[Tensor, ...]]
    kwargs: Callable[[tuple[Tensor, ...]], dict]


_PER_SAMPLE: dict[type, PerSampleLoss] = {}

# Methods refused, by class name, and why (shown in the error).
_COUPLED = {
    "SimCLR": "its NT-Xent loss uses every other sample of the batch as a negative",
    "TS2Vec": "its hierarchical contrastive loss contrasts each sample with the others of the batch",
    "CoReECG": "its contrastive term uses the other samples of the batch as negatives",
}


def register_per_sample_loss(method_class: type, per_sample: PerSampleLoss) -> None:
    """Declare that `method_class`'s loss decomposes over samples, and how to evaluate one."""
    _PER_SAMPLE[method_class] = per_sample


def _builtin_per_sample_losses() -> None:
    from medssl.ssl.jepa import JEPA
    from medssl.ssl.mae import MaskedAutoencoder, PatchMask

    _PER_SAMPLE.setdefault(MaskedAutoencoder, PerSampleLoss(
        draw=lambda m, b, step, rank: tuple(m.sample_mask(b, step, rank)),
        kwargs=lambda d: {"mask": PatchMask(*(t.unsqueeze(0) for t in d))},
    ))
    _PER_SAMPLE.setdefault(JEPA, PerSampleLoss(
        draw=lambda m, b, step, rank: tuple(m.sample_masks(b, step, rank)),
        kwargs=lambda d: {"masks": tuple(t.unsqueeze(0) for t in d)},
    ))


def per_sample_loss_of(method: nn.Module, name: str | None = None) -> PerSampleLoss:
    """The per-sample evaluation of `method`, or DPUnsupported saying why DP-SGD cannot train it."""
    _builtin_per_sample_losses()
    name = name or type(method).__name__
    supported = ", ".join(sorted(c.__name__ for c in _PER_SAMPLE))
    norms = sorted({n for n, m in method.named_modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters())})
    for cls in type(method).__mro__:
        if cls in _PER_SAMPLE:
            if norms:
                raise DPUnsupported(
                    f"DP-SGD cannot train method {name!r}: BatchNorm layers ({', '.join(norms[:3])}) mix the "
                    "samples of a batch, so per-sample gradients are undefined; Opacus's ModuleValidator.fix "
                    "would replace them with GroupNorm, but the checkpoint would then not match its registered "
                    "encoder. Use an encoder without BatchNorm.")
            return _PER_SAMPLE[cls]
    why = _COUPLED.get(type(method).__name__, "it does not declare a per-sample loss (register_per_sample_loss)")
    raise DPUnsupported(
        f"DP-SGD cannot train method {name!r} ({type(method).__name__}): {why}, so one sample's gradient "
        "depends on the rest of the batch and clipping it does not bound one subject's influence; the "
        "DP-SGD guarantee would not hold. DP-SGD supports methods whose loss is a mean of independent "
        f"per-sample losses: mae_ecg and ecg_jepa ({supported}).")


def _math_attention():
    """SDPA's math kernel: batched by vmap, where the fused kernels fall back to a per-sample loop."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def per_sample_gradients(method: nn.Module, x: Tensor, draws: tuple[Tensor, ...], per_sample: PerSampleLoss,
                         names: Sequence[str]) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients of each sample's own loss: ({name: (B, *param.shape)}, losses (B,)).

    x: (B, ...) inputs; draws: the step's per-sample draws (B, ...); names: the trainable
    parameters to differentiate (the others, and buffers, are constants).
    """
    from torch.func import functional_call, grad, vmap

    named = dict(method.named_parameters())
    params = {n: named[n].detach() for n in names}

    def loss_one(p: dict[str, Tensor], xi: Tensor, di: tuple[Tensor, ...]):
        loss = functional_call(method, p, (xi.unsqueeze(0),), per_sample.kwargs(di))
        return loss, loss.detach()

    with _math_attention():
        grads, losses = vmap(grad(loss_one, has_aux=True), in_dims=(None, 0, 0), randomness="different")(
            params, x, draws)
    return grads, losses


def dp_backward(method: nn.Module, x: Tensor, optimizer, per_sample: PerSampleLoss, *, step: int, rank: int = 0,
                max_physical_batch_size: int | None = None) -> Tensor:
    """Give Opacus's `optimizer` (a DPOptimizer over `method`'s trainable parameters) the
    per-sample gradients of batch x; `optimizer.step()` then clips, sums, noises and steps.

    With `max_physical_batch_size`, all chunks but the last are clipped and accumulated at once
    (`clip_and_accumulate`, Opacus's virtual steps); the last is left in `p.grad_sample` for the
    step. An empty batch (Poisson sampling) gives empty per-sample gradients: a noise-only step.
    Returns the per-sample losses (B,), detached.
    """
    ids = {id(p): n for n, p in method.named_parameters()}
    params = [p for p in optimizer.params]
    missing = [p for p in params if id(p) not in ids]
    if missing:
        raise ValueError("the optimiser holds parameters that are not the method's")
    names = [ids[id(p)] for p in params]
    b = x.shape[0]
    if b == 0:
        for p in params:
            p.grad_sample = p.new_zeros((0, *p.shape))
        return x.new_zeros(0)
    draws = tuple(d.to(x.device) for d in per_sample.draw(method, b, step, rank))
    chunk = max_physical_batch_size or b
    losses = []
    for start in range(0, b, chunk):
        end = min(start + chunk, b)
        grads, loss = per_sample_gradients(method, x[start:end], tuple(d[start:end] for d in draws), per_sample, names)
        for n, p in zip(names, params):
            p.grad_sample = grads[n]
        losses.append(loss)
        if end < b:
            optimizer.clip_and_accumulate()
            for p in params:
                p.grad_sample = None
    return torch.cat(losses)
