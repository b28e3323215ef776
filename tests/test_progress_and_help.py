"""What a user sees on a terminal: progress bars with time estimates (quiet in a pipe), -v/-q,
and every CLI option with its help and default."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from medssl import progress as prog
from medssl.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path=("medssl",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    missing = [f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
               for path, p in _parsers(parser) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
               and not a.help]
    assert not missing, missing
    audit = dict(_parsers(parser))[("medssl", "audit")]
    text = " ".join(audit.format_help().split())
    assert "(default: 2000)" in text and "(default: loss)" in text  # --permutations, --attack
    assert "(default: None)" not in text and "(default: False)" not in text
    pretrain = " ".join(dict(_parsers(parser))[("medssl", "pretrain")].format_help().split())
    assert "(default: runs/pretrain)" in pretrain and "(default: train)" in pretrain


def test_progress_is_quiet_outside_a_terminal_and_shows_time_left_when_on(capsys, monkeypatch):
    monkeypatch.delenv("MEDSSL_PROGRESS", raising=False)
    prog.set_progress(None)
    items = range(3)
    assert prog.progress(items, desc="x") is items  # pytest's stderr is not a terminal: no bar
    monkeypatch.setenv("MEDSSL_PROGRESS", "1")
    try:
        import time

        seen = []
        for i in prog.progress(items, desc="indexing", unit="record"):
            time.sleep(0.15)  # slower than tqdm's redraw interval (0.1 s); the bar is cleared at the end
            seen.append(i)
        assert seen == [0, 1, 2]
        err = capsys.readouterr().err
        assert "indexing" in err and "2/3" in err and "<00:00" in err  # count, elapsed<time left
        prog.set_progress(False)  # -q wins over the environment
        assert prog.progress(items, desc="x") is items
    finally:
        prog.set_progress(None)


def test_embedding_shows_a_bar_when_on(capsys, monkeypatch):
    import torch

    from medssl.engine.embed import embed_arrays

    class Enc(torch.nn.Module):
        spec = type("S", (), {"embed_dim": 2})()

        def forward(self, x):
            import time

            time.sleep(0.15)  # slower than tqdm's redraw interval
            return x.mean(dim=1, keepdim=True).repeat(1, 2)

    monkeypatch.setenv("MEDSSL_PROGRESS", "1")
    out = embed_arrays(Enc(), np.ones((10, 4), np.float32), batch_size=3)
    assert out.shape == (10, 2)
    err = capsys.readouterr().err
    assert "embed 10 items" in err and "3/4" in err and "batch/s" in err


def test_quiet_flag_turns_bars_off(monkeypatch, capsys):
    monkeypatch.setenv("MEDSSL_PROGRESS", "1")
    try:
        assert main(["-q", "encoders", "--modality", "ct"]) == 0
        assert prog.progress_enabled() is False
        assert "ct_swin_tiny" in capsys.readouterr().out
    finally:
        prog.set_progress(None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-vv", "-q", "--version"])


@pytest.mark.parametrize("flags,expected", [
    ([], "stage\nWARNING careful\n"),               # medssl's INFO stage lines show, others' do not
    (["-v"], "stage\nhidden\nWARNING careful\n"),
    (["-q"], ""),                                   # errors only
])
def test_cli_logging_levels(flags, expected):
    import subprocess
    import sys

    code = ("import logging, sys; from medssl.cli import main; main(sys.argv[1:] + ['encoders', '--modality', 'ct']); "
            "logging.getLogger('medssl.x').info('stage'); logging.getLogger('other').info('hidden'); "
            "logging.getLogger('medssl.x').warning('careful')")
    out = subprocess.run([sys.executable, "-c", code, *flags], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stderr == expected
