"""pyqg's own energy-budget spectra and the value fields of coarse PV snapshots.

One coarse ``pyqg.QGModel`` (ntd = 1, silent) is built once and reused: for each
snapshot its PV ``q`` (s-1) is loaded, inverted (``m._invert``: ``qh``, ``ph``,
``u``, ``v``) and the derived fields of the two-layer diagnostics are formed
(``m._calc_derived_fields``), exactly as pyqg does before it accumulates its
diagnostics inside a time step. Then pyqg's diagnostic functions
``m.diagnostics[name]['function'](m)`` give the half-plane spectra:

==================  ======================  ==========  ================================================
pyqg name           dims                    units       meaning (pyqg normalisation, full-plane sum)
==================  ======================  ==========  ================================================
``KEspec``          lev, l, k               m2 s-2      sums to mean(u^2 + v^2) of the layer (2 x KE)
``Ensspec``         lev, l, k               s-2         sums to mean(q^2) of the layer (2 x enstrophy)
``KEflux``          l, k                    m2 s-3      KE transfer by advection, height-weighted
``APEflux``         l, k                    m2 s-3      APE transfer by advection
``APEgenspec``      l, k                    m2 s-3      APE generation by the background shear
``KEfrictionspec``  l, k                    m2 s-3      KE dissipation by bottom drag (negative)
==================  ======================  ==========  ================================================

Only state functions are evaluated. ``Dissspec`` (the small-scale filter) needs
the Adams-Bashforth tendencies of a running model and is not a function of a
snapshot; the ``paramspec_*`` terms need the parameterization. Fluxes are
therefore those of the resolved coarse advection, computed the same way for the
truth, the baseline and every candidate.

For :mod:`roteq_param.diagnostics`, ``KEspec`` and ``Ensspec`` are halved so
that they integrate to the layer-mean kinetic energy ``(u^2 + v^2)/2`` and
potential enstrophy ``q^2/2``. The pooled value fields are ``q``, ``u``, ``v``
(perturbation velocity, m s-1), ``KE = (u^2 + v^2)/2`` (m2 s-2) and the relative
enstrophy ``zeta^2/2`` with ``zeta = laplacian(psi)`` (s-2), as in Ross et al.
(2023); pyqg's spectral ``Ensspec`` is the PV-based one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyqg
import xarray as xr

from roteq_param import diagnostics as dg
from solver_coupling.pyqg.config import YEAR

__all__ = [
    "PYQG_SPECTRA",
    "SnapshotDiagnostics",
    "time_mean_spectra",
    "model_kwargs_from_attrs",
    "RunSetSummary",
    "summarise",
]

PYQG_SPECTRA: dict[str, float] = {
    "KEspec": 0.5, "Ensspec": 0.5, "KEflux": 1.0, "APEflux": 1.0, "APEgenspec": 1.0, "KEfrictionspec": 1.0,
}
"""pyqg diagnostic name -> factor that brings it to the normalisation of ``roteq_param.diagnostics.SPECTRA``."""

_LAYERED_NAMES = {"KEflux": "KEflux_div", "APEflux": "APEflux_div"}
"""QGModel's names of the advective transfers -> LayeredModel's names of the same quantities."""

# Keys of a stored configuration that do not describe the model a snapshot came from.
_NOT_MODEL = ("q_parameterization", "uv_parameterization", "parameterization", "ntd", "log_level", "tmax",
              "twrite", "taveint", "tavestart")


class SnapshotDiagnostics:
    """A reusable coarse ``QGModel`` that evaluates pyqg's diagnostics on given PV snapshots.

    model_kwargs : QGModel keyword arguments (nx, L, rd, delta, H1, U1, U2, beta, rek, ...);
        ``ntd=1`` and ``log_level=0`` are imposed (docs/design.md §4: threads only slow pyqg down).
    """

    def __init__(self, model_kwargs: Mapping[str, Any]):
        kwargs = {k: v for k, v in model_kwargs.items() if k not in _NOT_MODEL}
        # a configuration that sets nz is a LayeredModel (solver_coupling.pyqg.config.PyqgConfig)
        self.m = (pyqg.LayeredModel if "nz" in kwargs else pyqg.QGModel)(**kwargs, ntd=1, log_level=0)
        self.shape = (self.m.nz, self.m.ny, self.m.nx)
        # LayeredModel names the two advective transfers by the flux divergence; they are QGModel's
        # KEflux and APEflux for any layer count (equal on a two-layer model: tests/test_layered.py)
        self._names = {name: _LAYERED_NAMES.get(name, name) if isinstance(self.m, pyqg.LayeredModel) else name
                       for name in PYQG_SPECTRA}

    def load(self, q: np.ndarray) -> None:
        """Set the PV anomaly ``q`` (nz, ny, nx), s-1, invert it and form pyqg's derived fields."""
        q = np.asarray(q, dtype=float)
        if q.shape != self.shape:
            raise ValueError(f"snapshot has shape {q.shape}, the model grid is {self.shape}")
        self.m.q = q
        self.m._invert()
        self.m._calc_derived_fields()

    def spectra(self) -> dict[str, np.ndarray]:
        """pyqg's own spectra of the loaded snapshot, in pyqg's normalisation (table in the module docstring)."""
        return {name: np.array(self.m.diagnostics[pyqg_name]["function"](self.m))
                for name, pyqg_name in self._names.items()}

    def fields(self) -> dict[str, np.ndarray]:
        """Per-layer fields (nz, ny, nx) of the loaded snapshot: q, u, v, KE, enstrophy (units: see module)."""
        m = self.m
        u, v = np.array(m.u), np.array(m.v)
        zeta = m.ifft(-m.wv2 * m.ph)
        return {"q": np.array(m.q), "u": u, "v": v, "KE": 0.5 * (u ** 2 + v ** 2), "enstrophy": 0.5 * zeta ** 2}

    def energy(self) -> float:
        """Domain-mean kinetic energy of the loaded snapshot, sum_i (H_i / H) mean(u_i^2 + v_i^2) / 2, m2 s-2."""
        m = self.m
        ke = 0.5 * (np.asarray(m.u) ** 2 + np.asarray(m.v) ** 2).mean(axis=(-1, -2))
        return float((m.Hi / m.H * ke).sum())


def time_mean_spectra(q: np.ndarray, model_kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Average of pyqg's spectra over snapshots ``q`` (n, nz, ny, nx) in s-1 (pyqg normalisation)."""
    ev = SnapshotDiagnostics(model_kwargs)
    q = np.asarray(q)
    total: dict[str, np.ndarray] = {}
    for snapshot in q:
        ev.load(snapshot)
        for name, value in ev.spectra().items():
            total[name] = total[name] + value if name in total else value
    return {name: value / len(q) for name, value in total.items()}


def model_kwargs_from_attrs(ds: xr.Dataset, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """QGModel keyword arguments for the coarse grid of ``ds``.

    The ``config`` attribute is JSON: either QGModel keyword arguments, or the
    ``{"name", "params", "coarse_nx"}`` form written by ``roteq generate`` (whose
    ``params`` describe the high-resolution run). Without it, pyqg's defaults
    apply. ``overrides`` go on top; ``nx`` and ``ny`` always come from the data's
    ``x`` and ``y`` sizes. If the data has an ``x`` coordinate, its spacing must
    agree with ``L / nx``.
    """
    if "family" in ds.attrs:
        raise ValueError("the data is a family of configurations (roteq generate --vary): its runs differ in "
                         f"physics ({ds.attrs['family']}), so they are no one reference; score against runs of one "
                         "configuration")
    raw = ds.attrs.get("config")
    kwargs: dict[str, Any] = {}
    if raw is not None:
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise ValueError(f"the 'config' attribute is not JSON of QGModel arguments: {err}") from None
        kwargs = dict(parsed.get("params", parsed)) if isinstance(parsed, dict) else None
        if kwargs is None:
            raise ValueError("the 'config' attribute must be a JSON object")
    kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_MODEL}
    kwargs.update(overrides or {})
    kwargs["nx"], kwargs["ny"] = int(ds.sizes["x"]), int(ds.sizes["y"])
    L = float(kwargs.get("L", 1e6))
    if "x" in ds.coords and ds.sizes["x"] > 1:
        dx = float(ds["x"].values[1] - ds["x"].values[0])
        if not np.isclose(dx * kwargs["nx"], L, rtol=1e-6):
            raise ValueError(f"grid spacing {dx:g} m of the data times nx = {kwargs['nx']} is not L = {L:g} m")
    return kwargs


@dataclass
class RunSetSummary:
    """Everything evaluated for one set of runs.

    diagnostics : pooled distributions and time-mean spectra of the stable runs over the
        scoring window (None when no run is stable)
    time : (time,) s;  energy : (run, time) domain-mean KE, m2 s-2 (NaN where q is not finite)
    finite : (run, time) whether every value of q is finite
    stability : :func:`roteq_param.diagnostics.stability_summary` of the set
    """

    name: str
    diagnostics: dg.Diagnostics | None
    time: np.ndarray
    energy: np.ndarray
    finite: np.ndarray
    stability: dict[str, Any]


def summarise(datasets: Sequence[xr.Dataset], name: str, model_kwargs: Mapping[str, Any], *,
              last_years: float | None = None, energy_bound: float = np.inf, n_quantiles: int | None = 10_000,
              binning: str = "shell") -> RunSetSummary:
    """Evaluate a set of runs given as datasets with ``q`` (run, time, lev, y, x) in s-1 and ``time`` in s.

    Every snapshot is inverted for the energy series and the stability check
    (finite q, domain-mean KE <= ``energy_bound`` in m2 s-2). Snapshots of the
    last ``last_years`` years (360-day years, counted back from the last time;
    None: all) of the *stable* runs are pooled: value samples per layer and
    pyqg's spectra, averaged over the pooled snapshots. All datasets of a set
    must share one time axis.
    """
    if not datasets:
        raise ValueError(f"{name}: no datasets")
    time = np.asarray(datasets[0]["time"].values, dtype=float)
    for ds in datasets[1:]:
        if not np.array_equal(np.asarray(ds["time"].values, dtype=float), time):
            raise ValueError(f"{name}: the files have different time axes; give each set a common one")
    start = -np.inf if last_years is None else time[-1] - last_years * YEAR - 1e-6 * YEAR
    window = time >= start

    ev = SnapshotDiagnostics(model_kwargs)
    nz = ev.shape[0]
    energy, finite = [], []
    pooled: dict[str, list[list[np.ndarray]]] = {q: [[] for _ in range(nz)] for q in dg.QUANTITIES}
    spec_sum: dict[str, np.ndarray] = {}
    n_pooled = 0
    snapshot = None
    for ds in datasets:
        for run_q in ds["q"].transpose("run", "time", "lev", "y", "x").values:
            run_energy = np.full(time.size, np.nan)
            run_finite = np.isfinite(run_q).all(axis=(1, 2, 3))
            run_fields: dict[str, list[list[np.ndarray]]] = {q: [[] for _ in range(nz)] for q in dg.QUANTITIES}
            run_spec: dict[str, np.ndarray] = {}
            run_n = 0
            for t in range(time.size):
                if not run_finite[t]:
                    break  # a blown-up run stays blown up; the rest of its series is NaN
                ev.load(run_q[t])
                run_energy[t] = ev.energy()
                if run_energy[t] > energy_bound:
                    break
                if window[t]:
                    for q, values in ev.fields().items():
                        for z in range(nz):
                            run_fields[q][z].append(values[z].ravel())
                    for s, value in ev.spectra().items():
                        run_spec[s] = run_spec[s] + value if s in run_spec else value
                    run_n += 1
                    run_last = run_q[t, 0]
            energy.append(run_energy)
            finite.append(run_finite)
            stable = bool(run_finite.all()) and bool(np.all(run_energy <= energy_bound))
            if stable and run_n:
                for q in pooled:
                    for z in range(nz):
                        pooled[q][z].extend(run_fields[q][z])
                for s, value in run_spec.items():
                    spec_sum[s] = spec_sum[s] + value if s in spec_sum else value
                n_pooled += run_n
                snapshot = run_last if snapshot is None else snapshot
    energy_arr, finite_arr = np.array(energy), np.array(finite)
    stability = dg.stability_summary(energy_arr, time, energy_bound, finite_arr)

    diagnostics = None
    if n_pooled:
        m = ev.m
        diagnostics = dg.Diagnostics.from_samples(
            name,
            samples={q: [np.concatenate(per_layer) for per_layer in layers] for q, layers in pooled.items()},
            spectra2d={s: PYQG_SPECTRA[s] * value / n_pooled for s, value in spec_sum.items()},
            L=m.L, W=m.W, snapshot_q=snapshot, n_snapshots=n_pooled, n_quantiles=n_quantiles, binning=binning)
    return RunSetSummary(name, diagnostics, time, energy_arr, finite_arr, stability)
