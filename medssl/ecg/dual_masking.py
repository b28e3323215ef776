"""Spatio-Temporal Dual Masking (STDM) of CoRe-ECG (Qin et al., arXiv:2604.11359, 2026).

The paper masks along time and across leads "to break linear dependencies across leads,
increasing the difficulty of reconstructive tasks". In a 12-lead ECG, four limb leads are
linear combinations of I and II (III = II - I, aVR = -(I + II)/2, aVL = I - II/2,
aVF = II - I/2); with ST-MEM's per-lead random masking, a hidden patch of lead III is often
rebuilt exactly from the visible patches of I and II at the same time. STDM here:

- temporal masking: a fraction `time_ratio` of the time patches is hidden in *every* lead (the
  same positions across leads of a sample), so no lead shows what another lead hides there;
- spatial masking: `round(lead_ratio * n_leads)` whole leads are hidden, chosen uniformly among
  the lead sets in which no hidden lead lies in the linear span of the visible leads
  (`break_linear_dependence`). For the 12 standard leads, hiding any limb lead forces hiding at
  least five of the six (two visible limb leads determine all six); precordial leads are
  independent. Without the constraint, any lead set of that size is drawn.

The rule "no hidden lead in the span of the visible ones" and the defaults (half the time
patches and half the leads, 1 - 0.5 * 0.5 = 75 % of tokens hidden, MAE's ratio) are our choices:
the paper's exact ratios were not available to us.

The masker returns a `medssl.ssl.mae.PatchMask`: visible leads (B, Lv), their visible time
patches (B, Lv, K) and the (B, L, T) hidden-token grid; Lv and K are the same for every sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from medssl.ecg.leads import INDEPENDENT_LEADS, parse_lead_set
from medssl.ssl.mae import PatchMask

# Every standard lead as a vector over the independent leads (I, II, V1, ..., V6).
_LIMB_IN_I_II = {
    "I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0),
}


def lead_vectors(leads: Sequence[str]) -> np.ndarray:
    """(len(leads), 8) coefficients of each lead on I, II, V1-V6 (Einthoven/Goldberger)."""
    out = np.zeros((len(leads), len(INDEPENDENT_LEADS)))
    for i, name in enumerate(parse_lead_set(list(leads))):
        if name in _LIMB_IN_I_II:
            out[i, :2] = _LIMB_IN_I_II[name]
        else:
            out[i, INDEPENDENT_LEADS.index(name)] = 1.0
    return out


def _outside_span(vectors: np.ndarray, hidden: Sequence[int], visible: Sequence[int]) -> bool:
    base = np.linalg.matrix_rank(vectors[list(visible)]) if visible else 0
    return all(np.linalg.matrix_rank(vectors[[*visible, j]]) > base for j in hidden)


@lru_cache(maxsize=64)
def feasible_lead_masks(leads: tuple[str, ...], n_hidden: int, break_linear_dependence: bool = True) -> torch.Tensor:
    """All lead sets of size n_hidden that may be hidden, as an (S, L) bool tensor (True = hidden).

    With `break_linear_dependence`, only sets where no hidden lead is a linear combination of
    the visible leads. Raises ValueError when there is none.
    """
    n = len(leads)
    if not 0 <= n_hidden < n:
        raise ValueError(f"can hide 0 to {n - 1} of {n} leads, not {n_hidden}")
    vectors = lead_vectors(leads)
    rows = []
    for hidden in itertools.combinations(range(n), n_hidden):
        visible = [i for i in range(n) if i not in hidden]
        if not break_linear_dependence or _outside_span(vectors, hidden, visible):
            row = np.zeros(n, dtype=bool)
            row[list(hidden)] = True
            rows.append(row)
    if not rows:
        raise ValueError(
            f"no set of {n_hidden} lead(s) among {', '.join(leads)} lies outside the span of the others; "
            "choose another lead_ratio or break_linear_dependence=False"
        )
    return torch.from_numpy(np.stack(rows))


class SpatioTemporalDualMasker:
    """STDM: hide `time_ratio` of the time patches in every lead and `lead_ratio` of the leads.

    leads: the encoder's lead names, in input order. shared_time: the hidden time patches are
    the same in every lead of a sample (default; independent per lead otherwise).
    Called as masker(batch_size, n_leads, n_time, generator) -> PatchMask.
    """

    def __init__(
        self,
        leads: Sequence[str],
        time_ratio: float = 0.5,
        lead_ratio: float = 0.5,
        *,
        break_linear_dependence: bool = True,
        shared_time: bool = True,
    ):
        if not 0.0 < time_ratio < 1.0:
            raise ValueError(f"time_ratio must lie in (0, 1), got {time_ratio}")
        if not 0.0 <= lead_ratio < 1.0:
            raise ValueError(f"lead_ratio must lie in [0, 1), got {lead_ratio}")
        self.leads = tuple(parse_lead_set(list(leads)))
        self.time_ratio = float(time_ratio)
        self.lead_ratio = float(lead_ratio)
        self.break_linear_dependence = break_linear_dependence
        self.shared_time = shared_time
        self.n_hidden_leads = min(int(round(lead_ratio * len(self.leads))), len(self.leads) - 1)
        self.lead_sets = feasible_lead_masks(self.leads, self.n_hidden_leads, break_linear_dependence)

    def __call__(self, batch_size: int, n_leads: int, n_time: int, generator: torch.Generator) -> PatchMask:
        if n_leads != len(self.leads):
            raise ValueError(f"masker built for {len(self.leads)} leads, asked for {n_leads}")
        pick = torch.randint(len(self.lead_sets), (batch_size,), generator=generator)
        hidden_leads = self.lead_sets[pick]  # (B, L)
        n_visible = n_leads - self.n_hidden_leads
        # Stable sort puts the visible (False) leads first, in lead order.
        keep_leads = torch.sort(hidden_leads.to(torch.uint8), dim=1, stable=True).indices[:, :n_visible]

        n_hide_t = min(max(int(round(self.time_ratio * n_time)), 1), n_time - 1)
        rows = 1 if self.shared_time else n_visible
        order = torch.argsort(torch.rand(batch_size, rows, n_time, generator=generator), dim=2)
        keep_time = torch.sort(order[:, :, n_hide_t:], dim=2).values.expand(batch_size, n_visible, -1).clone()

        masked = torch.ones(batch_size, n_leads, n_time, dtype=torch.bool)
        lead_slot = keep_leads[:, :, None] * n_time + keep_time  # flat (lead, time) of visible tokens
        masked.view(batch_size, -1).scatter_(1, lead_slot.reshape(batch_size, -1), False)
        return PatchMask(keep_leads, keep_time, masked)
