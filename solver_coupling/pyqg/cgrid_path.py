"""Drive a running pyqg model through the C-grid coupling path (validation of :mod:`solver_coupling.cgrid`).

pyqg is collocated and spectral, so it can hand the C-grid path *exact* staggered
velocities: half-cell spectral shifts of its velocity move u to the west faces
(x = i dx) and v to the south faces (y = j dy), the convention of
:mod:`solver_coupling.cgrid.staggered`. The adapter then does what it does inside a
C-grid ocean model (average to centres, run the flux model, average the fluxes
back, flux-form divergence), and its tendencies are turned into pyqg's PV forcing

    S_i = curl(du_i, dv_i) -/+ F_i db_i     (db_i = -div F_i; upper layer -, lower +)

with the curl formed at corners by the C-grid kernel and averaged to centres.
Comparing this with :class:`solver_coupling.pyqg.plugin.RotEqParameterization`
(the collocated spectral path) measures what the staggering costs, online.
"""

from __future__ import annotations

import numpy as np
import pyqg

from solver_coupling.cgrid import staggered
from solver_coupling.cgrid.adapter import CGridAdapter, FluxModel

__all__ = ["cgrid_state", "CGridQParameterization"]


def cgrid_state(m: pyqg.QGModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact C-grid state of a pyqg model: u on west faces, v on south faces (nz, n, n) [m/s], b at centres [m^2/s]."""
    n = m.nx
    ph = m.ph
    shift_x = np.exp(-1j * m.k * m.dx / 2)  # pyqg points sit at (i + 1/2) dx: u-points are dx/2 to the west
    shift_y = np.exp(-1j * m.l * m.dy / 2)
    u = np.fft.irfft2(-1j * m.l * ph * shift_x, s=(n, n))
    v = np.fft.irfft2(1j * m.k * ph * shift_y, s=(n, n))
    b = np.fft.irfft2(ph[0] - ph[1], s=(n, n))
    return u, v, b


class CGridQParameterization(pyqg.QParameterization):
    """A flux model applied to a pyqg run through the C-grid path.

    ``flux_model(u_c, v_c, b_c) -> (tau, Fb)`` on centres, e.g.
    :class:`solver_coupling.cgrid.NetworkClosure` for the trained network.
    """

    def __init__(self, flux_model: FluxModel):
        self.flux_model = flux_model
        self._adapter: CGridAdapter | None = None

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    def __call__(self, m: pyqg.QGModel) -> np.ndarray:
        if self._adapter is None:
            self._adapter = CGridAdapter(self.flux_model, float(m.dx), float(m.dy))
        u, v, b = cgrid_state(m)
        du, dv, db = self._adapter(u, v, b)
        curl = staggered.corner_to_centre(staggered.vorticity(du, dv, float(m.dx), float(m.dy)))
        return np.stack([curl[0] - m.F1 * db[0], curl[1] + m.F2 * db[1]])
