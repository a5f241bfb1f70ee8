"""The ``roteq`` command: every subcommand's parser and its thin driver live here.

The library modules (``roteq_param`` and the solver couplings) hold no argparse code; this
module turns command lines into their function calls and their errors into exit code 2 with
one clear line. Nothing imports it (an import contract checks that).

One grammar for every subcommand (docs/cli.md):

* run selections are ``RUNS``: run indices from 0, inclusive ranges and lists, ``0-3,7``; an option
  selects runs of its dataset (``--runs RUNS``, ``--train-runs RUNS``), a file argument selects them
  as ``FILE@RUNS``;
* a number of runs is a count with its own name: ``--members N`` (ensemble members), ``--holdout N``
  (the last N runs held out for validation);
* ``--out DIR`` is always a folder; a single output file is ``--out-file FILE`` (a dataset) or
  ``--json FILE``; a trained model goes to ``--name NAME`` (``trained_models/NAME``, or a folder);
* every option's help shows its default; times in years are model years of 360 days (pyqg's own
  ``year`` attribute is 365 days, used by nothing here).

Old spellings keep working until 0.4 and say so on stderr (:data:`DEPRECATED`).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from roteq_param import coarsen
from roteq_param.atomic import OutputLocked, atomic_write_bytes
from roteq_param.models import DEFAULT_MODEL, ModelConfig, ModelFileError, derive_model, load_model
from roteq_param.models.store import portable
from roteq_param.train import TrainOptions, train
from roteq_param.train.calibrate import calibrate_energy_backscatter
from solver_coupling.pyqg import bench as pyqg_bench
from solver_coupling.pyqg import demo as pyqg_demo
from solver_coupling.pyqg import envcheck
from solver_coupling.pyqg.bench import bench
from solver_coupling.pyqg.config import CONFIGS, YEAR, get_config, parse_assignment
from solver_coupling.pyqg.data import Request, UsageError, coarsen_files, generate
from solver_coupling.pyqg.demo import run_demo
from solver_coupling.pyqg.evaluate import (BASELINE, CEILING, TRUTH, EvaluateConfig, Reference, evaluate,
                                            load_runs, parse_run_selection, parse_runs, to_training_frame,
                                            write_results)
from solver_coupling.pyqg.family import FAMILY_PARAMETERS, Family, parse_range
from solver_coupling.pyqg.rollout import RolloutRequest, rollout
from solver_coupling.torchqg.operator_fit import LAYER_CHOICES


# ---------------------------------------------------------------------------------------------
# the grammar: help with defaults, plain descriptions, deprecated spellings
# ---------------------------------------------------------------------------------------------

YEARS = "model years of 360 days"

DEPRECATED: dict[str, dict[str, str]] = {
    "generate": {"--runs": "--members", "--out": "--out-file"},
    "coarsen": {"--out": "--out-file"},
    "train": {"--val-runs": "--holdout"},
    "train-online": {"--val-runs": "--holdout"},
    "score": {"--out": "--json"},
    "derive": {"--out": "--name"},
}
"""Per subcommand, each old option spelling and the new one it stands for (accepted until 0.4)."""


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, unless the help already says what the default is
    (``default`` in its text) or the option is a flag (off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or "default" in text or not action.option_strings):
            return text
        return f"{text} (default: {_shown(action.default).replace('%', '%%')})"

    # lines break at spaces only, so that option names (--out-file) stay whole
    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """An argument parser that accepts the deprecated spellings of its subcommand (``deprecated``: old
    option -> new option), rewriting them and saying so on stderr."""

    def __init__(self, *args: Any, deprecated: dict[str, str] | None = None, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        self.deprecated = dict(deprecated or {})
        super().__init__(*args, **kwargs)
        if self.deprecated:
            self.epilog = ((self.epilog + "\n\n") if self.epilog else "") + "Deprecated spellings (until 0.4): " + \
                "; ".join(f"{old} is now {new}" for old, new in self.deprecated.items()) + "."

    def parse_known_args(self, args=None, namespace=None):
        if self.deprecated and args is not None:
            args = [self._renamed(a) for a in args]
        return super().parse_known_args(args, namespace)

    def _renamed(self, token: str) -> str:
        name, eq, value = token.partition("=")
        new = self.deprecated.get(name)
        if new is None:
            return token
        print(f"{self.prog}: warning: {name} is deprecated and will be removed in 0.4; use {new}", file=sys.stderr)
        return new + eq + value


class _RawHelpFormatter(HelpFormatter):
    """Defaults shown, the description's own line breaks kept (for descriptions taken from docstrings)."""

    _fill_text = argparse.RawDescriptionHelpFormatter._fill_text


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(doc: str | None) -> str:
    """A module docstring as plain text for ``--help``: reST roles, literals and heading underlines removed."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), doc or "")
    text = text.replace("``", "").replace("`", "")
    return "\n".join(line for line in text.splitlines() if not re.fullmatch(r"\s*[-=~^]{3,}\s*", line)).strip()


def _runs_option(text: str) -> list[int]:
    """argparse type of a RUNS option (``0-3,7``)."""
    try:
        return parse_runs(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ---------------------------------------------------------------------------------------------
# data: generate, coarsen
# ---------------------------------------------------------------------------------------------

def _fail(command: str, err: Exception | str, status: int = 2) -> None:
    """Print ``roteq COMMAND: error: ...`` (one line, no traceback) and exit with ``status``."""
    print(f"roteq {command}: error: {err}", file=sys.stderr)
    raise SystemExit(status)


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        overrides = dict(parse_assignment(s) for s in args.set or [])
        config = get_config(args.config, overrides, coarse_nx=args.coarse_nx)
        ranges = dict(parse_range(s) for s in args.vary or [])
        both = sorted(set(overrides) & set(ranges))
        if both:
            raise UsageError(f"{', '.join(both)}: both --set and --vary; a parameter is either fixed or drawn")
        request = Request(config, operator=args.operator, runs=args.members, years=args.years,
                          spinup_years=args.spinup_years, snapshot_hours=args.snapshot_hours, seed=args.seed,
                          window_steps=args.window_steps, window_every=args.window_every,
                          family=Family.of(ranges) if ranges else None, dt_halvings=args.dt_halvings)
        generate(request, args.out_file, overwrite=args.overwrite, workers=args.workers, scheduler=args.scheduler,
                 serial=args.serial, command=_command_line(args))
    except (ValueError, OutputLocked) as err:  # UsageError, configuration errors, a locked output
        _fail("generate", err)
    except FloatingPointError as err:  # a high-res run blew up (raised by the run, on Dask too)
        _fail("generate", f"{err}: the high-resolution run is numerically unstable with these settings (a "
                          f"smaller time step, --set dt=... or --dt-halvings N, may hold it); finished runs are kept in "
                          f"{args.out_file}.parts")
    print(args.out_file)
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for the records a file keeps of how it was made (``roteq COMMAND ...``), with
    absolute paths made portable (:func:`~roteq_param.models.store.portable`): the record is read on other
    machines, and the same command into another folder makes the same file."""
    argv = getattr(args, "argv", None) or (sys.argv[1:] if sys.argv[1:2] == [args.command] else [args.command])
    return portable(" ".join(["roteq", *argv]))


def _cmd_coarsen(args: argparse.Namespace) -> int:
    try:
        settings = dict(parse_assignment(s) for s in args.set or [])
        coarsen_files(args.inputs, args.out_file, coarse_nx=args.coarse_nx, operator=args.operator,
                      overwrite=args.overwrite, settings=settings, one_run=args.one_run,
                      command=_command_line(args))
    except ValueError as err:
        _fail("coarsen", err)
    print(args.out_file)
    return 0


def _add(subparsers, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand's parser, with the grammar's help formatter and its deprecated spellings."""
    return subparsers.add_parser(name, deprecated=DEPRECATED.get(name), **kwargs)


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``generate`` to an argparse subparsers object; ``func`` takes the parsed namespace."""
    p = _add(
        subparsers, "generate",
        help="run high-res pyqg ensembles and write coarse training data",
        description="Run an ensemble of high-resolution pyqg runs, coarse-grain snapshots after the spin-up "
        "into (u, v, b, q) and subgrid fluxes (tau, Fb, S), and write one netCDF4 dataset. "
        f"A killed run resumes from OUT_FILE.parts when re-run with the same arguments. Years are {YEARS}.",
    )
    p.add_argument("--config", default="eddy", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="override any pyqg QGModel parameter (repeatable), e.g. --set beta=1e-11 --set nx=128 (default: the "
                        "configuration's values)")
    p.add_argument("--vary", action="append", metavar="NAME=LO:HI",
                   help="a family: each run draws NAME from [LO, HI] (log-uniform for LO > 0, SI units; "
                        f"repeatable; one of {', '.join(FAMILY_PARAMETERS)}), e.g. --vary beta=1e-11:2e-11 (default: none, "
                        "every run the same)")
    p.add_argument("--dt-halvings", type=int, default=0, metavar="N",
                   help="run a run that blows up again from its start with half the time step, up to N times "
                        "(default: 0, an error); the dataset lists each run's time step (highres_dt_s)")
    p.add_argument("--members", type=int, default=1, metavar="N", help="number of runs (ensemble members)")
    p.add_argument("--years", type=float, default=10.0, help=f"length of each run, in {YEARS}")
    p.add_argument("--spinup-years", type=float, default=5.0,
                   help=f"spin-up before the first snapshot, in {YEARS}")
    p.add_argument("--snapshot-hours", type=float, default=1000.0, help="hours between snapshots")
    p.add_argument("--coarse-nx", type=int, default=64, help="coarse grid points per side")
    p.add_argument("--operator", default="spectral", choices=sorted(coarsen.OPERATORS),
                   help="coarse-graining operator")
    p.add_argument("--seed", type=int, default=0, help="ensemble seed; run r uses (seed, r)")
    p.add_argument("--window-steps", type=int, default=0,
                   help="also store coarse PV at every step of windows this many steps long (default: 0, none)")
    p.add_argument("--window-every", type=int, default=1, metavar="N", help="start a window at every N-th snapshot")
    p.add_argument("--out-file", required=True, metavar="FILE", help="output netCDF file (the dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes (default: the number of cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="use an existing Dask scheduler (default: a LocalCluster)")
    p.add_argument("--serial", action="store_true", help="run in this process, no Dask")
    p.set_defaults(func=_cmd_generate)
    return p


def add_coarsen_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``coarsen`` to an argparse subparsers object; ``func`` takes the parsed namespace."""
    p = _add(
        subparsers, "coarsen",
        help="coarse-grain your own high-res pyqg runs into training data",
        description="Coarse-grain high-resolution pyqg QGModel runs into the dataset layout of `generate`. "
        "Inputs: files written by solver_coupling.pyqg.SnapshotWriter / save_run, or m.to_dataset() without its "
        "complex variables (ds.drop_vars([v for v in ds.variables if np.iscomplexobj(ds[v])])), with any number "
        "of snapshots each (also to_dataset() output concatenated over time). Each file is one run unless "
        "--one-run. pyqg's to_dataset() does not store the upper-layer depth H1: give it with --set H1=VALUE "
        "(SnapshotWriter files record it). See docs/retraining.md.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE",
                   help="high-res pyqg netCDF files, one run each (same configuration and snapshot times)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="a QGModel setting the files do not record, e.g. --set H1=750 (repeatable; one they do "
                        "record must agree) (default: none)")
    p.add_argument("--one-run", action="store_true",
                   help="the files are pieces of one run (joined in time order), not one run each")
    p.add_argument("--coarse-nx", type=int, default=64, help="coarse grid points per side")
    p.add_argument("--operator", default="spectral", choices=sorted(coarsen.OPERATORS),
                   help="coarse-graining operator")
    p.add_argument("--out-file", required=True, metavar="FILE", help="output netCDF file (the dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_cmd_coarsen)
    return p


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def _budget_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names or set(names) - {"energy", "enstrophy"}:
        raise argparse.ArgumentTypeError(f"expected energy, enstrophy or energy,enstrophy; got {text!r}")
    return names


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        model = ModelConfig(arch=args.arch, group=args.group, channels=args.channels, kernel_sizes=args.kernel_sizes,
                            out_kernel_size=args.out_kernel_size, activation=args.activation, dilations=args.dilations,
                            multiscale=args.multiscale, similarity=args.similarity,
                            view_spacing=args.view_spacing)
        opts = TrainOptions(
            data=args.data, more_data=tuple(args.more_data or ()), out=args.out, name=args.name, model=model,
            epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, min_lr_factor=args.min_lr_factor,
            weight_decay=args.weight_decay, s_weight=args.s_weight, s_target=args.s_target,
            val_runs=args.holdout,
            train_runs=None if args.train_runs is None else tuple(args.train_runs), snapshot_every=args.snapshot_every,
            regime_inputs=args.regime_inputs, augment=args.augment, patience=args.patience,
            seed=args.seed, resume=args.resume, overwrite=args.overwrite, stop_after=args.stop_after,
            threads=args.threads,
            progress=False if args.no_progress else None, command=_command_line(args))
        summary = train(opts)
    except (ValueError, FileNotFoundError, FileExistsError, OutputLocked) as e:
        _fail("train", e)
    path = Path(args.out) / "summary.json"
    atomic_write_bytes(path, (json.dumps(summary, indent=2, default=str) + "\n").encode())
    print(train_report(summary, path))
    return 0


POOR_R2 = 0.0
"""Held-out R^2 below this is reported as poor: the network does worse than predicting the mean."""


def train_report(summary: dict[str, Any], json_path: str | os.PathLike) -> str:
    """A few lines for people at the end of ``roteq train``: where the model went, its held-out skill, and a
    loud warning when that skill is poor (the full summary is the JSON file ``json_path``)."""
    lines = [f"trained {summary['epochs_run']} epochs (best: epoch {summary['best_epoch']}"
             + (", stopped early" if summary.get("stopped_early") else "") + f") in {summary['train_seconds']:.0f} s"]
    if "metrics" not in summary:
        lines.append(f"not finished (--stop-after): continue with the same command and --resume; checkpoint "
                     f"{summary['checkpoint']}")
        lines.append(f"full summary: {json_path}")
        return "\n".join(lines)
    val = summary["metrics"]["val"]
    layers = sorted(k for k in val if k.startswith("S_") and k != "S_mean")
    lines.append(f"model: {summary['model_dir']}")
    lines.append("held-out R^2 (runs never trained on): fluxes mean {:.3f}, PV forcing S mean {:.3f}{}".format(
        val["flux_mean"], val["S_mean"],
        " (" + ", ".join(f"{k} {val[k]:.3f}" for k in layers) + ")" if layers else ""))
    poor = [f"{name} {val[key]:.3g}" for name, key in (("flux mean", "flux_mean"), ("S mean", "S_mean"))
            if not val[key] >= POOR_R2]
    if poor:
        lines += ["", "WARNING: poor held-out skill (" + ", ".join(poor) + f"; R^2 < {POOR_R2:g} is worse than "
                  "predicting the held-out mean): do not use this model as it is. Likely causes: too few runs or snapshots, "
                  "too few epochs, or held-out runs unlike the training ones (see metrics.csv in the run folder).",
                  ""]
    lines.append(f"full summary: {json_path}")
    return "\n".join(lines)


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an argparse subparsers object (sets ``func``)."""
    d, m = TrainOptions(data="", out=""), ModelConfig()
    p = _add(
        subparsers, "train", help="train the equivariant flux network on a coarse dataset",
        description="Train a flux network on a dataset from `roteq generate` or `roteq coarsen`; writes a "
                    "checkpoint and metrics.csv to the run folder --out every epoch, saves the best model with "
                    "its card to trained_models/NAME (--name; default OUT/model), prints a short summary with "
                    "the held-out skill and writes the full one to OUT/summary.json.")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="coarse netCDF dataset from `roteq generate` or `roteq coarsen`")
    p.add_argument("--more-data", nargs="+", default=None, metavar="FILE",
                   help="further datasets to train on together with --data (e.g. the same flow on other grids, with "
                        "--similarity); each holds out its last --holdout runs; normalisation comes from --data "
                        "(default: none)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="run folder for checkpoint.pt, metrics.csv and summary.json")
    p.add_argument("--name", default=None,
                   help="save the trained model as trained_models/NAME (a path with a / is used as is) "
                        "(default: OUT/model)")
    p.add_argument("--snapshot-every", type=int, default=d.snapshot_every, metavar="K",
                   help="train and validate on every K-th snapshot of each run (default: %(default)s, all; "
                        "snapshots 250 h apart are correlated, so K > 1 trades little skill for K times less work)")
    p.add_argument("--regime-inputs", action="store_true",
                   help="the network also sees each run's stretching couplings (m-2) and bottom drag rek (s-1), as "
                        "invariant constants: for a family of configurations (`roteq generate --vary`)")
    p.add_argument("--arch", choices=["escnn", "cnn"], default=m.arch, help="equivariant net or plain CNN baseline")
    p.add_argument("--group", default=m.group, help="symmetry group C1..C8 / D1..D8")
    p.add_argument("--channels", type=_int_list, default=m.channels,
                   help="hidden channels per layer, comma-separated (multiples of |G| for escnn)")
    p.add_argument("--kernel-sizes", type=_int_list, default=m.kernel_sizes,
                   help="odd kernel size per hidden layer, comma-separated")
    p.add_argument("--dilations", type=_int_list, default=None,
                   help="dilation per hidden layer (default: 1 each), e.g. 1,2,4 for a 15-cell view with 3x3 "
                        "stencils")
    p.add_argument("--multiscale", action="store_true",
                   help="U-Net: hidden layer l runs on the grid coarsened 2^l times (channels and kernel sizes "
                        "per level, e.g. --channels 16,32,64 --kernel-sizes 3,3,3 sees 30 cells across)")
    p.add_argument("--similarity", action="store_true",
                   help="resolution-aware scaling: inputs and outputs also in units of the grid spacing and the "
                        "sample's velocity-gradient scale, so the model can run on other grids")
    p.add_argument("--view-spacing", type=float, default=None, metavar="METRES",
                   help="with --similarity: run the network on a grid of about this spacing [m] on every grid "
                        "(inputs resampled spectrally onto it, fluxes back), so its stencils cover the same "
                        "kilometres at any resolution; e.g. 10416.67 (a 1000 km domain / 96) (default: the "
                        "data's own grid)")
    p.add_argument("--out-kernel-size", type=int, default=m.out_kernel_size,
                   help="odd kernel size of the output layer")
    p.add_argument("--activation", choices=["relu", "elu"], default=m.activation, help="hidden activation")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs (passes over the training snapshots)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="snapshots per optimiser step")
    p.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (cosine decay)")
    p.add_argument("--min-lr-factor", type=float, default=d.min_lr_factor, help="final lr / initial lr")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay")
    p.add_argument("--s-weight", type=float, default=d.s_weight, help="weight of the PV-forcing loss")
    p.add_argument("--s-target", choices=["S_flux", "S_direct"], default=d.s_target,
                   help="PV forcing target (equal for spectral operators)")
    p.add_argument("--holdout", type=int, default=d.val_runs, metavar="N",
                   help="number of runs held out for validation: the last N")
    p.add_argument("--train-runs", type=_runs_option, default=None, metavar="RUNS",
                   help="train on these runs only, e.g. 0-3,7 (default: every run not held out)")
    p.add_argument("--augment", action="store_true", help="random exact rotations of each batch (for the CNN)")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the initialisation and the batch order")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>/checkpoint.pt (from epoch 0 if the run never wrote one)")
    p.add_argument("--overwrite", action="store_true", help="start over even if OUT holds a checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in this invocation (continue later with --resume) "
                        "(default: run all --epochs)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads (on a busy 2-core machine 2 threads measured ~20x slower per batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_train_online(args: argparse.Namespace) -> int:
    from solver_coupling.torchqg.online_training import OnlineOptions, train_online

    try:
        summary = train_online(OnlineOptions(
            data=args.data, init=args.init, out=args.out, name=args.name, unroll=args.unroll,
            iterations=args.iterations, batch=args.batch, lr=args.lr, val_runs=args.holdout, seed=args.seed,
            checkpoint_every=args.checkpoint_every, threads=args.threads,
            progress=False if args.no_progress else None, offline_weight=args.offline_weight,
            offline_batch=args.offline_batch, scales=args.scales,
            spectral_weight=args.spectral_weight, call_interval=args.call_interval))
    except (ValueError, FileNotFoundError, OutputLocked) as e:
        _fail("train-online", e)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def add_train_online_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "train-online", help="fine-tune a model through the torch twin against truth trajectories",
        description="A-posteriori training: unroll the torch twin with the network in its graph from "
                    "coarse-grained truth windows (`roteq generate --window-steps`) and minimise the trajectory "
                    "error, with a curriculum on the unroll length.")
    p.add_argument("--data", required=True, metavar="FILE", help="dataset with trajectory windows (q_traj)")
    p.add_argument("--init", required=True, help="model to start from (name or folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder")
    p.add_argument("--name", default=None,
                   help="save as trained_models/NAME (a path with a / is used as is) (default: OUT/model)")
    p.add_argument("--unroll", type=_int_list, default=(4, 8, 16), help="unroll lengths in steps, one stage each")
    p.add_argument("--iterations", type=int, default=50, help="iterations per stage")
    p.add_argument("--batch", type=int, default=4, help="windows per iteration")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--holdout", type=int, default=1, metavar="N", help="number of runs held out: the last N")
    p.add_argument("--seed", type=int, default=0, help="seed of the window draws")
    p.add_argument("--offline-weight", type=float, default=0.0,
                   help="add this multiple of the offline loss (flux + S on snapshots of the training runs) "
                        "to every iteration, as a regulariser (default 0: off)")
    p.add_argument("--offline-batch", type=int, default=16, help="snapshots per iteration for --offline-weight")
    p.add_argument("--scales", choices=["resolved", "all"], default="resolved",
                   help="wavenumbers the trajectory loss compares: those pyqg's filter leaves alone (default) or all")
    p.add_argument("--spectral-weight", type=float, default=0.0,
                   help="add this multiple of a phase-blind term: the squared log-ratio of the twin's PV power to "
                        "the truth's per isotropic wavenumber shell (default 0: off; measured online, it "
                        "over-energised the long runs: README)")
    p.add_argument("--call-interval", type=int, default=1, metavar="K",
                   help="train for the cadence the closure will run at: the twin evaluates the network every K "
                        "steps and holds its forcing in between, as `roteq rollout --call-interval K` does")
    p.add_argument("--checkpoint-every", type=int, default=8, help="steps per gradient-checkpoint block")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_online)
    return p


def _cmd_train_operator(args: argparse.Namespace) -> int:
    import torch

    from solver_coupling.torchqg.operator_store import save_operator_closure

    torch.set_num_threads(args.threads)
    try:
        fit = _fit_operator_transfer if args.method == "transfer" else _fit_operator_twin
        closure, solver, training, table = fit(args)
    except (ValueError, FileNotFoundError) as e:
        _fail("train-operator", e)
    training = {"method": args.method, "dataset": str(args.data), **training,
                **({"init": str(args.init)} if args.init else {}),
                "command": "roteq " + " ".join(args.argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.name or args.out / "model"
    folder = save_operator_closure(closure, target, solver=solver, training=portable(training),
                                   name=Path(target).name)
    print(table)
    print(f"saved {folder}")
    return 0


def _operator_start(args: argparse.Namespace, L: float, nx: int):
    """A zero closure of the requested size, or ``--init``'s weights (its size) for the data's grid."""
    from solver_coupling.torchqg.operator_closure import OperatorClosure
    from solver_coupling.torchqg.operator_store import load_operator_closure

    if args.init is None:
        return OperatorClosure(L, nx, radius_cells=args.radius_cells, n_basis=args.n_basis)
    start = load_operator_closure(args.init)[0]
    if start.nx != nx or abs(start.L - L) > 1e-9 * L:
        raise ValueError(f"--init {args.init} is for nx={start.nx}, L={start.L:g} m; the data is nx={nx}, L={L:g} m")
    return start.train()


def _fit_operator_twin(args: argparse.Namespace) -> tuple[Any, dict, dict, str]:
    """``--method twin``: L-BFGS through the torch twin on trajectory windows."""
    import pyqg
    import torch

    from solver_coupling.pyqg.config import solver_config_of
    from solver_coupling.torchqg.online_training import load_windows
    from solver_coupling.torchqg.operator_closure import closure_window_loss, train_operator_closure

    windows = load_windows(args.data)
    R, W = windows.q.shape[:2]
    kw = windows.twin_kwargs
    closure = _operator_start(args, float(kw["L"]), int(kw["nx"]))
    history = train_operator_closure(closure, windows, unroll=args.unroll, iterations=args.iterations,
                                     batch=args.batch, val_runs=args.holdout, seed=args.seed)
    held_runs = list(range(R - args.holdout, R))
    runs, starts = torch.tensor(held_runs).repeat_interleave(W), torch.arange(W).repeat(args.holdout)
    with torch.no_grad():
        held = {n: {name: float(closure_window_loss(c, windows, runs, starts, n)) for name, c in
                    (("none", None), ("operator", closure))} for n in args.unroll}
    solver = solver_config_of(pyqg.QGModel(log_level=0, **{k: v for k, v in kw.items() if k != "dt"}))
    training = {"dataset_sha256": windows.sha256, "dataset_command": windows.command, "holdout_runs": held_runs,
                "unroll": list(args.unroll), "iterations": args.iterations, "batch": args.batch, "seed": args.seed,
                "history": history, "held_out_loss": held}
    table = "\n".join([f"held-out trajectory loss (resolved band), runs {held_runs} of {args.data}:",
                        "| unroll (steps) | no closure | operator closure |", "|---|---|---|"]
                       + [f"| {n} | {r['none']:.4e} | {r['operator']:.4e} |" for n, r in held.items()])
    return closure, solver, training, table


def _fit_operator_transfer(args: argparse.Namespace) -> tuple[Any, dict, dict, str]:
    """``--method transfer``: match the truth's subgrid energy and enstrophy transfer spectra (least squares)."""
    import pyqg

    from solver_coupling.pyqg.config import solver_config_of
    from solver_coupling.torchqg.operator_fit import fit_transfer, load_transfer_data, transfer_mismatch

    data = load_transfer_data(args.data, args.holdout)
    closure = _operator_start(args, float(data.model_kwargs["L"]), int(data.model_kwargs["nx"]))
    train_fit = fit_transfer(closure, data.train, budgets=args.budgets, layers=args.layers)
    none = transfer_mismatch(None, data.held_out)
    held = {name: {"none": none[name], "operator": value}
            for name, value in transfer_mismatch(closure, data.held_out).items()}
    solver = solver_config_of(pyqg.QGModel(log_level=0, **{k: v for k, v in data.model_kwargs.items() if k != "dt"}))
    training = {"dataset_sha256": data.sha256, "dataset_command": data.command, "holdout_runs": data.holdout_runs,
                "budgets": list(args.budgets), "layers": args.layers,
                "snapshots": {"train": data.train.snapshots, "held_out": data.held_out.snapshots},
                "train_transfer_mismatch": train_fit, "held_out_transfer_mismatch": held}
    table = "\n".join([f"held-out transfer-spectrum mismatch ||T - T_truth|| / ||T_truth||, runs {data.holdout_runs} "
                        f"of {args.data}:", "| budget, layer | no closure | operator closure |", "|---|---|---|"]
                       + [f"| {n} | {r['none']:.3f} | {r['operator']:.3f} |" for n, r in held.items()])
    return closure, solver, training, table


def add_train_operator_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "train-operator", help="fit an operator closure (learned isotropic PV operators)",
        description="Fit the radial profiles of an operator closure (dq_i = sum_j A_ij q_j, each A_ij a learned "
                    "radial kernel; docs/operators.md). --method transfer (the default) matches the truth's subgrid "
                    "energy and enstrophy transfer spectra per layer and shell, one least-squares solve on the "
                    "dataset's q and S_direct (seconds). --method twin runs L-BFGS through the torch twin on "
                    "trajectory windows (`roteq generate --window-steps`), one stage per unroll length. The last "
                    "--holdout runs are held out and scored. Saves a model folder the rollout and the pyqg plugin load.")
    p.add_argument("--data", required=True, type=Path, metavar="FILE",
                   help="coarse-grained truth from `roteq generate` (with trajectory windows for --method twin)")
    p.add_argument("--method", choices=("transfer", "twin"), default="transfer",
                   help="transfer-spectrum least squares, or trajectory loss through the torch twin")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="run folder")
    p.add_argument("--name", default=None,
                   help="save as trained_models/NAME (a path with a / is used as is) (default: OUT/model)")
    p.add_argument("--unroll", type=_int_list, default=(4, 8, 16),
                   help="--method twin: unroll lengths in steps, one stage each")
    p.add_argument("--iterations", type=int, default=40, help="--method twin: L-BFGS evaluations per stage")
    p.add_argument("--batch", type=int, default=4, help="--method twin: training windows per stage")
    p.add_argument("--holdout", type=int, default=1, metavar="N", help="number of runs held out: the last N")
    p.add_argument("--budgets", type=_budget_list, default=("energy", "enstrophy"), metavar="LIST",
                   help="--method transfer: the transfer spectra matched, comma-separated (default: energy,enstrophy)")
    p.add_argument("--layers", choices=LAYER_CHOICES, default="coupled",
                   help="--method transfer: fit the cross-layer operators too, keep each layer's PV forcing "
                        "only itself, or fit the upper layer's own operator alone (default: coupled)")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this operator closure's weights (its radius and basis; --method twin fine-tunes "
                        "it) (default: start from zero)")
    p.add_argument("--radius-cells", type=float, default=8.0, help="kernel support radius, in grid cells")
    p.add_argument("--n-basis", type=int, default=17, help="hat functions per radial profile")
    p.add_argument("--seed", type=int, default=0, help="--method twin: seed of the window draws")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.set_defaults(func=_cmd_train_operator)
    return p


def _cmd_combine_operators(args: argparse.Namespace) -> int:
    from solver_coupling.torchqg.operator_family import load_operator_family, save_operator_family

    try:
        folder = save_operator_family(args.anchors, args.name, command="roteq " + " ".join(args.argv))
        family, card = load_operator_family(folder)
    except (ValueError, FileNotFoundError, KeyError) as e:
        _fail("combine-operators", e)
    print(f"wrote {folder}: {len(family.anchors)} anchors; accepts " + ", ".join(
        f"{k} in [{v[0]:g}, {v[1]:g}]" for k, v in card["regime"].items() if isinstance(v, list))
          + " (every other setting as the anchors)")
    return 0


def add_combine_operators_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "combine-operators", help="make an operator family from closures fitted in several configurations",
        description="Save an operator family over operator closures of one grid fitted in different configurations "
                    "(`roteq train-operator`): the pyqg plugin accepts any solver inside the box the anchors span "
                    "and blends their multipliers by inverse-distance weights in log parameters; at an anchor it is "
                    "that closure (docs/operators.md).")
    p.add_argument("--anchor", dest="anchors", action="append", required=True, metavar="MODEL",
                   help="an operator closure, a name under trained_models/ or a folder (repeat, at least twice)")
    p.add_argument("--name", required=True,
                   help="save as trained_models/NAME (a path with a / is used as is)")
    p.set_defaults(func=_cmd_combine_operators)
    return p


def _cmd_score(args: argparse.Namespace) -> int:
    from roteq_param.train import load_dataset, r2_scores

    try:
        net = load_model(args.model)
        data = load_dataset(args.data, schema=net.schema, min_runs=1)
        runs = list(range(data.n_runs)) if args.runs is None else sorted(set(args.runs))
        bad = [r for r in runs if not 0 <= r < data.n_runs]
        if bad:
            raise ValueError(f"--runs {bad} are not in {args.data} (runs 0-{data.n_runs - 1})")
        n = int(data.x.shape[-1])
        result = {"model": args.model, "data": args.data, "data_sha256": data.sha256, "grid": n, "dx_m": data.L / n,
                  "runs": runs, "r2": r2_scores(net, data, runs)}
    except (ValueError, FileNotFoundError, ModelFileError) as e:
        _fail("score", e)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_bytes(args.json, (text + "\n").encode())
    return 0


def add_score_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "score", help="offline skill (R^2 of the fluxes and of S per layer) of a model on a coarse dataset",
        description="R^2 of every flux component and of the PV forcing S per layer, of a trained model on the "
                    "runs of a dataset from `roteq generate` or `roteq coarsen` (any grid a similarity-scaled "
                    "model can run on).")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder")
    p.add_argument("--data", required=True, metavar="FILE", help="coarse netCDF dataset")
    p.add_argument("--runs", type=_runs_option, default=None, metavar="RUNS",
                   help="runs to score, e.g. 0-3,7 (default: all)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the JSON here (default: only print it)")
    p.set_defaults(func=_cmd_score)
    return p


# ---------------------------------------------------------------------------------------------
# rollout
# ---------------------------------------------------------------------------------------------

def add_rollout_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "rollout", help="run coarse pyqg ensembles online, with or without a trained model",
        description=f"Runs M coarse pyqg members for Y years ({YEARS}), with the trained "
                    "parameterization (--model) or without (--model none), and writes OUT/rollout.nc.")
    p.add_argument("--model", default="auto",
                   help="'auto' (the shipped closure that accepts this configuration and grid, "
                        "trained_models/defaults.json), a trained model name or directory, 'none', or a pyqg baseline "
                        "closure: 'backscatter' (Ross et al.'s tuning) or 'smagorinsky' (default: %(default)s)")
    p.add_argument("--config", default="eddy", choices=sorted(CONFIGS), help="named configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a pyqg parameter (repeatable) (default: none)")
    p.add_argument("--nx", type=int, default=64, help="coarse grid points per side")
    p.add_argument("--members", type=int, default=3, metavar="N", help="number of ensemble members")
    p.add_argument("--years", type=float, default=10.0, help=f"run length, in {YEARS}")
    p.add_argument("--snapshot-days", type=float, default=5.0, help="days between snapshots")
    p.add_argument("--diag-start-years", type=float, default=5.0,
                   help=f"start of pyqg's time-averaged diagnostics, in {YEARS}")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial conditions")
    p.add_argument("--call-interval", type=int, default=None, metavar="K",
                   help="evaluate the network every K steps and hold its forcing in between (default: the cadence "
                        "the model was trained for, from its card; 1 for a model trained without one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--engine", choices=["pyqg", "torch"], default="pyqg",
                   help="pyqg itself (CPU) or its torch twin (batched; CPU or --device cuda)")
    p.add_argument("--precision", choices=["float64", "float32"], default="float64",
                   help="the torch engine's state precision (pyqg is always float64)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (on a busy machine more threads measured much slower)")
    p.add_argument("--energy-limit", type=float, default=1.0,
                   help="kinetic energy (m2 s-2) above which a member counts as blown up")
    p.add_argument("--checkpoint-years", type=float, default=1.0, help=f"time between checkpoints, in {YEARS}")
    p.add_argument("--allow-out-of-regime", action="store_true",
                   help="run even if the configuration differs from the model's training configuration (measured: "
                        "the default eddy-trained model scored mean similarity -1.02 on jet, worse than no closure)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (OUT/rollout.nc)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    p.add_argument("--overwrite", action="store_true", help="start over even if OUT holds a rollout")
    p.add_argument("--initial-states", default=None, metavar="FILE",
                   help="start member i from state i of FILE (netCDF, q (run, lev, y, x) in s-1, e.g. the spun-up "
                        "trained_models/<model>/demo_states_*.nc) (default: none, members start from seeded noise)")
    p.add_argument("--add-closure", default=None, metavar="NAME",
                   help="also apply a pyqg built-in closure ('backscatter' or 'smagorinsky') on top of the "
                        "network's forcing (pyqg engine) (default: none)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (without it: a bar, refreshed once a minute when stderr is not a terminal)")
    p.set_defaults(func=_cmd_rollout)
    return p


def _cmd_rollout(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    try:
        overrides = dict(parse_assignment(a) for a in args.overrides)
        config = get_config(args.config, {**overrides, "nx": args.nx}, coarse_nx=args.nx)
        req = RolloutRequest(config=config, model=None if args.model == "none" else args.model,
                             members=args.members, years=args.years, snapshot_days=args.snapshot_days,
                             seed=args.seed, call_interval=args.call_interval, device=args.device,
                             energy_limit=args.energy_limit, checkpoint_years=args.checkpoint_years,
                             diag_start_years=args.diag_start_years, allow_out_of_regime=args.allow_out_of_regime,
                             engine=args.engine, precision=args.precision, add_closure=args.add_closure,
                             initial_states=args.initial_states)
        ds = rollout(req, args.out, resume=args.resume, overwrite=args.overwrite,
                     progress=False if args.no_progress else None)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as e:
        _fail("rollout", e)
    failed = int(ds["failed"].sum())
    if args.model == "auto":
        print(f"closure: {req.model} (the shipped choice for this configuration, trained_models/defaults.json)")
    print(f"wrote {args.out / 'rollout.nc'}: {req.members} members x {req.years:g} years, "
          f"{req.members - failed} finished stable, {failed} stopped by the monitor")
    for i in np.flatnonzero(ds["failed"].values):
        print(f"  member {i}: {ds['failure_reason'].values[i]} at year {ds['failure_time'].values[i] / YEAR:.2f}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------

def _parse_runs(items: Sequence[str] | None) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for item in items or []:
        name, sep, files = item.partition("=")
        if not sep or not name.strip() or not files.strip():
            raise UsageError(f"--run expects NAME=FILE[,FILE...]; got {item!r}")
        runs.setdefault(name.strip(), []).extend(f for f in files.split(",") if f)
    return runs


def _cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        if args.last_years is not None and args.last_years <= 0:
            raise UsageError(f"--last-years must be positive; got {args.last_years}")
        if args.quantiles < 0:
            raise UsageError(f"--quantiles must be >= 0 (0: exact); got {args.quantiles}")
        if args.energy_factor <= 1:
            raise UsageError(f"--energy-factor must exceed 1; got {args.energy_factor}")
        overrides = dict(parse_assignment(s) for s in args.set or [])
        config = EvaluateConfig(last_years=args.last_years, overrides=overrides,
                                n_quantiles=args.quantiles or None, energy_factor=args.energy_factor)
        if (args.truth is None) == (args.reference is None):
            raise UsageError("give the truth either as --truth FILE... or as a stored --reference FILE")
        truth = load_runs(args.truth, TRUTH) if args.truth else Reference.load(args.reference)
        baseline = load_runs(args.baseline, BASELINE)
        candidates = {name: load_runs(files, name) for name, files in _parse_runs(args.run).items()}
        for item in args.frame or []:
            name, sep, element = item.partition("=")
            if not sep or name not in candidates:
                raise UsageError(f"--frame expects NAME=ELEMENT with NAME one of the --run names "
                                 f"{sorted(candidates)}; got {item!r}")
            candidates[name] = to_training_frame(candidates[name], element, name)
        truth_b = load_runs(args.truth_b, CEILING) if args.truth_b else None
        table, figures, reference = evaluate(truth, baseline, candidates, config, truth_b)
    except ValueError as err:  # UsageError, bad --set names
        _fail("evaluate", err)
    os.makedirs(args.out, exist_ok=True)
    write_results(args.out, table, figures)
    if args.save_reference:
        reference.save(args.save_reference)
        print(f"wrote the truth reference {args.save_reference}")
    print(table.format())
    print(f"wrote {os.path.join(args.out, 'evaluate.json')} and {len(figures)} PNG figures")
    return 0


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``evaluate`` to an argparse subparsers object; ``func`` takes the parsed namespace."""
    p = _add(
        subparsers, "evaluate",
        help="score parameterized rollouts against coarse-grained truth (similarity, stability)",
        description="Similarity 1 - D(run, truth)/D(baseline, truth) per diagnostic (Wasserstein-1 of value "
        "distributions, RMSE of isotropic energy-budget spectra below 2/3 of the coarse Nyquist wavenumber), "
        "its mean and minimum, the noise ceiling of independent truth runs, and rollout stability.",
    )
    p.add_argument("--truth", nargs="+", metavar="FILE[@RUNS]",
                   help="coarse-grained high-res netCDF files with q (run, time, lev, y, x) in s-1; "
                        "FILE@7-9 or FILE@0,2 selects runs (default: none, give --reference)")
    p.add_argument("--reference", metavar="FILE", help="a stored truth reference instead of --truth (default: none)")
    p.add_argument("--save-reference", metavar="FILE",
                   help="store the truth's reduced statistics for later --reference use (default: not stored)")
    p.add_argument("--baseline", nargs="+", required=True, metavar="FILE[@RUNS]",
                   help="unparameterized coarse rollouts (same layout)")
    p.add_argument("--run", action="append", metavar="NAME=FILE[,FILE...]",
                   help="parameterized rollouts to score (repeatable) (default: none)")
    p.add_argument("--frame", action="append", metavar="NAME=ELEMENT",
                   help="run NAME is of the configuration turned by ELEMENT (rot180, rot0*flip, rot180*flip): "
                        "map it back before scoring (repeatable) (default: none)")
    p.add_argument("--truth-b", nargs="+", metavar="FILE[@RUNS]",
                   help="independent high-res runs: scored as a candidate, their score is the noise ceiling "
                        "(default: no ceiling)")
    p.add_argument("--last-years", type=float, default=5.0,
                   help=f"score the last Y years of every run, in {YEARS}")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="QGModel parameter on top of the files' config attribute or pyqg defaults (repeatable) "
                        "(default: none)")
    p.add_argument("--quantiles", type=int, default=10_000,
                   help="quantiles kept per pooled distribution; 0 keeps every value (exact W1)")
    p.add_argument("--energy-factor", type=float, default=10.0,
                   help="unstable once domain-mean KE exceeds this times the truth's maximum")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for evaluate.json and the PNG figures")
    p.set_defaults(func=_cmd_evaluate)
    return p


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

def _print(result: dict[str, Any]) -> None:
    t = result["seconds_per_step"]
    print(f"torch threads: {result['threads']}")
    print(f"bare 64^2 step          {1e3 * t['bare_64']:8.3f} ms")
    for k, r in result["ratio_param_over_bare"].items():
        print(f"param 64^2 step ({k:>3})  {1e3 * t['param_64_' + k]:8.3f} ms   ratio to bare {r:5.2f}  (target <= 3)")
    print(f"high-res 256^2 step     {1e3 * t['highres_256']:8.3f} ms   ratio to param k1 "
          f"{result['ratio_highres_over_param_k1']:5.2f}  (target >= 5)")
    print(f"backscatter 64^2 step   {1e3 * t['backscatter_64']:8.3f} ms   ratio to bare "
          f"{result['ratio_backscatter_over_bare']:5.2f}  (pyqg's closure, for comparison)")
    if "pyqg_jax" in result:
        print(result["pyqg_jax"])
    for dev in ("cpu", "cuda"):
        table = result[f"throughput_{dev}"]
        if isinstance(table, str):
            print(f"throughput on {dev}: {table}")
            continue
        sizes = sorted({int(M) for rows in table.values() for M in rows})
        print(f"throughput on {dev}, member-years per wall-hour (eddy 64^2):")
        print("  " + f"{'M':>16}" + "".join(f"{M:>10d}" for M in sizes))
        for name, rows in table.items():
            cells = [rows.get(str(M)) for M in sizes]
            print("  " + f"{name:>16}" + "".join(
                f"{c['member_years_per_wall_hour']:10.0f}" if isinstance(c, dict) else f"{'-' if c is None else 'OOM':>10}"
                for c in cells))


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(subparsers, "bench", help="measure the plugin's cost as ratios to bare pyqg steps",
             description=plain(pyqg_bench.__doc__), formatter_class=_RawHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="trained model name or folder")
    p.add_argument("--steps", type=int, default=200, help="steps per timing block")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing blocks")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1, like pyqg's ntd=1)")
    p.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64], metavar="M",
                   help="CPU ensemble sizes")
    p.add_argument("--gpu-members", type=int, nargs="+", default=[1, 16, 64, 256, 1024, 4096], metavar="M",
                   help="GPU ensemble sizes (when torch sees a CUDA GPU)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this JSON file (default: none)")
    p.set_defaults(func=_cmd_bench)
    return p


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        result = bench(args.model, steps=args.steps, repeats=args.repeats, members=tuple(args.members),
                       threads=args.threads, gpu_members=tuple(args.gpu_members))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail("bench", e)
    _print(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------
# derive
# ---------------------------------------------------------------------------------------------

def add_derive_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(
        subparsers, "derive", help="save a trained model with other fixed closure terms (weights unchanged)",
        description="Copy a trained model with other fixed closure terms added to the network's PV forcing "
                    "(ModelConfig.closure): --grid-damping, a biharmonic viscosity on relative vorticity given by "
                    "its damping rate [1/s] at the grid's Nyquist wavenumber; --energy-backscatter, the multiple "
                    "of the network's energy drain returned by an anti-diffusion of vorticity, or 'auto' to "
                    "calibrate it on --data so that the mean energy transfer matches the truth's.")
    p.add_argument("--model", default=DEFAULT_MODEL, help="source model, a name or folder (default: %(default)s)")
    p.add_argument("--grid-damping", type=float, default=None, metavar="RATE",
                   help="damping rate at the grid scale [1/s], >= 0 (e.g. 1e-5 = 1/(1.2 days)) (default: the "
                        "source's)")
    p.add_argument("--energy-backscatter", default=None, metavar="MULTIPLE|auto",
                   help="multiple >= 0 of the network's energy drain to return (1: energy-neutral network), "
                        "or 'auto' (needs --data) (default: the source's)")
    p.add_argument("--backscatter-order", type=int, default=None, choices=(1, 2),
                   help="backscatter shape: 2 = -a lap(zeta) (near the grid scale), 1 = +a zeta (at the "
                        "energy-containing scales) (default: the source's)")
    p.add_argument("--data", default=None, metavar="FILE[@RUNS]",
                   help="coarse dataset (roteq generate) for --energy-backscatter auto; FILE@4-7 selects runs "
                        "(default: none)")
    p.add_argument("--every", type=int, default=1, help="calibrate on every k-th snapshot")
    p.add_argument("--name", required=True,
                   help="the derived model: trained_models/NAME (a path with a / is used as is)")
    p.add_argument("--note", default=None, help="why, recorded in the card (e.g. the tuning command) (default: none)")
    p.set_defaults(func=_cmd_derive)
    return p


def _cmd_derive(args: argparse.Namespace) -> int:
    try:
        closure: dict[str, float] = {}
        calibration = None
        if args.grid_damping is not None:
            closure["grid_damping"] = args.grid_damping
        if args.backscatter_order is not None:
            closure["backscatter_order"] = args.backscatter_order
        if args.energy_backscatter == "auto":
            if not args.data:
                raise UsageError("--energy-backscatter auto calibrates on a dataset: give --data FILE[@RUNS]")
            if args.every < 1:
                raise UsageError(f"--every must be >= 1; got {args.every}")
            path, runs = parse_run_selection(args.data, "--data")
            calibration = calibrate_energy_backscatter(load_model(args.model), path, runs, every=args.every)
            calibration["data"] = args.data
            closure["energy_backscatter"] = calibration["fraction"]
            print(f"calibrated on {calibration['samples']} snapshots of {args.data}: the network drains "
                  f"{calibration['drain_network'] / calibration['drain_truth']:.2f}x the truth's energy; "
                  f"energy_backscatter = {calibration['fraction']:.4f}")
        elif args.energy_backscatter is not None:
            try:
                closure["energy_backscatter"] = float(args.energy_backscatter)
            except ValueError:
                raise UsageError(f"--energy-backscatter takes a number or 'auto'; got {args.energy_backscatter!r}")
        if not closure:
            raise UsageError("nothing to change: give --grid-damping, --energy-backscatter and/or "
                             "--backscatter-order")
        out = derive_model(args.model, args.name, closure=closure, note=args.note, calibration=calibration)
    except (FileNotFoundError, ValueError, ModelFileError) as e:
        _fail("derive", e)
    print(out)
    return 0


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------

def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    p = _add(subparsers, "demo", help="run the shipped model online in pyqg and score it (about 8 minutes on one core)",
             description=plain(pyqg_demo.__doc__), formatter_class=_RawHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="trained model")
    p.add_argument("--years", type=float, default=2.0, help=f"run length per member, in {YEARS}; all of it is scored")
    p.add_argument("--members", type=int, default=6, metavar="N", help="ensemble members per set (at most 6)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR", help="output folder")
    p.add_argument("--make-states", action="store_true",
                   help="instead of the demo, spin up the states it starts from (3 members x 5 years with and "
                        "without the model, about 15 minutes on one core) and store them in the model's folder")
    p.set_defaults(func=_cmd_demo)
    return p


def _cmd_demo(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # pyqg runs on one core (ntd=1); torch threads only add barrier waits here
    try:
        if args.make_states:
            for path in pyqg_demo.make_demo_states(args.model):
                print(f"wrote {path}")
            return 0
        if not args.years > 0 or args.members < 1:
            raise ValueError("--years must be positive and --members at least 1")
        return run_demo(args.model, years=args.years, members=args.members, out=args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail("demo", e)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="roteq",
        description="roteq-param: rotation-equivariant subgrid flux parameterizations for pyqg and C-grid solvers.",
        epilog="Grammar: RUNS are run indices from 0, ranges and lists like 0-3,7 (--runs RUNS, FILE@RUNS); "
               "counts are --members N / --holdout N; --out DIR is always a folder, one output file is --out-file "
               f"FILE or --json FILE. Years are {YEARS} (pyqg's own year is 365 days). See docs/cli.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_demo_parser(sub)
    p = _add(sub, "envcheck", help="check the installed stack (numpy<2, pyqg with FFTW, torch 2.13.0, escnn)")
    p.set_defaults(func=lambda args: envcheck.main())
    add_generate_parser(sub)
    add_coarsen_parser(sub)
    add_train_parser(sub)
    add_train_online_parser(sub)
    add_train_operator_parser(sub)
    add_combine_operators_parser(sub)
    add_score_parser(sub)
    add_rollout_parser(sub)
    add_evaluate_parser(sub)
    add_bench_parser(sub)
    add_derive_parser(sub)
    return parser


# errno values that mean the storage is full (or a file-size limit was hit), not a bad request
_STORAGE_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by the commands that write files
    try:
        return int(args.func(args) or 0)
    except OSError as e:
        if e.errno not in _STORAGE_FULL:
            raise
        # every output is staged in a temporary file and renamed into place, so the failed write
        # left the previous complete file (if any) as it was
        where = f" writing {e.filename}" if e.filename else ""
        _fail(args.command, f"out of storage{where} ({e.strerror or e}); the previous complete outputs are intact: "
              "free space (or raise the file-size limit) and re-run the same command (with --resume where it has "
              "one)", status=3)


if __name__ == "__main__":
    sys.exit(main())
