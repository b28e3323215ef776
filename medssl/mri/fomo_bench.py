"""`medssl fomo bench CONFIG`: a `medssl bench` config over FOMO25 task datasets, run one task
dataset at a time with every encoder's input layer fitted to that task's sequences.

Why a wrapper: `medssl bench` checks each encoder against each dataset with the encoder's own
input channels, and an encoder has one channel list. The FOMO25 tasks read different sequences
(task 1: flair, adc, dwi_b1000, swi_or_t2s; task 2: flair, dwi_b1000, swi_or_t2s; task 3: t1, t2)
and a FOMO60K-pretrained encoder reads one channel, so no single encoder entry can read all three
datasets. For each dataset of the config (a FOMO task: `synthetic: {modality: mri, task: N}` or
a manifest whose rows carry `task`), the tasks on it are run with:

- `random:NAME[:SEED]` and registry-name encoders built with `overrides.channels` = the task's
  sequences (a random first layer of that width);
- a pretrained checkpoint loaded and adapted with `medssl.mri.encoders.adapt_input_channels`
  (a single-channel kernel W becomes W / C on each of the C sequences, so at the first layer the
  encoder sees the mean of the z-scored sequences: what it saw in pretraining, one sequence at
  a time), saved as an ordinary encoder checkpoint in `OUT/adapted/<encoder>__<dataset>/` whose
  card says so, and read from there. The adaptation is listed in `OUT/summary.json`.

Each dataset's results land in `OUT/<dataset>/` (results.json, results.csv, report.html, as
`medssl bench` writes them); `OUT/summary.json` gathers every run's aggregates, gaps, notes and
report paths. Rankings are per dataset (each report's own), not across the three tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medssl.mri.fomo_task import TASKS, parse_task


def _raw_config(config: str | Path | Mapping[str, Any]) -> tuple[dict, Path, str]:
    from medssl.bench.config import BenchConfigError

    if isinstance(config, Mapping):
        return dict(config), Path.cwd(), "<config>"
    path = Path(config)
    if not path.is_file():
        raise BenchConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BenchConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BenchConfigError(f"{path}: expected a mapping at the top level")
    return raw, path.resolve().parent, str(path)


def dataset_task(name: str, entry: Mapping[str, Any], base: Path, source: str) -> int:
    """The FOMO task number of a config dataset; ValueError if it is not a FOMO task dataset."""
    from medssl.data.manifest import read_manifest

    if "synthetic" in entry:
        s = entry["synthetic"] or {}
        if s.get("modality") != "mri" or str(s.get("task", "fomo60k")).lower() in ("fomo60k", "pretrain"):
            raise ValueError(f"{source}: datasets.{name}: not a FOMO task dataset (synthetic needs modality: mri "
                             f"and task: 1, 2 or 3)")
        return parse_task(s["task"]).number
    path = Path(str(entry.get("path", "")))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ValueError(f"{source}: datasets.{name}.path: {path} is not a manifest CSV of a FOMO task")
    tasks = {r.get("task", "") for r in read_manifest(path)}
    if len(tasks) != 1 or not next(iter(tasks)):
        raise ValueError(f"{source}: datasets.{name}: {path} holds tasks {sorted(tasks)}; expected one FOMO task")
    return parse_task(next(iter(tasks))).number


def adapt_encoder_entry(entry: Mapping[str, Any], task: int, base: Path, adapted_dir: Path) -> tuple[dict, str | None]:
    """(encoder entry reading task `task`'s sequences, how it was adapted or None)."""
    from medssl.checkpoint import load_encoder, save_checkpoint
    from medssl.engine.embed import parse_random_ref
    from medssl.mri.encoders import adapt_input_channels
    from medssl.registry import list_encoders

    channels = list(TASKS[task].inputs)
    entry = dict(entry)
    ref = str(entry["ref"])
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base / path
    if parse_random_ref(ref) is not None or (not path.exists() and ref in list_encoders()):
        entry["overrides"] = {**(entry.get("overrides") or {}), "channels": channels}
        return entry, None
    if not path.exists():
        return entry, None  # the bench names the bad ref
    if entry.get("overrides"):
        raise ValueError(f"encoder {entry['name']!r}: overrides apply to random:/registry refs, not to checkpoints")
    encoder = load_encoder(path)
    before = encoder.spec.input["channels"]
    adapt_input_channels(encoder, channels)
    if encoder.spec.input["channels"] == before:
        entry["ref"] = str(path)
        return entry, None
    note = encoder.spec.provenance.rsplit("; ", 1)[-1]
    folder = save_checkpoint(encoder, adapted_dir, recipe={"adapted_from": str(path), "input_adaptation": note})
    entry["ref"] = str(folder)
    return entry, note


def run_fomo_benchmark(config: str | Path | Mapping[str, Any], out_dir: str | Path, progress: bool = True) -> dict:
    """Run the config dataset by dataset (see the module docstring); returns the summary dict
    (also written to OUT/summary.json) with `paths`: dataset -> that run's paths."""
    import json

    from medssl.bench.inputs import file_slug, say
    from medssl.bench.runner import run_benchmark
    from medssl.io import atomic_write_text

    raw, base, source = _raw_config(config)
    out = Path(out_dir)
    datasets = raw.get("datasets") or {}
    tasks = raw.get("tasks") or []
    used = list(dict.fromkeys(str(t.get("dataset")) for t in tasks if isinstance(t, Mapping)))
    unknown = [d for d in used if d not in datasets]
    if unknown:
        raise ValueError(f"{source}: tasks name dataset(s) {', '.join(unknown)} not in datasets")
    summary: dict[str, Any] = {"config": raw, "runs": {}, "aggregates": [], "gaps": [], "notes": [], "errors": []}
    paths = {}
    for ds in used:
        number = dataset_task(ds, datasets[ds], base, source)
        entries, adaptations = [], {}
        for e in raw.get("encoders") or []:
            adapted, note = adapt_encoder_entry(e, number, base, out / "adapted" / f"{file_slug(e['name'])}__{ds}")
            entries.append(adapted)
            if note:
                adaptations[e["name"]] = note
        d = dict(datasets[ds])
        if "path" in d and not Path(d["path"]).is_absolute():
            d["path"] = str(base / d["path"])
        sub = {**raw, "encoders": entries, "datasets": {ds: d}, "tasks": [t for t in tasks if t.get("dataset") == ds]}
        if raw.get("cache_dir") and not Path(raw["cache_dir"]).is_absolute():
            sub["cache_dir"] = str(base / raw["cache_dir"])
        if raw.get("title"):
            sub["title"] = f"{raw['title']}: task {number} ({TASKS[number].name})"
        say(progress, f"FOMO task {number} ({TASKS[number].name}) on dataset {ds}: reading {', '.join(TASKS[number].inputs)}")
        doc = run_benchmark(sub, out / ds, progress=progress)
        paths[ds] = doc["paths"]
        summary["runs"][ds] = {"task": number, "sequences": list(TASKS[number].inputs),
                               "input_adaptations": adaptations, "timings_s": doc["timings_s"],
                               "paths": {k: str(v) for k, v in doc["paths"].items()}}
        for key in ("aggregates", "gaps", "errors"):
            summary[key] += doc[key]
        summary["notes"] += [f"{ds}: {n}" for n in doc["notes"]]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    summary["paths"] = paths
    return summary
