"""MRI sequence names from file names: the vocabulary every volume layout shares.

FOMO60K names scans by sequence (`t1.nii.gz`, `flair_2.nii.gz`), IXI by a suffix (`IXI012-HH-1211-T1`),
BIDS by a suffix (`sub-01_FLAIR`); :func:`normalise_sequence` maps any of these to one of SEQUENCES.
"""

from __future__ import annotations

import re

SEQUENCES: tuple[str, ...] = ("t1", "t1c", "t2", "t2s", "flair", "swi", "pd", "dwi", "adc", "other")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

_REPEAT = re.compile(r"_(\d+)$")
_T1C = re.compile(r"^(c|ce|gd|post|contrast|km|enh)|gd|post|contrast|gadolin")


def normalise_sequence(name: str) -> str:
    """One of SEQUENCES for a scan's file name or stem (`t1_2.nii.gz` -> t1, `mprage` -> t1,
    `t2_flair` -> flair, `t1flair` -> t1 (T1-weighted FLAIR), `t1ce` -> t1c, `t2star` -> t2s,
    `swan` -> swi, `dwi_b1000` / `trace` -> dwi, anything unknown -> other)."""
    stem = scan_stem(name)
    stem = _REPEAT.sub("", stem)
    s = re.sub(r"[^a-z0-9*]", "", stem.lower())
    if not s:
        return "other"
    if "adc" in s or "apparentdiffusion" in s:
        return "adc"
    if s.startswith(("dwi", "dti", "b1000", "trace")) or "diffusion" in s:
        return "dwi"
    if "swi" in s or "swan" in s or "susceptibility" in s:
        return "swi"
    if re.fullmatch(r"t2(s|star|\*)(w|we|gre|map)?", s) or s in ("gre", "t2gre", "hemo", "t2sgre", "t2w*"):
        return "t2s"
    if "flair" in s and not s.startswith("t1"):
        return "flair"
    t1_family = s.startswith("t1") or any(k in s for k in ("mprage", "mp2rage", "spgr", "bravo", "tfl3d"))
    if t1_family:
        rest = s[2:] if s.startswith("t1") else s
        rest = rest[1:] if rest.startswith("w") else rest
        return "t1c" if _T1C.search(rest.replace("flair", "")) else "t1"
    if s.startswith("t2"):
        return "t2"
    if s.startswith("pd") or "protondensity" in s:
        return "pd"
    return "other"


def scan_stem(name: str) -> str:
    """File name without folders and NIfTI suffix: `ses_1/t1_2.nii.gz` -> `t1_2`."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in NIFTI_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base
