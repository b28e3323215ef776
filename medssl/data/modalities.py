"""What each modality tells the engine, the benchmark and the audit: the data hooks of its plug-in.

A modality (ecg, mri, retina, ct, or a third party's) declares one :class:`medssl.plugins.Modality`
in its package. Pretraining, embedding, fine-tuning, segmentation and membership scoring all go
through its hooks (:func:`modality_data`), so none of them imports a modality package by name.

Contracts (shapes in the encoder's input layout, float32):
  inputs(rows, spec_input, data_cfg, cache_root) -> ArrayCache
      model-ready arrays (N_items, *input_shape) for an encoder's input contract (`EncoderSpec.input`),
      from the preprocessed cache; `.rows` has one manifest row per item (ECG: one per window),
      `.skipped` lists (path, reason) of records that could not be used. data_cfg carries the
      recipe's optional preprocessing settings (the `data` section).
  masks(rows, spec_input, data_cfg, cache_root) -> ArrayCache                      (optional)
      segmentation targets (N_items, 1, *spatial) in {0, 1}, item for item aligned with `inputs`
      of the same rows (same geometry, nearest-neighbour resampling), read from each row's
      `mask_path`. Set for modalities with segmentation tasks.
  contract_problems(spec_input, rows) -> list[str]                                  (optional)
      what the rows lack for the encoder (missing leads, channels, too coarse spacing, rows of
      another modality...), each problem one short phrase; empty when the encoder can read them.
      Raises ValueError naming the record for a value no real record has (an ECG at 7 Hz).
      Every command applies it through :func:`usable_records`, record by record.
  write_synthetic(folder, **params) -> (rows, skipped)                              (optional)
      write a synthetic dataset with ground truth to `folder` and index it; used by
      `medssl bench` datasets given as `{synthetic: {modality: NAME, ...}}`.
  native(rows, spec_input, data_cfg, shape=None) -> NativeImages                    (optional)
      2-D segmentation at the images' own resolution: per row with a mask, the model-ready image
      (C, H, W) float32 (channels and normalisation as `inputs`, but not resized), its mask
      (1, H, W) in {0, 1} and its field-of-view mask (H, W) bool or None (from `fov_path`); with
      `shape` (h, w), all three resized to it (bilinear / nearest). Used by the benchmark to
      segment large images in tiles (medssl.bench.tiling) and to score inside the field of view.
  fit_encoder(encoder, rows) -> (encoder, note or None)                              (optional)
      adapt (a private copy of) an encoder to what the rows hold, explicitly, e.g. a single-
      channel MRI encoder's first layer to a task's sequences; the note says what was done and
      goes into the benchmark report. None: the encoder is used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.cache import ArrayCache
from medssl.plugins import Modality, get_modality


@dataclass
class NativeImages:
    """Images at their own resolution (sizes may differ between records), item for item aligned:
    images (C, H_i, W_i) float32, masks (1, H_i, W_i) float32 in {0, 1}, fovs (H_i, W_i) bool or
    None, rows (the manifest row of each), skipped (path, reason) of rows that could not be read."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    fovs: list[np.ndarray | None]
    rows: list[dict]
    skipped: list[tuple[str, str]]


def modality_data(name: str) -> Modality:
    """The plug-in (data hooks) of modality `name` (:func:`medssl.plugins.get_modality`)."""
    return get_modality(name)


def encoder_inputs(rows: Sequence[dict], spec, data_cfg: Mapping[str, Any] | None = None,
                   cache_root: str | Path | None = None) -> ArrayCache:
    """Model-ready arrays of `rows` for an encoder with spec `spec` (an `EncoderSpec`)."""
    return modality_data(spec.modality).inputs(rows, spec.input, data_cfg or {}, cache_root)


def segmentation_masks(rows: Sequence[dict], spec, data_cfg: Mapping[str, Any] | None = None,
                       cache_root: str | Path | None = None) -> ArrayCache:
    """Segmentation targets of `rows`, aligned with :func:`encoder_inputs` of the same rows."""
    hooks = modality_data(spec.modality)
    if hooks.masks is None:
        raise ValueError(f"modality {spec.modality!r} has no segmentation targets")
    return hooks.masks(rows, spec.input, data_cfg or {}, cache_root)


def usable_records(spec, rows: Sequence[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """One policy for every command (embed, bench): the rows an encoder with spec `spec` can read,
    and the (path, reason) of those it cannot, by its modality's `contract_problems` hook applied
    record by record. Records that break the contract are skipped and listed, and the run goes on
    with the others; whether they are enough for a task is judged where they are used (e.g. the
    benchmark's few-shot draws skip a k larger than a class's training subjects, with a note).

    Raises ValueError: naming the record, for an implausible value (the hook's own error); or, when
    no row fits, with the dataset-level problems in one line (e.g. a retina encoder on an ECG
    manifest: "records: 39 of 39 rows are not 2-D image files").
    """
    hook = modality_data(spec.modality).contract_problems
    rows = list(rows)
    problems = hook(spec.input, rows) if hook is not None and rows else []
    if not problems:
        return rows, []
    kept, skipped = [], []
    for row in rows:
        own = hook(spec.input, [row])
        if own:
            skipped.append((str(row.get("path") or row.get("record_id", "?")), "; ".join(own)))
        else:
            kept.append(row)
    if not kept:
        raise ValueError("; ".join(problems))
    return kept, skipped
