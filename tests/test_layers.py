"""medssl's layers point one way (.importlinter at the repository root, checked by import-linter):

    medssl.cli <- medssl.demo | medssl.preprocessing <- the modalities (ecg | mri | retina | ct, none
    importing another) <- medssl.bench | medssl.privacy <- medssl.engine <- medssl.ssl <- medssl.imaging
    <- medssl.data <- medssl.nn <- medssl.plots <- medssl.checkpoint <- medssl.hub <- medssl.registry
    <- medssl.progress | medssl.io | medssl.plugins (the modality plug-in shape and its discovery)

A module may import from its own layer's package and from any layer below it, never above;
lazy imports inside functions count too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_holds():
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout
