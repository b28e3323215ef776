"""Recipes: defaults from the paper -> a size variant -> command-line overrides (dinov2-style).

A recipe is a YAML file shipped inside the package (`medssl/recipes/`, read with
`importlib.resources`, so a wheel install has them too; `recipes/` at the repository root points there):

    method: ecg_jepa          # which method builder trains it
    ...                       # the paper's settings, nested sections
    variants:                 # named partial configs merged on top, e.g. cpu / gpu
      cpu: {...}

`resolve_recipe("ecg_jepa", ["variant=cpu", "optim.lr=1e-4"])` returns the merged dict. An
override of a key the recipe does not have is an error naming the key: a typo never trains a
silently different model. Numeric values are checked against `VALUE_RANGES` (positive epochs and
batch sizes, ratios and probabilities in range...), also naming the key.

Sections in `SECTION_DEFAULTS` (e.g. `privacy`) are part of every recipe: a recipe, a variant or
an override sets any of their keys, checked like any other key, and the rest keep the defaults.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
RECIPES_DIR: Traversable = files("medssl") / "recipes"
BENCH_PREFIX = "bench_"


class ConfigError(ValueError):
    """A recipe or an override is invalid."""


# privacy: DP-SGD pretraining, see medssl.engine.dp (DPSettings) for what each key means.
SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "privacy": {
        "dp": False, "target_epsilon": None, "noise_multiplier": None, "max_grad_norm": 1.0,
        "delta": None, "accountant": "rdp", "poisson_sampling": True, "max_physical_batch_size": None,
    },
}

# Keys every recipe's `data` section has, beside its modality's own (which the recipe declares):
# stream: a folder or object-store URL of shards from `medssl data cache --format stream`; pretraining
# reads them (medssl.data.stream) instead of the memory-map cache. stream_options: `cache_dir`
# (local chunk cache for a URL) and `storage_options` (passed to litdata, e.g. endpoint/credentials).
DATA_DEFAULTS: dict[str, Any] = {"stream": None, "stream_options": {}}


@dataclass(frozen=True)
class Range:
    """The values a numeric recipe key may take: between `low` and `high` (None: unbounded),
    `open` ends excluded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, v: float) -> bool:
        return ((self.low is None or (v > self.low if self.low_open else v >= self.low))
                and (self.high is None or (v < self.high if self.high_open else v <= self.high)))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_AT_LEAST_1, _POSITIVE, _NON_NEGATIVE = Range(1), Range(0, low_open=True), Range(0)
_PROBABILITY, _FRACTION = Range(0, 1), Range(0, 1, low_open=True, high_open=True)

# Value ranges of recipe keys: dotted key (shell pattern) -> Range, checked after variant and overrides
# merge; a list value is checked element by element; null means "not set" and passes. The first
# matching pattern decides.
VALUE_RANGES: dict[str, Range] = {
    "optim.epochs": _AT_LEAST_1, "optim.warmup_epochs": _NON_NEGATIVE, "optim.lr": _POSITIVE,
    "optim.min_lr": _NON_NEGATIVE, "optim.weight_decay": _NON_NEGATIVE, "optim.grad_clip": _POSITIVE,
    "optim.eps": _POSITIVE, "optim.betas": Range(0, 1, high_open=True), "optim.ema_momentum": _PROBABILITY,
    "data.batch_size": _AT_LEAST_1, "data.num_workers": _NON_NEGATIVE, "data.num_samples": _AT_LEAST_1,
    "data.sampling_rate": _POSITIVE, "data.shape": _AT_LEAST_1, "data.patch_size": _AT_LEAST_1,
    "data.spacing_mm": _POSITIVE,
    "masking.ratio": _FRACTION, "masking.*_ratio": _FRACTION, "masking.block_scale": Range(0, 1, low_open=True),
    "masking.n_blocks": _AT_LEAST_1, "masking.patch_size": _AT_LEAST_1, "masking.token_size": _AT_LEAST_1,
    "*.p": _PROBABILITY, "*.p_*": _PROBABILITY, "*temperature": _POSITIVE, "*_temp": _POSITIVE,
    "*.depth": _AT_LEAST_1, "*.num_heads": _AT_LEAST_1, "*.dim": _AT_LEAST_1, "*_dim": _AT_LEAST_1,
    "trainer.num_nodes": _AT_LEAST_1, "trainer.log_every_n_steps": _AT_LEAST_1,
    "trainer.checkpoint_every_n_steps": _AT_LEAST_1,
}  # the privacy section is checked by medssl.engine.dp.DPSettings, with DP-specific messages


def check_values(cfg: dict, prefix: str = "") -> None:
    """Raise ConfigError naming the first key whose value is outside its VALUE_RANGES entry (or is
    not a number where one is needed)."""
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            check_values(value, f"{dotted}.")
            continue
        rule = next((r for pattern, r in VALUE_RANGES.items() if fnmatch.fnmatchcase(dotted, pattern)), None)
        if rule is None or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"recipe key {dotted!r} takes numbers {rule}, got {value!r}")
            if not rule.holds(v):
                raise ConfigError(f"recipe key {dotted!r} must be {rule}, got {value!r}")


def packaged_yaml(prefix: str = "", exclude_prefix: str | None = None) -> dict[str, Traversable]:
    """The YAML files shipped in `medssl/recipes/`, by stem: recipes (`exclude_prefix="bench_"`)
    or benchmark examples (`prefix="bench_"`)."""
    out = {}
    for entry in RECIPES_DIR.iterdir():
        stem, dot, ext = entry.name.rpartition(".")
        if dot and ext in ("yaml", "yml") and stem.startswith(prefix) and not (
                exclude_prefix and stem.startswith(exclude_prefix)):
            out[stem] = entry
    return dict(sorted(out.items()))


def _find_packaged(name_or_path: str | Path, kind: str, prefix: str = "",
                   exclude_prefix: str | None = None) -> Path | Traversable:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"{p}: {kind} file not found")
        return p
    known = packaged_yaml(prefix, exclude_prefix)
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    raise ConfigError(f"unknown {kind} {str(name_or_path)!r}; known: {', '.join(known)}")


def find_recipe(name_or_path: str | Path) -> Path | Traversable:
    """A recipe from a YAML path or a packaged name ("ecg_jepa" -> medssl/recipes/ecg_jepa.yaml)."""
    return _find_packaged(name_or_path, "recipe", exclude_prefix=BENCH_PREFIX)


def find_bench_config(name_or_path: str | Path) -> Path | Traversable:
    """A benchmark config from a YAML path or a packaged example name ("bench_ecg_demo")."""
    return _find_packaged(name_or_path, "benchmark example", prefix=BENCH_PREFIX)


def load_yaml(path: Path | Traversable) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys to values")
    return data


def _same_kind(old: Any, new: Any) -> bool:
    """Whether `new` may replace `old`: null slots take anything, numbers take numbers."""
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int):
        return isinstance(new, int) or (isinstance(new, float) and new.is_integer())
    if isinstance(old, float):
        return isinstance(new, (int, float))
    if isinstance(old, (list, tuple)):
        return isinstance(new, (list, tuple))
    if isinstance(old, dict):
        return isinstance(new, dict)
    return isinstance(new, type(old))


def merge(base: dict, update: dict, *, strict: bool, prefix: str = "") -> dict:
    """Recursive merge; with `strict`, every key of `update` must exist in `base`."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if strict and key not in out:
            raise ConfigError(f"unknown recipe key {dotted!r}; known here: {', '.join(map(str, out))}")
        if strict and isinstance(value, dict) and value and out[key] is not None and not isinstance(out[key], dict):
            # e.g. `data.bandpass.low=1` where bandpass is a list: `low` is not a recipe key.
            raise ConfigError(
                f"unknown recipe key {dotted + '.' + str(next(iter(value)))!r}; "
                f"{dotted!r} is a {type(out[key]).__name__}, not a mapping"
            )
        if strict and not _same_kind(out[key], value):
            raise ConfigError(
                f"recipe key {dotted!r} takes a {type(out[key]).__name__} "
                f"(recipe value {out[key]!r}), got {value!r}"
            )
        if isinstance(out.get(key), int) and not isinstance(out[key], bool) and isinstance(value, float):
            value = int(value)  # "epochs=2.0" or "2e3" where the recipe holds an integer
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A mapping the recipe declares empty ({}) is open: it takes any keys.
            out[key] = merge(out[key], value, strict=strict and bool(out[key]), prefix=f"{dotted}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """["a.b=1", "c=[1, 2]"] -> {"a": {"b": 1}, "c": [1, 2]}; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _SCIENTIFIC.match(value):
            value = float(value)  # YAML 1.1 reads "3e-3" as a string; a number was meant
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def resolve_recipe(name_or_path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Merge recipe, its `variant` (from the overrides or the recipe's `variant` key), and overrides.

    The resolved dict keeps `recipe` (its path) and `variant`, and drops `variants`.
    """
    path = find_recipe(name_or_path)
    recipe = load_yaml(path)
    for section, defaults in SECTION_DEFAULTS.items():
        try:
            recipe[section] = merge(defaults, recipe.get(section) or {}, strict=True, prefix=f"{section}.")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if isinstance(recipe.get("data"), dict):
        recipe["data"] = {**copy.deepcopy(DATA_DEFAULTS), **recipe["data"]}
    variants = recipe.pop("variants", {}) or {}
    parsed = parse_overrides(overrides)
    variant = parsed.pop("variant", recipe.get("variant"))
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"{path}: unknown variant {variant!r}; variants: {', '.join(variants) or 'none'}")
        recipe = merge(recipe, variants[variant], strict=True)
    resolved = merge(recipe, parsed, strict=True)
    check_values(resolved)
    resolved["variant"] = variant
    resolved["recipe"] = path.stem
    return resolved
