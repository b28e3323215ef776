"""medssl.preprocessor(encoder): one entry point from a manifest row to the encoder's input, per
modality, equal to what the modality's cache (pretraining, embedding, bench, audit) feeds the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medssl
from medssl.data.modalities import modality_data
from medssl.registry import create_encoder, encoder_spec

# modality -> (encoder, overrides, synthetic-cohort parameters, expected item shape)
CASES = {
    "ecg": ("ecg_jepa_tiny", {"depth": 1, "embed_dim": 32, "num_heads": 2}, {"subjects_per_site": 2}, (8, 2500)),
    "mri": ("mri_unet_tiny", {}, {"task": "fomo60k", "subjects_per_site": 1, "shape": (40, 44, 40)}, (1, 32, 32, 32)),
    "retina": ("retina_vit_tiny", {}, {"n_subjects": 2, "size": 64, "task": "", "sites": ["A"], "splits": "none"},
               (1, 64, 64)),
    "ct": ("ct_vit3d_tiny", {"depth": 1}, {"subjects_per_site": 1, "shape": (40, 40), "z_extent_mm": 40.0,
                                           "workers": 1}, (1, 32, 32, 32)),
}


@pytest.mark.parametrize("modality", list(CASES))
def test_preprocessor_matches_the_modality_cache_and_feeds_the_encoder(modality, tmp_path):
    name, overrides, synth, item_shape = CASES[modality]
    hooks = modality_data(modality)
    if modality == "ct":  # the phantom writer itself, for a small volume
        from medssl.ct.phantom import write_synthetic
    else:
        write_synthetic = hooks.write_synthetic
    rows, _ = write_synthetic(tmp_path / "cohort", **synth)
    rows = rows[:2]
    encoder = create_encoder(name, **overrides).eval()
    prep = medssl.preprocessor(encoder)
    assert prep.modality == modality and prep.input == encoder.spec.input
    # the cache as the benchmark builds it for a dataset with no data settings: the contract's
    # defaults (for ECG the 0.67-40 Hz band-pass the encoder was pretrained with, not no filter)
    cache = hooks.inputs(rows, encoder.spec.input, {}, tmp_path / "cache")
    for row in rows:
        x = prep(row)
        assert x.dtype == np.float32 and x.shape[1:] == item_shape and np.isfinite(x).all()
        items = [i for i, r in enumerate(cache.rows) if r["record_id"] == row["record_id"]]
        assert len(items) == x.shape[0]
        np.testing.assert_allclose(x, np.asarray(cache.signals[items]), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        z = encoder(torch.from_numpy(x))
    assert z.shape == (x.shape[0], encoder.spec.embed_dim)


def test_other_ways_to_name_the_encoder_and_data_settings(tmp_path):
    spec = encoder_spec("ecg_jepa_tiny")
    by_name, by_spec = medssl.preprocessor("ecg_jepa_tiny"), medssl.preprocessor(spec)
    assert by_name.settings == by_spec.settings and by_name.settings["bandpass_low"] == 0.67
    # a recipe's data section applies where the contract does not declare the filter
    wide = medssl.preprocessor(spec, {"bandpass": [0.5, 100.0], "notch_hz": 50})
    assert (wide.settings["bandpass_low"], wide.settings["bandpass_high"], wide.settings["notch_hz"]) == (0.5, 100.0, 50)
    # a checkpoint folder: the card's recipe data section is the default
    from medssl.checkpoint import save_checkpoint

    folder = save_checkpoint(create_encoder("ecg_jepa_tiny", depth=1, embed_dim=32, num_heads=2), tmp_path / "ck",
                             recipe={"method": "ecg_jepa", "data": {"bandpass": [1.0, 30.0]}})
    assert medssl.preprocessor(folder).settings["bandpass_high"] == 30.0
    assert medssl.preprocessor(str(folder), {}).settings["bandpass_high"] == 40.0
    with pytest.raises(TypeError, match="preprocessor"):
        medssl.preprocessor(3.5)
