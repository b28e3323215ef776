"""medssl.registry.resolve_hparams / per_axis: the one resolver of every registered encoder's hparams."""

from __future__ import annotations

import pytest

from medssl.registry import encoder_spec, list_encoders, per_axis, resolve_hparams


def test_defaults_overridden_in_default_order_and_int_lists():
    defaults = dict(a=1, widths=[1, 2], layers=None, b="x")
    h = resolve_hparams("enc", defaults, dict(b="y", widths=(3.0, 4)), int_lists=("widths", "layers"))
    assert h == dict(a=1, widths=[3, 4], layers=None, b="y") and list(h) == ["a", "widths", "layers", "b"]
    assert defaults["widths"] == [1, 2]  # defaults untouched
    with pytest.raises(TypeError, match=r"^enc: widths takes a list of integers, got 3$"):
        resolve_hparams("enc", defaults, dict(widths=3), int_lists=("widths",))


def test_unknown_arguments_are_named_with_the_known_ones():
    with pytest.raises(TypeError, match=r"^enc: unknown argument\(s\) c, z; known: a, b$"):
        resolve_hparams("enc", dict(a=1, b=2), dict(z=0, c=1, a=2))


@pytest.mark.parametrize("name", list_encoders())
def test_every_registered_encoder_resolves_through_it(name):
    known = ", ".join(encoder_spec(name).hparams)
    with pytest.raises(TypeError, match=rf"^{name}: unknown argument\(s\) zz_bogus; known: {known}$"):
        encoder_spec(name, zz_bogus=1)


def test_per_axis():
    assert per_axis(96, 3) == [96, 96, 96] and per_axis((1, 2.0), 2) == [1, 2]
    assert per_axis(1.5, 3, float) == [1.5, 1.5, 1.5] and per_axis([1, 2, 3], 3, float) == [1.0, 2.0, 3.0]
