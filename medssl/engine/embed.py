"""Embeddings of a frozen encoder: the input of probes, k-NN and membership attacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medssl.checkpoint import resolve_encoder_ref
from medssl.engine.hardware import autocast_context, resolve_inference_precision


def resolve_encoder(ref: str | Path) -> tuple[nn.Module, str]:
    """An encoder from a reference (:func:`medssl.checkpoint.resolve_encoder_ref`: a checkpoint
    folder, `random:NAME[:SEED]` or a registry name). Returns (encoder in eval mode, a display
    name: the folder's name, else the reference)."""
    encoder, path = resolve_encoder_ref(ref)
    return encoder, path.name if path is not None else str(ref)


EMBEDDING_KEYS = ("embeddings", "record_id", "subject_id")


def write_embeddings(path: str | Path, embeddings: np.ndarray, rows, precision: str, **extra) -> Path:
    """Write an embeddings file atomically (one writer for `medssl embed` and `medssl bench`): a
    ``.npz`` with ``embeddings`` (N, D), the ``record_id`` and ``subject_id`` (N,) of ``rows``
    (manifest rows aligned with the embeddings), ``precision`` ("32" | "bf16") and any ``extra``
    arrays (the benchmark's cache ``fingerprint``). Returns the path."""
    from medssl.io import atomic_write

    rows = list(rows)
    if len(rows) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings for {len(rows)} rows")
    data = {"embeddings": embeddings, "record_id": np.array([r["record_id"] for r in rows]),
            "subject_id": np.array([r["subject_id"] for r in rows]), "precision": np.array(str(precision)),
            **{k: np.array(v) for k, v in extra.items()}}

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez(f, **data)

    return atomic_write(path, write)


@torch.no_grad()
def embed_arrays(encoder: nn.Module, arrays: np.ndarray, batch_size: int = 64, device: str = "cpu",
                 precision: str | None = None) -> np.ndarray:
    """Pooled embeddings (N, D) float32 of inputs (N, ...) with the encoder in eval mode.

    ``precision`` "32" or "bf16" (bf16 autocast; outputs cast back to float32); None takes the
    device's default (:func:`medssl.engine.hardware.default_precision`: fp32 on a CPU). Callers
    that write embeddings record the precision, resolved with ``resolve_inference_precision``.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size}")
    precision = resolve_inference_precision(precision, device)
    encoder = encoder.eval().to(device)
    out = []
    from medssl.progress import progress

    for start in progress(range(0, len(arrays), batch_size), desc=f"embed {len(arrays)} items", unit="batch"):
        # A copy: `arrays` is often a read-only memory map, which torch.from_numpy warns about.
        x = torch.from_numpy(np.array(arrays[start:start + batch_size], dtype=np.float32)).to(device)
        with autocast_context(torch.device(device).type, precision):
            out.append(encoder(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, encoder.spec.embed_dim), dtype=np.float32)
    return np.concatenate(out)
