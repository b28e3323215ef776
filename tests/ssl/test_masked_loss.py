"""medssl.ssl.masked_loss: one masked-reconstruction contract, bit-identical to the former copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.mri.amaes import voxel_mse
from medssl.retina.mae2d import masked_bce, masked_mse
from medssl.ssl.mae import masked_patch_loss as from_mae
from medssl.ssl.masked_loss import masked_mean, masked_patch_loss


# The former implementations, verbatim: the reference the shared function must reproduce bit for bit.
def _former_patch_loss(pred, target, masked, *, norm_target=False, per_sample=False):
    if norm_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    weight = masked.to(per_patch.dtype)
    if per_sample:
        return (per_patch * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)


def _former_voxel_mse(pred, target, mask=None):
    err = (pred.float() - target.float()).pow(2)
    if mask is None:
        return err.mean()
    weight = mask.to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def _former_bce(logits, target, masked):
    per_patch = F.binary_cross_entropy_with_logits(logits.flatten(2), target.flatten(2), reduction="none").mean(-1)
    weight = masked.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_loss_is_bit_identical(dtype):
    g = torch.Generator().manual_seed(0)
    pred, target = (torch.randn(3, 12, 30, 75, generator=g).to(dtype) for _ in range(2))
    masked = torch.rand(3, 12, 30, generator=g) < 0.75
    assert from_mae is masked_patch_loss
    for norm in (False, True):
        for per_sample in (False, True):
            new = masked_patch_loss(pred, target, masked, norm_target=norm, per_sample=per_sample)
            old = _former_patch_loss(pred, target, masked, norm_target=norm, per_sample=per_sample)
            assert new.dtype == old.dtype and torch.equal(new, old)
    p2, t2, m2 = pred[:, 0, :, :64].reshape(3, 30, 8, 8), target[:, 0, :, :64].reshape(3, 30, 8, 8), masked[:, 0]
    assert torch.equal(masked_mse(p2, t2, m2, norm_target=True),
                       _former_patch_loss(p2.flatten(2), t2.flatten(2), m2, norm_target=True))
    assert torch.equal(masked_bce(p2, torch.sigmoid(t2), m2), _former_bce(p2, torch.sigmoid(t2), m2))


def test_voxel_mse_is_bit_identical():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 3, 8, 8, 8, generator=g), torch.randn(2, 3, 8, 8, 8, generator=g)
    mask = torch.rand(2, 1, 8, 8, 8, generator=g) < 0.6
    assert torch.equal(voxel_mse(pred, target, mask), _former_voxel_mse(pred, target, mask))
    assert torch.equal(voxel_mse(pred, target), _former_voxel_mse(pred, target))


def test_masked_mean_contract():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[True, False, True], [False, False, False]])
    assert masked_mean(v, m).item() == 2.0
    assert masked_mean(v, m, per_sample=True).tolist() == [2.0, 0.0]  # nothing masked: 0, not NaN
    # A mask broadcast over channels counts every channel it covers.
    vc = torch.stack([v, 10 * v], dim=1)  # (2, 2, 3)
    assert masked_mean(vc, m[:, None]).item() == pytest.approx((1 + 3 + 10 + 30) / 4)
