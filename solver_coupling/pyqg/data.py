"""Training data from pyqg: high-resolution ensembles coarse-grained into (u, v, b) and subgrid fluxes.

``generate`` runs an ensemble of high-resolution ``pyqg.QGModel`` runs (in
process, on a Dask LocalCluster, or on any Dask scheduler), coarse-grains a
snapshot every ``snapshot_hours`` after the spin-up with
:func:`roteq_param.coarsen.coarse_grain`, and writes one netCDF4 dataset.
``coarsen_files`` does the same for your own high-resolution pyqg runs (saved by
:mod:`solver_coupling.pyqg.output`, or ``m.to_dataset()`` without its complex variables;
docs/retraining.md).

Dataset layout
--------------
:data:`roteq_param.fields.QG_DATASET` (the one table the writer here and the training reader share):
coarse ``u, v, b, q``, the constant vectors ``beta_vec, U_vec``, the fluxes ``tau, Fb``, the forcing
``S_direct, S_flux`` and, with ``window_steps``, the trajectory windows ``q_traj``; float32 on disk,
computed in float64; ``x``, ``y`` are coarse cell centres in m, ``time`` is model time in s. Global
attributes: ``F1, F2, L``, the sign and ``b`` conventions, the configuration JSON and ``solver`` (the
coarse solver settings a model trained on the data is tied to).

Crash safety and reproducibility
--------------------------------
Each run is written to ``<out>.parts/run_NNNNN.nc`` through a temporary file
and ``os.replace``; the final dataset is assembled the same way, and the parts
directory is removed only after that succeeds. A killed ``generate`` re-run
with the same arguments reuses every completed run (each part records a
fingerprint of everything that determines it), and a run that went non-finite
resumes at the first halved time step not yet known to fail (``--dt-halvings``;
the failed steps are recorded beside the parts). Run ``r`` starts from PV drawn
from ``numpy.random.default_rng([seed, r])``, and every run plans its FFTs
from the same FFTW wisdom (saved in the parts directory), so a seed gives
bitwise-identical data serially, on any number of workers, and after a resume
(on one machine type).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np

from roteq_param import coarsen, fluxform
from roteq_param.atomic import atomic_to_netcdf, atomic_write_bytes, exclusive_output, remove_staging_files
from roteq_param.integrity import open_netcdf
from roteq_param.fields import QG_DATASET, qg_dataset_attrs, qg_dataset_dims
from solver_coupling.pyqg import fftw_plans
from solver_coupling.pyqg.config import YEAR, PyqgConfig, get_config
from solver_coupling.pyqg.family import Family

__all__ = [
    "UsageError",
    "Request",
    "initial_pv",
    "simulate_run",
    "run_member",
    "generate",
    "coarsen_files",
]


class UsageError(ValueError):
    """Bad input from the user (reported by the CLI with exit code 2)."""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("roteq-param")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def _steps(seconds: float, dt: float, what: str) -> int:
    n = seconds / dt
    if abs(n - round(n)) > 1e-6 * max(1.0, abs(n)):
        raise UsageError(f"{what} ({seconds:g} s) is not a whole number of time steps (dt = {dt:g} s)")
    return int(round(n))


@dataclass(frozen=True)
class Request:
    """Everything that determines a generated dataset.

    ``years`` is the total model time of each run and ``spinup_years`` the part
    discarded before the first snapshot (years of 360 days); snapshots are taken
    at the end of the spin-up and every ``snapshot_hours`` after it.
    """

    config: PyqgConfig
    operator: str = "spectral"
    runs: int = 1
    years: float = 10.0
    spinup_years: float = 5.0
    snapshot_hours: float = 1000.0
    seed: int = 0
    operator_params: dict[str, Any] = field(default_factory=dict)
    window_steps: int = 0
    window_every: int = 1
    family: Family | None = None
    """Ranges that each run draws its physical parameters from (:mod:`solver_coupling.pyqg.family`)."""
    dt_halvings: int = 0
    """A run that blows up is run again from its start with half the time step, up to this many times
    (:func:`simulate_run`). Not part of a run's identity: a run that holds is the same either way."""

    def __post_init__(self) -> None:
        if self.family is not None:
            if self.config.layered:
                raise UsageError(f"--vary: families of LayeredModel configurations are not supported "
                                 f"({self.config.name!r} is one); vary a two-layer configuration (eddy, jet)")
            self.run_config(0)  # the configuration checks every drawn value
        if self.runs < 1:
            raise UsageError(f"--members (runs) must be >= 1; got {self.runs}")
        if self.seed < 0:
            raise UsageError(f"--seed must be >= 0; got {self.seed}")
        if not 0 <= self.spinup_years <= self.years:
            raise UsageError(f"need 0 <= spin-up ({self.spinup_years} y) <= run length ({self.years} y)")
        if self.snapshot_hours <= 0:
            raise UsageError(f"--snapshot-hours must be positive; got {self.snapshot_hours}")
        if self.dt_halvings < 0:
            raise UsageError(f"--dt-halvings must be >= 0; got {self.dt_halvings}")
        if self.dt_halvings and self.window_steps:
            raise UsageError("--dt-halvings cannot be combined with --window-steps: a window's steps are the "
                             "configuration's time step, which a retried run would not keep")
        if self.window_steps < 0 or self.window_every < 1:
            raise UsageError(f"--window-steps must be >= 0 and --window-every >= 1; got {self.window_steps}, "
                             f"{self.window_every}")
        self.steps()  # validates that every interval is a whole number of steps
        self.make_operator()

    def steps(self) -> tuple[int, int, int]:
        """(total, spin-up, snapshot-interval) in time steps."""
        dt = self.config.dt
        total = _steps(self.years * YEAR, dt, "the run length")
        spinup = _steps(self.spinup_years * YEAR, dt, "the spin-up")
        snap = _steps(self.snapshot_hours * 3600.0, dt, "the snapshot interval")
        if snap < 1:
            raise UsageError("the snapshot interval must be at least one time step")
        return total, spinup, snap

    def snapshot_steps(self) -> list[int]:
        total, spinup, snap = self.steps()
        return list(range(spinup, total + 1, snap))

    def window_starts(self) -> list[int]:
        """Steps that start a trajectory window: every ``window_every``-th snapshot that leaves room for
        ``window_steps`` more steps before the end of the run (none when ``window_steps`` is 0)."""
        if not self.window_steps:
            return []
        total = self.steps()[0]
        return [s for s in self.snapshot_steps()[:: self.window_every] if s + self.window_steps <= total]

    def run_config(self, run: int) -> PyqgConfig:
        """The configuration of run ``run``: the request's, with the family's draws for that run."""
        if self.family is None:
            return self.config
        return self.config.with_overrides(self.family.draw(self.seed, run))

    def make_operator(self) -> coarsen.Operator:
        try:
            return coarsen.make_operator(
                self.operator, self.config.nx, self.config.coarse_nx, self.config.L, **self.operator_params
            )
        except (ValueError, TypeError) as err:
            raise UsageError(str(err)) from None

    def fingerprint(self, run: int) -> str:
        """JSON identifying the content of run ``run`` (independent of the ensemble size)."""
        return json.dumps(
            {
                "config": json.loads(self.run_config(run).to_json()),
                **({"family": json.loads(self.family.to_json())} if self.family else {}),
                "operator": self.operator,
                "operator_params": self.make_operator().params(),
                "years": self.years,
                "spinup_years": self.spinup_years,
                "snapshot_hours": self.snapshot_hours,
                "seed": self.seed,
                "run": run,
                **({"window_steps": self.window_steps, "window_every": self.window_every}
                   if self.window_steps else {}),
            },
            sort_keys=True,
        )

    def attrs(self) -> dict[str, Any]:
        op = self.make_operator()
        return {
            "config": self.config.to_json(),
            "config_name": self.config.name,
            "operator": op.name,
            "operator_params": json.dumps(op.params(), sort_keys=True),
            "ratio": op.ratio,
            "seed": self.seed,
            "runs": self.runs,
            "years": self.years,
            "spinup_years": self.spinup_years,
            "spinup_s": self.spinup_years * YEAR,
            "snapshot_hours": self.snapshot_hours,
            "snapshot_interval_s": self.snapshot_hours * 3600.0,
            "year_days": 360,
            "window_steps": self.window_steps,
            "window_every": self.window_every,
            **(self._family_attrs() if self.family else {}),
        }

    def _family_attrs(self) -> dict[str, Any]:
        """The family's ranges and the coarse solver settings it covers (``solver``, with ranges)."""
        def solver_at(overrides):
            return self.config.with_overrides(overrides).coarse_solver_config()

        return {"family": self.family.to_json(),
                "solver": json.dumps(self.family.solver_ranges(solver_at), sort_keys=True)}


def initial_pv(config: PyqgConfig, seed: int, run: int) -> np.ndarray:
    """Deterministic small-amplitude initial PV (nz, n, n) in s^-1 for run ``run`` of ``seed``.

    Same form as pyqg's default: ``q1 = 1e-7 U(0,1)[y, x] + 1e-6 U(0,1)[x]``, the other layers 0,
    drawn from ``numpy.random.default_rng([seed, run])``.
    """
    n = config.nx
    rng = np.random.default_rng([seed, run])
    q = np.zeros((config.nz, n, n))
    q[0] = 1e-7 * rng.random((n, n)) + 1e-6 * rng.random((1, n))
    return q


def _coords(config: PyqgConfig, times: np.ndarray) -> dict[str, Any]:
    nc, L = config.coarse_nx, config.L
    centres = (np.arange(nc) + 0.5) * (L / nc)
    layered = {}
    if config.nz > 2:  # the interface axes of an N-layer dataset (roteq_param.fields.qg_dataset_dims)
        pairs = fluxform.interface_flux_pairs(config.nz)
        layered = {"iface": ("iface", np.arange(1, config.nz), {"long_name": "interface j, between layers j and j+1"}),
                   "pair": ("pair", np.array([f"{i},{j}" for i, j in pairs]),
                            {"long_name": "buoyancy flux of interface j by layer i, as 'i,j'"})}
    return {**layered,
        "time": ("time", np.asarray(times, dtype=np.float64), {"units": "s", "long_name": "model time"}),
        "lev": ("lev", np.arange(1, config.nz + 1), {"long_name": "layer (1 = upper)"}),
        "comp": ("comp", np.array(["x", "y"]), {"long_name": "vector component"}),
        "tcomp": ("tcomp", np.array(["xx", "xy", "yy"]), {"long_name": "symmetric tensor component"}),
        "y": ("y", centres, {"units": "m", "long_name": "coarse cell centre, y"}),
        "x": ("x", centres, {"units": "m", "long_name": "coarse cell centre, x"}),
    }


def _run_dataset(config: PyqgConfig, run: int, times: Iterable[float], snaps: list[dict[str, np.ndarray]], attrs: dict):
    """One run's snapshots as an xarray Dataset with a leading run dimension (float32 data), laid out
    as :data:`roteq_param.fields.QG_DATASET` says."""
    import xarray as xr

    data = {}
    for name in snaps[0]:
        var = QG_DATASET[name]
        arr = np.stack([s[name] for s in snaps]).astype(np.float32)[None]
        data[name] = (qg_dataset_dims(name, config.nz), arr, {"units": var.units, "long_name": var.long_name})
    for name, value in (("beta_vec", config.beta_vec), ("U_vec", config.U_vec)):
        var = QG_DATASET[name]
        data[name] = (var.dims, value.astype(np.float32)[None], {"units": var.units, "long_name": var.long_name})
    coords = _coords(config, np.array(list(times)))
    coords["run"] = ("run", np.array([run]), {"long_name": "ensemble member"})
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "title": "roteq-param coarse-grained pyqg training data",
            **qg_dataset_attrs(config.stratification),
            "L": config.L,
            "solver": json.dumps(config.coarse_solver_config(), sort_keys=True),
            "roteq_param_version": _version(),
            "pyqg_version": _pyqg_version(),
            **attrs,
        }
    )
    return ds


def dataset_solver_config(attrs: dict[str, Any]) -> dict[str, float]:
    """The coarse solver settings a dataset's runs correspond to (what a model trained on it is tied to).

    Read from the ``solver`` attribute, or derived from the ``config`` attribute of datasets written
    before it existed; empty when neither is there (e.g. data from another solver).
    """
    if "solver" in attrs:
        return json.loads(attrs["solver"])
    try:
        raw = json.loads(attrs.get("config", ""))
        return PyqgConfig(raw["name"], raw["params"], raw["coarse_nx"]).coarse_solver_config()
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return {}


def _pyqg_version() -> str:
    import pyqg

    return str(getattr(pyqg, "__version__", "unknown"))


def simulate_run(request: Request, run: int, wisdom: tuple | None = None, progress: bool | None = None,
                 blowups: str | None = None):
    """Run member ``run`` at high resolution and return its coarse snapshots (xarray Dataset, run dim 1).

    With ``request.window_steps`` > 0 the dataset also holds coarse-grained PV trajectories
    ``q_traj`` (window, wstep, lev, y, x) at every time step of windows starting at
    ``request.window_starts()``: the truth that training through a coarse solver unrolls against.
    ``progress=None`` shows a tqdm bar over model time (days) when stderr is a terminal.

    A run that goes non-finite raises ``FloatingPointError``, or with ``request.dt_halvings`` > 0 is
    run again from its start with half the time step, up to that many times (the snapshot times are
    the same; the part records the time step it ran with as ``dt_s``). ``blowups``: a JSON file
    (:func:`_blowups_path`) where each failed attempt is recorded as it fails, so that a killed
    ``generate`` resumes the run at the first step not yet known to fail instead of spending hours
    on the attempts that already did.
    """
    failed = _read_blowups(blowups, request.fingerprint(run))
    if len(failed) > request.dt_halvings:
        raise FloatingPointError(f"run {run} went non-finite at dt = {', '.join(f'{d:g}' for d in failed)} s "
                                 f"(recorded in {blowups}); allow more --dt-halvings than {request.dt_halvings}")
    attempt, halvings_left = request, request.dt_halvings - len(failed)
    if failed:
        attempt = replace(request, config=request.config.with_overrides({"dt": failed[-1] / 2}))
        print(f"[generate] run {run} went non-finite at dt = {failed[-1]:g} s before; resuming it with "
              f"dt = {failed[-1] / 2:g} s", file=sys.stderr)
    while True:
        try:
            return _simulate(attempt, run, wisdom, progress, identity=request)
        except FloatingPointError as err:
            failed.append(attempt.config.dt)
            if blowups:
                atomic_write_bytes(blowups, json.dumps({"fingerprint": request.fingerprint(run),
                                                        "failed_dt_s": failed}).encode())
            if not halvings_left:
                raise
            dt = attempt.config.dt / 2
            try:
                attempt = replace(attempt, config=attempt.config.with_overrides({"dt": dt}))
            except UsageError as why:  # e.g. the snapshot interval is no whole number of the halved steps
                raise FloatingPointError(f"{err} (not retried with dt = {dt:g} s: {why})") from None
            halvings_left -= 1
            print(f"[generate] {err}; running it again with dt = {dt:g} s", file=sys.stderr)


def _read_blowups(path: str | None, fingerprint: str) -> list[float]:
    """The time steps (s) at which earlier attempts of this run went non-finite, largest first; a
    record left by other settings (another fingerprint) says nothing about this run."""
    if not path or not os.path.exists(path):
        return []
    try:
        with open(path) as fh:
            record = json.load(fh)
        return [float(d) for d in record["failed_dt_s"]] if record.get("fingerprint") == fingerprint else []
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        return []  # unreadable: the run starts from its first step, as without a record


def _simulate(request: Request, run: int, wisdom: tuple | None, progress: bool | None, identity: Request):
    """One attempt of :func:`simulate_run`; ``identity`` is the request the part belongs to (its
    fingerprint and attributes), ``request`` the one run (its time step may be smaller)."""
    import time as _time

    from tqdm.auto import tqdm

    fftw_plans.use_wisdom(wisdom)
    config = request.run_config(run)
    op = request.make_operator()
    total = request.steps()[0]
    wanted = set(request.snapshot_steps())
    starts = request.window_starts()
    in_window = {s + w: (i, w) for i, s in enumerate(starts) for w in range(request.window_steps + 1)}
    dt = config.dt
    m = config.make_model()
    m.q = initial_pv(config, request.seed, run)

    snaps, times = [], []
    strat = config.stratification
    traj = np.zeros((len(starts), request.window_steps + 1, config.nz, config.coarse_nx, config.coarse_nx))

    def record(step: int) -> None:
        if not np.all(np.isfinite(m.q)):
            raise FloatingPointError(f"run {run} produced non-finite PV at t = {m.t:g} s (step {m.tc})")
        if step in wanted:
            snaps.append(coarsen.coarse_grain(m.q, strat, config.L, op))
            times.append(step * dt)
        if step in in_window:
            i, w = in_window[step]
            traj[i, w] = coarsen.from_spectrum(op.apply(coarsen.to_spectrum(m.q)), config.coarse_nx)

    started = _time.perf_counter()
    bar = tqdm(total=round(total * dt / 86400.0, 6), unit="day", desc=f"run {run}", leave=False,
               disable=None if progress is None else not progress)
    record(0)
    shown = 0
    for step in range(1, total + 1):
        m._step_forward()  # exactly what pyqg's run() does per step; the loop makes every step visible
        record(step)
        if step % 240 == 0 or step == total:
            bar.update(round((step - shown) * dt / 86400.0, 6))
            shown = step
    bar.close()
    if len(snaps) != len(wanted):
        raise RuntimeError(f"run {run}: expected {len(wanted)} snapshots, got {len(snaps)}")
    attrs = {**identity.attrs(), "fingerprint": identity.fingerprint(run),
             "wall_seconds": round(_time.perf_counter() - started, 1), "dt_s": dt}
    ds = _run_dataset(config, run, times, snaps, attrs)
    if request.family:  # the runs' couplings differ: a variable per run instead of a shared attribute
        ds = ds.assign(_run_stratification(strat))
    if starts:
        ds = ds.assign(_trajectories(traj, starts, dt, request.window_steps))
    return ds


def _run_stratification(strat: fluxform.Stratification) -> dict[str, Any]:
    return {name: (("run", "iface"), np.asarray(values, dtype=np.float64)[None],
                   {"units": "m-2", "long_name": f"stretching coupling of each interface to the layer {side} it"})
            for name, values, side in (("stretching_upper", strat.upper, "above"),
                                       ("stretching_lower", strat.lower, "below"))}


def _trajectories(traj: np.ndarray, starts: list[int], dt: float, window_steps: int) -> dict[str, Any]:
    var = QG_DATASET["q_traj"]
    return {
        "q_traj": (var.dims, traj.astype(np.float32)[None], {"units": var.units, "long_name": var.long_name}),
        "window_time": (("window",), np.asarray(starts, dtype=np.float64) * dt,
                        {"units": "s", "long_name": "model time at the start of each trajectory window"}),
        "wstep": (("wstep",), np.arange(window_steps + 1),
                  {"long_name": "time steps since the window start", "dt_s": dt}),
    }


# ----------------------------------------------------------------------------- files


def _part_path(parts_dir: str, run: int) -> str:
    return os.path.join(parts_dir, f"run_{run:05d}.nc")


def _blowups_path(parts_dir: str, run: int) -> str:
    """Where :func:`simulate_run` records the time steps at which run ``run`` went non-finite."""
    return os.path.join(parts_dir, f"run_{run:05d}.blowups.json")


def _part_is_reusable(path: str, fingerprint: str, overwrite: bool) -> bool:
    """True if ``path`` already holds the run described by ``fingerprint``.

    A part from other settings is deleted with ``overwrite`` and is an error without it.
    """
    if not os.path.exists(path):
        return False
    with open_netcdf(path, "run part", "delete it to simulate its run again") as ds:
        found = ds.attrs.get("fingerprint")
    if found == fingerprint:
        return True
    if not overwrite:
        raise UsageError(
            f"{path} holds a run from different settings; use --overwrite to regenerate it, or another --out-file"
        )
    os.remove(path)
    return False


def run_member(request: Request, run: int, parts_dir: str, wisdom: tuple | None = None,
               progress: bool | None = None, overwrite: bool = False) -> str:
    """Simulate run ``run`` in this process and write its part file atomically (reused if complete)."""
    path = _part_path(parts_dir, run)
    if not _part_is_reusable(path, request.fingerprint(run), overwrite):
        atomic_to_netcdf(simulate_run(request, run, wisdom, progress, _blowups_path(parts_dir, run)), path)
    return path


def _is_dataset_of(path: str, request: Request) -> bool:
    """True if ``path`` is a dataset assembled for ``request`` (same recorded settings)."""
    try:
        with open_netcdf(path, "dataset", "re-generate it") as ds:  # a damaged one is not the dataset
            return all(str(ds.attrs.get(k)) == str(v) for k, v in request.attrs().items())
    except Exception:  # noqa: BLE001 - not a readable dataset, so not this one
        return False


def _check_output(out: str, overwrite: bool) -> None:
    if os.path.isdir(out):
        raise UsageError(f"output {out} is a directory")
    if os.path.exists(out) and not overwrite:
        raise UsageError(f"output {out} exists; pass --overwrite to replace it")


def _assemble(paths: list[str], out: str, attrs: dict[str, Any], dt: float, rek: list[float],
              run_solver: list[dict[str, float]] | None = None) -> None:
    """Concatenate per-run files along ``run`` into ``out`` (atomically), with ``attrs``; report the cost.

    ``dt``: the configuration's high-res time step (s); runs retried with a smaller one (``dt_s`` in
    their parts) are listed in the ``highres_dt_s`` attribute, one time step per run. ``rek``: each
    run's bottom drag rate (1/s), written as the per-run variable ``rek`` (a family draws it per run;
    written here rather than in the parts, so parts made before it existed are still reused).
    ``run_solver``: for a family, each run's coarse solver settings, as the ``run_solver`` attribute
    (JSON list): training records the span its own runs cover, which is narrower than the family's
    box, and the plugin says when a solver lies outside it."""
    import xarray as xr

    datasets = []
    try:
        for p in paths:  # each checked against its checksum (a damaged part is refused, not merged)
            datasets.append(open_netcdf(p, "run part", "delete it to simulate its run again"))
        seconds = [float(d.attrs["wall_seconds"]) for d in datasets if "wall_seconds" in d.attrs]
        steps = [float(d.attrs.get("dt_s", dt)) for d in datasets]
        ds = xr.concat(datasets, dim="run", data_vars="all", coords="minimal", compat="override",
                       combine_attrs="drop_conflicts")
        # per-run identity and timing stay in the parts; the dataset must not depend on how it was made
        for key in ("fingerprint", "wall_seconds", "dt_s"):
            ds.attrs.pop(key, None)
        ds.attrs.update(attrs)
        var = QG_DATASET["rek"]
        ds["rek"] = (var.dims, np.asarray(rek, dtype=np.float64), {"units": var.units, "long_name": var.long_name})
        if any(step != dt for step in steps):
            ds.attrs["highres_dt_s"] = json.dumps(steps)
        if run_solver is not None:
            ds.attrs["run_solver"] = json.dumps(run_solver, sort_keys=True)
        atomic_to_netcdf(ds, out)
    finally:
        for d in datasets:
            d.close()
    if seconds:
        print(f"[generate] {len(seconds)} runs simulated here: {np.mean(seconds):.0f} s per run (mean), "
              f"{sum(seconds) / 3600:.2f} core-hours in all", file=sys.stderr)


def generate(request: Request, out: str, *, overwrite: bool = False, workers: int | None = None,
             scheduler: str | None = None, serial: bool = False, progress: bool | None = None,
             command: str = "") -> str:
    """Run the ensemble of ``request`` and write the coarse dataset to ``out`` (netCDF4).

    Runs go to a Dask LocalCluster (processes, one thread each, ``workers``
    processes, default: the number of cores) unless ``serial`` (in process) or
    ``scheduler`` (address of an existing Dask scheduler; its workers need this
    package installed). Completed runs in ``<out>.parts`` are reused. ``command``: the command line,
    kept as the dataset's ``command`` attribute (model cards name their data by it; not part of what
    makes a finished dataset the same, so the same ensemble asked for again is still a no-op).
    """
    from tqdm.auto import tqdm

    parts_dir = out + ".parts"
    if not overwrite and os.path.isfile(out) and _is_dataset_of(out, request):
        # done already (perhaps stopped while removing its parts): the same command again is a no-op
        if os.path.isdir(parts_dir):
            with exclusive_output(parts_dir):
                shutil.rmtree(parts_dir)
        print(f"[generate] {out} already holds this ensemble; nothing to do", file=sys.stderr)
        return out
    _check_output(out, overwrite)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1; got {workers}")
    # one writer per output: a second process is refused instead of racing for the same parts
    with exclusive_output(parts_dir):
        # (the lock cleared the parts folder's staging files; the output's own sit beside it)
        remove_staging_files(os.path.dirname(os.path.abspath(out)), os.path.basename(out))

        paths = [_part_path(parts_dir, r) for r in range(request.runs)]
        pending = [r for r, p in enumerate(paths) if not _part_is_reusable(p, request.fingerprint(r), overwrite)]
        wisdom = fftw_plans.load_or_measure(parts_dir, request.config.make_model)

        overall = tqdm(total=request.runs, initial=request.runs - len(pending), unit="run", desc="ensemble",
                       disable=None if progress is None else not progress)
        if serial or not pending:
            for r in pending:
                run_member(request, r, parts_dir, wisdom, progress)
                overall.update(1)
        else:
            _run_on_dask(request, pending, parts_dir, wisdom, workers, scheduler, overall, progress)
        overall.close()

        _assemble(paths, out, {**request.attrs(), **({"command": command} if command else {})}, request.config.dt,
                  [float(request.run_config(r).params["rek"]) for r in range(request.runs)],
                  [request.run_config(r).coarse_solver_config() for r in range(request.runs)] if request.family
                  else None)
        shutil.rmtree(parts_dir)
        return out


def _run_on_dask(request: Request, pending: list[int], parts_dir: str, wisdom: tuple, workers: int | None,
                 scheduler: str | None, overall, progress: bool | None) -> None:
    """Simulate the pending runs on Dask; the parts are written here, so workers need no shared disk."""
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # a failed run is re-raised here by fut.result() (and reported by the caller); the worker's own
        # "Compute Failed" traceback at ERROR level would only repeat it before the one-line message
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
        client = Client(cluster)
    try:
        # a local cluster shares this disk, so its workers can record blow-ups where a resume finds them
        futures = {client.submit(simulate_run, request, r, wisdom, progress,
                                 None if scheduler else _blowups_path(parts_dir, r), pure=False): r for r in pending}
        for fut in as_completed(futures):
            atomic_to_netcdf(fut.result(), _part_path(parts_dir, futures[fut]))
            overall.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ----------------------------------------------------------------------------- existing pyqg output

def coarsen_files(inputs: list[str], out: str, *, coarse_nx: int = 64, operator: str = "spectral",
                  overwrite: bool = False, operator_params: dict[str, Any] | None = None,
                  settings: dict[str, Any] | None = None, one_run: bool = False, command: str = "") -> str:
    """Coarse-grain high-resolution pyqg QGModel output into one dataset at ``out`` (``roteq coarsen``).

    ``inputs``: files from :class:`~solver_coupling.pyqg.output.SnapshotWriter` or ``m.to_dataset()``
    without its complex variables, each one run (``one_run``: the pieces of one run), with any number of
    snapshots; runs share their snapshot times. ``settings``: QGModel keywords the files do not record
    (``{"H1": 750.0}``; required when missing, :func:`~solver_coupling.pyqg.output.read_runs`).
    ``command``: the command line that made the dataset, kept as its ``command`` attribute (model
    cards name the dataset by it). Bad inputs are rejected before anything is written.
    """
    import xarray as xr

    from solver_coupling.pyqg.output import read_runs

    _check_output(out, overwrite)
    try:
        found = read_runs(inputs, settings, one_run=one_run)
        config = get_config("eddy", found.settings, coarse_nx=coarse_nx)
    except ValueError as err:
        raise UsageError(str(err)) from None
    times, qs = found.times, found.q
    try:
        op = coarsen.make_operator(operator, config.nx, coarse_nx, config.L, **(operator_params or {}))
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    attrs = {
        "config": config.to_json(), "config_name": "pyqg-output", "operator": op.name,
        "operator_params": json.dumps(op.params(), sort_keys=True), "ratio": op.ratio,
        # the files each run came from (one each, or several with one_run)
        "source_files": json.dumps([[os.path.basename(p) for p in run] for run in found.sources]),
        **({"command": command} if command else {}),
    }
    runs = []
    for r, q in enumerate(qs):
        strat = config.stratification
        snaps = [coarsen.coarse_grain(qt, strat, config.L, op) for qt in q]
        runs.append(_run_dataset(config, r, times, snaps, attrs))
    ds = xr.concat(runs, dim="run", data_vars="all", coords="minimal", compat="override",
                   combine_attrs="override")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    remove_staging_files(os.path.dirname(os.path.abspath(out)), os.path.basename(out))
    atomic_to_netcdf(ds, out)
    return out
