"""The ECG modality's data hooks (see `medssl.data.modalities`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.cache import ArrayCache
from medssl.data.layouts import register_layout
from medssl.data.manifest import split_labels
from medssl.plugins import Modality, register_modality

_DERIVABLE = {"III", "aVR", "aVL", "aVF"}  # from I and II (medssl.ecg.leads.select_leads)


def ecg_inputs(rows: Sequence[dict], spec_input: Mapping[str, Any], data_cfg: Mapping[str, Any],
               cache_root: str | Path | None) -> ArrayCache:
    """(N_windows, n_leads, num_samples) float32 windows for an ECG encoder's contract; the recipe's
    `bandpass` ([low, high] Hz, or null for no filter) and `notch_hz` data settings apply when
    given, else medssl's defaults (0.67-40 Hz), and never where the contract declares its own
    filter (imported release weights: `preprocess_for_encoder`). A bench dataset without these
    keys therefore gets the filter the encoder was pretrained with, not an unfiltered signal."""
    from medssl.ecg.dataset import ecg_array_cache, preprocess_for_encoder

    settings = {}
    if "bandpass" in data_cfg:
        low, high = data_cfg["bandpass"] or (None, None)
        settings.update(bandpass_low=low, bandpass_high=high)
    if data_cfg.get("notch_hz") is not None:
        settings["notch_hz"] = data_cfg["notch_hz"]
    prep = preprocess_for_encoder(dict(spec_input), **settings)
    return ecg_array_cache(rows, prep, data_cfg.get("cache_dir") or cache_root)


def _floats(rows: Sequence[dict], column: str) -> np.ndarray:
    """The column as floats; empty unless every row has a number there."""
    out = []
    for r in rows:
        try:
            out.append(float(r[column]))
        except (KeyError, TypeError, ValueError):
            return np.zeros(0)
    return np.asarray(out)


PLAUSIBLE_RATE_HZ = (50.0, 20000.0)  # ECG sampling rates outside this are not real recordings
_IMAGE_OR_VOLUME = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".nii", ".nii.gz", ".dcm",
                    ".mha", ".nrrd", ".npz")


def _not_an_ecg_path(path: str) -> bool:
    """A manifest path of an image, a volume or a DICOM series folder: not an ECG record."""
    p = path.partition("#")[0].lower()
    return p.endswith(_IMAGE_OR_VOLUME) or (bool(p) and Path(path).is_dir())


def ecg_contract_problems(spec_input: Mapping[str, Any], rows: Sequence[dict]) -> list[str]:
    """What ``rows`` lack for the encoder, from manifest columns where present: rows that are
    images or volumes, not ECG records; ``leads``
    (";"-joined; limb leads derivable from I and II count as present), ``sampling_rate`` (not below
    the encoder's: upsampling cannot restore the missing band) and ``n_samples`` / rate (records at
    least the encoder's window long, no zero padding). A sampling rate outside PLAUSIBLE_RATE_HZ
    raises ValueError naming the record."""
    problems = []
    for r in rows:  # a value no real ECG has is a broken record or manifest: refused, naming it
        try:
            fs = float(r["sampling_rate"])
        except (KeyError, TypeError, ValueError):
            continue
        if not PLAUSIBLE_RATE_HZ[0] <= fs <= PLAUSIBLE_RATE_HZ[1]:
            raise ValueError(f"{r.get('path') or r.get('record_id', '?')}: sampling rate {fs:g} Hz is implausible for "
                             f"an ECG (expected {PLAUSIBLE_RATE_HZ[0]:g} to {PLAUSIBLE_RATE_HZ[1]:g} Hz); check its "
                             f"header or the manifest's sampling_rate")
    foreign = [r for r in rows if _not_an_ecg_path(str(r.get("path", "")))]
    if foreign:
        problems.append(f"records: {len(foreign)} of {len(rows)} rows are not ECG records (e.g. "
                        f"{Path(str(foreign[0]['path'])).name}: an image or volume)")
        return problems
    need_leads = list(spec_input.get("leads") or [])
    lead_values = [r.get("leads") for r in rows if r.get("leads")]
    if need_leads and lead_values:
        lacking: dict[tuple[str, ...], int] = {}
        for value in lead_values:
            have = set(split_labels(value))
            miss = tuple(ld for ld in need_leads
                         if ld not in have and not (ld in _DERIVABLE and {"I", "II"} <= have))
            if miss:
                lacking[miss] = lacking.get(miss, 0) + 1
        if lacking:
            miss = max(lacking.items(), key=lambda kv: kv[1])[0]
            if len(rows) == 1:  # one record's reason, worded as the reader words it (MissingLeadsError)
                have = split_labels(lead_values[0])
                problems.append(f"missing lead(s) {', '.join(miss)}; the record has {', '.join(have)}")
            else:
                problems.append(f"leads: {sum(lacking.values())} of {len(rows)} records lack {', '.join(miss)} "
                                f"(encoder needs {', '.join(need_leads)})")
    rate = spec_input.get("sampling_rate")
    rates = _floats(rows, "sampling_rate")
    if rate and rates.size:
        low = rates < float(rate) - 1e-6
        if low.any():
            which = "" if len(rows) == 1 else f"{int(low.sum())} of {len(rows)} records "
            problems.append(f"rate: {which}sampled at {rates[low].min():g} Hz, below the encoder's {float(rate):g} Hz")
    n_need = spec_input.get("num_samples")
    if rate and n_need and rates.size:
        lengths = _floats(rows, "n_samples")
        if lengths.size == rates.size:
            dur = lengths / rates
            need = float(n_need) / float(rate)
            short = dur < need - 1.0 / float(rate)
            if short.any():
                if len(rows) == 1:
                    problems.append(f"length: {dur[0]:.2f} s, shorter than the encoder's {need:g} s window")
                else:
                    problems.append(f"length: {int(short.sum())} of {len(rows)} records shorter than the encoder's "
                                    f"{need:g} s window (shortest {dur[short].min():.2f} s)")
    return problems


def write_synthetic_ecg(folder: str | Path, *, subjects_per_site: int = 200, seed: int = 0):
    """The two-site synthetic 12-lead cohort (medssl.ecg.synthetic) as WFDB + labels.csv, indexed."""
    from medssl.data.layouts import index_layout
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    folder = Path(folder)
    if not (folder / "labels.csv").is_file():
        write_wfdb_cohort(generate_cohort(2 * subjects_per_site, records_per_subject=(1, 3), seed=seed), folder)
    return index_layout("synthetic", folder)


def _wfdb(root: Path, labels: str | None = None, task: str | None = None):
    from medssl.ecg.layouts import index_wfdb_folder

    if task:
        raise ValueError("layout wfdb has no tasks: its labels come from --labels")
    return index_wfdb_folder(root, labels)


def _synthetic(root: Path, labels: str | None = None, task: str | None = None):
    """A folder written by `medssl data synth` (WFDB records + labels.csv with subject and site)."""
    labels_csv = Path(labels) if labels else root / "labels.csv"
    if not labels_csv.is_file():
        raise ValueError(f"{labels_csv}: not found; write a synthetic cohort with `medssl data synth --out {root}`")
    return _wfdb(root, str(labels_csv), task)


def _ptbxl(root: Path, labels: str | None = None, task: str | None = None, rate: int | None = None):
    """PTB-XL with one of the six benchmark tasks (default superdiagnostic) at 100 or 500 Hz."""
    from medssl.ecg.ptbxl import index_ptbxl

    if labels:
        raise ValueError("layout ptbxl takes its labels from ptbxl_database.csv; drop --labels")
    return index_ptbxl(root, task=task or "superdiagnostic", rate=100 if rate is None else rate)


def _physionet2021(root: Path, labels: str | None = None, task: str | None = None):
    """PhysioNet/CinC Challenge 2020/2021 WFDB records, labels from their #Dx SNOMED-CT codes."""
    from medssl.ecg.physionet2021 import index_physionet2021

    if labels or task:
        raise ValueError("layout physionet2021 has no tasks and takes its labels from the #Dx header lines")
    return index_physionet2021(root)


def _code15(root: Path, labels: str | None = None, task: str | None = None):
    """CODE-15%: exams.csv + exams_part{i}.hdf5."""
    from medssl.ecg.code15 import index_code15

    if labels or task:
        raise ValueError("layout code15 has no tasks and takes its labels from exams.csv")
    return index_code15(root)


for _name, _indexer in (("wfdb", _wfdb), ("synthetic", _synthetic), ("ptbxl", _ptbxl),
                        ("physionet2021", _physionet2021), ("code15", _code15)):
    register_layout(_name, _indexer)

# Views for the privacy audit when a recipe's own augmentations change the window's shape (crops).
DEFAULT_VIEW_AUGMENT = (
    {"name": "gaussian_noise", "std": 0.05}, {"name": "amplitude_scale", "magnitude": [0.8, 1.25]},
    {"name": "time_out", "ratio": [0.1, 0.2]},
)


def ecg_view_augment(specs: Sequence[dict] | None, spec_input: Mapping[str, Any], example):
    """The recipe's `augment` list (``specs``) when it keeps the window's shape on ``example``
    (1, leads, samples), else gaussian noise + amplitude scaling + time-out."""
    import torch

    from medssl.ecg.augment import build_augment

    augment = build_augment(list(specs or DEFAULT_VIEW_AUGMENT), sampling_rate=spec_input.get("sampling_rate"))
    if augment(example, torch.Generator().manual_seed(0)).shape != example.shape:
        augment = build_augment(list(DEFAULT_VIEW_AUGMENT))
    return augment


MODALITY = register_modality(Modality(
    name="ecg", inputs=ecg_inputs, contract_problems=ecg_contract_problems, write_synthetic=write_synthetic_ecg,
    view_augment=ecg_view_augment,
    registers=("medssl.ecg.encoders", "medssl.ecg.encoders_contrastive", "medssl.ecg.vit", "medssl.ecg.methods",
               "medssl.ecg.methods_contrastive", "medssl.ecg.methods_masked", "medssl.ecg.importers"),
))
