"""``roteq evaluate``: online skill and stability of parameterized pyqg rollouts (docs/design.md §5).

Inputs are netCDF datasets with ``q`` (run, time, lev, y, x) in s-1 on the coarse
grid, a ``time`` coordinate in s and a ``config`` attribute (JSON of QGModel
arguments, or the form ``roteq generate`` writes):

* ``--truth``: coarse-grained high-resolution runs (the reference);
* ``--baseline``: unparameterized coarse rollouts (similarity 0 by definition);
* ``--run NAME=FILE[,FILE...]``: parameterized coarse rollouts (repeatable);
* ``--truth-b``: independent high-resolution runs, scored like a candidate: the
  sampling-noise ceiling, printed beside every score.

Every set is reduced by :func:`solver_coupling.pyqg.diagnostics.summarise`
over its last ``--last-years`` years; distances to the truth are Wasserstein-1
for the per-layer value distributions of q, u, v, KE and relative enstrophy and
the RMSE of the isotropic spectra (KE, potential enstrophy, KE flux, APE flux,
APE generation, bottom drag) for ``0 < k_r < (2/3) k_Nyquist``; the similarity
is ``1 - D(run, truth) / D(baseline, truth)``. Runs that are not finite or whose
domain-mean KE exceeds ``--energy-factor`` times the truth's maximum are unstable:
they are reported with their blow-up time and left out of the statistics.

Writes ``evaluate.json`` (distances, similarities, mean and min, stability) and
``spectra.png``, ``energy_budget.png``, ``distributions.png``,
``energy_timeseries.png``, ``snapshots.png`` into ``--out``, and prints the table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from roteq_param import diagnostics as dg
from roteq_param import symmetry
from roteq_param.atomic import atomic_savefig, atomic_to_netcdf, atomic_write_bytes
from roteq_param.integrity import CorruptFileError, open_netcdf
from solver_coupling.pyqg.config import SOLVER_KWARGS, YEAR
from solver_coupling.pyqg.data import UsageError
from solver_coupling.pyqg.diagnostics import model_kwargs_from_attrs, summarise

__all__ = ["EvaluateConfig", "Reference", "evaluate", "load_runs", "parse_run_selection", "parse_runs", "to_training_frame",
           "write_results"]

TRUTH, BASELINE, CEILING = "truth", "baseline", "truth-b"

# Parameters that must agree between every set for the comparison to mean anything.
_PHYSICS = ("nx", "ny") + SOLVER_KWARGS
_Q_DIMS = ("run", "time", "lev", "y", "x")


def to_training_frame(datasets: Sequence[xr.Dataset], element: str, label: str) -> list[xr.Dataset]:
    """Rollouts of a configuration turned or mirrored by ``element`` (e.g. ``"rot180"``, ``"rot0*flip"``),
    mapped back into the frame they were turned from: q by the inverse element (a pseudoscalar: it
    changes sign under reflections), and the configuration's beta (a constant pseudovector, along y)
    and U1, U2 (constant vectors, along x) likewise, so that they can be scored against truth of
    the unturned configuration. Only elements that keep beta along y and U along x (the identity,
    rot180 and the two mirrors of D4) give a configuration pyqg can hold.
    """
    elements = {str(g): g for g in symmetry.Group.parse("D4").exact_elements()}
    if element not in elements:
        raise UsageError(f"{label}: unknown element {element!r}; expected one of {sorted(elements)}")
    back = elements[element].inverse()
    out = []
    for ds in datasets:
        raw = json.loads(ds.attrs.get("config", "{}"))
        params = dict(raw.get("params", raw))
        missing = [k for k in ("beta", "U1", "U2") if k not in params]
        if missing:
            raise UsageError(f"{label}: {ds.attrs.get('source', 'a file')} records no {missing} in its config; "
                             "only rollouts written by `roteq rollout` can be mapped to another frame")
        beta = symmetry.act(back, np.array([0.0, float(params["beta"])]), "constant_pseudovector")
        U = [symmetry.act(back, np.array([float(params[k]), 0.0]), "constant_vector") for k in ("U1", "U2")]
        if abs(beta[0]) > 0 or any(abs(u[1]) > 0 for u in U):
            raise UsageError(f"{label}: {element} turns beta off y or U off x; pyqg cannot hold that frame")
        params.update(beta=float(beta[1]), U1=float(U[0][0]), U2=float(U[1][0]))
        turned = ds.copy()
        turned["q"] = (ds["q"].dims, symmetry.act(back, ds["q"].values, "pseudoscalar"), ds["q"].attrs)
        turned.attrs["config"] = json.dumps({**raw, "params": params} if "params" in raw else params)
        turned.attrs["frame"] = f"mapped back by the inverse of {element}"
        out.append(turned)
    return out


@dataclass
class EvaluateConfig:
    """Settings of :func:`evaluate`.

    last_years : scoring window, the last years (360 d) of every run; None: all snapshots
    overrides : QGModel parameters set on top of the datasets' ``config`` (or pyqg defaults)
    n_quantiles : quantile-summary size of each pooled distribution (None: exact, all values)
    energy_factor : a run is unstable once its domain-mean KE exceeds this times the truth's maximum
    k_fraction : spectra are scored for 0 < k_r < k_fraction * pi nx / L (coarse Nyquist)
    """

    last_years: float | None = 5.0
    overrides: dict[str, Any] = field(default_factory=dict)
    n_quantiles: int | None = 10_000
    energy_factor: float = 10.0
    k_fraction: float = 2.0 / 3.0


def _as_list(sets: xr.Dataset | Sequence[xr.Dataset]) -> list[xr.Dataset]:
    return [sets] if isinstance(sets, xr.Dataset) else list(sets)


def _check_q(ds: xr.Dataset, label: str) -> None:
    if "q" not in ds:
        raise UsageError(f"{label}: no variable 'q' (PV anomaly in s-1); variables: {', '.join(map(str, ds.data_vars))}")
    if set(ds["q"].dims) != set(_Q_DIMS):
        raise UsageError(f"{label}: q has dims {ds['q'].dims}, expected {_Q_DIMS}")
    if ds.sizes["lev"] < 2:
        raise UsageError(f"{label}: q has {ds.sizes['lev']} layer(s); pyqg's layered models have at least 2")
    if "time" not in ds.coords:
        raise UsageError(f"{label}: no 'time' coordinate (model time in s)")
    if ds.sizes["time"] < 1 or ds.sizes["run"] < 1:
        raise UsageError(f"{label}: q has no snapshots")


def parse_runs(text: str) -> list[int]:
    """Run indices from ``RUNS``, the one run-selection syntax of the command line: inclusive ranges and
    lists from 0, ``0-3,7`` -> ``[0, 1, 2, 3, 7]``; in the order given, each run once."""
    picked: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise UsageError(f"cannot read the run selection {text!r}: expected run indices from 0, ranges and "
                             "lists like 0-3,7") from None
        if first < 0 or last < first:
            raise UsageError(f"run selection {text!r}: {part.strip()!r} is not a range LO-HI with 0 <= LO <= HI")
        picked += range(first, last + 1)
    if len(set(picked)) != len(picked):
        raise UsageError(f"run selection {text!r} names a run twice")
    return picked


def parse_run_selection(spec: str, label: str) -> tuple[str, list[int] | None]:
    """``FILE`` or ``FILE@RUNS`` (:func:`parse_runs`: ``7-9``, ``0,2,5``, ``0-3,7``)."""
    path, sep, runs = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not sep:
        return spec, None
    try:
        return path, parse_runs(runs)
    except UsageError as err:
        raise UsageError(f"{label}: {err} (in {spec!r}; use FILE@0-3,7)") from None


def _check_finished(ds: xr.Dataset, label: str, path: str) -> None:
    """Refuse a rollout that was stopped before its end (killed, or still running).

    Its file holds the last checkpoint's snapshots and NaN after them, which would otherwise score as
    a blow-up at that time. A rollout whose members were all stopped by the stability monitor ends
    early by design and is scored (as unstable).
    """
    if "steps_done" not in ds.attrs or "rollout" not in ds.attrs:
        return  # not a rollout (a truth dataset)
    request = json.loads(ds.attrs["rollout"])
    total = int(round(float(request["years"]) * YEAR / float(request["config"]["params"]["dt"])))
    done = int(ds.attrs["steps_done"])
    if done < total and not ("failed" in ds and bool(ds["failed"].values.all())):
        raise UsageError(f"{label}: {path!r} is an unfinished rollout ({done} of {total} steps); finish it with "
                         "the same `roteq rollout` command and --resume, then evaluate it")


def load_runs(paths: Sequence[str], label: str) -> list[xr.Dataset]:
    """Open (and load) the netCDF files of one set and check their ``q``.

    A path may select runs: ``FILE@7-9`` or ``FILE@0,2,5`` (indices along ``run``).
    """
    out = []
    for spec in paths:
        path, runs = parse_run_selection(spec, label)
        if not os.path.exists(path):
            raise UsageError(f"{label}: no such file {path!r}")
        try:
            with open_netcdf(path, f"{label} file", "re-run the command that wrote it") as ds:
                if runs is not None:
                    bad = [r for r in runs if not 0 <= r < ds.sizes.get("run", 0)]
                    if bad:
                        raise UsageError(f"{label}: {path!r} has runs 0-{ds.sizes.get('run', 0) - 1}; "
                                         f"cannot select {bad}")
                    ds = ds.isel(run=runs)
                _check_finished(ds, label, path)
                keep = [v for v in ("q",) if v in ds]  # only q is scored: skip loading the rest
                ds = ds[keep].load() if keep else ds.load()
        except (OSError, ValueError) as err:
            if isinstance(err, (UsageError, CorruptFileError)):
                raise
            raise UsageError(f"{label}: cannot read {path!r} as netCDF: {err}") from None
        _check_q(ds, f"{label} ({spec})")
        ds.attrs["source"] = spec
        out.append(ds)
    return out


@dataclass
class Reference:
    """A truth set reduced once and stored: what the demo scores against without the high-res runs.

    diagnostics : the truth's :class:`~roteq_param.diagnostics.Diagnostics`
    energy_max : the truth's largest domain-mean KE (m2 s-2), for the stability bound
    model_kwargs : the coarse QGModel arguments of the truth
    """

    diagnostics: dg.Diagnostics
    energy_max: float
    model_kwargs: dict[str, Any]

    def save(self, path: str) -> None:
        ds = self.diagnostics.ds.copy()
        ds.attrs.update({"energy_max": self.energy_max, "model_kwargs": json.dumps(self.model_kwargs, sort_keys=True),
                         "title": "roteq-param truth reference for roteq evaluate --reference"})
        atomic_to_netcdf(ds, path)

    @classmethod
    def load(cls, path: str) -> "Reference":
        if not os.path.exists(path):
            raise UsageError(f"reference: no such file {path!r}")
        try:
            with open_netcdf(path, "truth reference", "re-copy it, or re-create it with `roteq evaluate "
                             "--save-reference`") as ds:
                ds = ds.load()
            return cls(dg.Diagnostics(ds), float(ds.attrs["energy_max"]), json.loads(ds.attrs["model_kwargs"]))
        except CorruptFileError:
            raise
        except (OSError, ValueError, KeyError) as err:
            raise UsageError(f"reference: {path!r} is not a reference written by --save-reference: {err}") from None


def _resolve(sets: Mapping[str, list[xr.Dataset]], overrides: Mapping[str, Any],
             reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Model arguments of the truth, after checking every set has the same grid and physics."""
    ref_where = "the stored reference"
    for label, datasets in sets.items():
        for ds in datasets:
            where = f"{label} ({ds.attrs.get('source', 'in memory')})"
            _check_q(ds, where)
            try:
                kwargs = model_kwargs_from_attrs(ds, overrides)
            except ValueError as err:
                raise UsageError(f"{where}: {err}") from None
            kwargs.setdefault("W", kwargs.get("L", 1e6))
            if reference is None:
                reference, ref_where = kwargs, where
                continue
            for key in _PHYSICS:
                a, b = reference.get(key), kwargs.get(key)
                if a is not None and b is not None and not np.isclose(float(a), float(b), rtol=1e-9, atol=0):
                    raise UsageError(f"{where} has {key} = {b}, but {ref_where} has {key} = {a}: "
                                     "grids and physics must match to compare runs")
                if (a is None) != (b is None):
                    raise UsageError(f"{key} is set in the config of only one of {ref_where} and {where}")
    return reference


def evaluate(truth: xr.Dataset | Sequence[xr.Dataset] | Reference, baseline: xr.Dataset | Sequence[xr.Dataset],
             candidates: Mapping[str, xr.Dataset | Sequence[xr.Dataset]], config: EvaluateConfig | None = None,
             truth_b: xr.Dataset | Sequence[xr.Dataset] | None = None,
             ) -> tuple[dg.SimilarityTable, dict[str, Figure], Reference]:
    """Score parameterized runs against the truth relative to the unparameterized baseline.

    Each argument is a dataset (or a list of datasets of one set, sharing a time
    axis) with ``q`` (run, time, lev, y, x) in s-1; the truth may instead be a
    stored :class:`Reference`. Returns the
    :class:`~roteq_param.diagnostics.SimilarityTable` (with stability of every set),
    figures by file stem and the truth's :class:`Reference`. Raises
    :class:`UsageError` for unusable input.
    """
    config = config or EvaluateConfig()
    for name in candidates:
        if name in (TRUTH, BASELINE, CEILING):
            raise UsageError(f"run name {name!r} is reserved; choose another")
    stored = truth if isinstance(truth, Reference) else None
    sets = {} if stored is not None else {TRUTH: _as_list(truth)}
    sets[BASELINE] = _as_list(baseline)
    sets.update({name: _as_list(ds) for name, ds in candidates.items()})
    if truth_b is not None:
        sets[CEILING] = _as_list(truth_b)
    kwargs = _resolve(sets, config.overrides, stored.model_kwargs if stored is not None else None)
    for ds in sets.get(TRUTH, []):
        if not np.isfinite(ds["q"].values).all():
            raise UsageError(f"truth ({ds.attrs.get('source', 'in memory')}): q has NaN or inf values; "
                             "the reference must be finite")

    def run(label: str, bound: float) -> Any:
        try:
            return summarise(sets[label], label, kwargs, last_years=config.last_years, energy_bound=bound,
                             n_quantiles=config.n_quantiles)
        except ValueError as err:
            raise UsageError(str(err)) from None

    if stored is None:
        summaries = {TRUTH: run(TRUTH, math.inf)}
        stored = Reference(summaries[TRUTH].diagnostics, float(np.max(summaries[TRUTH].energy)), dict(kwargs))
    else:
        summaries = {}
    bound = config.energy_factor * stored.energy_max
    for label in sets:
        if label != TRUTH:
            summaries[label] = run(label, bound)
    if summaries[BASELINE].diagnostics is None:
        raise UsageError("baseline: no run is stable, so there is no reference distance to score against")

    L = float(kwargs.get("L", 1e6))
    k_max = config.k_fraction * math.pi * kwargs["nx"] / L
    reference = stored.diagnostics
    labels = reference.labels()
    distances = {}
    for label, s in summaries.items():
        if label == TRUTH:
            continue
        distances[label] = (s.diagnostics.distances(reference, k_max) if s.diagnostics is not None
                            else {d: math.nan for d in labels})
    table = dg.SimilarityTable(distances, baseline=BASELINE, ceiling=CEILING if truth_b is not None else None,
                               stability={label: s.stability for label, s in summaries.items()})

    shown = {TRUTH: reference}
    shown.update({label: s.diagnostics for label, s in summaries.items() if s.diagnostics is not None})
    figures = {
        "spectra": dg.plot_spectra(shown, k_max),
        "energy_budget": dg.plot_energy_budget(shown, k_max),
        "distributions": dg.plot_distributions(shown),
        "energy_timeseries": dg.plot_energy_timeseries({k: (s.time, s.energy) for k, s in summaries.items()}, bound),
        "snapshots": dg.plot_snapshots(shown),
    }
    return table, figures, stored


def write_results(out: str | os.PathLike, table: dg.SimilarityTable, figures: Mapping[str, Figure],
                  dpi: int = 110) -> None:
    """``out/evaluate.json`` and one PNG per figure, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "evaluate.json", table.to_json().encode())
    for stem, fig in figures.items():
        atomic_savefig(fig, out / f"{stem}.png", dpi=dpi)
