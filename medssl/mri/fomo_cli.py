"""`medssl fomo predict | validate | finetune`: the FOMO25 task workflow from the command line.

    medssl fomo finetune --task 2 --data /data/fomo-task2 --encoder runs/amaes/checkpoint \\
        --out runs/task2 [--shape 160 192 160 --patch-size 96 96 96 --epochs 50 --val-site siteB]
    medssl fomo predict --flair F --dwi_b1000 F --swi F --output sub_1.nii.gz --checkpoint runs/task2
    medssl fomo predict --task 3 --t1 F --t2 F --output sub_1.txt --checkpoint runs/task3
    medssl fomo predict --task 1 --input-dir /data/eval1 --output-dir out1 --checkpoint runs/task1
    medssl fomo validate --task 1 --input /data/eval1 --output out1 [--json report.json]
    medssl bench recipes/bench_fomo_demo.yaml --out outputs/bench_fomo_demo   (encoders adapted per task)

The sequence arguments are those of the FOMO25 predict.py (`--flair --adc --dwi_b1000 --swi
--t2s --t1 --t2 --output`); predict's `--task` may be left out (the checkpoint's card has it), as
the organisers do when they run the container's `/app/predict.py` (`medssl.mri.fomo_app`). `validate` exits with code 2 when any prediction is missing or
malformed; bad input ends any command with one line and code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medssl.mri.predict import SEQUENCE_ARGS

EXIT_PROBLEMS = 2


def _precision(args: argparse.Namespace) -> str:
    from medssl.engine.hardware import resolve_inference_precision
    from medssl.mri.task_model import resolve_device

    return resolve_inference_precision(args.precision, resolve_device(args.device).type)


def _cmd_predict(args: argparse.Namespace) -> int:
    from medssl.mri.predict import predict_files, predict_folder

    files = {name: getattr(args, name) for name in SEQUENCE_ARGS}
    if args.input_dir or args.output_dir:
        if not (args.input_dir and args.output_dir) or args.output or any(files.values()):
            raise ValueError("folder mode takes --input-dir and --output-dir, without --output or sequence files")
        written, skipped = predict_folder(args.checkpoint, args.input_dir, args.output_dir, args.device,
                                          args.precision)
        for path, reason in skipped:
            print(f"skipped {path}: {reason.removeprefix(f'{path}: ')}", file=sys.stderr)
        print(f"wrote {len(written)} prediction(s) to {args.output_dir} ({len(skipped)} session(s) skipped; "
              f"precision {_precision(args)})")
        return 0 if written else EXIT_PROBLEMS
    if not args.output:
        raise ValueError("predict needs --output PATH (or --input-dir and --output-dir)")
    out = predict_files(args.checkpoint, args.task, files, args.output, args.device, args.precision)
    print(f"wrote {out} (precision {_precision(args)})")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from medssl.io import atomic_write_json
    from medssl.mri.validate import validate_outputs

    report = validate_outputs(args.task, args.input, args.output)
    print(report.format())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    return 0 if report.ok else EXIT_PROBLEMS


def _key_value(text: str):
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--encoder-override {text!r}: expected KEY=VALUE")
    return key.strip(), yaml.safe_load(value)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from medssl.mri.finetune import FinetuneSettings, finetune_task

    rows = _task_rows(args.data, args.task)
    val_rows = None
    if args.train_site or args.val_site:
        train_sites = set(args.train_site or [])
        val_sites = set(args.val_site or [])
        val_rows = [r for r in rows if r.get("site") in val_sites]
        rows = [r for r in rows if (r.get("site") in train_sites if train_sites else r.get("site") not in val_sites)]
        if not rows:
            raise ValueError(f"{args.data}: no session of site(s) {', '.join(sorted(train_sites or {'other'}))} to train on")
    settings = FinetuneSettings(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, encoder_lr_scale=args.encoder_lr_scale,
        head=args.head, shape=args.shape, patch_size=args.patch_size, overlap=args.overlap, seed=args.seed,
        device=args.device, workers=args.workers, mirror=not args.no_mirror,
        encoder_overrides=dict(_key_value(o) for o in args.encoder_override),
    )
    folder = finetune_task(rows, args.task, args.encoder, args.out, settings, val_rows=val_rows,
                           cache_root=args.cache_dir, progress=lambda m: print(f"[fomo] {m}", file=sys.stderr))
    print(f"task checkpoint: {folder}")
    return 0


def _task_rows(data: str, task: int) -> list[dict]:
    """Rows of a fomo-task folder (indexed, skipped sessions printed) or of a manifest CSV."""
    from medssl.data.manifest import read_manifest
    from medssl.mri.fomo_task import index_fomo_task

    p = Path(data)
    if p.is_dir():
        rows, skipped = index_fomo_task(p, task)
        for path, reason in skipped:
            print(f"skipped {path}: {reason.removeprefix(f'{path}: ')}", file=sys.stderr)
    elif p.is_file():
        rows = read_manifest(p)
    else:
        raise ValueError(f"{data}: not found (a fomo-task folder or a manifest CSV)")
    if not rows:
        raise ValueError(f"{data}: no usable task {task} session")
    return rows


def _shape(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_fomo_parser(subparsers) -> argparse.ArgumentParser:
    """Add `fomo` with its subcommands predict, validate, finetune to the `medssl` parser."""
    fomo = subparsers.add_parser("fomo", help="FOMO25 tasks: fine-tune a task model, predict, validate outputs")
    sub = fomo.add_subparsers(dest="fomo_command", required=True)

    pr = sub.add_parser("predict", help="predict one session (FOMO25 predict.py arguments) or a task folder")
    pr.add_argument("--task", type=int, choices=[1, 2, 3],
                    help="1 infarct (probability), 2 meningioma (mask), 3 brain age (years); default: the "
                         "checkpoint card's task (the organisers never pass it)")
    for name in SEQUENCE_ARGS:
        pr.add_argument(f"--{name}", metavar="FILE", help=f"{name} NIfTI of the session")
    pr.add_argument("--output", help="output file: .txt (tasks 1, 3) or .nii.gz (task 2)")
    pr.add_argument("--checkpoint", required=True, help="task checkpoint folder (from `medssl fomo finetune`)")
    pr.add_argument("--input-dir", help="folder mode: a fomo-task folder to predict every session of")
    pr.add_argument("--output-dir", help="folder mode: where <subject>_<session>.txt|.nii.gz are written")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    pr.add_argument("--precision", choices=["32", "bf16"], default=None,
                    help="32 (fp32) or bf16 (autocast); default: fp32 on a CPU, bf16 on a bf16 CUDA card, "
                         "or $MEDSSL_PRECISION")
    pr.set_defaults(func=_cmd_predict)

    va = sub.add_parser("validate", help="check a folder of predictions against the task folder (exit 2 if bad)")
    va.add_argument("--task", type=int, choices=[1, 2, 3], required=True, help="1 infarct, 2 meningioma, 3 brain age")
    va.add_argument("--input", required=True, help="the task folder the predictions were made from")
    va.add_argument("--output", required=True, help="the folder of predictions")
    va.add_argument("--json", help="also write the report as JSON here")
    va.set_defaults(func=_cmd_validate)

    ft = sub.add_parser("finetune", help="fine-tune an encoder (or a random one) on a task; writes a task checkpoint")
    ft.add_argument("--task", type=int, choices=[1, 2, 3], required=True, help="1 infarct, 2 meningioma, 3 brain age")
    ft.add_argument("--data", required=True, help="fomo-task folder or manifest CSV of the task")
    ft.add_argument("--encoder", required=True, help="pretrained encoder checkpoint folder or random:NAME[:SEED]")
    ft.add_argument("--out", required=True, help="task checkpoint folder to write")
    ft.add_argument("--encoder-override", action="append", default=[], metavar="KEY=VALUE",
                    help="random:NAME encoders only: factory argument, e.g. widths=[8,16] (repeatable)")
    ft.add_argument("--shape", type=_shape, nargs=3, metavar=("D", "H", "W"),
                    help="preprocessed volume in voxels (default 160 192 160: the whole brain at 1 mm)")
    ft.add_argument("--patch-size", type=_shape, nargs=3, metavar=("D", "H", "W"),
                    help="task 2 training patch and sliding window (default: the encoder's patch)")
    ft.add_argument("--overlap", type=float, default=0.5, help="task 2 sliding-window overlap (default 0.5)")
    ft.add_argument("--epochs", type=_shape, default=50, help="training epochs")
    ft.add_argument("--batch-size", type=_shape, default=2, help="volumes (task 2: patches) per step")
    ft.add_argument("--lr", type=float, default=1e-4, help="head learning rate (AdamW)")
    ft.add_argument("--encoder-lr-scale", type=float, default=1.0, help="encoder lr / head lr; 0 freezes it")
    ft.add_argument("--head", choices=["linear", "mlp"], default="linear", help="tasks 1, 3: pooled-feature head")
    ft.add_argument("--train-site", action="append", help="train on these sites only (repeatable)")
    ft.add_argument("--val-site", action="append", help="score these sites at the end, e.g. out of domain")
    ft.add_argument("--no-mirror", action="store_true", help="no left-right mirroring augmentation")
    ft.add_argument("--seed", type=int, default=0, help="seed of the split, augmentation and initialisation")
    ft.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ft.add_argument("--workers", type=int, help="preprocessing processes (default: one per core)")
    ft.add_argument("--cache-dir", help="preprocessed-array cache (default $MEDSSL_CACHE)")
    ft.set_defaults(func=_cmd_finetune)

    return fomo
