"""The 3-D ViT MAE: token layout, positions, masking, reproducibility, optimisation."""

from __future__ import annotations

import torch

from medssl.mri.augment3d import RandomPatch3d
from medssl.mri.mae3d import MAEDecoder3d, MaskedAutoencoder3d
from medssl.mri.vit3d import patchify_3d, sincos_3d, unpatchify_3d
from medssl.registry import create_encoder
from medssl.ssl.masking import RandomPatchMasker


def test_patchify_follows_the_patch_embedding_raster_and_inverts():
    x = torch.randn(2, 3, 8, 12, 4)
    tokens = patchify_3d(x, 4)
    assert tokens.shape == (2, 2 * 3 * 1, 4**3 * 3)
    # token n is the block at raster position (n // 3, n % 3, 0), voxels ordered (d, h, w, channel)
    for n in range(6):
        d, h = divmod(n, 3)
        block = x[1, :, 4 * d:4 * d + 4, 4 * h:4 * h + 4, 0:4]
        assert torch.equal(tokens[1, n], block.permute(1, 2, 3, 0).reshape(-1))
    assert torch.equal(unpatchify_3d(tokens, 4, (2, 3, 1), 3), x)
    # The Conv3d patch embedding sees the same blocks in the same order.
    enc = create_encoder("mri_vit3d_tiny", channels=3, shape=[8, 16, 8], depth=1)
    conv = enc.patch_embed(torch.randn(1, 3, 8, 16, 8)).flatten(2)
    assert conv.shape[-1] == patchify_3d(torch.zeros(1, 3, 8, 16, 8), 8).shape[1]


def test_sincos_3d_positions_are_distinct_and_axis_separable():
    pos = sincos_3d(96, (2, 3, 4))
    assert pos.shape == (24, 96)
    assert torch.unique(pos, dim=0).shape[0] == 24
    # the first third of the channels depends on the first axis only
    grid = pos.reshape(2, 3, 4, 96)
    assert torch.equal(grid[:, 0, 0, :32], grid[:, 2, 3, :32])
    odd = sincos_3d(32, (2, 2, 2))  # 32 is not a multiple of 6: 30 channels used, 2 zero
    assert (odd[:, 30:] == 0).all() and odd.shape == (8, 32)


def test_vit_encodes_a_visible_subset_and_maps_the_grid():
    torch.manual_seed(0)
    enc = create_encoder("mri_vit3d_tiny").eval()
    x = torch.randn(2, 1, 32, 32, 32)
    keep = torch.tensor([[0, 5, 9], [1, 2, 63]])
    assert enc.encode(x, keep).shape == (2, 3, 96)
    (fmap,) = enc.feature_maps(x)
    assert fmap.shape == (2, 96, 4, 4, 4)
    assert torch.allclose(fmap.flatten(2).transpose(1, 2), enc.forward_features(x), atol=1e-6)
    assert enc(torch.randn(1, 1, 16, 24, 40)).shape == (1, 96)  # other sizes: positions computed per grid


def _mae(ratio=0.75, norm_target=True):
    torch.manual_seed(0)
    enc = create_encoder("mri_vit3d_tiny", shape=[16, 16, 16], embed_dim=48, depth=2, num_heads=4)
    dec = MAEDecoder3d(48, 8, 1, decoder_dim=32, depth=1, num_heads=4)
    return MaskedAutoencoder3d(enc, dec, RandomPatchMasker((ratio, ratio)), RandomPatch3d([16, 16, 16]),
                               norm_target=norm_target)


def test_mae3d_masks_a_fixed_fraction_and_is_reproducible():
    method = _mae()
    x = torch.randn(3, 1, 24, 20, 16)
    patches, keep, hidden = method.draw(x, step=4)
    assert patches.shape == (3, 1, 16, 16, 16)
    assert keep.shape == (3, 2) and hidden.shape == (3, 6)  # 8 tokens, 6 hidden
    for k, h in zip(keep, hidden):
        assert sorted(k.tolist() + h.tolist()) == list(range(8))
    a = method(x, step=4)
    assert torch.equal(a, method(x, step=4)) and not torch.equal(a, method(x, step=5))


def test_mae3d_loss_ignores_visible_tokens():
    method = _mae()
    x = torch.randn(2, 1, 16, 16, 16)
    patches, keep, hidden = method.draw(x, step=0)
    pred_holder = {}
    decoder_forward = method.decoder.forward

    def spy(*args):
        out = decoder_forward(*args)
        out.retain_grad()
        pred_holder["pred"] = out
        return out

    method.decoder.forward = spy
    method.loss(patches, keep, hidden).backward()
    grad = pred_holder["pred"].grad
    for b in range(2):
        assert (grad[b, keep[b]] == 0).all() and (grad[b, hidden[b]] != 0).any()


def test_a_few_steps_reduce_the_mae3d_loss_on_a_fixed_batch():
    method = _mae(norm_target=False)
    x = torch.randn(2, 1, 16, 16, 16)
    opt = torch.optim.Adam(method.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = method(x, step=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
