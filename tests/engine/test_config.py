"""Tests of medssl.engine.config: recipes, variants and dotted overrides."""

from __future__ import annotations

import pytest
import yaml

from medssl.engine.config import (
    RECIPES_DIR,
    SECTION_DEFAULTS,
    ConfigError,
    find_recipe,
    load_yaml,
    merge,
    parse_overrides,
    resolve_recipe,
)


def test_defaults_are_the_papers():
    cfg = resolve_recipe("ecg_jepa")
    assert cfg["method"] == "ecg_jepa" and cfg["recipe"] == "ecg_jepa" and cfg["variant"] is None
    assert cfg["encoder"]["name"] == "ecg_jepa_base"
    assert cfg["predictor"] == {"dim": 384, "depth": 6, "num_heads": 12}
    assert "variants" not in cfg


def test_cpu_variant_merges_over_defaults():
    cfg = resolve_recipe("ecg_jepa", ["variant=cpu"])
    assert cfg["variant"] == "cpu"
    assert cfg["encoder"]["name"] == "ecg_jepa_tiny"
    assert cfg["encoder"]["overrides"] == {}  # untouched sibling kept
    assert cfg["predictor"] == {"dim": 64, "depth": 2, "num_heads": 4}
    assert cfg["data"]["batch_size"] == 32
    assert cfg["data"]["num_samples"] == 2500  # not in the variant: from the defaults
    assert cfg["optim"]["lr"] == pytest.approx(1e-3)
    assert cfg["optim"]["weight_decay"] == pytest.approx(0.05)
    # Overrides win over the variant.
    cfg = resolve_recipe("ecg_jepa", ["variant=cpu", "data.batch_size=8"])
    assert cfg["data"]["batch_size"] == 8


def test_overrides_are_parsed_as_yaml():
    cfg = resolve_recipe("ecg_jepa", [
        "optim.lr=1e-4", "masking.ratio=[0.5, 0.55]", "trainer.tensorboard=true",
        "data.notch_hz=50", "data.cache_dir=/tmp/x", "optim.grad_clip=null", "masking.kind=multiblock",
    ])
    assert cfg["optim"]["lr"] == pytest.approx(1e-4) and isinstance(cfg["optim"]["lr"], float)
    assert cfg["masking"]["ratio"] == [0.5, 0.55]
    assert cfg["trainer"]["tensorboard"] is True
    assert cfg["data"]["notch_hz"] == 50
    assert cfg["data"]["cache_dir"] == "/tmp/x"
    assert cfg["optim"]["grad_clip"] is None
    assert cfg["masking"]["kind"] == "multiblock"
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=", "f=a=b"]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": "", "f": "a=b"}


@pytest.mark.parametrize("override,dotted", [
    ("optim.lrr=1", "optim.lrr"),
    ("nope=1", "nope"),
    ("trainer.precison=32", "trainer.precison"),
    ("data.bandpass.low=1", "data.bandpass.low"),
])
def test_unknown_key_is_an_error_naming_the_dotted_key(override, dotted):
    with pytest.raises(ConfigError) as info:
        resolve_recipe("ecg_jepa", [override])
    assert repr(dotted) in str(info.value)


def test_unknown_key_error_names_the_dotted_key_exactly():
    with pytest.raises(ConfigError, match=r"'optim\.lrr'"):
        resolve_recipe("ecg_jepa", ["variant=cpu", "optim.lrr=1"])


def test_unknown_variant():
    with pytest.raises(ConfigError, match=r"unknown variant 'tpu'.*cpu.*gpu"):
        resolve_recipe("ecg_jepa", ["variant=tpu"])


def test_open_mapping_takes_any_key():
    cfg = resolve_recipe("ecg_jepa", ["variant=cpu", "encoder.overrides.depth=2", "encoder.overrides.embed_dim=64"])
    assert cfg["encoder"]["overrides"] == {"depth": 2, "embed_dim": 64}
    assert cfg["encoder"]["name"] == "ecg_jepa_tiny"


def test_override_without_equals_sign():
    with pytest.raises(ConfigError, match="key=value"):
        resolve_recipe("ecg_jepa", ["optim.lr"])


def test_recipe_by_name_and_by_path(tmp_path):
    assert find_recipe("ecg_jepa") == RECIPES_DIR / "ecg_jepa.yaml"
    by_path = resolve_recipe(RECIPES_DIR / "ecg_jepa.yaml", ["variant=cpu"])
    assert by_path == resolve_recipe("ecg_jepa", ["variant=cpu"])
    assert resolve_recipe(str(RECIPES_DIR / "ecg_jepa.yaml")) == resolve_recipe("ecg_jepa")

    own = tmp_path / "mine.yml"
    own.write_text(yaml.safe_dump({"method": "m", "variant": "small", "a": {"b": 1, "c": 2},
                                   "variants": {"small": {"a": {"b": 5}}}}))
    cfg = resolve_recipe(own, ["a.c=3"])
    assert cfg.pop("privacy") == SECTION_DEFAULTS["privacy"]  # sections every recipe gets
    assert cfg == {"method": "m", "variant": "small", "a": {"b": 5, "c": 3}, "recipe": "mine"}

    with pytest.raises(ConfigError, match="not found"):
        resolve_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"unknown recipe 'no_such_recipe'.*ecg_jepa"):
        resolve_recipe("no_such_recipe")


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        resolve_recipe(bad)
    assert str(info.value).startswith(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_recipe(scalar)


def test_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1}, "c": [1]}
    update = {"a": {"b": 2}, "c": [2]}
    out = merge(base, update, strict=True)
    assert out == {"a": {"b": 2}, "c": [2]}
    assert base == {"a": {"b": 1}, "c": [1]}
    out["c"].append(3)
    assert update["c"] == [2]


def test_nested_override_of_a_non_mapping_is_an_error():
    with pytest.raises(ConfigError, match=r"'optim\.lr\.value'"):
        resolve_recipe("ecg_jepa", ["optim.lr.value=1"])
    # Replacing a list or a scalar with a plain value stays allowed.
    cfg = resolve_recipe("ecg_jepa", ["data.bandpass=[0.5, 30]", "data.cache_dir=/tmp/c"])
    assert cfg["data"]["bandpass"] == [0.5, 30]


def test_override_of_the_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'optim\.lr' takes a float.*'abc'"):
        resolve_recipe("ecg_jepa", ["optim.lr=abc"])
    with pytest.raises(ConfigError, match=r"'trainer\.tensorboard' takes a bool"):
        resolve_recipe("ecg_jepa", ["trainer.tensorboard=3"])
    cfg = resolve_recipe("ecg_jepa", ["optim.epochs=2.0", "data.cache_dir=/tmp/x", "data.notch_hz=50"])
    assert cfg["optim"]["epochs"] == 2 and isinstance(cfg["optim"]["epochs"], int) and cfg["data"]["notch_hz"] == 50
    with pytest.raises(ConfigError, match=r"'optim\.epochs' takes a int"):
        resolve_recipe("ecg_jepa", ["optim.epochs=2.5"])


@pytest.mark.parametrize("override, message", [
    ("optim.epochs=-1", "recipe key 'optim.epochs' must be >= 1, got -1"),
    ("optim.epochs=0", "recipe key 'optim.epochs' must be >= 1, got 0"),
    ("data.batch_size=-4", "recipe key 'data.batch_size' must be >= 1, got -4"),
    ("optim.lr=0", "recipe key 'optim.lr' must be > 0, got 0"),
    ("masking.ratio=[0.6, 1.2]", "recipe key 'masking.ratio' must be in (0, 1), got [0.6, 1.2]"),
    ("optim.betas=[0.9, 1.0]", "recipe key 'optim.betas' must be in [0, 1), got [0.9, 1.0]"),
    ("predictor.depth=0", "recipe key 'predictor.depth' must be >= 1, got 0"),
    ("optim.grad_clip=big", "recipe key 'optim.grad_clip' takes numbers > 0, got 'big'"),
])
def test_values_out_of_range_are_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        resolve_recipe("ecg_jepa", ["variant=cpu", override])
    assert str(e.value) == message


def test_value_ranges_hold_for_every_packaged_recipe_and_variant():
    from medssl.engine.config import check_values, packaged_yaml

    for name, entry in packaged_yaml(exclude_prefix="bench_").items():
        for variant in [None, *(load_yaml(entry).get("variants") or {})]:
            check_values(resolve_recipe(name, [f"variant={variant}"] if variant else []))
    # a masking ratio inside (0, 1) and a null grad_clip pass; the boundary does not
    resolve_recipe("ecg_jepa", ["variant=cpu", "masking.ratio=[0.01, 0.99]", "optim.grad_clip=null"])
    with pytest.raises(ConfigError, match="masking.ratio"):
        resolve_recipe("ecg_jepa", ["variant=cpu", "masking.ratio=[0.0, 0.5]"])
