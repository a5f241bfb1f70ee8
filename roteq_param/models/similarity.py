"""Resolution-aware similarity scaling of a flux network's inputs and outputs (``ModelConfig.similarity``).

Why
---
A network trained on one grid learns a function of grid-point values: at another grid spacing the
same flow gives other values (the resolved velocity gradients grow as the grid is refined) and the
subgrid fluxes have other magnitudes (the gradient model gives ``tau ~ Delta^2 |grad u|^2``). In the
spirit of Perezhogin et al. (2025, GRL), the network here sees and predicts dimensionless fields:
every field is measured in units built from the grid spacing ``Delta`` (m) and the sample's
velocity-gradient scale ``G`` (1/s), so that one network can run at 48^2, 64^2 and 96^2.

How
---
A field with units ``m^a s^c`` (read from the schema's CF unit strings) is divided by
``(Delta / Delta_ref)^a (G / G_ref)^(-c)`` on top of its fixed per-field scale: velocity
(``m s-1``) by ``Delta G``, ``b`` (``m2 s-1``) by ``Delta^2 G``, beta (``m-1 s-1``) by ``G / Delta``,
the momentum flux (``m2 s-2``) by ``Delta^2 G^2`` and the buoyancy flux (``m3 s-2``) by
``Delta^3 G^2``. ``Delta_ref, G_ref`` are the training data's, so on the training grid the factors
are O(1) and the fixed scales keep their meaning.

``G`` is one number per sample: the RMS over the grid and the layers of the Frobenius norm of the
velocity gradient, by centred differences, ``G^2 = mean(|d_x u|^2 + |d_y u|^2 + |d_x v|^2 +
|d_y v|^2)``. It is a sum of squares over the whole periodic grid, so every rotation and reflection
leaves it unchanged (the grid points are permuted and the derivatives swap and change sign), and
each field is divided by a scalar: the scaling keeps the network exactly equivariant.
"""

from __future__ import annotations

import re

import torch

from roteq_param.fields import Schema
from roteq_param.symmetry import Kind

__all__ = ["unit_exponents", "channel_exponents", "velocity_channels", "gradient_scale", "channel_factors",
           "require_grid_spacing"]

_TOKEN = re.compile(r"^(m|s)(-?\d+)?$")


def unit_exponents(units: str) -> tuple[int, int]:
    """``(a, c)`` of a CF unit string ``m^a s^c`` (``"m2 s-1"`` -> ``(2, -1)``; ``""`` -> ``(0, 0)``)."""
    a = c = 0
    for token in units.split():
        match = _TOKEN.match(token)
        if not match:
            raise ValueError(f"similarity scaling needs units made of m and s (e.g. 'm2 s-1'); got {units!r}")
        power = int(match.group(2) or 1)
        if match.group(1) == "m":
            a += power
        else:
            c += power
    return a, c


def channel_exponents(schema: Schema, which: str) -> torch.Tensor:
    """``[C, 2]`` float64: the exponents of ``Delta`` and ``G`` in each channel's unit, ``(a, -c)``."""
    rows = []
    for f in schema.fields(which):
        a, c = unit_exponents(f.units)
        rows += [(a, -c)] * f.n_components
    return torch.tensor(rows, dtype=torch.float64)


def velocity_channels(schema: Schema) -> list[int]:
    """Input channels of the gridded velocity vectors (units ``m s-1``), ``[u_1, v_1, u_2, v_2, ...]``."""
    out = []
    for f in schema.inputs:
        if f.kind is Kind.VECTOR and f.gridded and unit_exponents(f.units) == (1, -1):
            s = schema.channel_slices("inputs")[f.name]
            out += list(range(s.start, s.stop))
    if not out:
        raise ValueError("similarity scaling needs gridded velocity inputs (vector fields in m s-1); the schema "
                         f"has {[f.name for f in schema.inputs]}")
    return out


def require_grid_spacing(dx: float | None) -> float:
    """``dx`` [m] as a float; a clear error when a similarity-scaled model is called without it."""
    if dx is None:
        raise ValueError("a similarity-scaled model needs the grid spacing dx [m] of its inputs")
    return float(dx)


def gradient_scale(velocity: torch.Tensor, dx: float | torch.Tensor) -> torch.Tensor:
    """``G`` [1/s] per sample: RMS Frobenius norm of the velocity gradient, centred differences.

    ``velocity`` is ``[B, 2 * layers, y, x]`` (u, v of each layer) in m/s on a periodic grid of
    spacing ``dx`` (m); returns ``[B]``.
    """
    dudx = torch.roll(velocity, -1, -1) - torch.roll(velocity, 1, -1)
    dudy = torch.roll(velocity, -1, -2) - torch.roll(velocity, 1, -2)
    # sum over the components (u, v) and both derivatives, mean over the layers and the grid
    layers = velocity.shape[1] // 2
    sq = (dudx.square() + dudy.square()).sum(dim=1).mean(dim=(-2, -1)) / layers
    return sq.sqrt() / (2.0 * dx)


def channel_factors(exponents: torch.Tensor, dx_ratio: torch.Tensor, g_ratio: torch.Tensor) -> torch.Tensor:
    """``[B, C]``: ``(Delta/Delta_ref)^a (G/G_ref)^b`` per sample and channel (``exponents`` ``[C, 2]``,
    ``dx_ratio`` a 0-d or ``[B]`` tensor, ``g_ratio`` ``[B]``). Tensors only, so that a traced graph
    keeps ``dx`` an input."""
    e = exponents.to(dtype=g_ratio.dtype, device=g_ratio.device)
    return torch.exp(torch.log(dx_ratio).reshape(-1, 1) * e[:, 0] + torch.log(g_ratio).reshape(-1, 1) * e[:, 1])
