"""A fifth modality written outside medssl, as a third party would: single-channel 1-D signals
(a toy "EEG": a sine of a class-dependent frequency plus noise) stored as .npy files beside a
labels.csv. It brings a layout, a data hook, an encoder, an SSL method (a denoising autoencoder)
and nothing else; medssl discovers it through the ``medssl.modalities`` entry-point group."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medssl.data.cache import build_array_cache
from medssl.data.layouts import register_layout
from medssl.engine.methods import register_method
from medssl.plugins import Modality
from medssl.registry import EncoderSpec, register_encoder

LENGTH = 64


def index_toy_folder(root: Path, labels: str | None = None, task: str | None = None):
    """labels.csv (record, subject_id, label) + RECORD.npy files -> (rows, skipped)."""
    rows, skipped = [], []
    with (Path(root) / "labels.csv").open(newline="") as f:
        for r in csv.DictReader(f):
            path = Path(root) / f"{r['record']}.npy"
            if not path.is_file():
                skipped.append((str(path), "no such file"))
                continue
            rows.append({"record_id": r["record"], "subject_id": r["subject_id"], "path": str(path),
                         "split": "", "labels": r["label"], "site": "toy"})
    return rows, skipped


class ToyLoader:
    def __call__(self, row: dict) -> np.ndarray:
        x = np.load(row["path"]).astype(np.float32)
        if x.shape != (LENGTH,):
            raise ValueError(f"{row['path']}: expected {LENGTH} samples, got shape {x.shape}")
        return ((x - x.mean()) / max(float(x.std()), 1e-6))[None, None]


def toy_inputs(rows, spec_input, data_cfg, cache_root):
    return build_array_cache(rows, ToyLoader(), settings={"length": LENGTH}, settings_key=f"toy|{LENGTH}",
                             modality="toy_eeg", cache_root=data_cfg.get("cache_dir") or cache_root)


def write_toy_cohort(folder: Path, n_subjects: int = 24, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(LENGTH) / LENGTH
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["record", "subject_id", "label"])
        for s in range(n_subjects):
            label = "fast" if s % 2 else "slow"
            freq = 8.0 if label == "fast" else 2.0
            for k in range(2):
                x = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) + 0.3 * rng.standard_normal(LENGTH)
                np.save(folder / f"s{s:02d}_{k}.npy", x)
                w.writerow([f"s{s:02d}_{k}", f"s{s:02d}", label])


class ToyEncoder(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), nn.GELU(), nn.Conv1d(width, width, 5, padding=2))
        self.spec = EncoderSpec(name="toy_eeg_cnn", modality="toy_eeg", input={"channels": 1, "num_samples": LENGTH},
                                embed_dim=width, hparams={"width": width})

    def forward(self, x):
        return self.net(x).mean(dim=2)


@register_encoder(modality="toy_eeg")
def toy_eeg_cnn(width: int = 16) -> ToyEncoder:
    """Two 1-D convolutions, mean over time: a toy EEG encoder."""
    return ToyEncoder(width)


class Denoiser(nn.Module):
    """Denoising autoencoder: encode x + noise, reconstruct x from the pooled embedding."""

    def __init__(self, encoder: ToyEncoder, seed: int):
        super().__init__()
        self.encoder, self.seed = encoder, seed
        self.decoder = nn.Linear(encoder.spec.embed_dim, LENGTH)

    def forward(self, x, *, step: int, rank: int = 0):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + rank)
        noisy = x + 0.5 * torch.randn(x.shape, generator=gen)
        return nn.functional.mse_loss(self.decoder(self.encoder(noisy)), x[:, 0])


@register_method("toy_denoise", modality="toy_eeg")
def build_toy_denoise(cfg: dict):
    from medssl.registry import create_encoder

    encoder = create_encoder(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    return encoder, Denoiser(encoder, cfg.get("seed", 0))


MODALITY = Modality(name="toy_eeg", inputs=toy_inputs, registers=(__name__,))
register_layout("toy-folder", index_toy_folder)
