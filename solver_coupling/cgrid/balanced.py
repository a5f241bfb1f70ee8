r"""QG-balanced injection of a closure's tendencies in a walled, zonally periodic channel.

pyqg only ever feels the closure through its PV forcing (roteq_param/forcing.py)::

    S_1 = curl(du_1) - F1 db_1,   S_2 = curl(du_2) + F2 db_2        [s^-2]

(``du = -div tau``, ``db = -div Fb``; two layers, ``F_i = f0^2 / (g' H_i)`` [m^-2]). The divergent and
isotropic parts of ``du`` and the ageostrophic split between ``du`` and ``db`` never reach pyqg, so
training never constrained them; a primitive-equation model such as Veros feels all of it, and the
unconstrained part excites fast (inertia-gravity) modes. :class:`ChannelBalance` keeps only what pyqg
sees: it forms ``S`` from C-grid tendencies, inverts the two-layer QG PV operator for the streamfunction
tendency ``dpsi_i`` [m^2 s^-2], and returns the balanced tendencies

    du_i = -d_y dpsi_i (u-points),  dv_i = d_x dpsi_i (v-points),  db = dpsi_1 - dpsi_2 (centres).

Grid (the adapter's, :mod:`solver_coupling.cgrid.staggered`): arrays ``[..., ny + 1, nx]``, rows
``0 .. ny - 1`` wet, row ``ny`` the land row that closes the channel (walls at the south faces of rows 0
and ny), x periodic. ``dpsi`` lives at corners ``(j, i)``, rows ``j = 0 .. ny``, so that

* the velocity tendencies are exact differences of one corner field: their C-grid divergence is 0 to
  round-off, and their curl at interior corners is the 5-point Laplacian of ``dpsi``;
* ``dpsi`` is constant along each wall (the wall rows ``j = 0`` and ``j = ny``): no flow through walls.

S is formed at interior corners (the curl of C-grid velocities lives there; ``db`` is averaged from
centres to corners) and the inversion there is exact to round-off (a sine transform in y, Fourier in x).
The wall values of ``dpsi`` are fixed by two constraints, as in a QG channel: each layer's zonal transport
is unchanged (the same constant on both walls, so the domain sum of ``du_i`` vanishes, as the flux-form
``-div tau`` does), and the domain sum of ``db`` vanishes (mass/heat conservation, as ``-div Fb``). That
adds a multiple of the one zonally uniform, wall-symmetric homogeneous baroclinic mode (trapped within a
deformation radius of the walls), which carries no PV at interior corners.

The buoyancy tendency goes back to centres by the 4-corner average, so the returned tendencies' own PV
tendency equals S to round-off in the vorticity and to second order (the average) in the stretching.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ChannelBalance"]


class ChannelBalance:
    """QG-balanced tendencies in a two-layer zonal channel on the adapter's C-grid.

    Parameters
    ----------
    nx, ny:
        Cells along x (periodic) and wet rows along y (walled); arrays are ``[..., ny + 1, nx]``.
    dx:
        Grid spacing [m] (square cells).
    F1, F2:
        Stretching couplings ``f0^2 / (g' H_i)`` [m^-2], top layer first.
    """

    def __init__(self, nx: int, ny: int, dx: float, F1: float, F2: float):
        self.nx, self.ny, self.dx = int(nx), int(ny), float(dx)
        self.F = np.array([float(F1), float(F2)])
        if self.nx < 2 or self.ny < 3 or not (self.dx > 0 and np.all(self.F > 0) and np.all(np.isfinite(self.F))):
            raise ValueError(f"ChannelBalance needs nx >= 2, ny >= 3, dx > 0 and F1, F2 > 0; got nx={nx}, ny={ny}, "
                             f"dx={dx}, F=({F1}, {F2})")
        nx, ny, h2 = self.nx, self.ny, self.dx**2
        # Eigenvalues of the 5-point Laplacian on the odd (about the walls) 2 ny-periodic extension in y
        ky = np.pi * np.arange(2 * ny) / (2 * ny)
        kx = np.pi * np.fft.fftfreq(nx)  # = pi m / nx
        K2 = (4.0 / h2) * (np.sin(ky)[:, None] ** 2 + np.sin(kx)[None, :] ** 2)  # (2 ny, nx), >= 0
        F1, F2 = self.F
        det = K2 * (K2 + F1 + F2)  # of [[-K2 - F1, F1], [F2, -K2 - F2]]
        # the (0, 0) mode is absent from an odd extension; guard its division
        self._inv = np.where(det > 0, 1.0 / np.where(det > 0, det, 1.0), 0.0)
        self._K2 = K2
        # The wall-symmetric homogeneous baroclinic mode: (D_yy - F1 - F2) b = 0 at interior rows,
        # b = 1 on both walls; psi_1 = F1 b / (F1 + F2), psi_2 = -F2 b / (F1 + F2) carry no PV.
        n = ny - 1
        A = (np.diag(np.full(n, -2.0 / h2 - F1 - F2)) + np.diag(np.full(n - 1, 1.0 / h2), 1)
             + np.diag(np.full(n - 1, 1.0 / h2), -1))
        rhs = np.zeros(n)
        rhs[0] = rhs[-1] = -1.0 / h2
        b_mode = np.concatenate([[1.0], np.linalg.solve(A, rhs), [1.0]])  # rows 0 .. ny
        self._mode = np.stack([F1, -F2])[:, None, None] / (F1 + F2) * b_mode[None, :, None] * np.ones((1, 1, nx))
        self._mode_db_sum = self._centre_sum(self.corners_to_centres(self._mode[0] - self._mode[1]))

    # ------------------------------------------------------------------ pieces
    def _check(self, a: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(a, dtype=float)
        if a.shape != (2, self.ny + 1, self.nx):
            raise ValueError(f"{name} must have shape (2, ny + 1, nx) = {(2, self.ny + 1, self.nx)}; got {a.shape}")
        return a

    def _centre_sum(self, c: np.ndarray) -> float:
        return float(c[..., : self.ny, :].sum())

    def corners_to_centres(self, z: np.ndarray) -> np.ndarray:
        """Mean of the four corners (rows ``0 .. ny``) of each wet cell; the land row gets 0. Any leading axes."""
        c = np.zeros_like(z)
        zz = z + np.roll(z, -1, axis=-1)
        c[..., : self.ny, :] = 0.25 * (zz[..., : self.ny, :] + zz[..., 1:, :])
        return c

    def centres_to_corners(self, c: np.ndarray) -> np.ndarray:
        """Mean of the four cells around each interior corner (rows ``1 .. ny - 1``); wall rows get 0."""
        z = np.zeros_like(c)
        cc = c + np.roll(c, 1, axis=-1)
        z[..., 1 : self.ny, :] = 0.25 * (cc[..., : self.ny - 1, :] + cc[..., 1 : self.ny, :])
        return z

    def curl(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """``d_x dv - d_y du`` at interior corners (rows ``1 .. ny - 1``), 0 on the wall rows [units of du per m]."""
        z = np.zeros_like(du)
        r = slice(1, self.ny)
        z[..., r, :] = ((dv[..., r, :] - np.roll(dv, 1, axis=-1)[..., r, :])
                        - (du[..., r, :] - du[..., : self.ny - 1, :])) / self.dx
        return z

    def pv_forcing(self, du, dv, db) -> np.ndarray:
        """PV forcing ``S`` (2, ny + 1, nx) [s^-2] at corners, 0 on the wall rows, from C-grid tendencies.

        ``du`` on u-points and ``dv`` on v-points [m s^-2], ``db`` (2, ny + 1, nx) the per-layer interface
        tendency at centres [m^2 s^-2] (pyqg's layer-wise ``-div Fb_i``): ``S_1 = curl du_1 - F1 db_1``,
        ``S_2 = curl du_2 + F2 db_2``, ``db`` averaged to corners.
        """
        du, dv, db = self._check(du, "du"), self._check(dv, "dv"), self._check(db, "db")
        stretch = self.centres_to_corners(db) * np.array([-self.F[0], self.F[1]])[:, None, None]
        return self.curl(du, dv) + stretch

    def _odd_laplacian(self, z: np.ndarray) -> np.ndarray:
        """5-point Laplacian at interior corners of a corner field that is odd about the walls (0 on them)."""
        ny = self.ny
        ext = np.zeros((*z.shape[:-2], 2 * ny, self.nx))
        ext[..., 1:ny, :] = z[..., 1:ny, :]
        ext[..., ny + 1 :, :] = -z[..., ny - 1 : 0 : -1, :]
        lap = (np.roll(ext, 1, -1) + np.roll(ext, -1, -1) + np.roll(ext, 1, -2) + np.roll(ext, -1, -2) - 4 * ext)
        out = np.zeros_like(z)
        out[..., 1:ny, :] = lap[..., 1:ny, :] / self.dx**2
        return out

    def vorticity_damping(self, u: np.ndarray, v: np.ndarray, rate: float) -> np.ndarray:
        """PV forcing ``-nu4 lap^2 zeta`` [s^-2] at corners of a biharmonic viscosity on the vorticity of (u, v).

        pyqg's fixed closure term ``grid_damping`` (roteq_param/fluxform.py): a vorticity mode at the
        grid's Nyquist wavenumber decays at ``rate`` [1/s]. On this 5-point grid that mode's ``lap^2`` is
        ``16 / dx^4``, so ``nu4 = rate dx^4 / 16`` [m^4 s^-1]. ``zeta`` [s^-1] is the curl of the C-grid
        velocities ``u``, ``v`` (2, ny + 1, nx) [m s^-1] at interior corners and 0 on the walls (free slip),
        and so is its Laplacian (odd about the walls), as for a free-slip wall in a QG channel.
        """
        zeta = self.curl(self._check(u, "u"), self._check(v, "v"))
        return -(float(rate) * self.dx**4 / 16.0) * self._odd_laplacian(self._odd_laplacian(zeta))

    def invert(self, S: np.ndarray) -> np.ndarray:
        """Streamfunction tendency ``dpsi`` (2, ny + 1, nx) [m^2 s^-2] at corners for PV forcing S [s^-2].

        Solves ``lap dpsi_1 - F1 (dpsi_1 - dpsi_2) = S_1``, ``lap dpsi_2 + F2 (dpsi_1 - dpsi_2) = S_2`` at
        interior corners (5-point Laplacian) with ``dpsi = 0`` on the walls, then adds the homogeneous
        mode that makes the domain sum of ``db`` vanish (module docstring).
        """
        S = self._check(S, "S")
        ny = self.ny
        ext = np.zeros((2, 2 * ny, self.nx))  # odd extension about the wall rows 0 and ny
        ext[:, 1:ny] = S[:, 1:ny]
        ext[:, ny + 1 :] = -S[:, ny - 1 : 0 : -1]
        Sh = np.fft.fft2(ext)
        F1, F2, K2 = self.F[0], self.F[1], self._K2
        # [[-K2 - F1, F1], [F2, -K2 - F2]]^-1 = [[-K2 - F2, -F1], [-F2, -K2 - F1]] / det
        p1 = ((-K2 - F2) * Sh[0] - F1 * Sh[1]) * self._inv
        p2 = (-F2 * Sh[0] + (-K2 - F1) * Sh[1]) * self._inv
        dpsi = np.fft.ifft2(np.stack([p1, p2])).real[:, : ny + 1]
        dpsi[:, 0] = dpsi[:, ny] = 0.0
        # mass: sum of db = 0, through the homogeneous mode (wall-symmetric: transports unchanged)
        alpha = -self._centre_sum(self.corners_to_centres(dpsi[0] - dpsi[1])) / self._mode_db_sum
        return dpsi + alpha * self._mode

    def tendencies(self, dpsi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Balanced ``(du, dv, db)`` from corner ``dpsi``: du (2, ny + 1, nx) on u-points, dv on v-points
        [m s^-2] (0 on the land row and the wall faces), ``db = dpsi_1 - dpsi_2`` (ny + 1, nx) at centres
        [m^2 s^-2] (0 on the land row)."""
        dpsi = self._check(dpsi, "dpsi")
        ny = self.ny
        du = np.zeros_like(dpsi)
        dv = np.zeros_like(dpsi)
        du[:, :ny] = -(dpsi[:, 1:] - dpsi[:, :ny]) / self.dx
        dv[:, 1:ny] = (np.roll(dpsi, -1, axis=-1)[:, 1:ny] - dpsi[:, 1:ny]) / self.dx
        db = self.corners_to_centres(dpsi[0] - dpsi[1])
        return du, dv, db

    def __call__(self, du, dv, db) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Balanced ``(du, dv, db, dpsi)`` from a closure's C-grid tendencies (see :meth:`pv_forcing`)."""
        dpsi = self.invert(self.pv_forcing(du, dv, db))
        return (*self.tendencies(dpsi), dpsi)
