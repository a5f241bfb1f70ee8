"""Long online rollouts of coarse pyqg ensembles, with or without the plugin (``roteq rollout``).

M members start from seeded small-amplitude PV (the same recipe as the training
runs) and are stepped in lockstep; with a model, one batched network call per
step serves them all (:class:`~solver_coupling.pyqg.plugin.Ensemble`).

What is written to ``OUT/rollout.nc`` (netCDF4, CF attributes):

* ``q`` (run, time, lev, y, x) [1/s]: snapshots every ``snapshot_days``, float32;
  NaN after a member failed;
* ``ke`` (run, ke_time) [m^2/s^2]: layer-averaged domain-mean kinetic energy, daily;
* ``failed`` (run), ``failure_time`` (run) [s] and ``failure_reason`` (run): what the
  stability monitor recorded;
* pyqg's own time-averaged diagnostics (``KEspec``, ``KEflux``, ``APEflux``, ...)
  averaged from ``diag_start_years`` on, per member;
* attributes: the configuration JSON (``config``), the model and its sha256, the
  seed and the rollout options.

The stability monitor checks every ``check_hours`` of model time that the PV is
finite and that the kinetic energy stays below ``energy_limit``; a member that fails
is stopped cleanly and everything written so far is kept.

A checkpoint (``OUT/checkpoint.npz``: PV, the Adams-Bashforth tendencies, clocks,
diagnostics accumulators and monitor state of every member) is written atomically,
after the dataset, every ``checkpoint_years``; ``resume=True`` continues from it and
gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyqg
import xarray as xr
from tqdm import tqdm

from roteq_param.atomic import atomic_to_netcdf, atomic_write_bytes
from solver_coupling.pyqg.config import YEAR, PyqgConfig
from solver_coupling.pyqg.data import initial_pv
from solver_coupling.pyqg.plugin import Ensemble, RotEqParameterization
from solver_coupling.pyqg.state import velocity

__all__ = ["RolloutRequest", "rollout"]

DAY = 86400.0


@dataclass(frozen=True)
class RolloutRequest:
    """What to run. Times in model years (360 days) / days / hours; energies in m^2/s^2."""

    config: PyqgConfig  # the coarse model's configuration: config.nx is the rollout grid
    model: str | None = None
    members: int = 3
    years: float = 10.0
    snapshot_days: float = 5.0
    seed: int = 0
    call_interval: int = 1
    device: str = "cpu"
    energy_limit: float = 1.0
    check_hours: float = 24.0
    checkpoint_years: float = 1.0
    diag_start_years: float = 5.0
    allow_out_of_regime: bool = False

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        for name in ("years", "snapshot_days", "energy_limit", "check_hours", "checkpoint_years"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        dt = self.config.dt
        for name, seconds in (("snapshot_days", self.snapshot_days * DAY), ("check_hours", self.check_hours * 3600)):
            if abs(seconds / dt - round(seconds / dt)) > 1e-9:
                raise ValueError(f"{name} must be a whole number of time steps (dt = {dt:g} s)")

    @property
    def nx(self) -> int:
        return self.config.nx

    def steps(self, seconds: float) -> int:
        return int(round(seconds / self.config.dt))

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = json.loads(self.config.to_json())
        return d


def _make_members(req: RolloutRequest):
    """(members, ensemble or None, parameterization or None)."""
    # pyqg's time averages are sampled at the snapshot interval: every step would double the cost
    kwargs = req.config.model_kwargs(req.nx, tmax=req.years * YEAR, tavestart=req.diag_start_years * YEAR,
                                     taveint=req.snapshot_days * DAY, log_level=0)
    if req.model is None:
        return [pyqg.QGModel(**kwargs) for _ in range(req.members)], None, None
    param = RotEqParameterization(req.model, device=req.device, call_interval=req.call_interval,
                                  allow_out_of_regime=req.allow_out_of_regime)
    ens = Ensemble.build(param, req.members, **kwargs)
    return ens.members, ens, param


def _kinetic_energy(m) -> float:
    """Layer-thickness-weighted domain-mean kinetic energy of the perturbation flow, m^2/s^2."""
    u, v = velocity(m)
    w = m.Hi / m.H
    return float(0.5 * np.sum(w * np.mean(u**2 + v**2, axis=(-2, -1))))


class _State:
    """Everything a rollout accumulates, in a form that checkpoints to plain arrays."""

    def __init__(self, req: RolloutRequest):
        M, nx = req.members, req.nx
        total = req.steps(req.years * YEAR)
        self.snap_every = req.steps(req.snapshot_days * DAY)
        self.ke_every = req.steps(DAY)
        self.snap_times = np.arange(self.snap_every, total + 1, self.snap_every) * req.config.dt
        self.ke_times = np.arange(self.ke_every, total + 1, self.ke_every) * req.config.dt
        self.q = np.full((M, len(self.snap_times), 2, nx, nx), np.nan, dtype=np.float32)
        self.ke = np.full((M, len(self.ke_times)), np.nan)
        self.failed = np.zeros(M, bool)
        self.failure_time = np.full(M, np.nan)
        self.failure_reason = np.array([""] * M, dtype=object)
        self.step = 0
        self.total = total


def _save_checkpoint(path: Path, members, st: _State) -> None:
    arrays: dict[str, Any] = {"step": np.array(st.step), "failed": st.failed, "failure_time": st.failure_time,
                              "failure_reason": np.array([str(r) for r in st.failure_reason]),
                              "q_snap": st.q[:, : st.step // st.snap_every], "ke": st.ke[:, : st.step // st.ke_every]}
    for i, m in enumerate(members):
        arrays[f"m{i}_qh"] = np.asarray(m.qh)
        arrays[f"m{i}_dqhdt_p"] = np.asarray(m.dqhdt_p)
        arrays[f"m{i}_dqhdt_pp"] = np.asarray(m.dqhdt_pp)
        arrays[f"m{i}_clock"] = np.array([m.t, m.tc, m.ablevel], dtype=float)
        for name, d in m.diagnostics.items():
            arrays[f"m{i}_diag_{name}_value"] = np.asarray(d["value"]) if np.ndim(d.get("value", 0)) else np.array(0.0)
            arrays[f"m{i}_diag_{name}_count"] = np.array(d["count"])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _advance_clock(m, tc: int) -> None:
    """Bring a fresh model's clock (t, tc, AB level) to step ``tc``.

    pyqg's kernel exposes its clock read-only, so the clock is advanced the way
    the run advanced it: by ``tc`` calls of the time stepper (t accumulates the
    same float sums). The state is overwritten by the caller afterwards.
    """
    m.dqhdt[:] = 0.0
    m.dqhdt_p[:] = 0.0
    m.dqhdt_pp[:] = 0.0
    for _ in range(tc - m.tc):
        m._forward_timestep()


def _load_checkpoint(path: Path, members, st: _State) -> None:
    try:
        ck = np.load(path, allow_pickle=False)
        st.step = int(ck["step"])
        n_snap, n_ke = st.step // st.snap_every, st.step // st.ke_every
        st.q[:, :n_snap] = ck["q_snap"]
        st.ke[:, :n_ke] = ck["ke"]
        st.failed[:] = ck["failed"]
        st.failure_time[:] = ck["failure_time"]
        st.failure_reason[:] = ck["failure_reason"].astype(object)
        for i, m in enumerate(members):
            _advance_clock(m, int(ck[f"m{i}_clock"][1]))
            m.qh = ck[f"m{i}_qh"]
            m.dqhdt_p[:] = ck[f"m{i}_dqhdt_p"]
            m.dqhdt_pp[:] = ck[f"m{i}_dqhdt_pp"]
            if (m.t, m.tc, m.ablevel) != tuple(ck[f"m{i}_clock"]):
                raise ValueError(f"member {i}: restored clock {(m.t, m.tc, m.ablevel)} differs from the "
                                 f"checkpoint's {tuple(ck[f'm{i}_clock'])}")
            for name, d in m.diagnostics.items():
                value = ck[f"m{i}_diag_{name}_value"]
                d["value"] = value if value.ndim else d.get("value", 0)
                d["count"] = int(ck[f"m{i}_diag_{name}_count"])
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise RuntimeError(f"checkpoint {path} is unreadable or from another rollout ({type(e).__name__}: {e}); "
                           "delete it to start over") from e


def _dataset(req: RolloutRequest, members, st: _State, model_sha: str) -> xr.Dataset:
    m0 = members[0]
    x = np.asarray(m0.x[0]); y = np.asarray(m0.y[:, 0])
    ds = xr.Dataset(
        {
            "q": (("run", "time", "lev", "y", "x"), st.q,
                  {"units": "s-1", "long_name": "potential vorticity anomaly"}),
            "ke": (("run", "ke_time"), st.ke,
                   {"units": "m2 s-2", "long_name": "layer-averaged domain-mean kinetic energy (daily)"}),
            "failed": (("run",), st.failed.astype(np.int8),
                       {"long_name": "1 if the stability monitor stopped this member", "flag_values": "0 1"}),
            "failure_time": (("run",), st.failure_time, {"units": "s", "long_name": "model time of the failure"}),
            "failure_reason": (("run",), st.failure_reason.astype(str), {"long_name": "why the member was stopped"}),
        },
        coords={
            "run": np.arange(req.members), "time": ("time", st.snap_times, {"units": "s", "long_name": "model time"}),
            "ke_time": ("ke_time", st.ke_times, {"units": "s", "long_name": "model time"}),
            "lev": np.arange(1, 3), "x": ("x", x, {"units": "m"}), "y": ("y", y, {"units": "m"}),
        },
        attrs={
            "title": "roteq-param coarse pyqg rollout",
            "config": req.config.to_json(),
            "model": req.model or "none",
            "model_sha256": model_sha,
            "rollout": json.dumps(req.describe(), sort_keys=True, default=str),
            "steps_done": st.step,
            "Conventions": "CF-1.8",
        },
    )
    for name, d in m0.diagnostics.items():
        if not all(m.diagnostics[name]["count"] for m in members):
            continue
        values = np.stack([np.real(m.get_diagnostic(name)) for m in members])
        # pyqg labels its scalar budgets with a 'time' dim, but get_diagnostic returns the time mean
        dims = ("run",) + tuple(dim for dim in d["dims"] if dim != "time")
        ds[name] = (dims, values, {"units": d["units"], "long_name": d["description"]})
    if "k" in ds.dims:
        ds = ds.assign_coords(k=("k", m0.k[0], {"units": "m-1"}), l=("l", m0.l[:, 0], {"units": "m-1"}))
    return ds


def rollout(req: RolloutRequest, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
            progress: bool = True, on_step: Callable[[int, list], None] | None = None) -> xr.Dataset:
    """Run the ensemble and write ``out/rollout.nc``; returns the dataset.

    ``on_step(step, members)``, if given, is called after every step, before the
    stability monitor: a place for extra forcing, logging or fault injection.
    """
    out = Path(out)
    nc, ckpt = out / "rollout.nc", out / "checkpoint.npz"
    if not resume and not overwrite and (nc.exists() or ckpt.exists()):
        raise FileExistsError(f"{out} already holds a rollout; pass resume=True (--resume) to continue it "
                              "or overwrite=True (--overwrite) to start over")
    out.mkdir(parents=True, exist_ok=True)
    members, ensemble, param = _make_members(req)
    st = _State(req)
    for i, m in enumerate(members):
        m.q = initial_pv(req.config, req.seed, i)
    if resume and ckpt.exists():
        _load_checkpoint(ckpt, members, st)
    elif overwrite:
        ckpt.unlink(missing_ok=True)
    model_sha = param.weights_sha256 if param is not None else ""
    check_every = req.steps(req.check_hours * 3600)
    ckpt_every = max(1, req.steps(req.checkpoint_years * YEAR))
    label = f"{req.model or 'unparameterized'} x{req.members}"

    def save() -> xr.Dataset:
        """Write the dataset, then the checkpoint (a kill between the two loses nothing on resume)."""
        ds = _dataset(req, members, st, model_sha)
        atomic_to_netcdf(ds, nc)
        _save_checkpoint(ckpt, members, st)
        return ds

    saved_at = None
    start, start_step = time.perf_counter(), st.step
    with tqdm(total=st.total, initial=st.step, desc=label, unit="step", disable=not progress) as bar:
        while st.step < st.total and not st.failed.all():
            active = ~st.failed
            if ensemble is not None:
                ensemble.step(active)
            else:
                for i in np.flatnonzero(active):
                    members[i]._step_forward()
            st.step += 1
            if on_step is not None:
                on_step(st.step, members)
            if st.step % check_every == 0 or st.step % st.ke_every == 0 or st.step % st.snap_every == 0:
                _monitor(req, members, st)
            if st.step % ckpt_every == 0 or st.step == st.total:
                if param is not None:
                    param.verify_model_file()
                ds, saved_at = save(), st.step
            bar.update(1)
            if st.step % 240 == 0:
                hours = (time.perf_counter() - start) / 3600
                years = (st.step - start_step) * req.config.dt / YEAR
                bar.set_postfix({"model yr/wall h": f"{years / hours:.0f}",
                                 "member-yr/h": f"{years * active.sum() / hours:.0f}",
                                 "failed": int(st.failed.sum())})
    # the run ended on a checkpoint, or stopped early because every member failed
    return ds if saved_at == st.step else save()


def _monitor(req: RolloutRequest, members, st: _State) -> None:
    """Stability monitor + KE series + snapshots, for every active member."""
    for i, m in enumerate(members):
        if st.failed[i]:
            continue
        reason = ""
        if not np.all(np.isfinite(m.q)):
            reason = "non-finite PV"
        else:
            m._invert()  # ph for the state just reached (pyqg inverts at the start of the next step anyway)
            ke = _kinetic_energy(m)
            if not np.isfinite(ke) or ke > req.energy_limit:
                reason = f"kinetic energy {ke:.3g} m2 s-2 exceeds the limit {req.energy_limit:g}"
            elif st.step % st.ke_every == 0:
                st.ke[i, st.step // st.ke_every - 1] = ke
        if reason:
            st.failed[i] = True
            st.failure_time[i] = m.t
            st.failure_reason[i] = reason
            continue
        if st.step % st.snap_every == 0:
            st.q[i, st.step // st.snap_every - 1] = m.q


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
