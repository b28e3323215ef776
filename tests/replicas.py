"""Small replicas of real corpora's on-disk layouts, written by tests (no data is downloaded)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import wfdb

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]

# code: diagnostic, form, rhythm, diagnostic_class, diagnostic_subclass (as in scp_statements.csv)
STATEMENTS = {
    "NORM": ("1.0", "", "", "NORM", "NORM"),
    "IMI": ("1.0", "", "", "MI", "IMI"),
    "ASMI": ("1.0", "", "", "MI", "AMI"),
    "NDT": ("1.0", "1.0", "", "STTC", "STTC"),
    "LVH": ("1.0", "", "", "HYP", "LVH"),
    "CLBBB": ("1.0", "", "", "CD", "CLBBB"),
    "XDIAG": ("1.0", "", "", "", ""),  # diagnostic, but with no class: dropped from sub/super tasks
    "ABQRS": ("", "1.0", "", "", ""),
    "PVC": ("", "1.0", "1.0", "", ""),
    "SR": ("", "", "1.0", "", ""),
    "AFIB": ("", "", "1.0", "", ""),
    "STACH": ("", "", "1.0", "", ""),
}

# ecg_id, patient_id, strat_fold, scp_codes, site
RECORDS = [
    (1, 101.0, 1, "{'NORM': 100.0, 'SR': 0.0}", 0.0),
    (2, 101.0, 1, "{'NORM': 80.0, 'SR': 0.0}", 0.0),
    (3, 102.0, 2, "{'IMI': 50.0, 'ASMI': 100.0, 'ABQRS': 0.0, 'SR': 0.0}", 1.0),
    (4, 103.0, 3, "{'NDT': 100.0, 'AFIB': 0.0}", 1.0),
    (5, 104.0, 4, "{'LVH': 35.0, 'STACH': 0.0}", 2.0),
    (6, 105.0, 8, "{'CLBBB': 100.0, 'PVC': 100.0, 'SR': 0.0}", 2.0),
    (7, 106.0, 9, "{'NORM': 100.0, 'SR': 0.0}", 0.0),
    (8, 106.0, 9, "{'XDIAG': 100.0, 'SR': 0.0}", 0.0),
    (9, 107.0, 10, "{'SR': 0.0}", 0.0),  # rhythm only: no diagnostic label
    (10, 108.0, 10, "{'IMI': 100.0, 'NDT': 0.0}", 3.0),
    (11, 109.0, 5, "{'ABQRS': 0.0, 'SR': 0.0}", 3.0),
    (12, 110.0, 6, "{'NORM': 100.0}", 0.0),
]


def _write_record(folder: Path, name: str, fs: int, seconds: float = 1.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * (k + 1) * t) * 0.5 for k in range(12)], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=sig, fmt=["16"] * 12,
                write_dir=str(folder))


def _rel(ecg_id: int, rate: int) -> str:
    suffix = "lr" if rate == 100 else "hr"
    return f"records{rate}/00000/{ecg_id:05d}_{suffix}"


def write_ptbxl_replica(root: Path, records=RECORDS, skip_files=(), seconds: float = 1.0) -> Path:
    """scp_statements.csv, ptbxl_database.csv and records100/ + records500/ as PTB-XL lays them out."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "scp_statements.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"])
        for code, (diag, form, rhythm, cls, sub) in STATEMENTS.items():
            w.writerow([code, f"statement {code}", diag, form, rhythm, cls, sub])
    with (root / "ptbxl_database.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_lr", "filename_hr",
                    "site", "device"])
        for ecg_id, patient, fold, scp, site in records:
            w.writerow([ecg_id, patient, 50.0, 1, scp, fold, _rel(ecg_id, 100), _rel(ecg_id, 500), site, "CS-12"])
            if ecg_id in skip_files:
                continue
            for rate in (100, 500):
                rel = Path(_rel(ecg_id, rate))
                _write_record(root / rel.parent, rel.name, rate, seconds)
    return root
