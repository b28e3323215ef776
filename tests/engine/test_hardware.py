"""Precision defaults: fp32 on a CPU whatever its instruction set, MEDSSL_PRECISION as the only
way to change the default, explicit settings always winning."""

from __future__ import annotations

import pytest

from medssl.engine import hardware as hw


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(hw.ENV_VAR, raising=False)


def test_cpu_default_is_fp32_even_with_native_bf16(no_env, monkeypatch):
    monkeypatch.setattr(hw, "cuda_bf16_supported", lambda: False)
    assert hw.default_precision("cpu") == "32"
    assert hw.resolve_precision("auto", "cpu") == "32-true"
    assert hw.resolve_inference_precision(None, "cpu") == "32"


def test_cuda_default_is_bf16_where_supported(no_env, monkeypatch):
    monkeypatch.setattr(hw, "cuda_bf16_supported", lambda: True)
    assert hw.default_precision("cuda:0") == "bf16"
    assert hw.resolve_precision("auto", "gpu") == "bf16-mixed"
    assert hw.default_precision("cpu") == "32"
    monkeypatch.setattr(hw, "cuda_bf16_supported", lambda: False)
    assert hw.resolve_precision("auto", "gpu") == "32-true"


def test_environment_changes_the_default_not_explicit_values(monkeypatch):
    monkeypatch.setenv(hw.ENV_VAR, "bf16")
    assert hw.resolve_precision("auto", "cpu") == "bf16-mixed"
    assert hw.resolve_inference_precision(None, "cpu") == "bf16"
    assert hw.resolve_precision("32-true", "cpu") == "32-true"
    assert hw.resolve_inference_precision("32", "cpu") == "32"
    monkeypatch.setenv(hw.ENV_VAR, "half")
    with pytest.raises(ValueError, match="MEDSSL_PRECISION='half'"):
        hw.default_precision("cpu")


@pytest.mark.parametrize("spelling,expected", [("32", "32"), ("fp32", "32"), ("32-true", "32"),
                                               ("bf16", "bf16"), ("bf16-mixed", "bf16"), ("BF16", "bf16")])
def test_spellings(spelling, expected):
    assert hw.normalise_inference_precision(spelling) == expected
