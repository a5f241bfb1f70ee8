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

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from roteq_param import fluxform
from roteq_param.fields import Schema, qg_dataset_fields, qg_fluxes, qg_schema
from roteq_param.models.store import sha256_file
from roteq_param.symmetry import Kind

__all__ = ["QGData", "load_dataset", "field_scales", "pv_forcing"]


@dataclass
class QGData:
    """A coarse dataset in memory, stacked for the schema (float32 torch tensors).

    ``x``: ``[R, T, C_in, n, n]`` stacked inputs; ``y``: ``[R, T, C_out, n, n]`` stacked fluxes;
    ``S``: ``[R, T, N, n, n]`` PV forcing target (s^-2); ``strat`` the layers' coupling (m^-2), ``L``
    the domain side (m).
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

    @property
    def n_runs(self) -> int:
        return self.x.shape[0]

    def samples(self, runs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, S) of the given runs, flattened over (run, time)."""
        idx = torch.as_tensor(list(runs), dtype=torch.long)
        return tuple(t[idx].reshape(-1, *t.shape[2:]) for t in (self.x, self.y, self.S))


def _physical_constants(ds, path: str) -> tuple[fluxform.Stratification, float]:
    """(stratification, L): the layers' stretching couplings (m^-2; ``stretching_upper`` and
    ``stretching_lower``, or ``F1``, ``F2`` in two-layer files written before those) and the domain
    side (m) the dataset records."""
    a = ds.attrs
    keys = ("stretching_upper", "stretching_lower") if "stretching_upper" in a else ("F1", "F2")
    missing = [k for k in (*keys, "L") if k not in a]
    if missing:
        raise ValueError(f"dataset {path} lacks the attribute(s) {missing} (stretching couplings in m-2 and domain "
                         "side L in m); write it with `roteq generate` or `roteq coarsen`")
    upper, lower = (np.atleast_1d(np.asarray(a[k], dtype=np.float64)) for k in keys)
    try:
        strat = fluxform.Stratification(tuple(upper), tuple(lower))
    except ValueError as e:
        raise ValueError(f"dataset {path}: {e}") from None
    if strat.nlayers != ds.sizes["lev"]:
        raise ValueError(f"dataset {path}: its stretching attributes describe {strat.nlayers} layers, its data "
                         f"{ds.sizes['lev']}")
    return strat, float(a["L"])


def load_dataset(path: str | os.PathLike, schema: Schema | None = None, s_target: str = "S_flux",
                 min_runs: int = 2) -> QGData:
    """Read a coarse dataset into memory, stacked for ``schema`` (default ``qg_schema(N)`` for the
    dataset's N layers).

    ``min_runs``: fewer runs are refused (training splits train/validation by run; 1 for calibration).
    """
    import xarray as xr

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training dataset {path} does not exist (make one with `roteq generate`)")
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError) as e:  # netCDF's "HDF error", xarray's "no backend matched"
        raise ValueError(f"cannot read training dataset {path} ({type(e).__name__}): the file is truncated or "
                         "corrupt, or not netCDF; re-run the `roteq generate` command that made it") from None
    with ds:
        schema = schema or qg_schema(ds.sizes.get("lev", 2))
        if s_target not in ds:
            raise ValueError(f"dataset {path} lacks the PV forcing target {s_target!r}")
        try:
            named = qg_dataset_fields(ds, schema)
        except ValueError as e:
            raise ValueError(f"dataset {path}: {e}") from None
        strat, L = _physical_constants(ds, path)
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
    return QGData(x.contiguous(), y.contiguous(), S.contiguous(), schema, strat, L, path, sha256_file(path), attrs)


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


def pv_forcing(schema: Schema, y: torch.Tensor, strat: fluxform.Stratification, L: float) -> torch.Tensor:
    """PV forcing ``[B, N, n, n]`` (s^-2) implied by stacked fluxes ``y`` ``[B, C_out, n, n]``."""
    tau, Fb = qg_fluxes(schema.unstack(y, "outputs"))
    return fluxform.pv_forcing_from_fluxes(tau, Fb, strat, L)
