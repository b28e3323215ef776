"""Convolutional ECG encoders of the contrastive methods (SimCLR, TS2Vec).

`ecg_resnet1d50` / `ecg_resnet1d_tiny`: the xresnet1d of Strodthoff et al. (fastai's XResNet
adapted to 1-D; "Deep learning for ECG analysis: benchmarks and insights from PTB-XL", 2021),
the backbone of Mehari & Strodthoff's SimCLR for 12-lead ECG (2022). xresnet1d50 as in their
code: a stem of three conv(5)-BN-ReLU layers (32, 32, 64 channels; the first with stride 2),
max-pool /2, then four stages of [3, 4, 6, 3] bottleneck blocks, all 64 wide with expansion 4
(256 output channels), stride 2 from the second stage on, kernel 5, zero-initialised last BN
of each residual branch, average-pool + 1x1 conv shortcuts.
Input contract (chosen here): 12 leads at 100 Hz, 10 s (1,000 samples), per-lead standardised,
as in the 100 Hz PTB-XL release the paper uses; the network is fully convolutional and is
pretrained on 2.5 s views. forward_features -> (B, T/16, 256) time tokens; forward -> their
average (the paper's head uses concat max+avg pooling; here the pooled embedding is the mean).

`ecg_ts2vec` / `ecg_ts2vec_tiny`: the TS2Vec encoder (Yue et al., AAAI 2022; github.com/
yuezhihan/ts2vec): a linear input projection per timestamp (12 leads -> hidden 64), optional
timestamp masking (zeroing projected timestamps; the training method passes the binomial mask),
then a dilated CNN of `depth` residual blocks (GELU, two conv(3) with dilation 2^i, same
padding) plus a final block to the 320-dim output, and dropout 0.1 on the representation.
forward_features -> (B, T, 320) per-timestamp representations (no mask outside training);
forward -> max-pool over time (TS2Vec's encoding_window='full_series').
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from medssl.ecg.encoder_spec import ecg_encoder_spec, resolve_hparams
from medssl.ecg.leads import STANDARD_LEADS, parse_lead_set
from medssl.registry import EncoderSpec, register_encoder

RESNET1D_PAPER = (
    "Mehari T, Strodthoff N. Self-supervised representation learning from 12-lead ECG data. "
    "Computers in Biology and Medicine 141:105114 (2022); xresnet1d from Strodthoff et al., "
    "IEEE JBHI 25(5) (2021)"
)
TS2VEC_PAPER = (
    "Yue Z, Wang Y, Duan J, Yang T, Huang C, Tong Y, Xu B. TS2Vec: Towards Universal "
    "Representation of Time Series. AAAI 2022"
)
def _check_input(x: Tensor, n_leads: int) -> None:
    if x.ndim != 3 or x.shape[1] != n_leads:
        raise ValueError(f"expected input (batch, {n_leads} leads, samples), got {tuple(x.shape)}")


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, *, act: bool = True, zero_bn: bool = False) -> nn.Sequential:
    conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight)
    bn = nn.BatchNorm1d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    nn.init.constant_(bn.bias, 1e-3)
    return nn.Sequential(conv, bn, *([nn.ReLU(inplace=True)] if act else []))


class Bottleneck1d(nn.Module):
    """xresnet bottleneck: 1x1 -> k (stride) -> 1x1 (x expansion), plus a pooled/projected
    shortcut; ReLU after the sum. (B, c_in, T) -> (B, width * expansion, T / stride)."""

    def __init__(self, c_in: int, width: int, expansion: int, stride: int, kernel: int):
        super().__init__()
        c_out = width * expansion
        self.convs = nn.Sequential(
            _conv_bn(c_in, width, 1),
            _conv_bn(width, width, kernel, stride),
            _conv_bn(width, c_out, 1, act=False, zero_bn=True),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(_conv_bn(c_in, c_out, 1, act=False))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.convs(x) + self.shortcut(x))


class EcgResNet1d(nn.Module):
    """1-D xresnet over (B, n_leads, T) ECG. forward_features -> (B, T', C); forward -> (B, C)."""

    def __init__(
        self,
        *,
        leads: Sequence[str] = STANDARD_LEADS,
        sampling_rate: float = 100.0,
        num_samples: int = 1000,
        stem_widths: Sequence[int] = (32, 32, 64),
        widths: Sequence[int] = (64, 64, 64, 64),
        layers: Sequence[int] = (3, 4, 6, 3),
        expansion: int = 4,
        kernel_size: int = 5,
        kernel_size_stem: int = 5,
        depth: int | None = None,
        spec: EncoderSpec | None = None,
    ):
        """`depth`, when set, puts `depth` blocks in every stage (the factory resolves it into
        `layers`)."""
        super().__init__()
        if depth is not None:
            layers = [int(depth)] * len(widths)
        if len(widths) != len(layers) or not layers:
            raise ValueError(f"widths {list(widths)} and layers {list(layers)} must have one entry per stage")
        self.leads = parse_lead_set(list(leads))
        self.n_leads = len(self.leads)
        chans = [self.n_leads, *stem_widths]
        self.stem = nn.Sequential(
            *[_conv_bn(chans[i], chans[i + 1], kernel_size_stem, 2 if i == 0 else 1) for i in range(len(stem_widths))],
            nn.MaxPool1d(kernel_size=3, stride=2, padding=1),
        )
        stages, c_in = [], chans[-1]
        for i, (width, n_blocks) in enumerate(zip(widths, layers)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(Bottleneck1d(c_in, width, expansion, 2 if (i > 0 and j == 0) else 1, kernel_size))
                c_in = width * expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.embed_dim = c_in
        self.spec = spec

    def forward_features(self, x: Tensor) -> Tensor:
        _check_input(x, self.n_leads)
        return self.stages(self.stem(x)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).mean(dim=1)


class SamePadConv1d(nn.Module):
    """Dilated conv whose output has the input's length (TS2Vec's SamePadConv)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__()
        receptive = (kernel - 1) * dilation + 1
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=receptive // 2, dilation=dilation)
        self.trim = 1 if receptive % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return out[:, :, : out.shape[2] - self.trim] if self.trim else out


class DilatedBlock(nn.Module):
    """GELU -> conv(k, dilation) -> GELU -> conv(k, dilation), plus the (1x1-projected when the
    width changes, or in the final block) input."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, final: bool = False):
        super().__init__()
        self.conv1 = SamePadConv1d(c_in, c_out, kernel, dilation)
        self.conv2 = SamePadConv1d(c_out, c_out, kernel, dilation)
        self.projector = nn.Conv1d(c_in, c_out, 1) if (c_in != c_out or final) else None

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.projector is None else self.projector(x)
        x = self.conv2(F.gelu(self.conv1(F.gelu(x))))
        return x + residual


class TS2VecEncoder(nn.Module):
    """TS2Vec encoder over (B, n_leads, T) ECG: per-timestamp (B, T, embed_dim) representations."""

    def __init__(
        self,
        *,
        leads: Sequence[str] = STANDARD_LEADS,
        sampling_rate: float = 100.0,
        num_samples: int = 1000,
        hidden_dim: int = 64,
        embed_dim: int = 320,
        depth: int = 10,
        kernel_size: int = 3,
        dropout: float = 0.1,
        spec: EncoderSpec | None = None,
    ):
        super().__init__()
        self.leads = parse_lead_set(list(leads))
        self.n_leads = len(self.leads)
        self.embed_dim = embed_dim
        self.input_fc = nn.Linear(self.n_leads, hidden_dim)
        widths = [hidden_dim] * depth + [embed_dim]
        self.blocks = nn.Sequential(*[
            DilatedBlock(widths[i - 1] if i > 0 else hidden_dim, widths[i], kernel_size, 2**i, final=i == len(widths) - 1)
            for i in range(len(widths))
        ])
        self.repr_dropout = nn.Dropout(dropout)
        self.spec = spec

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, n_leads, T); mask (B, T) bool, False = timestamp zeroed after the input
        projection (TS2Vec's timestamp masking; None = keep all). -> (B, T, embed_dim)."""
        _check_input(x, self.n_leads)
        h = self.input_fc(x.transpose(1, 2))  # (B, T, hidden)
        if mask is not None:
            h = h * mask.to(device=h.device, dtype=h.dtype)[..., None]
        h = self.blocks(h.transpose(1, 2))
        return self.repr_dropout(h).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).amax(dim=1)


_RESNET_SIZES = {
    "ecg_resnet1d50": dict(stem_widths=[32, 32, 64], widths=[64, 64, 64, 64], layers=[3, 4, 6, 3]),
    "ecg_resnet1d_tiny": dict(stem_widths=[16, 16, 32], widths=[16, 16, 16, 16], layers=[1, 1, 1, 1]),
}


def _resnet1d_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(leads=list(STANDARD_LEADS), sampling_rate=100.0, num_samples=1000, expansion=4,
                    kernel_size=5, kernel_size_stem=5, depth=None, **_RESNET_SIZES[name])
    hparams = resolve_hparams(name, defaults, overrides, int_lists=("stem_widths", "widths", "layers"))
    if hparams["depth"] is not None:  # a uniform depth: `depth` bottleneck blocks in every stage
        hparams["layers"] = [int(hparams["depth"])] * len(hparams["widths"])
    embed_dim = int(hparams["widths"][-1]) * int(hparams["expansion"])
    return ecg_encoder_spec(name, hparams, embed_dim, RESNET1D_PAPER)


def _resnet1d(name: str, **overrides) -> EcgResNet1d:
    spec = _resnet1d_spec(name, **overrides)
    return EcgResNet1d(**spec.hparams, spec=spec)


@register_encoder(modality="ecg", spec=partial(_resnet1d_spec, "ecg_resnet1d50"))
def ecg_resnet1d50(**overrides) -> EcgResNet1d:
    """xresnet1d50 (Mehari & Strodthoff's SimCLR backbone), 12 leads at 100 Hz, 10 s, 256-dim."""
    return _resnet1d("ecg_resnet1d50", **overrides)


@register_encoder(modality="ecg", spec=partial(_resnet1d_spec, "ecg_resnet1d_tiny"))
def ecg_resnet1d_tiny(**overrides) -> EcgResNet1d:
    """xresnet1d layout at CPU size (one block per stage, 16 wide), 12 leads at 100 Hz, 10 s."""
    return _resnet1d("ecg_resnet1d_tiny", **overrides)


_TS2VEC_SIZES = {
    "ecg_ts2vec": dict(hidden_dim=64, embed_dim=320, depth=10),
    "ecg_ts2vec_tiny": dict(hidden_dim=16, embed_dim=64, depth=3),
}


def _ts2vec_spec(name: str, **overrides) -> EncoderSpec:
    defaults = dict(leads=list(STANDARD_LEADS), sampling_rate=100.0, num_samples=1000, kernel_size=3,
                    dropout=0.1, **_TS2VEC_SIZES[name])
    hparams = resolve_hparams(name, defaults, overrides)
    return ecg_encoder_spec(name, hparams, hparams["embed_dim"], TS2VEC_PAPER)


def _ts2vec(name: str, **overrides) -> TS2VecEncoder:
    spec = _ts2vec_spec(name, **overrides)
    return TS2VecEncoder(**spec.hparams, spec=spec)


@register_encoder(modality="ecg", spec=partial(_ts2vec_spec, "ecg_ts2vec"))
def ecg_ts2vec(**overrides) -> TS2VecEncoder:
    """TS2Vec dilated CNN (hidden 64, depth 10, 320-dim), 12 leads at 100 Hz, 10 s, max-pooled."""
    return _ts2vec("ecg_ts2vec", **overrides)


@register_encoder(modality="ecg", spec=partial(_ts2vec_spec, "ecg_ts2vec_tiny"))
def ecg_ts2vec_tiny(**overrides) -> TS2VecEncoder:
    """TS2Vec layout at CPU size (hidden 16, depth 3, 64-dim), 12 leads at 100 Hz, 10 s."""
    return _ts2vec("ecg_ts2vec_tiny", **overrides)
