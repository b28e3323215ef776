"""Checkpoint folders: `model.safetensors` (weights) + `card.json` (the model card).

The card holds what is needed to rebuild the encoder from the folder alone and to judge it:
the encoder's spec (name, modality, input contract, hyper-parameters), the recipe as resolved,
package versions, a fingerprint of the training manifest, training metrics, and sections for
benchmark and privacy results filled in later. Weights are never pickled.

Beside them, `README.md` (a Hugging Face model card: YAML front matter with licence, tags,
datasets, metrics and model-index results from the card) and `config.json` (the encoder spec),
rewritten whenever the card changes (:mod:`medssl.hub`), so the folder is in the Hugging Face
layout as it stands; `load_encoder` also reads a folder that has only config.json + weights.
"""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from medssl.io import make_temp_dir, replace_folder, save_safetensors
from medssl.registry import EncoderSpec, encoder_entry
from medssl.registry import create_encoder as registry_create_encoder

CARD_SCHEMA_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, or does not match its card."""


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file. A file that is not one (truncated, a few bytes, a link to
    a text file, a pickle under that name) is a CheckpointError naming it, not a Rust traceback."""
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError (not an OSError)
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({detail})") from None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("medssl", "torch", "lightning", "numpy", "monai", "wfdb", "neurokit2", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_card(
    encoder: nn.Module,
    *,
    recipe: dict | None = None,
    data_fingerprint: str | None = None,
    metrics: dict | None = None,
) -> dict[str, Any]:
    spec: EncoderSpec = encoder.spec
    return {
        "schema_version": CARD_SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "encoder": spec.to_dict(),
        "recipe": recipe or {},
        "precision": ((recipe or {}).get("trainer") or {}).get("precision"),  # as trained, resolved
        "versions": package_versions(),
        "data": {"manifest_sha256": data_fingerprint},
        "training_metrics": metrics or {},
        "benchmarks": [],
        "privacy": [],
    }


def save_checkpoint(encoder: nn.Module, folder: str | Path, **card_fields: Any) -> Path:
    """Write `folder/model.safetensors` and `folder/card.json`, replacing the folder atomically.

    card_fields: recipe, data_fingerprint, metrics (see `build_card`).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    card = build_card(encoder, **card_fields)
    tmp = make_temp_dir(folder)
    try:
        # "_orig_mod." is how torch.compile'd submodules name their weights; the card's architecture does not.
        state = {k.replace("_orig_mod.", ""): v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
        save_safetensors(state, tmp / WEIGHTS_FILE, metadata={"format": "pt", "encoder": card["encoder"]["name"]})
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        from medssl.hub import write_hub_files

        write_hub_files(tmp, card)  # README.md (Hugging Face model card) + config.json
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_json_card(folder: str | Path, *, what: str = "checkpoint", missing: str = "model card missing",
                   card: str = "medssl model card") -> dict:
    """The ``card.json`` of a checkpoint folder as a dict (encoder and task checkpoints alike);
    CheckpointError naming the folder or file when it is absent or not a JSON object."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: {what} folder not found")
    if not card_path.is_file():
        raise CheckpointError(f"{card_path}: {missing}")
    try:
        found = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{card_path}: not a {card} (not JSON: {e})") from None
    if not isinstance(found, dict):
        raise CheckpointError(f"{card_path}: not a {card} (a JSON {type(found).__name__}, not an object)")
    return found


def read_card(folder: str | Path) -> dict[str, Any]:
    """The model card of an encoder checkpoint folder (:func:`read_json_card`, with an encoder)."""
    card = read_json_card(folder)
    try:
        card["encoder"]["name"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{Path(folder) / CARD_FILE}: not a medssl model card ({e})") from None
    return card


def update_card(folder: str | Path, section: str, entry: dict) -> None:
    """Append `entry` to a list section of the card ("benchmarks" or "privacy"), atomically, and
    rewrite README.md / config.json from it (:func:`medssl.hub.write_hub_files`)."""
    from medssl.hub import write_hub_files
    from medssl.io import atomic_write_json

    card = read_card(folder)
    card.setdefault(section, []).append(entry)
    atomic_write_json(Path(folder) / CARD_FILE, card)
    write_hub_files(folder, json.loads((Path(folder) / CARD_FILE).read_text()))


_IMPORTERS: dict[str, tuple[Callable[[Path], bool], Callable[[Path], nn.Module]]] = {}


def register_importer(name: str, claims: Callable[[Path], bool], load: Callable[[Path], nn.Module]) -> None:
    """Register a reader of a community checkpoint format: `claims(path)` says whether a path is
    in that format; `load(path)` returns the encoder, mapping keys explicitly."""
    _IMPORTERS[name] = (claims, load)


def _ensure_builtin_importers() -> None:
    from medssl.plugins import load_registrations

    load_registrations()  # the modalities' importers register themselves


def _encoder_spec_dict(folder: Path) -> dict[str, Any]:
    """The encoder spec of a checkpoint folder: card.json's, else a medssl config.json's."""
    from medssl.hub import CONFIG_FILE, LIBRARY

    config = folder / CONFIG_FILE
    if folder.is_dir() and not (folder / CARD_FILE).is_file() and config.is_file():
        try:
            cfg = json.loads(config.read_text())
            spec = cfg["encoder"] if cfg.get("library_name") == LIBRARY else None
            spec["name"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{config}: not a medssl config.json (library_name 'medssl' with an 'encoder' "
                                  f"spec; {type(e).__name__}: {e})") from None
        return spec
    return read_card(folder)["encoder"]


def create_encoder(name: str, pretrained: str | Path | None = None, **overrides: Any) -> nn.Module:
    """Build a registered encoder (:func:`medssl.registry.create_encoder`); with `pretrained` (a
    checkpoint folder), load its weights (``medssl.create_encoder``).

    When `pretrained` is given, the architecture comes from the checkpoint's card, and overrides
    must not change it.
    """
    if pretrained is None:
        return registry_create_encoder(name, **overrides)
    model = load_encoder(pretrained)
    if model.spec.name != name:
        raise ValueError(f"{pretrained}: checkpoint holds {model.spec.name!r}, not {name!r}")
    clash = {k: v for k, v in overrides.items() if model.spec.hparams.get(k) != v}
    if clash:
        raise ValueError(f"{pretrained}: overrides {clash} differ from the checkpoint's architecture")
    return model


def load_encoder(folder: str | Path, map_location: str = "cpu") -> nn.Module:
    """Rebuild the exact encoder of a checkpoint folder from its card, and load its weights.

    Every key must match: a missing or unexpected weight is an error, not a warning.
    A file instead of a folder goes to the importer that claims it (e.g. an ECG-JEPA release
    `.pth`), read with `torch.load(weights_only=True)`. A folder in the Hugging Face layout without
    card.json (`config.json` written by medssl + `model.safetensors`, e.g. from
    `huggingface_hub.snapshot_download`) is rebuilt from config.json's encoder spec; nothing is
    downloaded here.
    """
    folder = Path(folder)
    if folder.is_file():
        _ensure_builtin_importers()
        for claims, load in _IMPORTERS.values():
            if claims(folder):
                return load(folder)
        if folder.suffix in (".pt", ".pth", ".ckpt"):
            try:
                obj = torch.load(folder, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - a pickle with code in it, or not a torch file
                raise CheckpointError(f"{folder}: cannot be read as a tensor-only checkpoint "
                                      f"({type(e).__name__})") from None
            keys = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{folder}: holds tensors, but no importer ({', '.join(_IMPORTERS)}) recognises "
                                  f"its layout (top-level keys: {keys})")
        raise CheckpointError(f"{folder}: not a checkpoint folder, nor a file format medssl imports "
                              f"({', '.join(_IMPORTERS)})")
    spec = EncoderSpec.from_dict(_encoder_spec_dict(folder))
    model = encoder_entry(spec.name).factory(**spec.hparams)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing")
    state = read_safetensors(weights, device=map_location)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not match {spec.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=True)
    model.spec = spec
    return model.eval()


def parse_random_ref(ref: str) -> tuple[str, int] | None:
    """(encoder name, seed) of a `random:NAME[:SEED]` reference; None for any other reference."""
    if not ref.startswith("random:"):
        return None
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ValueError(f"{ref!r}: expected random:NAME or random:NAME:SEED")
    try:
        return parts[1], int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ValueError(f"{ref!r}: SEED must be an integer, got {parts[2]!r}") from None


def resolve_encoder_ref(ref: str | Path, overrides: Mapping[str, Any] | None = None,
                        base: Path | None = None) -> tuple[nn.Module, Path | None]:
    """The one reading of an encoder reference, for every command: (encoder in eval mode, the
    checkpoint path or None).

    ref: a checkpoint folder (or a file an importer claims: an imported release), relative paths
    tried under ``base`` first; ``random:NAME[:SEED]`` (random initialisation under SEED, default
    0: the control every comparison needs); or a registered encoder's name (untrained, seed 0).
    ``overrides`` (factory arguments) apply to the last two; with a checkpoint they are an error.
    """
    overrides = dict(overrides or {})
    text = str(ref)
    random_ref = parse_random_ref(text)
    if random_ref is not None:
        return clone_random_encoder(random_ref[0], seed=random_ref[1], **overrides), None
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute() and (base / path).exists():
        path = base / path
    if path.exists():
        if overrides:
            raise ValueError("overrides apply to random:/registry refs, not to checkpoints")
        return load_encoder(path), path
    from medssl.registry import list_encoders

    if text in list_encoders():
        return clone_random_encoder(text, seed=0, **overrides), None
    raise CheckpointError(f"{path}: checkpoint folder not found, and {text!r} is neither random:NAME[:SEED] nor a "
                          f"registered encoder (see `medssl encoders`)")


def clone_random_encoder(name: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """A randomly initialised registered encoder, reproducible under `seed` (the control arm)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return registry_create_encoder(name, **overrides).eval()
