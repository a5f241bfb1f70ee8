"""Training data in memory: a coarse dataset (the :data:`~roteq_param.fields.QG_DATASET` layout)
read through the schema and stacked into channel tensors, plus the per-field scales.

Normalisation
-------------
One scale per field, in the field's units: the RMS of the field's norm over the training runs
(``|v|`` for a vector, the Frobenius norm ``sqrt(xx^2 + 2 xy^2 + yy^2)`` for a tensor, ``|b|``
for a scalar). Norms are invariant under rotations and reflections, and nothing is
subtracted, so the normalisation commutes with the group. A field that is zero in all the
training data (e.g. ``U_2``) gets scale 1 in its units.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from roteq_param import fluxform
from roteq_param.fields import Schema, qg_dataset_fields, qg_flux_sources, qg_fluxes, qg_has_regime, qg_schema
from roteq_param.integrity import open_netcdf
from roteq_param.symmetry import Kind

__all__ = ["QGData", "load_dataset", "field_scales", "pv_forcing"]


@dataclass
class QGData:
    """A coarse dataset in memory, stacked for the schema (float32 torch tensors).

    ``x``: ``[R, T, C_in, n, n]`` stacked inputs; ``y``: ``[R, T, C_out, n, n]`` stacked fluxes;
    ``S``: ``[R, T, N, n, n]`` PV forcing target (s^-2); ``strat`` the layers' coupling (m^-2) of run
    0, ``run_strats`` each run's (a family's runs differ: :meth:`flux_weights`), ``L`` the domain side (m).
    """

    x: torch.Tensor
    y: torch.Tensor
    S: torch.Tensor
    schema: Schema
    strat: fluxform.Stratification
    L: float
    path: str = ""
    sha256: str = ""
    attrs: dict = field(default_factory=dict)
    run_strats: tuple[fluxform.Stratification, ...] = ()

    def __post_init__(self) -> None:
        if not self.run_strats:
            self.run_strats = (self.strat,) * self.n_runs
        if len(self.run_strats) != self.n_runs:
            raise ValueError(f"{len(self.run_strats)} stratifications for {self.n_runs} runs")

    @property
    def n_runs(self) -> int:
        return self.x.shape[0]

    def flux_weights(self, runs: Sequence[int]) -> torch.Tensor | None:
        """Per sample of :meth:`samples` ``[B, C_out]``: each run's coupling over run 0's on every
        buoyancy-flux channel (1 on tau), so that ``pv_forcing(schema, y * w, strat, L)`` is every
        sample's PV forcing under its own run's stratification (the forcing is linear in each flux,
        with the coupling as its factor); None when the runs share run 0's."""
        if all(self.run_strats[r] == self.strat for r in runs):
            return None
        sources = qg_flux_sources(self.schema)
        w = torch.tensor([[1.0 if what == "tau" else self.run_strats[r].coupling(i, j) / self.strat.coupling(i, j)
                           for what, i, j, _ in sources] for r in runs], dtype=self.y.dtype)
        return w.repeat_interleave(self.y.shape[1], dim=0)

    def samples(self, runs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, S) of the given runs, flattened over (run, time)."""
        idx = torch.as_tensor(list(runs), dtype=torch.long)
        return tuple(t[idx].reshape(-1, *t.shape[2:]) for t in (self.x, self.y, self.S))


def _physical_constants(ds, path: str) -> tuple[tuple[fluxform.Stratification, ...], float]:
    """(each run's stratification, L): the layers' stretching couplings (m^-2; ``stretching_upper`` and
    ``stretching_lower``, attributes shared by the runs or, in a family, ``(run, iface)`` variables;
    ``F1``, ``F2`` in two-layer files written before those) and the domain side (m) the dataset records."""
    a = ds.attrs
    keys = ("stretching_upper", "stretching_lower")
    if all(k in ds.data_vars for k in keys):
        per_run = [np.asarray(ds[k].values, dtype=np.float64) for k in keys]
    else:
        keys = keys if keys[0] in a else ("F1", "F2")
        missing = [k for k in keys if k not in a]
        if missing:
            raise ValueError(f"dataset {path} lacks the attribute(s) {missing} (stretching couplings in m-2); "
                             "write it with `roteq generate` or `roteq coarsen`")
        per_run = [np.broadcast_to(np.atleast_1d(np.asarray(a[k], dtype=np.float64)), (ds.sizes["run"], ds.sizes[
            "lev"] - 1)) for k in keys]
    if "L" not in a:
        raise ValueError(f"dataset {path} lacks the attribute 'L' (domain side in m); write it with `roteq generate` "
                         "or `roteq coarsen`")
    try:
        strats = tuple(fluxform.Stratification(tuple(up), tuple(low)) for up, low in zip(*per_run))
    except ValueError as e:
        raise ValueError(f"dataset {path}: {e}") from None
    if any(s.nlayers != ds.sizes["lev"] for s in strats):
        raise ValueError(f"dataset {path}: its stretching couplings describe {strats[0].nlayers} layers, its data "
                         f"{ds.sizes['lev']}")
    return strats, float(a["L"])


def _drag_rates(ds, path: str) -> np.ndarray:
    """Each run's bottom drag rate [1/s]: the ``rek`` variable (``roteq generate`` writes one per run), or
    for files without it the single value of the ``solver`` attribute."""
    if "rek" in ds.data_vars:
        return np.asarray(ds["rek"].values, dtype=np.float64)
    solver = json.loads(ds.attrs.get("solver", "{}"))
    if not isinstance(solver.get("rek"), (int, float)):
        raise ValueError(f"dataset {path} records no drag rate per run (variable 'rek'), which a model with regime "
                         "inputs needs; regenerate it with `roteq generate`")
    return np.full(ds.sizes["run"], float(solver["rek"]))


def _refuse_raw_solver_output(ds, path: str) -> None:
    """A high-resolution solver file (pyqg's ``pyqg:*`` attributes, or one saved for coarse-graining) has
    PV but no subgrid fluxes: say which step makes training data of it, not which variable it lacks."""
    raw = any(str(k).startswith(("pyqg:", "roteq:")) for k in ds.attrs)
    if raw and "tau" not in ds.variables:
        raise ValueError(f"{path} is raw pyqg output (high-resolution PV, no subgrid fluxes); run `roteq coarsen "
                         f"{os.path.basename(path)} --coarse-nx N --out-file coarse.nc` first (docs/retraining.md) and "
                         "give its output here")


def load_dataset(path: str | os.PathLike, schema: Schema | None = None, s_target: str = "S_flux",
                 min_runs: int = 2, snapshot_every: int = 1, regime: bool = False) -> QGData:
    """Read a coarse dataset into memory, stacked for ``schema`` (default ``qg_schema(N, regime)`` for
    the dataset's N layers; ``regime``: with each run's stretching couplings and drag as inputs).

    ``min_runs``: fewer runs are refused (training splits train/validation by run; 1 for calibration).
    ``snapshot_every``: keep every k-th snapshot of each run (from the first).
    """
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
        raise ValueError(f"snapshot_every must be an integer >= 1; got {snapshot_every!r}")
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training dataset {path} does not exist (make one with `roteq generate`)")
    # checked against its checksum first; a damaged file is refused, naming the damaged variable
    ds = open_netcdf(path, "training dataset", "re-run the `roteq generate` (or `roteq coarsen`) command that made it")
    with ds:
        digest = ds.encoding["sha256"]
        if snapshot_every > 1:
            ds = ds.isel(time=slice(None, None, snapshot_every))
        _refuse_raw_solver_output(ds, path)
        schema = schema or qg_schema(ds.sizes.get("lev", 2), regime=regime)
        if s_target not in ds:
            raise ValueError(f"dataset {path} lacks the PV forcing target {s_target!r}")
        strats, L = _physical_constants(ds, path)
        regime = None
        if qg_has_regime(schema):
            regime = (np.array([s.upper for s in strats]), np.array([s.lower for s in strats]), _drag_rates(ds, path))
        try:
            named = qg_dataset_fields(ds, schema, regime)
        except ValueError as e:
            raise ValueError(f"dataset {path}: {e}") from None
        try:  # the schema refuses NaN/inf and wrong shapes; the message gains the file's name
            x = schema.stack({f.name: torch.from_numpy(np.ascontiguousarray(named[f.name])) for f in schema.inputs})
            y = schema.stack({f.name: torch.from_numpy(np.ascontiguousarray(named[f.name])) for f in schema.outputs},
                             "outputs")
        except ValueError as e:
            raise ValueError(f"dataset {path}: {e}; regenerate it") from None
        S = torch.from_numpy(np.ascontiguousarray(ds[s_target].values, dtype=np.float32))
        attrs = dict(ds.attrs)
    if not torch.isfinite(S).all():
        run = int((~torch.isfinite(S)).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"dataset {path}: {s_target} of run {run} holds NaN or inf; regenerate it")
    if x.shape[0] < min_runs:
        raise ValueError(f"dataset {path} has {x.shape[0]} run(s); at least {min_runs} are needed (training splits "
                         "train/validation by run)")
    return QGData(x.contiguous(), y.contiguous(), S.contiguous(), schema, strats[0], L, path, digest, attrs,
                  strats)


def field_scales(schema: Schema, which: str, stacked: torch.Tensor) -> dict[str, float]:
    """One scale per field: RMS over samples and grid of the field's rotation-invariant norm.

    ``stacked`` is ``[..., C, y, x]``. Vector: ``sqrt(mean(x^2 + y^2))``; tensor (xx, xy, yy):
    ``sqrt(mean(xx^2 + 2 xy^2 + yy^2))`` (Frobenius); scalar: ``sqrt(mean(b^2))``. Zero fields
    get 1.
    """
    out = {}
    for f in schema.fields(which):
        part = stacked[..., schema.channel_slices(which)[f.name], :, :].double()
        w = torch.ones(part.shape[-3], dtype=torch.float64)
        if f.kind is Kind.TENSOR:
            w[1] = 2.0  # the off-diagonal component appears twice in the full tensor
        sq = (part**2 * w[:, None, None]).sum(dim=-3)
        s = float(sq.mean().sqrt())
        out[f.name] = s if s > 0 and math.isfinite(s) else 1.0
    return out


def pv_forcing(schema: Schema, y: torch.Tensor, strat: fluxform.Stratification, L: float,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """PV forcing ``[B, N, n, n]`` (s^-2) implied by stacked fluxes ``y`` ``[B, C_out, n, n]``; with
    ``weights`` ``[B, C_out]`` (:meth:`QGData.flux_weights`) each sample's under its own stratification."""
    if weights is not None:
        y = y * weights[..., None, None]
    tau, Fb = qg_fluxes(schema.unstack(y, "outputs"))
    return fluxform.pv_forcing_from_fluxes(tau, Fb, strat, L)
