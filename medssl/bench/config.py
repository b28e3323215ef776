"""The configuration of ``medssl bench CONFIG.yaml``: encoders x datasets x tasks x protocols.

Schema (every key not listed is an error naming it; every error message starts with the config
path, or ``<config>`` for a dict)::

    title: "My benchmark"                 # optional, report title
    n_bootstrap: 1000                     # optional (default 1000): subject-bootstrap replicates
    cache_dir: null                       # optional: preprocessed-array cache (default $MEDSSL_CACHE)
    precision: null                       # optional: "32" or "bf16", the precision of frozen-encoder
                                          # features (default: fp32 on a CPU, bf16 on a bf16 CUDA
                                          # card; `medssl bench --precision` overrides it);
                                          # trained protocols (finetune, segmentation) run in fp32
    encoders:                             # >= 1; the first is the reference of comparisons
      - name: jepa                        # display name (unique)
        ref: runs/jepa/checkpoint         # a checkpoint folder (or file an importer claims),
                                          # random:NAME[:SEED] (random initialisation), or a
                                          # registry name (built untrained, seed 0: pretraining-free)
        overrides: {depth: 1}             # optional, random:/registry refs only: factory arguments
        decoder: pyramid                  # optional: this encoder's segmentation decoder, in place
                                          # of the protocol's (a U-Net arm beside ViT arms)
        encoder_lr_scale: 1.0             # optional: its encoder's learning-rate scale in segmentation
                                          # fine-tuning, in place of the protocol's (a network
                                          # trained from scratch beside pretrained encoders)
    datasets:                             # name -> one source
      cohort: {path: data/manifest.csv}   # a manifest CSV, or a folder of WFDB records (+ labels.csv)
      demo: {synthetic: {subjects_per_site: 200, seed: 0}}   # the two-site synthetic ECG cohort,
                                          # written to OUT/data/<name>/ (reused when present);
                                          # `modality: mri|retina|ct` + that modality's settings
                                          # (its Modality.write_synthetic) for the others;
                                          # optional `data: {shape: [96, 96, 96]}`: preprocessing
                                          # settings for the modality's inputs (e.g. evaluate a
                                          # U-Net on whole volumes rather than its training patch)
      shards: {stream: s3://bucket/ptbxl-ecg-jepa}   # or: shards of `medssl data cache --format
                                          # stream` (folder or URL), read in shard order; rows
                                          # hold record_id, subject_id, site, split, labels only;
                                          # refused unless written with the preprocessing the
                                          # encoders read under this entry's `data` settings
    tasks:
      - name: conditions
        dataset: demo
        kind: multilabel                  # binary | multiclass | multilabel | regression | segmentation
        labels: [NORM, MI, STTC]          # classification: class names in the manifest `labels`
                                          # column (";"-joined). binary: one name (present or not);
                                          # multiclass: rows with not exactly one of them are dropped
        column: age                       # regression only: numeric manifest column (rows without
                                          # a number are dropped)
        metrics: [auroc_macro, auprc]     # optional; classification: auroc_macro, auprc, f1_macro,
                                          # balanced_accuracy (default [auroc_macro]);
                                          # regression: mae, pearson_r (default both);
                                          # segmentation: dice, nsd, hd95, iou (the default),
                                          # sensitivity, specificity, auroc (pixel level); masks
                                          # from the manifest's mask_path column, scored inside
                                          # its fov_path when given, NSD at `tolerance_mm: 1.0`)
        train: {site: site_a, split: train}          # row filter: column -> value or list of values
        eval: {in: {site: site_a, split: test}, out: {site: site_b}}   # domain -> row filter; the
                                          # first domain is the reference of the in - out gaps
    protocols:
      - kind: linear_probe                # linear_probe | knn | finetune | segmentation
        name: linear_probe                # optional display name (default: kind; must be unique)
        shots: [1, 5, 10, 50, all]        # k labelled subjects per class ...
        # label_fractions: [0.01, 0.1, 1.0]   # ... or a fraction of training subjects (one of the two)
        seeds: 5                          # an int n (seeds 0..n-1) or a list of ints
        k: 10                             # knn only: neighbours (default 10)
      - kind: finetune                    # end-to-end fine-tuning, linear head, layer-wise lr decay
        shots: [all]                      # (medssl.bench.finetune); the keys below are finetune-only
        seeds: 1
        epochs: 10                        # passes over the drawn training records (default 10)
        lr: 0.001                         # AdamW base learning rate of the head and last block (1e-3)
        layer_decay: 0.75                 # lr x layer_decay per layer below the top (0.75)
        mode: full                        # full | last_blocks (only the last n_last blocks + head)
        # n_last: 1                       # mode last_blocks only: trainable blocks (default 1)
        batch_size: 32                    # (default 32)
      - kind: segmentation                # segmentation tasks only (the others skip segmentation
        label_fractions: [0.1, 1.0]       # tasks): encoder feature maps + U-Net-style decoder
        seeds: 3                          # (medssl.bench.segmentation), Dice + BCE
        mode: frozen                      # frozen (decoder only) | finetune (encoder too)
        epochs: 20                        # (default 20); min_steps (0: at least this many steps,
                                          # for draws of a few images); lr (1e-3), batch_size (8),
                                          # encoder_lr_scale (0.1, finetune), width (32),
                                          # decoder: pyramid (U-Net-style, any encoder) or
                                          # mask_decoder (prompt-free, ViT encoders) or
                                          # swin_unetr (MONAI SwinUNETR, CT Swin encoders)

Filters compare manifest values as strings. Relative dataset paths are relative to the config
file's folder (the current folder for a dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medssl.bench.column_metrics import default_metrics, metrics_for
from medssl.engine.config import ConfigError

__all__ = [
    "BenchConfigError", "EncoderEntry", "DatasetEntry", "TaskEntry", "ProtocolEntry", "BenchConfig",
    "load_bench_config", "TASK_KINDS", "PROTOCOL_KINDS",
]

TASK_KINDS = ("binary", "multiclass", "multilabel", "regression", "segmentation")
PROTOCOL_KINDS = ("linear_probe", "knn", "finetune", "segmentation")
_FINETUNE_KEYS = ("epochs", "lr", "layer_decay", "mode", "n_last", "batch_size")
_SEGMENTATION_KEYS = ("epochs", "min_steps", "lr", "mode", "batch_size", "encoder_lr_scale", "width", "decoder")
_TRAINING_KEYS = tuple(dict.fromkeys(_FINETUNE_KEYS + _SEGMENTATION_KEYS))
_TOP = ("title", "n_bootstrap", "cache_dir", "precision", "encoders", "datasets", "tasks", "protocols")


class BenchConfigError(ConfigError):
    """A benchmark configuration is invalid; the message starts with the config path."""


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str):
        raise BenchConfigError(f"{self.source}: {where + ': ' if where else ''}{msg}")

    def mapping(self, value, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, Mapping):
            self.fail(where, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                self.fail(where, f"unknown key {str(key)!r}; known: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                self.fail(where, f"missing key {key!r}")
        return dict(value)

    def name(self, value, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def int_(self, value, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, f"expected an integer >= {minimum}, got {value!r}")
        return int(value)

    def list_(self, value, where: str) -> list:
        if not isinstance(value, list) or not value:
            self.fail(where, f"expected a non-empty list, got {value!r}")
        return value

    def filter_(self, value, where: str) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping) or not value:
            self.fail(where, f"expected a non-empty mapping column -> value(s), got {value!r}")
        out = {}
        for col, v in value.items():
            vals = v if isinstance(v, list) else [v]
            if not vals or any(isinstance(x, (dict, list)) or x is None for x in vals):
                self.fail(f"{where}.{col}", f"expected a value or a list of values, got {v!r}")
            out[str(col)] = tuple(str(x) for x in vals)
        return out


@dataclass(frozen=True)
class EncoderEntry:
    name: str
    ref: str
    overrides: dict = field(default_factory=dict)
    decoder: str | None = None  # segmentation decoder in place of the protocol's
    encoder_lr_scale: float | None = None  # segmentation fine-tuning's encoder lr scale, in place of the protocol's

    @classmethod
    def from_dict(cls, e, where: str, c: _Checker) -> EncoderEntry:
        e = c.mapping(e, where, ("name", "ref", "overrides", "decoder", "encoder_lr_scale"), required=("name", "ref"))
        ref = c.name(e["ref"], f"{where}.ref")
        overrides = e.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            c.fail(f"{where}.overrides", "expected a mapping of factory arguments")
        decoder = c.name(e["decoder"], f"{where}.decoder") if e.get("decoder") is not None else None
        scale = _positive(c, e, where, "encoder_lr_scale", None) if e.get("encoder_lr_scale") is not None else None
        return cls(c.name(e["name"], f"{where}.name"), ref, dict(overrides), decoder, scale)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path | None = None  # manifest CSV or WFDB folder
    stream: str | None = None  # a folder or object-store URL of streaming shards (medssl.data.stream)
    synthetic: dict | None = None  # {"modality": str, **settings of the modality's write_synthetic}
    data: dict = field(default_factory=dict)  # preprocessing settings for the modality's inputs hook

    @classmethod
    def from_dict(cls, name: str, d, c: _Checker, base: Path) -> DatasetEntry:
        where = f"datasets.{name}"
        d = c.mapping(d, where, ("path", "synthetic", "stream", "data"))
        data = d.get("data") or {}
        if not isinstance(data, Mapping):
            c.fail(f"{where}.data", "expected a mapping of preprocessing settings, e.g. {shape: [64, 64, 64]}")
        if sum(k in d for k in ("path", "synthetic", "stream")) != 1:
            c.fail(where, "give exactly one of path or synthetic or stream")
        if "stream" in d:
            loc = c.name(d["stream"], f"{where}.stream")
            if "://" not in loc:  # a local folder: relative to the config, like path
                loc = str(Path(loc).expanduser() if Path(loc).expanduser().is_absolute() else base / loc)
            return cls(name, stream=loc, data=dict(data))
        if "path" in d:
            p = Path(c.name(d["path"], f"{where}.path")).expanduser()
            return cls(name, path=p if p.is_absolute() else base / p, data=dict(data))
        s = d["synthetic"] or {}
        if not isinstance(s, Mapping):
            c.fail(f"{where}.synthetic", "expected a mapping of generator settings")
        modality = s.get("modality", "ecg")
        if modality == "ecg":  # the other modalities' settings are checked against their writer
            s = c.mapping(s, f"{where}.synthetic", ("modality", "subjects_per_site", "seed"))
            s = {"subjects_per_site": c.int_(s.get("subjects_per_site", 200),
                                             f"{where}.synthetic.subjects_per_site", 2),
                 "seed": c.int_(s.get("seed", 0), f"{where}.synthetic.seed", 0)}
        return cls(name, synthetic={"modality": modality, **s}, data=dict(data))


@dataclass(frozen=True)
class TaskEntry:
    name: str
    dataset: str
    kind: str
    labels: tuple[str, ...] | None
    column: str | None
    metrics: tuple[str, ...]
    train: dict[str, tuple[str, ...]]
    eval: dict[str, dict[str, tuple[str, ...]]]
    tolerance_mm: float = 1.0  # segmentation: NSD tolerance

    @classmethod
    def from_dict(cls, t, where: str, c: _Checker, datasets: Mapping[str, DatasetEntry]) -> TaskEntry:
        t = c.mapping(t, where, ("name", "dataset", "kind", "labels", "column", "metrics", "train", "eval",
                                 "tolerance_mm"),
                      required=("name", "dataset", "kind", "train", "eval"))
        name = c.name(t["name"], f"{where}.name")
        if t["dataset"] not in datasets:
            c.fail(f"{where}.dataset", f"unknown dataset {t['dataset']!r}; known: {', '.join(datasets)}")
        kind = t["kind"]
        if kind not in TASK_KINDS:
            c.fail(f"{where}.kind", f"unknown kind {kind!r}; known: {', '.join(TASK_KINDS)}")
        if "tolerance_mm" in t and kind != "segmentation":
            c.fail(f"{where}.tolerance_mm", "only a segmentation task takes tolerance_mm")
        labels, column = _task_targets(c, t, where, kind)
        allowed = metrics_for(kind)
        metrics = t.get("metrics", list(default_metrics(kind)))
        for m in c.list_(metrics, f"{where}.metrics"):
            if m not in allowed:
                c.fail(f"{where}.metrics", f"unknown metric {m!r} for a {kind} task; known: {', '.join(allowed)}")
        train = c.filter_(t["train"], f"{where}.train")
        if not isinstance(t["eval"], Mapping) or not t["eval"]:
            c.fail(f"{where}.eval", "expected a mapping domain -> row filter, e.g. {in: {...}, out: {...}}")
        evals = {str(d): c.filter_(f, f"{where}.eval.{d}") for d, f in t["eval"].items()}
        tol = t.get("tolerance_mm", 1.0)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            c.fail(f"{where}.tolerance_mm", f"expected a non-negative number of mm, got {tol!r}")
        return cls(name, str(t["dataset"]), kind, labels, column, tuple(dict.fromkeys(metrics)), train, evals,
                   float(tol))


def _task_targets(c: _Checker, t: dict, where: str, kind: str) -> tuple[tuple[str, ...] | None, str | None]:
    """(labels, column) of a task: masks for segmentation (neither), `column` for regression,
    `labels` (checked against the kind) for classification."""
    if kind == "segmentation":
        for key in ("labels", "column"):
            if key in t:
                c.fail(f"{where}.{key}", "a segmentation task reads masks from the manifest's mask_path")
        return None, None
    if kind == "regression":
        if "labels" in t:
            c.fail(f"{where}.labels", "a regression task takes `column`, not `labels`")
        return None, c.name(t.get("column"), f"{where}.column")
    if "column" in t:
        c.fail(f"{where}.column", f"a {kind} task takes `labels`, not `column`")
    labels = tuple(c.name(x, f"{where}.labels") for x in c.list_(t.get("labels"), f"{where}.labels"))
    _unique(c, list(labels), f"{where}.labels", "label")
    if kind == "binary" and len(labels) != 1:
        c.fail(f"{where}.labels", f"a binary task takes one class name, got {len(labels)}")
    if kind == "multiclass" and len(labels) < 2:
        c.fail(f"{where}.labels", "a multiclass task needs at least two classes")
    return labels, None


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    kind: str
    shots: tuple[int | str, ...] | None
    label_fractions: tuple[float, ...] | None
    seeds: tuple[int, ...]
    k: int | None = None
    finetune: dict | None = None  # finetune: {epochs, lr, layer_decay, mode, n_last, batch_size};
    # segmentation: {epochs, lr, mode (frozen | finetune), batch_size, encoder_lr_scale, width}

    def applies_to(self, task_kind: str) -> bool:
        """Segmentation protocols run on segmentation tasks, the others on the other tasks."""
        return (self.kind == "segmentation") == (task_kind == "segmentation")

    @property
    def settings(self) -> list[tuple[str, int | str | float]]:
        """[("shots", k) | ("label_fraction", f)] in config order."""
        if self.shots is not None:
            return [("shots", s) for s in self.shots]
        return [("label_fraction", f) for f in self.label_fractions or ()]

    @classmethod
    def from_dict(cls, p, where: str, c: _Checker) -> ProtocolEntry:
        p = c.mapping(p, where, ("kind", "name", "shots", "label_fractions", "seeds", "k", *_TRAINING_KEYS),
                      required=("kind",))
        kind = p["kind"]
        if kind not in PROTOCOL_KINDS:
            c.fail(f"{where}.kind", f"unknown protocol {kind!r}; known: {', '.join(PROTOCOL_KINDS)}")
        shots, fractions = _protocol_settings(c, p, where)
        seeds_raw = p.get("seeds", 5)
        if isinstance(seeds_raw, list):
            seeds = tuple(c.int_(s, f"{where}.seeds", 0) for s in c.list_(seeds_raw, f"{where}.seeds"))
        else:
            seeds = tuple(range(c.int_(seeds_raw, f"{where}.seeds", 1)))
        k = None
        if kind == "knn":
            k = c.int_(p.get("k", 10), f"{where}.k", 1)
        elif "k" in p:
            c.fail(f"{where}.k", "only the knn protocol takes k")
        finetune = None
        if kind == "finetune":
            finetune = _finetune_settings(c, p, where)
        elif kind == "segmentation":
            if shots is not None:
                c.fail(f"{where}.shots", "shots need classes; give a segmentation protocol label_fractions")
            finetune = _segmentation_settings(c, p, where)
        else:
            for key in _TRAINING_KEYS:
                if key in p:
                    c.fail(f"{where}.{key}", f"only the finetune and segmentation protocols take {key}")
        name = c.name(p.get("name", kind), f"{where}.name")
        return cls(name, kind, shots, fractions, seeds, k, finetune)


def _protocol_settings(c: _Checker, p: dict, where: str) -> tuple[tuple | None, tuple | None]:
    """(shots, label_fractions) of a protocol: exactly one is given, deduplicated in order."""
    if ("shots" in p) == ("label_fractions" in p):
        c.fail(where, "give exactly one of shots or label_fractions")
    if "shots" in p:
        shots = []
        for s in c.list_(p["shots"], f"{where}.shots"):
            if s != "all":
                c.int_(s, f"{where}.shots", 1)
            shots.append(s)
        return tuple(dict.fromkeys(shots)), None
    fractions = []
    for f in c.list_(p["label_fractions"], f"{where}.label_fractions"):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            c.fail(f"{where}.label_fractions", f"expected fractions in (0, 1], got {f!r}")
        fractions.append(float(f))
    return None, tuple(dict.fromkeys(fractions))


@dataclass(frozen=True)
class BenchConfig:
    source: str
    title: str
    n_bootstrap: int
    cache_dir: Path | None
    encoders: tuple[EncoderEntry, ...]
    datasets: dict[str, DatasetEntry]
    tasks: tuple[TaskEntry, ...]
    protocols: tuple[ProtocolEntry, ...]
    base: Path = field(default_factory=Path.cwd)  # folder relative paths are resolved against
    raw: dict = field(default_factory=dict)
    precision: str | None = None  # "32" | "bf16" for frozen features; None: the device's default

    @classmethod
    def from_dict(cls, raw, *, source: str = "<config>", base: Path | None = None) -> BenchConfig:
        """Validate a config mapping section by section (``source`` starts every error message;
        relative paths resolve against ``base``, default the working directory)."""
        base = Path.cwd() if base is None else base
        c = _Checker(source)
        raw = c.mapping(raw, "", _TOP, required=("encoders", "datasets", "tasks", "protocols"))
        encoders = [EncoderEntry.from_dict(e, f"encoders[{i}]", c)
                    for i, e in enumerate(c.list_(raw["encoders"], "encoders"))]
        _unique(c, [e.name for e in encoders], "encoders", "encoder name")
        if not isinstance(raw["datasets"], Mapping) or not raw["datasets"]:
            c.fail("datasets", "expected a non-empty mapping name -> {path: ...}, {synthetic: {...}} or {stream: ...}")
        datasets = {str(n): DatasetEntry.from_dict(str(n), d, c, base) for n, d in raw["datasets"].items()}
        tasks = [TaskEntry.from_dict(t, f"tasks[{i}]", c, datasets)
                 for i, t in enumerate(c.list_(raw["tasks"], "tasks"))]
        _unique(c, [t.name for t in tasks], "tasks", "task name")
        protocols = [ProtocolEntry.from_dict(p, f"protocols[{i}]", c)
                     for i, p in enumerate(c.list_(raw["protocols"], "protocols"))]
        _unique(c, [p.name for p in protocols], "protocols", "protocol name", "; set `name:` to tell them apart")
        n_boot = c.int_(raw.get("n_bootstrap", 1000), "n_bootstrap", 1)
        cache_dir = raw.get("cache_dir")
        if cache_dir is not None:
            cache_dir = Path(c.name(cache_dir, "cache_dir")).expanduser()
            cache_dir = cache_dir if cache_dir.is_absolute() else base / cache_dir
        precision = raw.get("precision")
        if precision is not None:
            from medssl.engine.hardware import normalise_inference_precision

            try:
                precision = normalise_inference_precision(str(precision))
            except ValueError as e:
                c.fail("precision", str(e))
        title = raw.get("title") or "medssl benchmark"
        return cls(source, str(title), n_boot, cache_dir, tuple(encoders), datasets, tuple(tasks), tuple(protocols),
                   base=base, raw=raw, precision=precision)


def _config_path(config: str | Path) -> Path:
    """A YAML path, or the name of an example shipped in the package ("bench_ecg_demo")."""
    from medssl.engine.config import ConfigError, find_bench_config

    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise BenchConfigError(f"{path}: config file not found")
        return path
    try:
        return Path(str(find_bench_config(str(config))))
    except ConfigError as e:
        raise BenchConfigError(str(e)) from None


def _relative_base(path: Path) -> Path:
    """The folder a config's relative paths resolve against: its own folder, except for the
    examples shipped inside the package, whose relative paths mean the working directory."""
    from medssl.engine.config import RECIPES_DIR

    folder = path.resolve().parent
    return Path.cwd() if folder == Path(str(RECIPES_DIR)).resolve() else folder


def load_bench_config(config: str | Path | Mapping[str, Any]) -> BenchConfig:
    """Parse and validate a benchmark config (a YAML path, a packaged example's name, or a dict);
    see the module docstring and :meth:`BenchConfig.from_dict`."""
    if isinstance(config, Mapping):
        return BenchConfig.from_dict(dict(config))
    path = _config_path(config)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BenchConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return BenchConfig.from_dict(raw, source=str(path), base=_relative_base(path))


def _unique(c: _Checker, names: list[str], where: str, what: str, hint: str = "") -> None:
    seen = set()
    for n in names:
        if n in seen:
            c.fail(where, f"duplicate {what} {n!r}{hint}")
        seen.add(n)


def _positive(c: _Checker, p: dict, where: str, key: str, default: float) -> float:
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        c.fail(f"{where}.{key}", f"expected a positive number, got {v!r}")
    return float(v)


def _segmentation_settings(c: _Checker, p: dict, where: str) -> dict:
    for key in _FINETUNE_KEYS:
        if key in p and key not in _SEGMENTATION_KEYS:
            c.fail(f"{where}.{key}", f"the segmentation protocol does not take {key}")
    mode = p.get("mode", "frozen")
    if mode not in ("frozen", "finetune"):
        c.fail(f"{where}.mode", f"unknown mode {mode!r}; known: frozen, finetune")
    return {"epochs": c.int_(p.get("epochs", 20), f"{where}.epochs", 1),
            "min_steps": c.int_(p.get("min_steps", 0), f"{where}.min_steps", 0), "lr": _positive(c, p, where, "lr", 1e-3),
            "mode": mode, "batch_size": c.int_(p.get("batch_size", 8), f"{where}.batch_size", 1),
            "encoder_lr_scale": _positive(c, p, where, "encoder_lr_scale", 0.1),
            "width": c.int_(p.get("width", 32), f"{where}.width", 1),
            "decoder": c.name(p.get("decoder", "pyramid"), f"{where}.decoder")}


def _finetune_settings(c: _Checker, p: dict, where: str) -> dict:
    for key in _SEGMENTATION_KEYS:
        if key in p and key not in _FINETUNE_KEYS:
            c.fail(f"{where}.{key}", f"only the segmentation protocol takes {key}")

    def positive(key: str, default: float) -> float:
        return _positive(c, p, where, key, default)

    mode = p.get("mode", "full")
    if mode not in ("full", "last_blocks"):
        c.fail(f"{where}.mode", f"unknown mode {mode!r}; known: full, last_blocks")
    if "n_last" in p and mode != "last_blocks":
        c.fail(f"{where}.n_last", "n_last applies to mode: last_blocks")
    decay = positive("layer_decay", 0.75)
    if decay > 1:
        c.fail(f"{where}.layer_decay", f"expected a number in (0, 1], got {decay!r}")
    return {"epochs": c.int_(p.get("epochs", 10), f"{where}.epochs", 1), "lr": positive("lr", 1e-3),
            "layer_decay": decay, "mode": mode, "n_last": c.int_(p.get("n_last", 1), f"{where}.n_last", 0),
            "batch_size": c.int_(p.get("batch_size", 32), f"{where}.batch_size", 1)}
