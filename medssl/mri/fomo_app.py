"""The FOMO25 container's `/app/predict.py`: the organisers' call, answered by `medssl fomo predict`.

Inside the submitted image the organisers run, once per subject (their validator,
`apptainer exec --bind <subject>:/input:ro --bind <out>:/output IMAGE python /app/predict.py ...`):

    python /app/predict.py --flair /input/ses_1/flair.nii.gz --adc /input/ses_1/adc.nii.gz \\
        --dwi_b1000 /input/ses_1/dwi_b1000.nii.gz --swi /input/ses_1/swi.nii.gz --output /output/sub_1.txt
    python /app/predict.py --flair ... --dwi_b1000 ... --t2s ... --output /output/sub_1.nii.gz   (task 2)
    python /app/predict.py --t1 /input/ses_1/t1.nii.gz --t2 /input/ses_1/t2.nii.gz --output /output/sub_1.txt

with `/app`, `/input` and `/output` existing in the image, every sequence file of the session they
recognise passed (so task 1 may get both --swi and --t2s; SWI is then used, as in training), the
output given as a file, and never `--task`. So the entry point:

- takes the task from the task checkpoint's card (`--task`, when given anyway, must agree);
- finds the checkpoint at `--checkpoint`, else `$MEDSSL_FOMO_CHECKPOINT`, else the folder
  `task_checkpoint/` next to the script (`/app/task_checkpoint` in the image);
- writes the output file (creating its folder), exits 0; on bad input prints one line to stderr
  and exits 2, so the organisers' log says what went wrong.

`recipes/fomo25_container.def` creates the folders and writes the script with
`python -m medssl.mri.fomo_app install /app/predict.py` (`install`), so the script in the image is
always the one of the installed medssl: three lines that call `main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CHECKPOINT_ENV = "MEDSSL_FOMO_CHECKPOINT"
APP_CHECKPOINT_DIR = "task_checkpoint"  # next to predict.py: /app/task_checkpoint
EXIT_BAD_INPUT = 2

PREDICT_PY = '''#!/usr/bin/env python3
"""FOMO25 predictor (written by `python -m medssl.mri.fomo_app install`): see medssl.mri.fomo_app."""
import sys

from medssl.mri.fomo_app import main

sys.exit(main(sys.argv[1:], script=__file__))
'''


def build_parser() -> argparse.ArgumentParser:
    from medssl.mri.predict import SEQUENCE_ARGS

    p = argparse.ArgumentParser(prog="predict.py", description="FOMO25 predictor (medssl): one session -> one "
                                "output; the task comes from the task checkpoint's card")
    for name in SEQUENCE_ARGS:
        p.add_argument(f"--{name}", metavar="FILE", help=f"{name} NIfTI of the session")
    p.add_argument("--output", required=True, help="output file: .txt (tasks 1, 3) or .nii.gz (task 2)")
    p.add_argument("--task", help="optional; must match the checkpoint's task when given")
    p.add_argument("--checkpoint", help=f"task checkpoint folder (default ${CHECKPOINT_ENV}, else "
                   f"{APP_CHECKPOINT_DIR}/ next to this script)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    return p


def default_checkpoint(script: str | Path | None = None) -> Path:
    """`$MEDSSL_FOMO_CHECKPOINT`, else `<folder of script>/task_checkpoint` (`/app/task_checkpoint`)."""
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Path(env)
    return Path(script or "/app/predict.py").resolve().parent / APP_CHECKPOINT_DIR


def main(argv: list[str] | None = None, script: str | Path | None = None) -> int:
    """Run the organisers' call; returns the exit code."""
    from medssl.mri.predict import SEQUENCE_ARGS, predict_files

    args = build_parser().parse_args(argv)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(script)
    files = {name: getattr(args, name) for name in SEQUENCE_ARGS}
    try:
        out = predict_files(checkpoint, args.task, files, args.output, args.device)
    except (ValueError, KeyError, OSError) as e:
        print(f"predict.py: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


def install(path: str | Path = "/app/predict.py") -> Path:
    """Write the entry-point script to `path` (executable) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PREDICT_PY)
    path.chmod(0o755)
    return path


if __name__ == "__main__":  # python -m medssl.mri.fomo_app install [/app/predict.py]
    if len(sys.argv) >= 2 and sys.argv[1] == "install" and len(sys.argv) <= 3:
        print(f"wrote {install(*sys.argv[2:3])}")
        sys.exit(0)
    print("usage: python -m medssl.mri.fomo_app install [/app/predict.py]", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
