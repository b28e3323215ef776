"""The prompt-free mask decoder and segmenter: shapes, upsampling, freezing, Dice + BCE, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.registry import create_encoder
from medssl.retina.mask_decoder import DiceBCELoss, build_segmenter, soft_dice_loss

SMALL = dict(embed_dim=32, depth=2, num_heads=2)


def test_segmenter_maps_images_to_full_resolution_logits():
    torch.manual_seed(0)
    seg = build_segmenter(create_encoder("retina_vit_tiny", **SMALL), mode="finetune", decoder_dim=32, depth=1,
                          num_heads=2)
    assert seg.decoder.n_up == 3  # 8 x 8 tokens -> 64 x 64 in three 2x stages
    x = torch.randn(2, 1, 64, 64)
    logits = seg(x)
    assert logits.shape == (2, 1, 64, 64) and torch.isfinite(logits).all()
    logits.pow(2).mean().backward()
    assert seg.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert seg.decoder.mask_token.grad.abs().sum() > 0


def test_upsampling_lands_on_sizes_that_are_not_powers_of_two_times_the_grid():
    enc = create_encoder("retina_vit_tiny", **SMALL, image_size=[48, 48], patch_size=12)
    seg = build_segmenter(enc, decoder_dim=32, depth=1, num_heads=2)
    assert seg.decoder.n_up == 3  # 4 -> 32, then bilinear to 48
    assert seg(torch.randn(1, 1, 48, 48)).shape == (1, 1, 48, 48)
    rect = build_segmenter(create_encoder("retina_vit_tiny", **SMALL, image_size=[32, 64]), decoder_dim=32,
                           depth=1, num_heads=2)
    assert rect(torch.randn(1, 1, 32, 64)).shape == (1, 1, 32, 64)


def test_several_feature_maps_are_fused_and_a_frozen_encoder_gets_no_gradient():
    enc = create_encoder("retina_vit_tiny", **SMALL, feature_layers=[1, 2])
    seg = build_segmenter(enc, (1, 64, 64), mode="frozen", decoder_dim=32, depth=1, num_heads=2)
    assert seg.decoder.fuse[0].in_channels == 64
    seg.train()
    assert seg.decoder.training and not seg.encoder.training  # a frozen encoder stays in eval mode
    seg(torch.randn(2, 1, 64, 64)).sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert seg.decoder.fuse[0].weight.grad.abs().sum() > 0


def test_dice_matches_monai_and_dice_bce_is_zero_for_confident_correct_logits():
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 16, 16, generator=g)
    target = (torch.rand(3, 1, 16, 16, generator=g) > 0.7).float()
    ours = soft_dice_loss(logits, target)
    assert torch.allclose(ours, DiceLoss(sigmoid=True)(logits, target), atol=1e-6)
    # By hand for logits 0 (p = 0.5 everywhere) and a target with 64 of 256 pixels set.
    t = torch.zeros(1, 1, 16, 16)
    t[..., :4, :] = 1
    expected = 1 - (2 * 32 + 1e-5) / (128 + 64 + 1e-5)
    assert soft_dice_loss(torch.zeros_like(t), t).item() == pytest.approx(expected)
    loss = DiceBCELoss()
    assert loss(40 * (2 * t - 1), t).item() < 1e-6
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(DiceBCELoss(0.0, 1.0)(logits, target), bce)
    with pytest.raises(ValueError, match="differ in shape"):
        loss(logits, target[:, :, :8])


def test_the_segmenter_learns_a_mask_of_bright_pixels():
    torch.manual_seed(0)
    seg = build_segmenter(create_encoder("retina_vit_tiny", embed_dim=32, depth=1, num_heads=2, image_size=[32, 32]),
                          mode="finetune", decoder_dim=32, depth=1, num_heads=2)
    g = torch.Generator().manual_seed(1)
    target = torch.zeros(4, 1, 32, 32)
    for i in range(4):
        r, c = torch.randint(0, 20, (2,), generator=g).tolist()
        target[i, 0, r:r + 12, c:c + 12] = 1
    x = target + 0.1 * torch.randn(4, 1, 32, 32, generator=g)
    loss_fn = DiceBCELoss()
    opt = torch.optim.AdamW(seg.parameters(), lr=3e-3)
    losses = []
    for _ in range(24):
        loss = loss_fn(seg(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_an_encoder_without_feature_maps_is_refused():
    with pytest.raises(TypeError, match="no feature_maps"):
        build_segmenter(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown segmenter mode"):
        build_segmenter(create_encoder("retina_vit_tiny", **SMALL), mode="probe", decoder_dim=32, num_heads=2)
