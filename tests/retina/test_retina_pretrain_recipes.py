"""Both OCTA pretraining recipes (VAMAE, plain MAE) run from their CPU variants on a synthetic OCTA-500
replica through `medssl.engine.pretrain`; the checkpoints reload and embed; VAMAE's batches carry the
vessel priors the recipe's `data.priors` asks for, and those priors steer its masks."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from medssl import load_encoder
from medssl.data.modalities import encoder_inputs, segmentation_masks
from medssl.engine.config import resolve_recipe
from medssl.engine.methods import build_method
from medssl.engine.pretrain import pretrain
from medssl.retina.synthetic import write_synthetic

RECIPES = ("vamae_octa", "mae_octa")
SIZE = 32
TINY = ["variant=cpu", "optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=3", f"data.shape=[{SIZE}, {SIZE}]",
        "encoder.overrides.depth=1", "encoder.overrides.embed_dim=32", "encoder.overrides.num_heads=2",
        "decoder.dim=16", "decoder.depth=1", "decoder.num_heads=2", "trainer.checkpoint_every_n_steps=1"]


class BatchRecorder(L.Callback):
    """Keeps a copy of every training batch the method receives."""

    def __init__(self):
        self.batches: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch.detach().clone())


@pytest.fixture(scope="module")
def octa(tmp_path_factory):
    """Six synthetic eyes (two sites) indexed for the vessel task, and a private array cache."""
    root = tmp_path_factory.mktemp("octa")
    rows, skipped = write_synthetic(root / "replica", n_subjects=6, size=SIZE, seed=0, task="vessel")
    assert not skipped and len(rows) == 6
    return rows, root / "cache"


@pytest.fixture(scope="module")
def runs(octa, tmp_path_factory):
    """recipe -> (resolved config, checkpoint folder, recorded batches), each pretrained once."""
    rows, cache = octa
    out = {}
    for recipe in RECIPES:
        cfg = resolve_recipe(recipe, [*TINY, f"data.cache_dir={cache}"])
        recorder = BatchRecorder()
        folder = pretrain(cfg, rows, tmp_path_factory.mktemp(recipe), progress_bar=False, callbacks=[recorder])
        out[recipe] = (cfg, folder, recorder.batches)
    return out


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_pretrains_and_the_checkpoint_reloads_and_embeds(recipe, runs, octa):
    rows, cache = octa
    cfg, folder, batches = runs[recipe]
    card = json.loads((folder / "card.json").read_text())
    assert card["training_metrics"]["n_records"] == len(rows)
    assert card["training_metrics"]["steps"] == len(batches) == len(rows) // 3  # drop_last, one epoch
    assert card["recipe"]["method"] == cfg["method"]
    assert (folder / "method.safetensors").is_file()

    encoder = load_encoder(folder)
    assert encoder.spec.name == "retina_vit_tiny" and encoder.spec.modality == "retina"
    assert encoder.spec.hparams == card["encoder"]["hparams"]
    assert encoder.spec.input["shape"] == [SIZE, SIZE] and encoder.spec.input["channels"] == 1
    x = encoder_inputs(rows, encoder.spec, cache_root=cache).signals  # the encoder's own contract: image only
    assert x.shape == (len(rows), 1, SIZE, SIZE)
    with torch.no_grad():
        z = encoder(torch.from_numpy(np.asarray(x)))
        maps = encoder.feature_maps(torch.from_numpy(np.asarray(x)))
    assert z.shape == (len(rows), 32) and torch.isfinite(z).all()
    assert z.std(0).mean() > 0  # different eyes, different embeddings
    assert maps[0].shape[0] == len(rows) and maps[0].shape[-2:] == (SIZE // 8, SIZE // 8)


def test_mae_batches_hold_the_image_alone(runs):
    _, _, batches = runs["mae_octa"]
    assert batches and all(b.shape[1:] == (1, SIZE, SIZE) for b in batches)


def test_vamae_batches_carry_the_recipe_priors_after_the_image(runs, octa):
    rows, cache = octa
    cfg, folder, batches = runs["vamae_octa"]
    assert cfg["data"]["priors"] == ["vesselness", "skeleton"]
    assert batches and all(b.shape[1:] == (3, SIZE, SIZE) for b in batches)
    spec = load_encoder(folder).spec
    # What the data hook gives for this recipe: every trained item is one of its items, all channels.
    expected = torch.from_numpy(np.asarray(encoder_inputs(rows, spec, cfg["data"], cache).signals))
    assert expected.shape == (len(rows), 3, SIZE, SIZE)
    for b in batches:
        for item in b:
            assert any(torch.allclose(item, e) for e in expected)
    # The channels are the priors of the same eye: vesselness in [0, 1], brighter on the true vessels;
    # skeleton binary and inside the true vessels.
    truth = np.asarray(segmentation_masks(rows, spec, cache_root=cache).signals)[:, 0] > 0.5
    vesselness, skeleton = expected[:, 1].numpy(), expected[:, 2].numpy()
    assert vesselness.min() >= 0 and vesselness.max() <= 1
    assert set(np.unique(skeleton)) <= {0.0, 1.0} and skeleton.sum() > 0
    assert vesselness[truth].mean() > 2 * vesselness[~truth].mean()
    assert truth[skeleton > 0].mean() > 0.5


def test_vamae_masks_follow_the_priors_of_its_batch(runs):
    """The masker reads the batch's prior channels: masked patches are more vessel-rich than kept ones."""
    from medssl.retina.vessel_prior import patch_importance

    cfg, _, batches = runs["vamae_octa"]
    _, method = build_method(cfg)
    x = torch.cat(batches)
    _, priors = method.split_batch(x)
    importance = patch_importance(priors["vesselness"], priors["skeleton"], method.encoder.patch_size, (0.5, 0.5))
    gap = []
    for step in range(20):
        mask = method.sample_mask(priors, len(x), step=step)
        m = mask.masked.float()
        gap.append(((importance * m).sum(1) / m.sum(1) - (importance * (1 - m)).sum(1) / (1 - m).sum(1)).mean())
    assert torch.stack(gap).mean() > 0.05


def test_vamae_without_prior_channels_is_refused():
    cfg = resolve_recipe("vamae_octa", [*TINY, "data.priors=[]"])
    with pytest.raises(ValueError, match="prior"):
        build_method(cfg)
