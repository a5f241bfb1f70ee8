"""Long online rollouts of coarse pyqg ensembles, with or without the plugin (``roteq rollout``).

M members start from seeded small-amplitude PV (the same recipe as the training
runs), or from stored states (``initial_states``: a netCDF file with ``q`` (run, lev, y, x)
in s-1, e.g. spun-up states that ship with a model), and are stepped in lockstep on one of two engines:

* ``pyqg``: pyqg itself on the CPU; with a model, one batched network call per step
  serves all members (:class:`~solver_coupling.pyqg.plugin.Ensemble`);
* ``torch``: the torch twin (:class:`~solver_coupling.torchqg.TorchQGModel`, float64
  state), all members in one tensor with the network in the same graph, on the CPU
  or a CUDA GPU (``device``); its diagnostics are pyqg's, computed by
  :class:`~solver_coupling.torchqg.diagnostics.SpectralDiagnostics`.

Both write the same file, run the same monitor and checkpoint the same way.

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
gives the same result as an uninterrupted run. The pyqg engine keeps its FFTW plans in
``OUT/fftw_wisdom.pkl`` (:mod:`~solver_coupling.pyqg.fftw_plans`) and plans from them on every
resume or re-run into that folder, so those repeat bit for bit too.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyqg
import xarray as xr
from tqdm import tqdm

from roteq_param.atomic import atomic_to_netcdf, atomic_write_bytes, exclusive_output
from roteq_param.integrity import open_netcdf, verify_file
from solver_coupling.pyqg import fftw_plans
from solver_coupling.pyqg.baselines import BASELINES, pyqg_baseline, torch_baseline
from solver_coupling.pyqg.config import YEAR, PyqgConfig
from solver_coupling.pyqg.data import initial_pv
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import AUTO, Ensemble, RotEqParameterization
from solver_coupling.pyqg.selection import choose_closure
from solver_coupling.pyqg.state import velocity
from solver_coupling.torchqg.operator_family import is_operator

__all__ = ["RolloutRequest", "load_initial_states", "read_states", "rollout"]

DAY = 86400.0


@dataclass(frozen=True)
class RolloutRequest:
    """What to run. Times in model years (360 days) / days / hours; energies in m^2/s^2."""

    config: PyqgConfig  # the coarse model's configuration: config.nx is the rollout grid
    model: str | None = None  # a name or folder, None (no closure), a baseline, or "auto": the shipped choice
    members: int = 3
    years: float = 10.0
    snapshot_days: float = 5.0
    seed: int = 0
    call_interval: int | None = None  # the network every k steps; None: the model's own cadence (its card), else 1
    device: str = "cpu"
    energy_limit: float = 1.0
    check_hours: float = 24.0
    checkpoint_years: float = 1.0
    diag_start_years: float = 5.0
    allow_out_of_regime: bool = False
    engine: str = "pyqg"
    precision: str = "float64"  # the torch engine's state; pyqg is always float64
    add_closure: str | None = None  # a pyqg built-in closure (BASELINES) added to the network's forcing
    initial_states: str | None = None  # netCDF with q (run, lev, y, x) [1/s]: member i starts from run i

    def __post_init__(self) -> None:
        if self.model == AUTO:  # the shipped closure for this configuration, named in the request and the file
            if self.allow_out_of_regime:
                raise ValueError("allow_out_of_regime overrides one model's regime check: name the model (--model) "
                                 "to run it outside its regime")
            probe = self.config.make_model(nx=self.config.nx, log_level=0)
            object.__setattr__(self, "model", choose_closure(probe).name)
        if self.add_closure is not None:
            if self.add_closure not in BASELINES:
                raise ValueError(f"unknown closure to add {self.add_closure!r}; expected one of {sorted(BASELINES)}")
            if self.model is None or self.model in BASELINES:
                raise ValueError("add_closure adds a built-in closure to a trained network's forcing: give a model")
            if is_operator(self.model):
                raise ValueError("add_closure adds to a flux network's forcing; an operator closure is one already")
            if self.engine != "pyqg":
                raise ValueError("add_closure runs on the pyqg engine (pyqg's own classes); use --engine pyqg")
        if self.precision not in ("float64", "float32") or (self.engine == "pyqg" and self.precision != "float64"):
            raise ValueError(f"precision must be float64, or float32 with the torch engine; got {self.precision!r} "
                             f"with the {self.engine} engine")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; expected one of {sorted(ENGINES)}")
        if self.engine == "torch" and self.config.layered:
            raise ValueError(f"the torch twin is pyqg's two-layer QGModel; configuration {self.config.name!r} is a "
                             f"{self.config.nz}-layer LayeredModel: use --engine pyqg")
        if self.engine == "pyqg" and self.device != "cpu" and self.model is None:
            raise ValueError("the pyqg engine steps on the CPU; use --engine torch to run the solver on a GPU")
        if self.call_interval not in (None, 1) and is_operator(self.model):
            raise ValueError("an operator closure costs one spectral multiply per step: it runs at call_interval 1")
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


class _Engine:
    """What both engines share: the solver settings of a request and the loaded model's identity."""

    name = ""

    def __init__(self, req: RolloutRequest):
        # pyqg's time averages are sampled at the snapshot interval: every step would double the cost
        self.kwargs = req.config.model_kwargs(req.nx, tmax=req.years * YEAR, tavestart=req.diag_start_years * YEAR,
                                              taveint=req.snapshot_days * DAY, log_level=0)
        self.param: RotEqParameterization | None = None

    @property
    def model_sha256(self) -> str:
        return self.param.weights_sha256 if self.param is not None else ""

    def verify_model_file(self) -> None:
        if self.param is not None:
            self.param.verify_model_file()


class _PyqgEngine(_Engine):
    """M pyqg members in lockstep (one batched network call per step through :class:`Ensemble`)."""

    name = "pyqg"

    def __init__(self, req: RolloutRequest):
        super().__init__(req)
        kwargs = self.kwargs
        self.ensemble = None
        solver = pyqg.LayeredModel if req.config.layered else pyqg.QGModel
        if req.model is None:
            self.members = [solver(**kwargs) for _ in range(req.members)]
        elif req.model in BASELINES:
            self.members = [solver(parameterization=pyqg_baseline(req.model), **kwargs)
                            for _ in range(req.members)]
        elif is_operator(req.model):
            # stateless apart from its multipliers, which are built per member: one object serves all
            self.param = OperatorParameterization(req.model, allow_out_of_regime=req.allow_out_of_regime)
            self.members = [solver(parameterization=self.param, **kwargs) for _ in range(req.members)]
        else:
            self.param = RotEqParameterization(req.model, device=req.device, call_interval=req.call_interval,
                                               allow_out_of_regime=req.allow_out_of_regime)
            add = None if req.add_closure is None else (lambda: pyqg_baseline(req.add_closure))
            self.ensemble = Ensemble.build(self.param, req.members, add=add, solver=solver, **kwargs)
            self.members = self.ensemble.members

    def set_q(self, qs: list[np.ndarray]) -> None:
        for m, q in zip(self.members, qs):
            m.q = q

    def step(self, active: np.ndarray) -> None:
        if self.ensemble is not None:
            self.ensemble.step(active)
        else:
            for i in np.flatnonzero(active):
                self.members[i]._step_forward()

    def q(self, i: int) -> np.ndarray:
        return self.members[i].q

    def time(self, i: int) -> float:
        return float(self.members[i].t)

    def kinetic_energy(self, i: int) -> float:
        """Layer-thickness-weighted domain-mean kinetic energy of the perturbation flow, m^2/s^2."""
        m = self.members[i]
        m._invert()  # ph for the state just reached (pyqg inverts at the start of the next step anyway)
        u, v = velocity(m)
        w = m.Hi / m.H
        return float(0.5 * np.sum(w * np.mean(u**2 + v**2, axis=(-2, -1))))

    def checkpoint(self) -> dict[str, np.ndarray]:
        arrays = {}
        for i, m in enumerate(self.members):
            arrays[f"m{i}_qh"] = np.asarray(m.qh)
            arrays[f"m{i}_dqhdt_p"] = np.asarray(m.dqhdt_p)
            arrays[f"m{i}_dqhdt_pp"] = np.asarray(m.dqhdt_pp)
            arrays[f"m{i}_clock"] = np.array([m.t, m.tc, m.ablevel], dtype=float)
            for name, d in m.diagnostics.items():
                # scalar budgets (EKEdiss, APEgen) accumulate 0-d values: they are state too
                arrays[f"m{i}_diag_{name}_value"] = np.asarray(d.get("value", 0.0))
                arrays[f"m{i}_diag_{name}_count"] = np.array(d["count"])
        return arrays

    def restore(self, ck) -> None:
        for i, m in enumerate(self.members):
            _advance_clock(m, int(ck[f"m{i}_clock"][1]))
            m.qh = ck[f"m{i}_qh"]
            m.dqhdt_p[:] = ck[f"m{i}_dqhdt_p"]
            m.dqhdt_pp[:] = ck[f"m{i}_dqhdt_pp"]
            if (m.t, m.tc, m.ablevel) != tuple(ck[f"m{i}_clock"]):
                raise ValueError(f"member {i}: restored clock {(m.t, m.tc, m.ablevel)} differs from the "
                                 f"checkpoint's {tuple(ck[f'm{i}_clock'])}")
            for name, d in m.diagnostics.items():
                value = ck[f"m{i}_diag_{name}_value"]
                d["value"] = value if value.ndim else value[()]
                d["count"] = int(ck[f"m{i}_diag_{name}_count"])

    def diagnostics(self) -> dict[str, tuple[tuple[str, ...], np.ndarray, str, str]]:
        """Time-averaged diagnostics sampled by every member: name -> (dims after run, values, units, meaning)."""
        m0, out = self.members[0], {}
        for name, d in m0.diagnostics.items():
            if not all(m.diagnostics[name]["count"] for m in self.members):
                continue
            values = np.stack([np.real(m.get_diagnostic(name)) for m in self.members])
            # pyqg labels its scalar budgets with a 'time' dim, but get_diagnostic returns the time mean
            out[name] = (tuple(dim for dim in d["dims"] if dim != "time"), values, d["units"], d["description"])
        return out

    def coords(self) -> dict[str, np.ndarray]:
        m0 = self.members[0]
        return {"x": np.asarray(m0.x[0]), "y": np.asarray(m0.y[:, 0]), "k": m0.k[0], "l": m0.l[:, 0]}


class _TorchEngine(_Engine):
    """M members of the torch twin in one batched tensor, the network in its graph, on any device."""

    name = "torch"

    def __init__(self, req: RolloutRequest):
        import torch

        from solver_coupling.torchqg import TorchQGModel
        from solver_coupling.torchqg.closures import FluxNetClosure
        from solver_coupling.torchqg.diagnostics import SpectralDiagnostics

        super().__init__(req)
        self.torch = torch
        kwargs = self.kwargs
        closure = None
        if req.model in BASELINES:
            closure = torch_baseline(req.model)
        elif is_operator(req.model):
            self.param = OperatorParameterization(req.model, allow_out_of_regime=req.allow_out_of_regime)
            probe = pyqg.QGModel(**kwargs)
            self.param.check_solver(probe)
            # a rollout trains nothing: without this the twin's state carries a graph to the weights
            closure = self.param.closure_for(probe).to(req.device).requires_grad_(False)
        elif req.model is not None:
            # the same pre-flight checks as the pyqg engine: a probe pyqg model of this configuration
            self.param = RotEqParameterization(req.model, allow_out_of_regime=req.allow_out_of_regime)
            self.param.check_solver(pyqg.QGModel(**kwargs))
            closure = FluxNetClosure(self.param.network)
        cadence = req.call_interval or (self.param.call_interval if isinstance(self.param, RotEqParameterization) else 1)
        self.twin = TorchQGModel(req.members, device=req.device, call_interval=cadence,
                                 dtype=getattr(torch, req.precision), parameterization=closure, **kwargs)
        self.diag = SpectralDiagnostics(self.twin)
        self._ke: tuple[int, np.ndarray] | None = None

    def set_q(self, qs: list[np.ndarray]) -> None:
        self.twin.q = self.torch.as_tensor(np.stack(qs), device=self.twin.device)

    def step(self, active: np.ndarray) -> None:
        # every member steps (one batched call); a failed member is NaN and isolated (per-member ops)
        self.twin.step(1)

    def q(self, i: int) -> np.ndarray:
        return self.twin.q[i].cpu().numpy()

    def time(self, i: int) -> float:
        return float(self.twin.t)

    def kinetic_energy(self, i: int) -> float:
        """As the pyqg engine: thickness-weighted domain-mean KE of the perturbation flow, m^2/s^2."""
        if self._ke is None or self._ke[0] != self.twin.tc:
            t, c = self.twin, self.twin.constants()
            qh = t.qh
            ph = c["a"][:, :, 0] * qh[:, 0:1] + c["a"][:, :, 1] * qh[:, 1:2]
            u, v = t.ifft(-t.il * ph), t.ifft(t.ik * ph)
            w = (c["Hi"] / c["H"][:, None]).to(u.dtype)
            ke = 0.5 * (w * (u**2 + v**2).mean(dim=(-2, -1))).sum(-1)
            self._ke = (self.twin.tc, ke.cpu().numpy())
        return float(self._ke[1][i])

    def checkpoint(self) -> dict[str, np.ndarray]:
        s = self.twin.get_state()
        arrays = {f"twin_{k}": s[k].cpu().numpy() for k in ("q", "qh", "dqhdt_p", "dqhdt_pp")}
        arrays["twin_clock"] = np.array([s["t"], s["tc"], s["ablevel"]], dtype=float)
        arrays["twin_param_tc"] = np.array(-1 if s["param_tc"] is None else s["param_tc"])
        for j, x in enumerate(s["param_cache"] or ()):
            if x is not None:
                arrays[f"twin_param_cache{j}"] = x.cpu().numpy()
        arrays["diag_count"] = np.array(self.diag.count)
        for name, value in self.diag.sums.items():
            arrays[f"diag_{name}"] = value.cpu().numpy()
        return arrays

    def restore(self, ck) -> None:
        dev = self.twin.device
        t, tc, ablevel = ck["twin_clock"]
        cache = None
        if any(k.startswith("twin_param_cache") for k in ck.files):
            cache = tuple(self.torch.as_tensor(ck[f"twin_param_cache{j}"], device=dev)
                          if f"twin_param_cache{j}" in ck.files else None for j in range(3))
        param_tc = int(ck["twin_param_tc"])
        self.twin.set_state({**{k: self.torch.as_tensor(ck[f"twin_{k}"], device=dev)
                                for k in ("q", "qh", "dqhdt_p", "dqhdt_pp")},
                             "t": float(t), "tc": int(tc), "ablevel": int(ablevel), "param_cache": cache,
                             "param_tc": None if param_tc < 0 else param_tc})
        self.diag.count = int(ck["diag_count"])
        self.diag.sums = {k[len("diag_"):]: self.torch.as_tensor(ck[k], device=dev)
                          for k in ck.files if k.startswith("diag_") and k != "diag_count"}

    def diagnostics(self) -> dict[str, tuple[tuple[str, ...], np.ndarray, str, str]]:
        from solver_coupling.torchqg.diagnostics import DIAGNOSTICS

        if not self.diag.count:
            return {}
        return {name: (DIAGNOSTICS[name][1], self.diag.get(name).real.cpu().numpy(), DIAGNOSTICS[name][0],
                       DIAGNOSTICS[name][2]) for name in self.diag.names}

    def coords(self) -> dict[str, np.ndarray]:
        t = self.twin
        return {"x": t.x[0].cpu().numpy(), "y": t.y[:, 0].cpu().numpy(), "k": t._kk64.cpu().numpy(),
                "l": t._ll64.cpu().numpy()}


ENGINES = {"pyqg": _PyqgEngine, "torch": _TorchEngine}
"""Rollout engines by name: pyqg itself (CPU) or its torch twin (CPU or CUDA, batched)."""


class _State:
    """Everything a rollout accumulates, in a form that checkpoints to plain arrays."""

    def __init__(self, req: RolloutRequest):
        M, nx = req.members, req.nx
        total = req.steps(req.years * YEAR)
        self.snap_every = req.steps(req.snapshot_days * DAY)
        self.ke_every = req.steps(DAY)
        self.snap_times = np.arange(self.snap_every, total + 1, self.snap_every) * req.config.dt
        self.ke_times = np.arange(self.ke_every, total + 1, self.ke_every) * req.config.dt
        self.q = np.full((M, len(self.snap_times), req.config.nz, nx, nx), np.nan, dtype=np.float32)
        self.ke = np.full((M, len(self.ke_times)), np.nan)
        self.failed = np.zeros(M, bool)
        self.failure_time = np.full(M, np.nan)
        self.failure_reason = np.array([""] * M, dtype=object)
        self.step = 0
        self.total = total


def _request_key(req: RolloutRequest) -> str:
    """The settings a checkpoint belongs to (all but the device, which may change on resume)."""
    d = {f.name: getattr(req, f.name) for f in fields(req) if f.name not in ("config", "device")}
    if d["initial_states"] is None:
        # unset, it is left out, so checkpoints written before the option existed still resume
        del d["initial_states"]
    return json.dumps({**d, "config": req.config.to_json()}, sort_keys=True)


def _save_checkpoint(path: Path, engine, st: _State, req: RolloutRequest) -> None:
    arrays: dict[str, Any] = {"engine": np.array(engine.name), "request": np.array(_request_key(req)),
                              "step": np.array(st.step), "failed": st.failed,
                              "failure_time": st.failure_time,
                              "failure_reason": np.array([str(r) for r in st.failure_reason]),
                              "q_snap": st.q[:, : st.step // st.snap_every], "ke": st.ke[:, : st.step // st.ke_every],
                              **engine.checkpoint()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), checksum=True)


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


def _load_checkpoint(path: Path, engine, st: _State, req: RolloutRequest) -> None:
    verify_file(path, "rollout checkpoint", "delete it (and its .sha256) to start the rollout over, or pass --overwrite")
    try:
        ck = np.load(path, allow_pickle=False)
        if str(ck["engine"]) != engine.name:
            raise ValueError(f"the checkpoint was written by the {ck['engine']} engine, this run uses {engine.name}")
        if str(ck["request"]) != _request_key(req):
            raise ValueError(f"the checkpoint's settings {ck['request']} differ from this run's {_request_key(req)}")
        st.step = int(ck["step"])
        n_snap, n_ke = st.step // st.snap_every, st.step // st.ke_every
        st.q[:, :n_snap] = ck["q_snap"]
        st.ke[:, :n_ke] = ck["ke"]
        st.failed[:] = ck["failed"]
        st.failure_time[:] = ck["failure_time"]
        st.failure_reason[:] = ck["failure_reason"].astype(object)
        engine.restore(ck)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # truncated, foreign, other settings
        raise RuntimeError(f"checkpoint {path} is unreadable (truncated or corrupt) or from another rollout "
                           f"({type(e).__name__}: {e}); delete it to start over, or pass --overwrite") from None


def _dataset(req: RolloutRequest, engine, st: _State) -> xr.Dataset:
    coords = engine.coords()
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
            "lev": np.arange(1, req.config.nz + 1), "x": ("x", coords["x"], {"units": "m"}), "y": ("y", coords["y"], {"units": "m"}),
        },
        attrs={
            "title": "roteq-param coarse pyqg rollout",
            "config": req.config.to_json(),
            "model": (req.model or "none") + (f" + {req.add_closure}" if req.add_closure else ""),
            "model_sha256": engine.model_sha256,
            "engine": engine.name,
            "rollout": json.dumps(req.describe(), sort_keys=True, default=str),
            "steps_done": st.step,
            "Conventions": "CF-1.8",
        },
    )
    for name, (dims, values, units, meaning) in engine.diagnostics().items():
        ds[name] = (("run",) + tuple(dims), values, {"units": units, "long_name": meaning})
    if "k" in ds.dims:
        ds = ds.assign_coords(k=("k", coords["k"], {"units": "m-1"}), l=("l", coords["l"], {"units": "m-1"}))
    return ds


def rollout(req: RolloutRequest, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
            progress: bool | None = None, on_step: Callable[[int, Any], None] | None = None) -> xr.Dataset:
    """Run the ensemble on ``req.engine`` and write ``out/rollout.nc``; returns the dataset.

    ``progress``: ``None`` (default) shows a bar that refreshes freely on a terminal and once a minute
    elsewhere (a log file of a long background run then stays a few kB); ``False`` shows none.

    ``on_step(step, engine)``, if given, is called after every step, before the stability monitor:
    a place for extra forcing, logging or fault injection (``engine.members`` are the pyqg models,
    ``engine.twin`` the torch twin).
    """
    out = Path(out)
    # one writer per folder: a second process is refused, not interleaved
    with exclusive_output(out):
        nc, ckpt = out / "rollout.nc", out / "checkpoint.npz"
        if not resume and not overwrite and (nc.exists() or ckpt.exists()):
            raise FileExistsError(f"{out} already holds a rollout; pass resume=True (--resume) to continue it "
                                  "or overwrite=True (--overwrite) to start over")
        if req.engine == "pyqg":
            # plan pyqg's FFTs from the folder's wisdom, so a resume or a re-run repeats bit for bit
            plan_model = partial(req.config.make_model, nx=req.nx, log_level=0)
            fftw_plans.use_wisdom(fftw_plans.load_or_measure(out, plan_model))
        engine = ENGINES[req.engine](req)
        st = _State(req)
        engine.set_q(load_initial_states(req.initial_states, req) if req.initial_states else
                     [initial_pv(req.config, req.seed, i) for i in range(req.members)])
        if resume and ckpt.exists():
            _load_checkpoint(ckpt, engine, st, req)
        # (with overwrite the old files stay until the new run replaces them: a failure before
        # that, a full disk say, leaves them whole; the checkpoint names its request, so a later
        # resume cannot continue the old run under new settings)
        check_every = req.steps(req.check_hours * 3600)
        ckpt_every = max(1, req.steps(req.checkpoint_years * YEAR))
        label = f"{req.model or 'unparameterized'} x{req.members} ({req.engine})"

        def save() -> xr.Dataset:
            """Write the dataset, then the checkpoint (a kill between the two loses nothing on resume)."""
            ds = _dataset(req, engine, st)
            atomic_to_netcdf(ds, nc)
            _save_checkpoint(ckpt, engine, st, req)
            return ds

        saved_at = None
        start, start_step = time.perf_counter(), st.step
        refresh = {} if sys.stderr.isatty() else {"mininterval": 60.0}
        with tqdm(total=st.total, initial=st.step, desc=label, unit="step", disable=progress is False,
                  **refresh) as bar:
            while st.step < st.total and not st.failed.all():
                active = ~st.failed
                engine.step(active)
                st.step += 1
                if on_step is not None:
                    on_step(st.step, engine)
                if st.step % check_every == 0 or st.step % st.ke_every == 0 or st.step % st.snap_every == 0:
                    _monitor(req, engine, st)
                if st.step % ckpt_every == 0 or st.step == st.total:
                    engine.verify_model_file()
                    ds, saved_at = save(), st.step
                bar.update(1)
                if st.step % 240 == 0:
                    hours = (time.perf_counter() - start) / 3600
                    years = (st.step - start_step) * req.config.dt / YEAR
                    bar.set_postfix({"model yr/wall h": f"{years / hours:.0f}",
                                     "member-yr/h": f"{years * active.sum() / hours:.0f}",
                                     "failed": int(st.failed.sum())}, refresh=False)  # shown at the bar's next refresh
        # the run ended on a checkpoint, or stopped early because every member failed
        return ds if saved_at == st.step else save()


def read_states(path: str | os.PathLike) -> np.ndarray:
    """The stored PV states of ``path`` (variable ``q``, dims (run, lev, y, x), in s-1) as float64.

    Verified against its checksum first (:func:`roteq_param.integrity.open_netcdf`). Raises
    ``ValueError`` naming the file when it is damaged, lacks ``q`` in that layout, or holds
    non-finite values.
    """
    path = Path(path)
    with open_netcdf(path, "initial states", "re-make them (`roteq demo --make-states` for a model's demo states) "
                     "or re-copy them") as ds:
        if "q" not in ds:
            raise ValueError(f"initial states {path}: no variable 'q' (run, lev, y, x) in s-1")
        if ds["q"].dims != ("run", "lev", "y", "x"):
            raise ValueError(f"initial states {path}: q has dims {ds['q'].dims}; expected ('run', 'lev', 'y', 'x')")
        q = ds["q"].values.astype(np.float64)
    if not np.isfinite(q).all():
        raise ValueError(f"initial states {path}: non-finite values in q")
    return q


def load_initial_states(path: str | os.PathLike, req: RolloutRequest) -> list[np.ndarray]:
    """The first ``req.members`` states of ``path`` (:func:`read_states`) for the rollout ``req``.

    Raises ``ValueError`` naming the file when it holds fewer states than members, or its grid or
    layer count differs from the rollout's (and as :func:`read_states` does).
    """
    q = read_states(path)
    want = (req.config.nz, req.nx, req.nx)
    if q.shape[1:] != want:
        raise ValueError(f"initial states {path}: states of shape {q.shape[1:]} (lev, y, x), the rollout's are "
                         f"{want}; make states on this grid (e.g. with `roteq rollout ... --nx {req.nx}`)")
    if q.shape[0] < req.members:
        raise ValueError(f"initial states {path}: {q.shape[0]} states for {req.members} members; ask for at "
                         f"most {q.shape[0]} members or store more states")
    return list(q[: req.members])


def _monitor(req: RolloutRequest, engine, st: _State) -> None:
    """Stability monitor + KE series + snapshots, for every active member."""
    for i in range(req.members):
        if st.failed[i]:
            continue
        reason = ""
        q = engine.q(i)
        if not np.all(np.isfinite(q)):
            reason = "non-finite PV"
        else:
            ke = engine.kinetic_energy(i)
            if not np.isfinite(ke) or ke > req.energy_limit:
                reason = f"kinetic energy {ke:.3g} m2 s-2 exceeds the limit {req.energy_limit:g}"
            elif st.step % st.ke_every == 0:
                st.ke[i, st.step // st.ke_every - 1] = ke
        if reason:
            st.failed[i] = True
            st.failure_time[i] = engine.time(i)
            st.failure_reason[i] = reason
            continue
        if st.step % st.snap_every == 0:
            st.q[i, st.step // st.snap_every - 1] = q
