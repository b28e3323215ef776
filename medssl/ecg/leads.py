"""Standard 12-lead ECG lead names, matching of the names found in real headers, and lead subsets.

Lead algebra (Einthoven/Goldberger): III = II - I, aVR = -(I + II)/2, aVL = I - II/2,
aVF = II - I/2. The "8 independent leads" are I, II, V1-V6; the other four follow from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LIMB_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF")

LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12": STANDARD_LEADS,
    "8": INDEPENDENT_LEADS,
    "6": LIMB_LEADS,
}

# Aliases seen in real headers, lower-cased. MLII is the modified lead II of Holter/MIT-BIH
# recordings; it is treated as lead II (an approximation worth knowing about).
_ALIASES: dict[str, str] = {
    "mlii": "II",
    "mli": "I",
    "mliii": "III",
    "lead i": "I",
    "lead ii": "II",
    "lead iii": "III",
    "d1": "I",
    "d2": "II",
    "d3": "III",
}
_BY_LOWER = {name.lower(): name for name in STANDARD_LEADS}


class MissingLeadsError(ValueError):
    """A record lacks leads that an encoder or a lead subset needs."""

    def __init__(self, missing: Sequence[str], available: Sequence[str], source: str = ""):
        self.missing = tuple(missing)
        self.available = tuple(available)
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}missing lead(s) {', '.join(self.missing)}; "
            f"the record has {', '.join(self.available) or 'no standard leads'}"
        )


def canonical_lead_name(name: str) -> str | None:
    """Map a channel name from a header to a standard lead name, or None when it is not one.

    Matching is case-insensitive and ignores surrounding spaces ("i", " AVR", "MLII" -> "II").
    """
    key = name.strip().lower()
    return _BY_LOWER.get(key) or _ALIASES.get(key)


def parse_lead_set(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A lead subset from "12", "8", "6", a single lead name ("II") or a list of names."""
    if isinstance(spec, str):
        if spec in LEAD_SETS:
            return LEAD_SETS[spec]
        names = [s for s in spec.replace(";", ",").split(",") if s.strip()]
    else:
        names = list(spec)
    out = []
    for n in names:
        c = canonical_lead_name(n)
        if c is None:
            raise ValueError(f"unknown lead name {n!r}; standard leads are {', '.join(STANDARD_LEADS)}")
        out.append(c)
    if len(set(out)) != len(out):
        raise ValueError(f"lead set {spec!r} names a lead twice")
    return tuple(out)


def select_leads(
    signal: np.ndarray,
    lead_names: Sequence[str],
    wanted: Sequence[str],
    *,
    derive: bool = True,
    source: str = "",
) -> np.ndarray:
    """Pick `wanted` leads, in that order, from `signal` of shape (n_channels, n_samples).

    `lead_names` must already be canonical (see `canonical_lead_name`); non-standard channels
    may be given as None or any other name and are ignored. With `derive`, the limb leads III,
    aVR, aVL and aVF are computed from I and II when the record lacks them.
    Raises MissingLeadsError naming every lead that cannot be had.
    """
    index = {n: i for i, n in enumerate(lead_names) if n in _BY_LOWER.values()}
    rows: list[np.ndarray] = []
    missing: list[str] = []
    for lead in wanted:
        if lead in index:
            rows.append(signal[index[lead]])
            continue
        derived = _derive_limb_lead(lead, signal, index) if derive else None
        if derived is None:
            missing.append(lead)
        else:
            rows.append(derived)
    if missing:
        raise MissingLeadsError(missing, [n for n in lead_names if n in index], source)
    return np.stack(rows).astype(np.float32, copy=False)


def _derive_limb_lead(lead: str, signal: np.ndarray, index: dict[str, int]) -> np.ndarray | None:
    if "I" not in index or "II" not in index:
        return None
    lead_i, lead_ii = signal[index["I"]], signal[index["II"]]
    formulas = {
        "III": lambda: lead_ii - lead_i,
        "aVR": lambda: -(lead_i + lead_ii) / 2,
        "aVL": lambda: lead_i - lead_ii / 2,
        "aVF": lambda: lead_ii - lead_i / 2,
    }
    f = formulas.get(lead)
    return None if f is None else f()
