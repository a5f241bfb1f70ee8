"""The command line's one grammar (docs/cli.md): run selections, counts, outputs, help with defaults and
units, plain descriptions, and the deprecated spellings that still work for one release."""

from __future__ import annotations

import argparse

import pytest

from solver_coupling import cli
from solver_coupling.cli import DEPRECATED, build_parser
from solver_coupling.pyqg.data import UsageError
from solver_coupling.pyqg.evaluate import parse_run_selection, parse_runs


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's formatted help text, as ``--help`` shows it."""
    formatter = parser._get_formatter()
    return {a.option_strings[-1]: formatter._expand_help(a) for a in parser._actions
            if a.option_strings and a.help is not argparse.SUPPRESS and a.help}


@pytest.mark.parametrize("text, runs", [("7", [7]), ("0-3,7", [0, 1, 2, 3, 7]), ("1-2", [1, 2]), ("4,5", [4, 5]),
                                        ("9, 2-3", [9, 2, 3])])
def test_runs_are_ranges_and_lists(text, runs):
    assert parse_runs(text) == runs
    assert parse_run_selection(f"data/x.nc@{text}", "--truth") == ("data/x.nc", runs)


@pytest.mark.parametrize("text, message", [("3-1", "not a range"), ("a", "cannot read"), ("1,1", "twice"),
                                           ("-1", "cannot read|not a range"), ("", "cannot read")])
def test_bad_run_selections_are_named(text, message):
    with pytest.raises(UsageError, match=message):
        parse_runs(text)


def test_every_run_selection_takes_the_same_syntax():
    p = _subparsers()
    assert p["score"].parse_args(["--data", "d.nc", "--runs", "1-2,5"]).runs == [1, 2, 5]
    assert p["train"].parse_args(["--data", "d.nc", "--out", "o", "--train-runs", "0-2"]).train_runs == [0, 1, 2]
    with pytest.raises(SystemExit):
        p["score"].parse_args(["--data", "d.nc", "--runs", "2-1"])


def test_every_option_shows_help_and_its_default():
    """Every option has help; every one with a value that is not required shows its default; a value in
    years says that the years are 360 days; --out is always a folder."""
    for name, parser in _subparsers().items():
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"roteq {name} {action.option_strings[-1]} has no help"
        for option, text in _help_lines(parser).items():
            action = parser._option_string_actions[option]
            if action.nargs != 0 and not action.required:
                assert "default" in text, f"roteq {name} {option}: no default in its help: {text!r}"
            if "years" in option:
                assert "360 days" in text, f"roteq {name} {option}: the year is not defined: {text!r}"
            if option == "--out":
                assert action.metavar == "DIR" and "folder" in text, f"roteq {name} --out is not a folder"
    shown = _help_lines(_subparsers()["train"])
    assert "(default: 16,16)" in shown["--channels"] and "(default: 0.01)" in shown["--lr"]
    assert "(default: 1)" in shown["--holdout"] and "(default: every run not held out)" in shown["--train-runs"]


def test_descriptions_are_plain_text():
    for name in ("demo", "bench"):
        text = _subparsers()[name].format_help()
        for markup in ("``", ":func:", ":class:", ":mod:", "\n---"):
            assert markup not in text, f"roteq {name} --help shows {markup!r}"
    assert cli.plain("A\n-\n\nSee :func:`~pkg.mod.run` and ``x``\n---\n") == "A\n-\n\nSee run and x"


@pytest.mark.parametrize("argv, dest, value, new", [
    (["generate", "--runs", "3", "--out", "x.nc"], "members", 3, "--members"),
    (["generate", "--members", "3", "--out", "x.nc"], "out_file", "x.nc", "--out-file"),
    (["coarsen", "a.nc", "--out=c.nc"], "out_file", "c.nc", "--out-file"),
    (["train", "--data", "d.nc", "--out", "o", "--val-runs", "2"], "holdout", 2, "--holdout"),
    (["train-online", "--data", "d.nc", "--init", "m", "--out", "o", "--val-runs", "2"], "holdout", 2, "--holdout"),
    (["score", "--data", "d.nc", "--out", "s.json"], "json", "s.json", "--json"),
    (["derive", "--grid-damping", "1e-6", "--out", "m2"], "name", "m2", "--name"),
])
def test_old_spellings_work_and_warn(argv, dest, value, new, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert "deprecated" in err and f"use {new}" in err and "0.4" in err


def test_new_spellings_do_not_warn(capsys):
    args = build_parser().parse_args(["generate", "--members", "3", "--out-file", "x.nc"])
    assert (args.members, args.out_file) == (3, "x.nc")
    args = build_parser().parse_args(["train", "--data", "d.nc", "--out", "o", "--holdout", "2"])
    assert args.holdout == 2 and args.out == "o"
    assert capsys.readouterr().err == ""


def test_deprecations_are_listed_in_the_help():
    for name, renames in DEPRECATED.items():
        text = " ".join(_subparsers()[name].format_help().split())
        for old, new in renames.items():
            assert f"{old} is now {new}" in text
