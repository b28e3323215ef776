"""The masked-reconstruction loss contract every masked-image/signal-modelling method shares.

`masked_mean(values, masked)`: the mean of per-position losses over the masked positions only:
sum(values * w) / max(sum(w), 1) with w = masked as values' dtype (broadcast to values' shape);
no masked position gives 0, not NaN. `per_sample=True` gives one such mean per batch item (B,).

`masked_patch_loss(pred, target, masked, norm_target=...)`: the MAE loss (He et al., CVPR 2022)
on that contract: pred, target (..., P) patches of P values, masked (...) bool (True = hidden from
the encoder, scored); the squared error is averaged over each patch's P values, then
`masked_mean` over the masked patches. With `norm_target` (MAE's `norm_pix_loss`) each target
patch is first standardised by its own mean and unbiased variance, eps 1e-6. Predictions of
visible patches never enter the loss.

Users: ECG MAE / ST-MEM and CoRe-ECG (`medssl.ssl.mae`, `medssl.ecg.core`), the retina MAE and
VAMAE (`medssl.retina.mae2d.masked_mse`, and `masked_bce` for vessel targets), the MRI 3-D MAE
(`medssl.mri.mae3d`), AMAES's voxel-wise MSE (`medssl.mri.amaes.voxel_mse`, a voxel mask).
SimMIM's L1 (`medssl.ct.simmim.masked_l1`) keeps SimMIM's own normalisation (sum over masked
voxels / (n_masked * channels + 1e-5)), which gives different numbers than `masked_mean`.
"""

from __future__ import annotations

from torch import Tensor


def masked_mean(values: Tensor, masked: Tensor, *, per_sample: bool = False) -> Tensor:
    """Mean of `values` over the positions where `masked` (bool, broadcastable to values) is True:
    a scalar, or (B,) per-sample means with `per_sample`; 0 where nothing is masked."""
    weight = masked.to(values.dtype)
    if weight.shape != values.shape:
        weight = weight.expand_as(values)
    if per_sample:
        return (values * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1.0)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def masked_patch_loss(pred: Tensor, target: Tensor, masked: Tensor, *, norm_target: bool = False,
                      per_sample: bool = False) -> Tensor:
    """Mean squared error over masked patches. pred, target: (..., P), e.g. (B, L, T, P); masked:
    (...) bool. A scalar, or (B,) per-sample means with ``per_sample`` (see the module docstring)."""
    if norm_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return masked_mean(per_patch, masked, per_sample=per_sample)
