"""The `medssl` command.

Bad input ends with one line naming the file or key and exit code 2; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def _cmd_encoders(args: argparse.Namespace) -> int:
    from medssl.registry import encoder_entry, encoder_spec, list_encoders

    rows = []
    for name in list_encoders(args.modality):
        spec = encoder_spec(name)  # from the registered spec function: no weights built
        contract = ", ".join(
            f"{k}={'/'.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in spec.input.items() if k not in ("normalisation", "units")
        )
        rows.append((name, spec.modality, str(spec.embed_dim), contract, encoder_entry(name).description))
    headers = ("name", "modality", "dim", "input", "description")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for r in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_data_index(args: argparse.Namespace) -> int:
    from medssl.data.layouts import index_layout
    from medssl.data.manifest import write_manifest

    options = dict(_key_value(o, "--option") for o in args.option)
    if args.fov:
        options["fov"] = args.fov
    # --option task=|labels=|rate= mean what --task, --labels and --rate mean (the README writes both)
    common = {"task": args.task, "labels": args.labels, "rate": args.rate}
    for key in common:
        if key in options:
            value = options.pop(key)
            if key == "rate":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"--option rate={value!r}: not a whole number of Hz") from None
            if common[key] is not None and common[key] != value:
                raise ValueError(f"--{key} {common[key]} and --option {key}={value} disagree; give one")
            common[key] = value
    rows, skipped = index_layout(args.layout, Path(args.root), **common, **options)
    _report_skipped(skipped)
    if not rows:
        print(f"medssl: error: {args.root}: no usable records", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.physio_targets:
        from medssl.ecg.targets import add_physiological_targets

        rows = add_physiological_targets(rows)
    write_manifest(rows, args.out)
    if skipped:
        _write_skipped(skipped, Path(args.out).with_suffix(".skipped.csv"))
    n_subjects = len({r["subject_id"] for r in rows})
    print(f"wrote {args.out}: {len(rows)} records of {n_subjects} subjects ({len(skipped)} skipped"
          f"{', listed in ' + str(Path(args.out).with_suffix('.skipped.csv')) if skipped else ''})")
    return 0


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def _write_skipped(skipped: Sequence[tuple[str, str]], path: Path) -> None:
    import csv
    import io

    from medssl.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(skipped)
    atomic_write_text(path, buf.getvalue())


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from medssl.ecg.synthetic import generate_cohort, write_wfdb_cohort

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Writing into an old cohort would leave its records on disk next to the new labels.csv.
        raise ValueError(f"{out}: already exists and is not an empty folder; choose a new --out")
    if args.modality != "ecg":
        return _synth_other_modality(args, out)
    cohort = generate_cohort(args.subjects, records_per_subject=(1, 3), seed=args.seed)
    labels = write_wfdb_cohort(cohort, args.out)
    print(f"wrote {len(cohort.record_ids)} synthetic records to {args.out} (labels: {labels})")
    return 0


def _synth_other_modality(args: argparse.Namespace, out: Path) -> int:
    """`data synth --modality mri|retina|ct`: the modality's synthetic writer, with `--option K=V`
    settings (values read as YAML: numbers, lists), and its manifest written beside the data."""
    import inspect

    import yaml

    from medssl.data.manifest import write_manifest
    from medssl.data.modalities import modality_data

    writer = modality_data(args.modality).write_synthetic
    if writer is None:
        raise ValueError(f"modality {args.modality} has no synthetic data")
    options = {k: yaml.safe_load(v) for k, v in (_key_value(o, "--option") for o in args.option)}
    accepted = [k for k in inspect.signature(writer).parameters if k != "folder"]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"--option {', '.join(unknown)}: not a setting of the {args.modality} generator; "
                         f"known: {', '.join(accepted)}")
    rows, skipped = writer(out, **options)
    manifest = write_manifest(rows, out / "manifest.csv")
    print(f"wrote synthetic {args.modality} data to {out}: {len(rows)} records of "
          f"{len({r['subject_id'] for r in rows})} subjects, manifest {manifest}")
    return 0


def _cmd_data_cache(args: argparse.Namespace) -> int:
    """`data cache --format stream`: litdata shards of a manifest for a recipe's encoder (medssl.data.stream)."""
    from medssl.data.stream import build_stream
    from medssl.engine.config import resolve_recipe
    from medssl.registry import encoder_spec

    cfg = resolve_recipe(args.recipe, args.overrides)
    spec = encoder_spec(cfg["encoder"]["name"], **(cfg["encoder"].get("overrides") or {}))
    info = build_stream(_load_rows(args.data, split=args.split), spec, args.out, cfg["data"], workers=args.workers)
    _report_skipped(info.skipped)
    m = info.meta
    print(f"shards in {args.out}: {m['n_items']} items {tuple(m['item_shape'])} of {m['n_records']} records, "
          f"{m['n_subjects']} subjects (key {m['key']}); train with data.stream={args.out}")
    return 0


def _load_rows(data: str, *, split: str | None = None) -> list[dict]:
    """Manifest rows from a manifest CSV or from a folder of WFDB records (indexed on the fly)."""
    from medssl.data.manifest import read_manifest

    p = Path(data)
    if p.is_dir():
        from medssl.data.layouts import index_layout

        labels = p / "labels.csv"
        rows, skipped = index_layout("wfdb", p, labels=str(labels) if labels.is_file() else None)
        _report_skipped(skipped)
    else:
        rows = read_manifest(p)
    if split:
        rows = [r for r in rows if r["split"] in split.split(",")]
    if not rows:
        raise ValueError(f"{data}: no records{f' in split {split}' if split else ''}")
    return rows


def _report_skipped(skipped: Sequence[tuple[str, str]]) -> None:
    for path, reason in skipped:
        reason = reason.removeprefix(f"{path}: ")  # readers' messages start with the path already
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _quiet_lightning(debug: bool) -> None:
    """Keep Lightning's INFO chatter (GPU available, tips) off the terminal unless --debug.

    Called after Lightning is imported: its import sets its loggers to INFO, undoing any
    level set before.
    """
    if not debug:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_precision_option(parser: argparse.ArgumentParser, extra: str = "") -> None:
    parser.add_argument("--precision", choices=["32", "bf16"], default=None,
                        help="inference precision: 32 (fp32) or bf16 (autocast). Default: fp32 on a CPU, bf16 on "
                             "a CUDA card that supports it, or $MEDSSL_PRECISION" + (f"; {extra}" if extra else ""))


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from medssl.engine.config import resolve_recipe
    from medssl.engine.pretrain import pretrain

    _quiet_lightning(args.debug)
    cfg = resolve_recipe(args.recipe, args.overrides)
    if args.data is None and not cfg["data"].get("stream"):
        raise ValueError("pretrain needs --data MANIFEST.csv or a folder of WFDB records (or data.stream=SHARDS)")
    rows = _load_rows(args.data, split=args.split) if args.data is not None else []
    from medssl.progress import progress_enabled

    folder = pretrain(cfg, rows, args.out, resume=not args.no_resume, progress_bar=progress_enabled())
    print(f"checkpoint: {folder}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from medssl.engine.embed import embed_arrays, resolve_encoder, write_embeddings
    from medssl.engine.hardware import resolve_inference_precision

    if (args.data is None) == (args.stream is None):
        raise ValueError("embed: give exactly one of --data (a manifest or WFDB folder) or --stream (shards)")
    encoder, _ = resolve_encoder(args.checkpoint)
    if args.stream is not None:  # shards of `medssl data cache --format stream`, checked against the contract
        from medssl.data.stream import stream_inputs

        cache = stream_inputs(args.stream, encoder.spec)
        skipped = list(cache.skipped)
    else:
        from medssl.data.modalities import encoder_inputs, usable_records

        try:  # the policy of `medssl bench`: records that break the contract are skipped and listed
            rows, unusable = usable_records(encoder.spec, _load_rows(args.data))
        except ValueError as e:
            raise ValueError(f"{args.data}: encoder {encoder.spec.name} cannot read these records: {e}") from None
        cache = encoder_inputs(rows, encoder.spec, {}, args.cache_dir)  # the modality's preprocessing, cached
        skipped = [*unusable, *cache.skipped]
    _report_skipped(skipped)
    precision = resolve_inference_precision(args.precision, "cpu")
    emb = embed_arrays(encoder, cache.signals, batch_size=args.batch_size, precision=precision)
    out = write_embeddings(args.out, emb, cache.rows, precision)
    print(f"wrote {out}: embeddings {emb.shape}, precision {precision} ({len(skipped)} records skipped)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from medssl.demo import run_demo

    _quiet_lightning(args.debug)
    out = Path(args.out)
    print(f"demo output folder: {out.resolve()}")
    from medssl.progress import progress_enabled

    result = run_demo(out, subjects_per_site=args.subjects_per_site, epochs=args.epochs, seeds=args.seeds,
                      progress_bar=progress_enabled())
    print(f"report: {result['html']}\n        {result['json']}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from medssl.bench.runner import run_benchmark

    out = Path(args.out) if args.out else Path("outputs") / f"bench_{Path(args.config).stem}"
    doc = run_benchmark(args.config, out, progress=not args.quiet, precision=args.precision)
    paths = doc["paths"]
    errors = f" ({len(doc['errors'])} failed run(s): see the notes)" if doc["errors"] else ""
    print(f"report: {paths['html']}\nresults: {paths['json']}\n         {paths['csv']}{errors}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    import medssl.engine.pretrain  # noqa: F401  (imports Lightning, whose import resets its log levels)
    from medssl.privacy.audit import run_audit

    _quiet_lightning(args.debug)
    population = _load_rows(args.population) if args.population else None
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "privacy_audit"
    result = run_audit(args.checkpoint, _load_rows(args.members), _load_rows(args.nonmembers), threat=args.threat,
                       attack=args.attack, n_refs=args.refs, n_queries=args.queries, aggregate=args.aggregate,
                       population_rows=population, out_dir=out, seed=args.seed, control_checkpoint=args.control,
                       n_permutations=args.permutations, rmia_a=args.rmia_a, precision=args.precision)
    low = result["tpr_at_min_fpr"]
    print(f"AUC {result['auc']:.3f} [{result['auc_ci'][0]:.3f}, {result['auc_ci'][1]:.3f}], permutation null band "
          f"[{result['null_band'][0]:.3f}, {result['null_band'][1]:.3f}], p = {result['p_value']:.3g}; TPR at FPR "
          f"{low['fpr']:.3g} (smallest measurable) {low['value']:.3f}; precision {result['precision']}\n"
          f"{result['conclusion']}\n"
          f"report: {out / 'report.html'}\n        {out / 'audit.json'}\n        {out / result['scores_file']}")
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("medssl")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        from medssl import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    from medssl.plugins import modalities, modality_names

    p = argparse.ArgumentParser(prog="medssl", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--debug", action="store_true", help="show tracebacks (and INFO logging)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log lines: -v INFO, -vv DEBUG")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="errors only: no warnings, no progress bars (bars show only on a terminal anyway)")
    p.add_argument("--version", action="version", version=f"medssl {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encoders", help="table of registered encoders")
    e.add_argument("--modality", choices=modality_names(), help="only this modality's encoders")
    e.set_defaults(func=_cmd_encoders)

    d = sub.add_parser("data", help="datasets: index a layout into a manifest, write a synthetic cohort")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("index", help="build the manifest of a dataset layout")
    di.add_argument("--layout", required=True,
                    help="wfdb | synthetic | ptbxl | physionet2021 | code15 | fomo60k | fomo-task | octa500 | "
                         "image-folder | dicom | organmnist3d (see `medssl.data.layouts`)")
    di.add_argument("--root", required=True, help="dataset folder (read only)")
    di.add_argument("--out", required=True, help="manifest CSV to write")
    di.add_argument("--labels", help="labels CSV (wfdb layout): record, labels[, subject_id, site, split]")
    di.add_argument("--task", help="label task of the layout, where it has several")
    di.add_argument("--rate", type=int, choices=[100, 500], help="sampling rate to index (ptbxl: 100 or 500 Hz)")
    di.add_argument("--fov", help="field of view to index (octa500: 3mm or 6mm)")
    di.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a layout-specific option, repeatable")
    di.add_argument("--physio-targets", action="store_true",
                    help="add heart_rate_bpm and qrs_duration_ms columns measured with NeuroKit2 (slow)")
    di.set_defaults(func=_cmd_data_index)
    ds = dsub.add_parser("synth", help="write synthetic data with ground truth: a two-site 12-lead ECG cohort "
                                       "(WFDB + labels.csv), or brain phantoms, OCTA or chest CT (DICOM)")
    ds.add_argument("--out", required=True, help="folder to write the data (and its manifest) to")
    ds.add_argument("--modality", choices=[n for n, m in modalities().items() if m.write_synthetic], default="ecg",
                    help="what to synthesise")
    ds.add_argument("--subjects", type=_positive_int, default=200, help="ECG: number of subjects")
    ds.add_argument("--seed", type=int, default=0, help="ECG: generator seed")
    ds.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="MRI/retina/CT: a setting of the modality's generator (e.g. task=2, subjects_per_site=8, "
                         "n_subjects=60), repeatable")
    ds.set_defaults(func=_cmd_data_synth)
    dc = dsub.add_parser("cache", help="preprocess a manifest for a recipe's encoder into litdata shards that "
                                       "stream to many GPUs and nodes (pretrain with data.stream=OUT)")
    dc.add_argument("recipe", help="recipe name or YAML path: its encoder and data settings")
    dc.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    dc.add_argument("--data", required=True, help="manifest CSV or folder of WFDB records")
    dc.add_argument("--split", default="train", help="manifest split(s), comma-separated")
    dc.add_argument("--format", choices=["stream"], default="stream", help="stream: litdata shards")
    dc.add_argument("--out", required=True, help="folder or object-store URL (s3://, gs://, azure://)")
    dc.add_argument("--workers", type=_positive_int, default=None, help="build processes (default: one per core)")
    dc.set_defaults(func=_cmd_data_cache)

    pr = sub.add_parser("pretrain", help="pretrain an encoder from a recipe; writes a checkpoint folder")
    pr.add_argument("recipe", help="recipe name in recipes/ or a YAML path")
    pr.add_argument("overrides", nargs="*", help="key=value overrides, e.g. variant=cpu optim.lr=1e-4")
    pr.add_argument("--data", help="manifest CSV or folder of WFDB records")
    pr.add_argument("--split", default="train", help="manifest split(s) to train on, comma-separated")
    pr.add_argument("--out", default="runs/pretrain", help="run folder: config.yaml, logs, checkpoint/")
    pr.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    pr.set_defaults(func=_cmd_pretrain)

    em = sub.add_parser("embed", help="embed a dataset with a frozen encoder into an .npz")
    em.add_argument("--checkpoint", required=True, help="checkpoint folder or random:NAME[:SEED]")
    em.add_argument("--data", help="manifest CSV or folder of WFDB records")
    em.add_argument("--stream", help="instead of --data: shards of `medssl data cache --format stream` (a folder "
                                     "or object-store URL), preprocessed for this encoder; read in shard order")
    em.add_argument("--out", required=True, help="output .npz (embeddings, record_id, subject_id)")
    em.add_argument("--batch-size", type=_positive_int, default=64, help="records per forward pass (default 64)")
    em.add_argument("--cache-dir", help="preprocessed-array cache (default: $MEDSSL_CACHE or ~/.cache/medssl)")
    _add_precision_option(em)
    em.set_defaults(func=_cmd_embed)

    de = sub.add_parser("demo", help="the whole job on synthetic data: pretrain, few-shot evaluation, report")
    de.add_argument("--out", default="outputs/demo", help="output folder (report.html, results.json, results.csv, runs)")
    de.add_argument("--subjects-per-site", type=int, default=200, help="synthetic subjects per site (A and B)")
    de.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the demo's budget)")
    de.add_argument("--seeds", type=int, default=5, help="few-shot draws (probe seeds) per setting")
    de.set_defaults(func=_cmd_demo)

    be = sub.add_parser("bench", help="benchmark frozen encoders on tasks x protocols (see medssl.bench.config)")
    be.add_argument("config", help="benchmark YAML (encoders, datasets, tasks, protocols) or the name of a "
                    "packaged example (bench_ecg_demo, bench_octa_demo, bench_fomo_demo, bench_ct_demo)")
    be.add_argument("--out", help="output folder (default outputs/bench_<config name>)")
    _add_precision_option(be, "overrides the config's `precision` key")
    be.set_defaults(func=_cmd_bench)

    au = sub.add_parser("audit", help="membership-inference audit of a checkpoint (subject level)")
    au.add_argument("--checkpoint", required=True, help="checkpoint folder")
    au.add_argument("--members", required=True, help="manifest (or WFDB folder) of training subjects")
    au.add_argument("--nonmembers", required=True, help="manifest (or WFDB folder) of held-out subjects")
    au.add_argument("--threat", choices=["score", "embedding", "learned"], default="score",
                    help="score: the SSL loss; embedding: augmentation consistency of embeddings; learned: a "
                         "classifier over subject statistics of both (cross-fitted)")
    au.add_argument("--attack", choices=["loss", "lira", "rmia"], default="loss",
                    help="loss: threshold on the signal; lira/rmia: calibrated with --refs reference models")
    au.add_argument("--refs", type=int, default=0, help="reference models for lira/rmia")
    au.add_argument("--population", help="manifest the reference models train on (lira/rmia)")
    au.add_argument("--queries", type=_positive_int, default=4, help="mask draws / augmented views per window")
    au.add_argument("--aggregate", choices=["mean", "max"], default="mean", help="window scores -> subject score")
    au.add_argument("--seed", type=int, default=0, help="seed of masks, splits, bootstrap and permutations")
    au.add_argument("--control", help="control checkpoint: the same recipe trained on subjects independent of the "
                                      "audited labels (default for lira/rmia: reference model 0, leave-one-out)")
    au.add_argument("--permutations", type=_positive_int, default=2000, help="permutations for the null band")
    au.add_argument("--rmia-a", type=float, default=None, help="RMIA's offline a (default: tuned on the references)")
    au.add_argument("--out", help="output folder (default: privacy_audit next to the checkpoint folder)")
    _add_precision_option(au, "scores the models in it; reference models train as the target's card says")
    au.set_defaults(func=_cmd_audit)

    for modality in modalities().values():  # a modality's own commands (MRI: `medssl fomo`)
        if modality.add_cli is not None:
            modality.add_cli(sub)
    _show_defaults(p)
    return p


class _LogFormat(logging.Formatter):
    """INFO lines as they are (stage messages); other levels prefixed with their name."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text if record.levelno == logging.INFO else f"{record.levelname} {text}"


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, off, empty)
    or the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """The defaults formatter on a parser and every subcommand's parser under it."""
    parser.formatter_class = _DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_defaults(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose >= 2 else logging.INFO if (args.verbose or args.debug) else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # a command line, not a host application or test harness with its own logging
        handler = logging.StreamHandler()
        handler.setFormatter(_LogFormat())
        root.addHandler(handler)
        root.setLevel(logging.ERROR if args.quiet else level)
        # medssl's own INFO lines (stages of long commands) show by default; other libraries' from -v
        logging.getLogger("medssl").setLevel(logging.ERROR if args.quiet else min(level, logging.INFO))
    if args.quiet:
        from medssl.progress import set_progress

        set_progress(False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, KeyError, OSError, NotImplementedError, TypeError) as e:
        if args.debug:
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"medssl: error: {msg.splitlines()[0] if msg else type(e).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
