"""Fault injection: kill real ``roteq`` processes with SIGKILL, resume them, compare with an unbroken run.

A job is a ``roteq`` command line that writes into a trial folder. For each trial the harness
starts the command and kills it with SIGKILL, either

* ``random``: at a random point of its stepping (after a random one of its first staged writes, a
  random part of the mean gap between writes), or
* ``write``: the moment one of its atomic writes has a staging file on disk (the k-th such write,
  k random in the first half of the writes), i.e. during a checkpoint or dataset write,

then checks that every output file present is complete (it reads each one through), re-runs the
same command (with ``--resume`` where the command has one), and checks that no staging file is
left and that every output equals the unbroken run's bit for bit.

The suite runs a few trials per job (``tests/test_fault_injection.py``); the reliability page's
table (``docs/reliability.md``) comes from a longer campaign::

    PYTHONHASHSEED=0 .venv/bin/python tests/fault_harness.py --trials 20

Silent corruption (``--flips N``): for each kind of file the project writes and reads back (a
training dataset, a rollout, a rollout checkpoint, model weights, a model card, a truth reference)
the harness flips one random byte past the format's header in a copy, N times, and runs the
command that reads that file on the copy (``roteq score``, ``evaluate``, ``rollout --resume``),
each under a time limit. A flip is *detected* when the command fails with a clear error (exit
status 2, the file named, no traceback), *could not matter* when the command succeeds with the
same result as on the intact file, *silently used* when it succeeds with another result, and a
*hang* when it outlives the limit. ``tests/test_integrity.py`` runs two flips per kind::

    PYTHONHASHSEED=0 .venv/bin/python tests/fault_harness.py --flips 20
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGING = re.compile(r"(.+)\.tmp\.\d+\.[0-9a-f]{8}")  # roteq_param.atomic.temporary_path names
CLI = [sys.executable, "-m", "solver_coupling.cli"]
POLL_S = 0.0005


# ------------------------------------------------------------------------------- reading outputs


def _read_netcdf(path: Path) -> dict:
    import xarray as xr

    with xr.open_dataset(path) as ds:
        return {"vars": {k: v.values for k, v in ds.variables.items()}, "attrs": dict(ds.attrs)}


def _read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {"vars": {k: z[k] for k in z.files}, "attrs": {}}


def _read_weights(path: Path) -> dict:
    import torch

    torch.load(path, map_location="cpu", weights_only=True)  # complete and loadable ...
    return {"vars": {"bytes": np.frombuffer(path.read_bytes(), np.uint8)}, "attrs": {}}  # ... and compared as bytes


def _read_csv(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError("empty table")
    return {"vars": {"bytes": np.frombuffer(path.read_bytes(), np.uint8)}, "attrs": {}}


def _read_card(path: Path) -> dict:
    card = json.loads(path.read_text())
    # the creation time and the timed inference cost are wall-clock facts, not results, and the
    # command line names the trial's own folder (and --resume)
    for key in ("created", "inference_cost"):
        card.pop(key)
    card["training"].pop("command", None)
    return {"vars": {}, "attrs": card}


READERS: dict[str, Callable[[Path], dict]] = {".nc": _read_netcdf, ".npz": _read_npz, ".pt": _read_weights,
                                               ".csv": _read_csv, ".json": _read_card}


def _differences(a: dict, b: dict) -> list[str]:
    names = [k for k in sorted(set(a["vars"]) | set(b["vars"]))
             if k not in a["vars"] or k not in b["vars"] or a["vars"][k].shape != b["vars"][k].shape
             or a["vars"][k].tobytes() != b["vars"][k].tobytes()]
    if a["attrs"] != b["attrs"]:
        names.append("attributes")
    return names


# ------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """A command writing into ``folder``; ``outputs`` are compared; ``resume`` flags added on re-runs."""

    name: str
    command: Callable[[Path], list[str]]
    outputs: list[str]
    resume: list[str] = field(default_factory=list)
    timeout_s: float = 300.0


def small_jobs(workdir: Path) -> list[Job]:
    """Rollouts (both engines), training and data generation on small grids, with what they need."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest_models import tiny_dataset
    from roteq_param import models
    from solver_coupling.pyqg.config import get_config, solver_config_of

    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = workdir / "model16"
    if not (model_dir / "model.pt").is_file():
        torch.manual_seed(0)
        net = models.build_model(arch="escnn", group="C4", channels=(8,), kernel_sizes=(3,))
        net.set_normalization({"vel_1": 1e-2, "vel_2": 1e-2, "b": 1e2, "beta": 1.5e-11, "U_1": 2.5e-2, "U_2": 1e-3},
                              {f.name: 1e-7 for f in net.schema.outputs})
        solver = solver_config_of(get_config("eddy", {"nx": 16}, coarse_nx=16).make_model(log_level=0))
        models.save_model(net, model_dir, training={"solver": solver}, inference_cost={"ms_per_call_64x64_1thread": 0.0})
    data = workdir / "tiny.nc"
    if not data.is_file():
        tiny_dataset(data)

    def rollout(engine: str) -> Callable[[Path], list[str]]:
        return lambda f: CLI + ["rollout", "--model", str(model_dir), "--set", "nx=16", "--nx", "16", "--members", "2",
                                "--years", "0.06", "--snapshot-days", "2", "--checkpoint-years", "0.01",
                                "--diag-start-years", "0.02", "--engine", engine, "--out", str(f / "out")]

    return [
        Job("rollout (pyqg engine)", rollout("pyqg"), ["out/rollout.nc", "out/checkpoint.npz"], ["--resume"]),
        Job("rollout (torch engine)", rollout("torch"), ["out/rollout.nc", "out/checkpoint.npz"], ["--resume"]),
        Job("train", lambda f: CLI + ["train", "--data", str(data), "--channels", "8", "--kernel-sizes", "3",
                                      "--epochs", "4", "--batch-size", "4", "--seed", "3", "--no-progress",
                                      "--out", str(f / "run"), "--name", str(f / "model")],
            ["run/metrics.csv", "model/model.pt", "model/card.json"], ["--resume"]),
        Job("generate", lambda f: CLI + ["generate", "--set", "nx=32", "--coarse-nx", "16", "--members", "3",
                                         "--years", str(240 * 3600 / (360 * 86400)),
                                         "--spinup-years", str(120 * 3600 / (360 * 86400)), "--snapshot-hours", "40",
                                         "--window-steps", "4", "--seed", "7", "--serial", "--out-file", str(f / "data.nc")],
            ["data.nc"]),
    ]


# ------------------------------------------------------------------------------- one trial


def _staging_files(folder: Path) -> list[Path]:
    return [Path(root) / n for root, _, names in os.walk(folder) for n in names if STAGING.fullmatch(n)]


def _env() -> dict:
    return dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))


def _start(job: Job, folder: Path, extra: list[str] = ()) -> subprocess.Popen:
    # stderr (progress bars included) goes to a file: an unread pipe could fill and stall the job
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(job.command(folder) + list(extra), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=log, text=True)
    proc.log = log
    return proc


def _tail(proc: subprocess.Popen, n: int) -> str:
    proc.log.seek(0)
    return proc.log.read()[-n:]


@dataclass
class Reference:
    """An unbroken run: its outputs, its duration and how many staged writes were seen."""

    outputs: dict
    first_output_s: float
    total_s: float
    writes_seen: int


def reference_run(job: Job, folder: Path) -> Reference:
    t0 = time.monotonic()
    proc = _start(job, folder)
    first, seen = None, set()
    while proc.poll() is None:
        staged = _staging_files(folder)
        if staged and first is None:
            first = time.monotonic() - t0
        seen.update(staged)
        time.sleep(POLL_S)
    total = time.monotonic() - t0
    failure = _tail(proc, 2000) if proc.returncode != 0 else ""
    proc.log.close()
    if failure:
        raise RuntimeError(f"{job.name}: the unbroken run failed ({proc.returncode}): {failure}")
    outputs = {name: READERS[Path(name).suffix](folder / name) for name in job.outputs}
    return Reference(outputs, first if first is not None else 0.0, total, len(seen))


@dataclass
class Trial:
    job: str
    mode: str
    landed: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _where(folder: Path, staged: list[Path]) -> str:
    if staged:
        return "writing " + STAGING.fullmatch(staged[0].name).group(1)
    return "stepping" if any(p.is_file() for p in folder.rglob("*") if p.name != ".lock") else "starting"


def run_trial(job: Job, ref: Reference, folder: Path, mode: str, rng: random.Random) -> Trial:
    """Kill ``job`` once (``mode`` random or write), check, resume, compare with ``ref``."""
    proc = _start(job, folder)
    if mode == "random":
        # a random point of the stepping: after the k-th staged write (k in the first half), a random
        # part of the reference's mean gap between writes. Counted in writes, not seconds from the
        # start, so a re-run faster than the reference (warm caches) is still killed mid-run.
        target, seen = rng.randint(1, max(ref.writes_seen // 2, 1)), set()
        while proc.poll() is None and len(seen) < target:
            seen.update(_staging_files(folder))
            time.sleep(POLL_S)
        gap = (ref.total_s - ref.first_output_s) / max(ref.writes_seen, 1)
        deadline = time.monotonic() + rng.random() * 0.5 * gap
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        staged = _staging_files(folder)
    else:
        # the k-th staged write with k in the first half too: polling can miss a short write on a loaded
        # machine, and a k near the reference's count then let the job finish unkilled (seen in a clean
        # clone's suite run beside two rollouts)
        target, seen = rng.randint(1, max(ref.writes_seen // 2, 1)), set()
        staged = []
        while proc.poll() is None:
            staged = _staging_files(folder)
            seen.update(staged)
            if staged and len(seen) >= target:
                break
            time.sleep(POLL_S)
    if proc.poll() is not None:  # finished (or failed) before the kill point
        problems = [] if proc.returncode == 0 else [f"failed unkilled: {_tail(proc, 500)}"]
        proc.log.close()
        return Trial(job.name, mode, "after the end (not killed)", problems)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.log.close()
    landed = _where(folder, staged)

    problems = []
    for name in job.outputs:  # an output present after the kill must be whole (the old or the new one)
        if (folder / name).exists():
            try:
                READERS[Path(name).suffix](folder / name)
            except Exception as e:  # noqa: BLE001 - any failure to read it through is the finding
                problems.append(f"half-written {name} after the kill ({type(e).__name__}: {e})")
    resumed = subprocess.run(job.command(folder) + job.resume, cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=job.timeout_s)
    if resumed.returncode != 0:
        return Trial(job.name, mode, landed, problems + [f"resume failed ({resumed.returncode}): "
                                                         f"{resumed.stderr[-1000:]}"])
    problems += [f"staging file left: {p.relative_to(folder)}" for p in _staging_files(folder)]
    for name in job.outputs:
        diff = _differences(ref.outputs[name], READERS[Path(name).suffix](folder / name))
        if diff:
            problems.append(f"{name} differs from the unbroken run in {diff}")
    return Trial(job.name, mode, landed, problems)


def campaign(jobs: list[Job], workdir: Path, trials: int, seed: int = 0, modes=("random", "write"),
             log: Callable[[str], None] = lambda s: None) -> list[Trial]:
    """``trials`` kills per job and mode; returns every trial."""
    rng = random.Random(seed)
    results = []
    for j, job in enumerate(jobs):
        ref = reference_run(job, workdir / f"job{j}" / "reference")
        log(f"{job.name}: unbroken run {ref.total_s:.1f} s, {ref.writes_seen} staged writes seen")
        for mode in modes:
            for t in range(trials):
                trial = run_trial(job, ref, workdir / f"job{j}" / f"{mode}{t}", mode, rng)
                log(f"  {mode:6s} kill {t}: {trial.landed:28s} {'ok' if trial.ok else trial.problems}")
                results.append(trial)
    return results


def table(results: list[Trial]) -> str:
    """Markdown rows: job | kills | where they landed | resumed bit for bit."""
    lines = ["| job | SIGKILLs | where they landed | resumed bit-for-bit |", "| --- | --- | --- | --- |"]
    for job in dict.fromkeys(t.job for t in results):
        mine = [t for t in results if t.job == job]
        killed = [t for t in mine if not t.landed.startswith("after the end")]
        landed = ", ".join(f"{n} {w}" for w, n in Counter(t.landed for t in killed).most_common())
        modes = ", ".join(f"{n} {m}" for m, n in Counter(t.mode for t in killed).items())
        lines.append(f"| {job} | {len(killed)} ({modes}) | {landed} | {sum(t.ok for t in killed)}/{len(killed)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- byte flips


@dataclass
class FlipKind:
    """A kind of file, the command that reads it, and how to compare that command's results.

    ``file`` is the file's path relative to a trial folder that holds a copy of ``source`` (a file,
    or a folder with the file in it); ``command(folder)`` reads it there; ``result(folder, stdout)``
    is what a successful run produced, compared with the intact file's."""

    name: str
    source: Path
    file: str
    command: Callable[[Path], list[str]]
    result: Callable[[Path, str], dict]
    header: int


def _json_result(drop: tuple[str, ...]) -> Callable[[Path, str], dict]:
    """A command's printed JSON less the keys that name the trial's own paths."""
    return lambda folder, stdout: {k: v for k, v in json.loads(stdout).items() if k not in drop}


def _evaluate_result(folder: Path, stdout: str) -> dict:
    return json.loads((folder / "evaluate_out" / "evaluate.json").read_text())


def _rollout_result(folder: Path, stdout: str) -> dict:
    out = _read_netcdf(folder / "rollout.nc")
    return {"vars": {k: v.tolist() for k, v in out["vars"].items()}, "attrs": out["attrs"]}


# the fixed header each format opens with, left alone (a flip there is caught too: the checksums
# cover every byte): HDF5's superblock (version 0 and 2 of it are 96 bytes at most), a zip local
# file header with the first member's name, nothing for JSON
_NETCDF_HEADER, _ZIP_HEADER = 96, 64


def flip_kinds(workdir: Path) -> list[FlipKind]:
    """The six kinds of file, made on small grids by the project's own commands."""
    inputs = workdir / "inputs"
    jobs = {j.name: j for j in small_jobs(inputs)}
    model, data = inputs / "model16", inputs / "tiny.nc"
    roll = jobs["rollout (pyqg engine)"]
    rolled = workdir / "rollout"
    if not (rolled / "out" / "checkpoint.npz").is_file():
        _checked_run(roll.command(rolled))
    ref = workdir / "reference.nc"
    evaluate = CLI + ["evaluate", "--last-years", "0.02", "--quantiles", "0"]
    if not ref.is_file():
        _checked_run(evaluate + ["--truth", str(data), "--baseline", str(rolled / "out" / "rollout.nc"),
                                 "--out", str(workdir / "evaluate_made"), "--save-reference", str(ref)])
    base = str(rolled / "out" / "rollout.nc")
    score = CLI + ["score"]
    return [
        FlipKind("dataset", data, "tiny.nc", lambda f: score + ["--model", str(model), "--data", str(f / "tiny.nc")],
                 _json_result(("data",)), _NETCDF_HEADER),
        FlipKind("rollout", rolled / "out" / "rollout.nc", "rollout.nc",
                 lambda f: evaluate + ["--truth", str(data), "--baseline", base, "--run", f"m={f / 'rollout.nc'}",
                                       "--out", str(f / "evaluate_out")], _evaluate_result, _NETCDF_HEADER),
        FlipKind("checkpoint", rolled / "out", "checkpoint.npz",
                 lambda f: [a if a != str(rolled / "out") else str(f) for a in roll.command(rolled)] + ["--resume"],
                 _rollout_result, _ZIP_HEADER),
        FlipKind("weights", model, "model.pt", lambda f: score + ["--model", str(f), "--data", str(data)],
                 _json_result(("model",)), _ZIP_HEADER),
        FlipKind("card", model, "card.json", lambda f: score + ["--model", str(f), "--data", str(data)],
                 _json_result(("model",)), 0),
        FlipKind("truth reference", ref, "reference.nc",
                 lambda f: evaluate + ["--reference", str(f / "reference.nc"), "--baseline", base, "--run", f"m={base}",
                                       "--out", str(f / "evaluate_out")], _evaluate_result, _NETCDF_HEADER),
    ]


def _checked_run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")


def _copy(kind: FlipKind, folder: Path) -> Path:
    import shutil

    if kind.source.is_dir():
        shutil.copytree(kind.source, folder, ignore=shutil.ignore_patterns(".lock", "rollout.nc*"))
    else:
        folder.mkdir(parents=True)
        for src in kind.source.parent.glob(glob.escape(kind.source.name) + "*"):  # the file and its .sha256
            shutil.copy(src, folder / (kind.file + src.name[len(kind.source.name):]))
    return folder / kind.file


@dataclass
class Flip:
    kind: str
    offset: int
    outcome: str  # detected | unclear error | could not matter | silently used | hang (| intact: no flip)
    seconds: float
    message: str
    result: dict | None = None  # what the reader produced, for the intact file


def run_flip(kind: FlipKind, folder: Path, intact: dict | None, rng: random.Random, timeout_s: float,
             manifest: bool = True) -> Flip:
    """Copy, flip one byte past the header, run the reader, classify (``intact`` None: no flip, return it).

    ``manifest=False``: the copy goes without its ``.sha256`` (as a file written before checksums
    existed, or copied without it), so only what the file itself carries can catch the flip."""
    path = _copy(kind, folder)
    if not manifest:
        Path(str(path) + ".sha256").unlink()
    offset = -1
    if intact is not None:
        raw = bytearray(path.read_bytes())
        offset = rng.randrange(kind.header, len(raw))
        raw[offset] ^= rng.randrange(1, 256)  # a different byte, any of the 255
        path.write_bytes(bytes(raw))
    t0 = time.monotonic()
    try:
        done = subprocess.run(kind.command(folder), cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Flip(kind.name, offset, "hang", time.monotonic() - t0, f"no answer in {timeout_s:.0f} s")
    seconds = time.monotonic() - t0
    error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if intact is None:
        if done.returncode != 0:
            raise RuntimeError(f"{kind.name}: the reader fails on the intact file: {done.stderr[-2000:]}")
        return Flip(kind.name, offset, "intact", seconds, "", kind.result(folder, done.stdout))
    if done.returncode != 0:
        clear = done.returncode == 2 and "Traceback" not in done.stderr and str(path) in done.stderr
        return Flip(kind.name, offset, "detected" if clear else "unclear error", seconds, error)
    same = kind.result(folder, done.stdout) == intact
    return Flip(kind.name, offset, "could not matter" if same else "silently used", seconds, "")


def flip_campaign(kinds: list[FlipKind], workdir: Path, flips: int, seed: int = 0, timeout_s: float = 120.0,
                  log: Callable[[str], None] = lambda s: None, manifest: bool = True) -> list[Flip]:
    """``flips`` single-byte flips per kind; returns every flip (``manifest``: see :func:`run_flip`)."""
    rng = random.Random(seed)
    results = []
    for kind in kinds:
        intact = run_flip(kind, workdir / "flips" / kind.name.replace(" ", "_") / "intact", None, rng, timeout_s).result
        for i in range(flips):
            flip = run_flip(kind, workdir / "flips" / kind.name.replace(" ", "_") / str(i), intact, rng, timeout_s,
                            manifest)
            log(f"  {kind.name:16s} flip {i:2d} at byte {flip.offset:7d}: {flip.outcome:16s} {flip.seconds:5.1f} s "
                f"{flip.message[:160]}")
            results.append(flip)
    return results


def flip_table(results: list[Flip]) -> str:
    """Markdown rows: kind | flips | detected | could not matter | silently used | hangs | slowest."""
    lines = ["| file kind | flips | detected, clear error | error names the damaged variable | could not matter "
             "| silently used | unclear error | hangs | slowest answer |", "| --- | --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]
    for kind in dict.fromkeys(f.kind for f in results):
        mine = [f for f in results if f.kind == kind]
        n = Counter(f.outcome for f in mine)
        named = sum(f.outcome == "detected" and ("variable '" in f.message or "member '" in f.message) for f in mine)
        lines.append(f"| {kind} | {len(mine)} | {n['detected']} | {named} | {n['could not matter']} "
                     f"| {n['silently used']} | {n['unclear error']} | {n['hang']} "
                     f"| {max(f.seconds for f in mine):.1f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=20, help="kills per job and mode (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=Path("runs/fault_injection"))
    p.add_argument("--jobs", nargs="+", default=None, help="job names to run (default: all)")
    p.add_argument("--flips", type=int, default=0,
                   help="instead of kills: this many single-byte flips per file kind (the corruption campaign)")
    p.add_argument("--without-manifests", action="store_true",
                   help="flip copies without their .sha256 files: what a file without a checksum is protected by")
    args = p.parse_args(argv)
    import shutil

    shutil.rmtree(args.workdir, ignore_errors=True)
    if args.flips:
        flips = flip_campaign(flip_kinds(args.workdir), args.workdir, args.flips, args.seed,
                              log=lambda s: print(s, flush=True), manifest=not args.without_manifests)
        print(flip_table(flips))
        return 0 if all(f.outcome in ("detected", "could not matter") for f in flips) else 1
    jobs = [j for j in small_jobs(args.workdir / "inputs") if args.jobs is None or j.name.split()[0] in args.jobs]
    results = campaign(jobs, args.workdir, args.trials, args.seed, log=lambda s: print(s, flush=True))
    print(table(results))
    for t in results:
        if not t.ok:
            print(f"FAILED {t.job} {t.mode} ({t.landed}): {t.problems}")
    return 0 if all(t.ok for t in results) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's code, as the commands it starts (run from ROOT) use
    sys.exit(main())
