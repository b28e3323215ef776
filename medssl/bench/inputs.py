"""What a benchmark reads: datasets, encoders, their input contracts, and embeddings cached once.

Every modality goes through its data hooks (:mod:`medssl.data.modalities`): the hooks turn
manifest rows into model-ready arrays for an encoder's input contract and say what rows lack.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medssl.bench.config import BenchConfig, BenchConfigError, EncoderEntry
from medssl.bench.report import _jsonable

EMBED_CHUNK = 2048  # items embedded between two saves of a resumable extraction


class ContractError(BenchConfigError):
    """An encoder's input contract does not fit a dataset."""


def say(progress: bool, msg: str) -> None:
    """A stage line of the benchmark, logged at INFO on ``medssl.bench`` (``medssl bench`` shows
    them unless -q; in a notebook, ``logging.basicConfig(level=logging.INFO)``)."""
    if progress:
        import logging

        logging.getLogger("medssl.bench").info("[bench] %s", msg)


def check_contract(spec_input: Mapping, rows: list[dict], *, encoder: str, dataset: str, source: str = "",
                   modality: str = "ecg") -> tuple[list[dict], list[tuple[str, str]]]:
    """(usable rows, (path, reason) of the rows skipped) under the policy of
    :func:`medssl.data.modalities.usable_records`: the modality's ``contract_problems`` hook (ECG:
    leads, sampling rate, record length; images: channels/sequences, spacing; rows of another
    modality) record by record. Raises :class:`ContractError` (one line) when no row fits, or for
    an implausible value (naming the record)."""
    from types import SimpleNamespace

    from medssl.data.modalities import usable_records

    try:
        return usable_records(SimpleNamespace(input=spec_input, modality=modality), rows)
    except ValueError as e:
        prefix = f"{source}: " if source else ""
        raise ContractError(f"{prefix}encoder {encoder!r} cannot read dataset {dataset!r}: {e}") from None


def fit_encoder(model, rows: list[dict], encoder: str, dataset: str, notes: list[str]):
    """The encoder as it reads ``dataset``: the modality's ``fit_encoder`` hook may adapt a copy to
    the rows (e.g. an MRI encoder's input layer to a task's sequences); the change goes to the notes."""
    import copy

    from medssl.data.modalities import modality_data

    hook = modality_data(model.spec.modality).fit_encoder
    if hook is None:
        return model
    adapted, note = hook(copy.deepcopy(model), rows)
    if note:
        notes.append(f"{encoder} on {dataset}: {note}")
    return adapted


def skipped_entries(pairs, *, dataset: str, encoder: str | None, stage: str) -> list[dict]:
    """results.json ``skipped`` entries of (path, reason) pairs: {"dataset", "encoder" (None: every
    encoder), "stage" ("index" | "contract" | "preprocess" | "mask"), "record" (its path), "reason"}."""
    return [{"dataset": dataset, "encoder": encoder, "stage": stage, "record": str(path),
             "reason": str(reason).removeprefix(f"{path}: ")} for path, reason in pairs]


def load_dataset(cfg: BenchConfig, name: str, out: Path, notes: list[str],
                 skipped_out: list[dict] | None = None) -> tuple[list[dict], str]:
    """(manifest rows, a description of the source) of dataset ``name``; a synthetic dataset is
    written to ``out/data/<name>/`` once and reused while its settings are unchanged. Records
    skipped while indexing go to ``skipped_out`` (:func:`skipped_entries`)."""
    from medssl.data.layouts import index_layout
    from medssl.data.manifest import read_manifest

    entry = cfg.datasets[name]
    where = f"{cfg.source}: datasets.{name}"
    if entry.stream is not None:  # shards: their rows (record_id, subject_id, site, split, labels)
        from medssl.data.stream import open_stream

        try:
            rows, skipped, source = open_stream(entry.stream).records(), [], f"shards {entry.stream}"
        except (ValueError, OSError) as e:
            raise BenchConfigError(f"{where}.stream: {e}") from None
    elif entry.synthetic is not None:
        from medssl.data.modalities import modality_data
        from medssl.io import atomic_write_json

        params = dict(entry.synthetic)
        modality = params.pop("modality", "ecg")
        try:
            writer = modality_data(modality).write_synthetic
        except ValueError as e:
            raise BenchConfigError(f"{where}.synthetic.modality: {e}") from None
        if writer is None:
            raise BenchConfigError(f"{where}.synthetic: modality {modality!r} has no synthetic data")
        accepted = inspect.signature(writer).parameters
        unknown = [k for k in params if k not in accepted]
        if unknown:
            known = [k for k in accepted if k != "folder"]
            raise BenchConfigError(f"{where}.synthetic: unknown setting(s) {', '.join(unknown)} for modality "
                                   f"{modality}; known: {', '.join(known)}")
        folder = out / "data" / name
        stamp = folder / "synthetic.json"
        if stamp.is_file() and json.loads(stamp.read_text()) != entry.synthetic:
            raise BenchConfigError(f"{where}: {folder} holds a synthetic dataset made with other settings; "
                                   f"choose a new output folder")
        rows, skipped = writer(folder, **params)
        atomic_write_json(stamp, entry.synthetic)
        settings = ", ".join(f"{k} {v}" for k, v in params.items())
        source = f"synthetic {modality} data ({settings})"
    else:
        p = entry.path
        if p.is_dir():
            labels = p / "labels.csv"
            rows, skipped = index_layout("wfdb", p, labels=str(labels) if labels.is_file() else None)
        elif p.is_file():
            rows, skipped = read_manifest(p), []
        else:
            raise BenchConfigError(f"{where}.path: {p} not found")
        source = str(p)
    if skipped:
        notes.append(f"dataset {name}: {len(skipped)} record(s) skipped while indexing (listed under skipped)")
        if skipped_out is not None:
            skipped_out += skipped_entries(skipped, dataset=name, encoder=None, stage="index")
    if not rows:
        raise BenchConfigError(f"{where}: no usable records")
    return rows, source


def build_encoder(cfg: BenchConfig, e: EncoderEntry):
    """(encoder in eval mode, checkpoint path or None) of a config entry
    (:func:`medssl.checkpoint.resolve_encoder_ref`, relative paths under the config's folder)."""
    from medssl.checkpoint import resolve_encoder_ref

    try:
        return resolve_encoder_ref(e.ref, e.overrides, base=cfg.base)
    except (ValueError, TypeError, KeyError, OSError) as ex:
        msg = str(ex.args[0]) if isinstance(ex, KeyError) and ex.args else str(ex)
        where = f"{cfg.source}: encoder {e.name!r}"
        raise BenchConfigError(f"{where}: {msg.splitlines()[0] if msg else type(ex).__name__}") from None


def file_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "encoder"


def model_inputs(cfg: BenchConfig, model, rows: list[dict], dataset: str):
    """The preprocessed-array cache of ``rows`` for ``model``'s input contract (an ArrayCache),
    with the dataset's ``data`` settings; for a ``stream`` dataset, the shards' items of ``rows``
    (a :class:`medssl.data.stream.StreamInputs`, the same fields), refused with a
    :class:`ContractError` unless written with that contract and preprocessing."""
    entry = cfg.datasets[dataset]
    if entry.stream is not None:
        from medssl.data.stream import stream_inputs

        try:
            got = stream_inputs(entry.stream, model.spec, entry.data)
        except (ValueError, OSError) as e:
            raise ContractError(f"{cfg.source}: datasets.{dataset}.stream: {e}") from None
        return got.subset(r["record_id"] for r in rows)
    from medssl.data.modalities import encoder_inputs

    return encoder_inputs(rows, model.spec, entry.data, cache_root=cfg.cache_dir)


def embed_dataset(cfg: BenchConfig, e: EncoderEntry, model, ckpt: Path | None, ds: str, rows: list[dict], out: Path,
                  progress: bool, notes: list[str], skipped_out: list[dict] | None = None) -> dict[str, np.ndarray]:
    """{"embeddings" (N, D), "record_id", "subject_id"} of ``model`` on dataset ``ds``, cached in
    ``out/embeddings/<encoder>__<dataset>.npz`` under a fingerprint of the encoder reference,
    architecture, weight files, the preprocessed data and the precision; a stale file is recomputed. Extraction
    saves every ``EMBED_CHUNK`` items (``<file>.<fingerprint>.parts/``), so an interrupted run
    resumes from the last finished chunk."""
    from medssl.engine.embed import embed_arrays, write_embeddings
    from medssl.io import atomic_write

    spec = model.spec
    cache = model_inputs(cfg, model, rows, ds)
    if skipped_out is not None:  # listed whether the embeddings are computed or reused
        skipped_out += skipped_entries(cache.skipped, dataset=ds, encoder=e.name, stage="preprocess")
    stamp = ""
    if ckpt is not None:
        files = [ckpt] if ckpt.is_file() else sorted(q for q in ckpt.iterdir() if q.is_file())
        stamp = "|".join(f"{q.name}:{q.stat().st_size}:{q.stat().st_mtime_ns}" for q in files)
    fingerprint = hashlib.sha256(json.dumps(
        {"ref": e.ref, "overrides": e.overrides, "spec": _jsonable(spec.to_dict()), "weights": stamp,
         "data": getattr(cache, "data_id", None) or cache.folder.name,  # a stream's: shard key + items
         "precision": cfg.precision}, sort_keys=True, default=str).encode()).hexdigest()
    path = out / "embeddings" / f"{file_slug(e.name)}__{file_slug(ds)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fingerprint:
                say(progress, f"reusing {path.name}")
                return {k: z[k] for k in ("embeddings", "record_id", "subject_id")}
        notes.append(f"{path.name}: encoder or data changed since it was written; embedded again")
    say(progress, f"embedding {ds} ({len(rows)} records) with {e.name}")
    if cache.skipped:
        notes.append(f"{e.name} on {ds}: {len(cache.skipped)} record(s) could not be preprocessed and are left out "
                     f"(listed under skipped)")
    # Chunks are kept as they finish, so an interrupted extraction resumes where it stopped.
    parts = path.with_name(path.name + f".{fingerprint[:12]}.parts")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = []
    for n, start in enumerate(range(0, len(cache.signals), EMBED_CHUNK)):
        part = parts / f"{n:06d}.npy"
        if not part.is_file():
            chunk = embed_arrays(model, cache.signals[start:start + EMBED_CHUNK], precision=cfg.precision)
            atomic_write(part, lambda tmp, c=chunk: np.save(tmp.open("wb"), c))
        chunks.append(np.load(part))
    emb = np.concatenate(chunks) if chunks else embed_arrays(model, cache.signals, precision=cfg.precision)
    write_embeddings(path, emb, cache.rows, cfg.precision, fingerprint=fingerprint)
    shutil.rmtree(parts, ignore_errors=True)
    return {"embeddings": emb, "record_id": np.array([r["record_id"] for r in cache.rows]),
            "subject_id": np.array([r["subject_id"] for r in cache.rows])}
