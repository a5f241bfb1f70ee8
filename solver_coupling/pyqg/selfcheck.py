"""Physical consistency of :mod:`roteq_param.symmetry` on a live pyqg state.

Rotating the streamfunction (a scalar under rotations, a pseudoscalar under
reflections because pyqg keeps f0 fixed) and then differentiating with pyqg's
own spectral operators must give the same velocity as rotating pyqg's (u, v) as
a vector; forming (uu, uv, vv) from rotated velocities must equal rotating the
tensor; vorticity must flip sign under reflections. These identities pin the
conventions of docs/design.md §2 against an independent implementation (pyqg's).
"""

from __future__ import annotations

import numpy as np

from roteq_param import symmetry
from roteq_param.symmetry import Group, Kind
from solver_coupling.pyqg.state import velocity


def _velocity_from_psi(m, psi: np.ndarray) -> np.ndarray:
    """(u, v) of a grid-space streamfunction with pyqg's FFT and wavenumbers: [nz, 2, ny, nx] in m/s."""
    return np.stack(velocity(m, m.fft(np.ascontiguousarray(psi, dtype=float))), axis=1)


def _vorticity(m, vel: np.ndarray) -> np.ndarray:
    """dv/dx - du/dy with pyqg's spectral operators, [nz, ny, nx] in 1/s."""
    uh = m.fft(np.ascontiguousarray(vel[:, 0]))
    vh = m.fft(np.ascontiguousarray(vel[:, 1]))
    return m.ifft(1j * m.k * vh - 1j * m.l * uh)


def symmetry_selfcheck(m, group: Group | str = "D4") -> dict[str, float]:
    """Largest relative violation of each identity over the exact elements of ``group``.

    ``m`` is a pyqg model on a square grid. Returns a dict with keys
    ``velocity`` (transform psi then differentiate vs transform (u, v)),
    ``tensor`` (rotate then form uu, uv, vv vs rotate the tensor) and
    ``vorticity`` (vorticity of rotated velocity vs rotated pseudoscalar).
    All should be at round-off (~1e-15).
    """
    group = Group.parse(group)
    psi = m.ifft(m.ph)  # streamfunction [m^2/s], nz x ny x nx
    vel = _velocity_from_psi(m, psi)
    tensor = np.stack([vel[:, 0] ** 2, vel[:, 0] * vel[:, 1], vel[:, 1] ** 2], axis=1)
    zeta = _vorticity(m, vel)
    scale_v, scale_t, scale_z = (float(np.abs(a).max()) for a in (vel, tensor, zeta))
    worst = {"velocity": 0.0, "tensor": 0.0, "vorticity": 0.0}
    for g in group.exact_elements():
        vel_g = symmetry.act(g, vel, Kind.VECTOR)
        from_psi = _velocity_from_psi(m, symmetry.act(g, psi, Kind.PSEUDOSCALAR))
        worst["velocity"] = max(worst["velocity"], float(np.abs(from_psi - vel_g).max()) / scale_v)
        formed = np.stack([vel_g[:, 0] ** 2, vel_g[:, 0] * vel_g[:, 1], vel_g[:, 1] ** 2], axis=1)
        rotated = symmetry.act(g, tensor, Kind.TENSOR)
        worst["tensor"] = max(worst["tensor"], float(np.abs(formed - rotated).max()) / scale_t)
        zeta_g = symmetry.act(g, zeta, Kind.PSEUDOSCALAR)
        worst["vorticity"] = max(worst["vorticity"], float(np.abs(_vorticity(m, vel_g) - zeta_g).max()) / scale_z)
    return worst
