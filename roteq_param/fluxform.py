"""Spectral calculus in flux form on a doubly periodic square domain.

Solver-agnostic: used by the data pipeline (numpy, float64), by the pyqg hook
and by the training loss (torch, float32/float64, autograd through
``torch.fft``). Every function accepts a numpy array or a torch tensor laid out
``[..., y, x]`` (any leading batch dimensions) and returns the same type,
dtype and device.

Conventions (docs/design.md §2-§3)
-----------------------------
* The domain is the square ``[0, L) x [0, L)`` with ``L`` in metres; grid
  point ``(j, i)`` sits at ``y_j = (j + 1/2) L/n``, ``x_i = (i + 1/2) L/n``.
* Derivatives are spectral: ``d/dx <-> i k``, ``d/dy <-> i l`` with
  ``k, l = 2 pi m / L``. The Nyquist wavenumber of an even-sized grid has no
  well-defined odd derivative of a real field, so odd derivatives zero it
  (the Nyquist row and column of the result are 0). Fields built by
  :mod:`roteq_param.coarsen` carry no Nyquist content, so nothing is lost.
* Components: vectors ``[..., 2, y, x]`` are (x, y); symmetric tensors
  ``[..., 3, y, x]`` are (xx, xy, yy), as in :mod:`roteq_param.symmetry`.
* Two-layer fields have a level axis ``[..., 2(lev), ...]`` before the
  component axis; level 0 is the upper layer.
* ``curl(a) = d a_y/dx - d a_x/dy`` and ``div(tau)_i = d tau_ix/dx + d tau_iy/dy``.
* Subgrid tendencies use pyqg's uv-hook sign convention: a momentum flux
  ``tau`` gives ``du/dt = -div(tau)``; a buoyancy flux ``F`` gives
  ``db/dt = -div(F)`` with ``b = eta = psi_1 - psi_2`` (m^2 s^-1, at the
  interface).

Because every tendency here is a derivative, its domain integral (the k = l = 0
mode) is zero up to round-off.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from roteq_param.arrays import is_torch, stack

__all__ = [
    "wavenumbers",
    "ddx",
    "ddy",
    "laplacian",
    "gradient",
    "divergence",
    "curl",
    "tensor_divergence",
    "momentum_tendency",
    "buoyancy_tendency",
    "pv_forcing_from_fluxes",
    "PVForcingOperator",
    "biharmonic_damping_multiplier",
    "half_plane_weights",
    "energy_weights",
    "stretching_coefficients",
    "inversion_matrix",
    "invert_pv",
    "velocity_from_streamfunction",
    "pv_from_streamfunction",
]



def _check_square(x: Any) -> int:
    ny, nx = x.shape[-2], x.shape[-1]
    if ny != nx:
        raise ValueError(f"fields must live on a square grid [..., n, n]; got [..., {ny}, {nx}]")
    if nx % 2:
        raise ValueError(f"grid size must be even; got n={nx}")
    return nx


def wavenumbers(n: int, L: float, *, ny: int | None = None, W: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Angular wavenumbers (rad m^-1) of the rfft2 layout of an ``ny x n`` grid of size ``W x L`` (m).

    Returns ``(k, l)`` broadcastable to shape ``(ny, n//2 + 1)``: ``k`` along x (last axis,
    non-negative), ``l`` along y (numpy ``fftfreq`` order). ``ny`` and ``W`` default to the square
    grid. Bitwise equal to pyqg's ``m.k`` and ``m.l`` for the same grid.
    """
    ny = n if ny is None else ny
    W = L if W is None else W
    # built as pyqg builds them (spacing times integers), so they are bitwise pyqg's
    k = (2.0 * math.pi / L) * np.arange(n // 2 + 1, dtype=np.float64)[None, :]
    l = (2.0 * math.pi / W) * np.append(np.arange(0.0, ny // 2), np.arange(-(ny // 2), 0.0))[:, None]
    return k, l


def _spectral(x: Any):
    """Return (backend fft module, rfft2 of x, n)."""
    n = _check_square(x)
    if is_torch(x):
        import torch

        return torch.fft, torch.fft.rfft2(x), n
    return np.fft, np.fft.rfft2(np.asarray(x)), n


def _multiplier(x: Any, m: np.ndarray) -> Any:
    """Cast a numpy multiplier to the backend, dtype and device of x's spectrum."""
    if is_torch(x):
        import torch

        cdtype = torch.complex128 if x.dtype == torch.float64 else torch.complex64
        return torch.as_tensor(m, dtype=cdtype, device=x.device)
    return m


def _odd_multipliers(n: int, L: float) -> tuple[np.ndarray, np.ndarray]:
    """i k and i l with the Nyquist column / row zeroed (odd derivatives of real fields)."""
    k, l = wavenumbers(n, L)
    ik = 1j * np.broadcast_to(k, (n, n // 2 + 1)).copy()
    il = 1j * np.broadcast_to(l, (n, n // 2 + 1)).copy()
    ik[:, n // 2] = 0.0
    ik[n // 2, :] = 0.0
    il[:, n // 2] = 0.0
    il[n // 2, :] = 0.0
    return ik, il


def _apply(f: Any, L: float, which: str) -> Any:
    fft, fh, n = _spectral(f)
    ik, il = _odd_multipliers(n, L)
    if which == "x":
        m = ik
    elif which == "y":
        m = il
    else:  # laplacian: even derivative, Nyquist kept
        k, l = wavenumbers(n, L)
        m = -(k**2 + l**2) + 0j
    return fft.irfft2(fh * _multiplier(f, m), s=(n, n))


def ddx(f: Any, L: float) -> Any:
    """d f / dx of a field ``[..., y, x]``; result in [f] m^-1."""
    return _apply(f, L, "x")


def ddy(f: Any, L: float) -> Any:
    """d f / dy of a field ``[..., y, x]``; result in [f] m^-1."""
    return _apply(f, L, "y")


def laplacian(f: Any, L: float) -> Any:
    """Laplacian of a field ``[..., y, x]``; result in [f] m^-2."""
    return _apply(f, L, "lap")


def gradient(f: Any, L: float) -> Any:
    """Gradient ``[..., 2(x, y), y, x]`` of a scalar ``[..., y, x]``; units [f] m^-1."""
    return stack([ddx(f, L), ddy(f, L)], axis=-3)


def _check_components(a: Any, d: int, what: str) -> None:
    if a.ndim < 3 or a.shape[-3] != d:
        raise ValueError(f"{what} must have shape [..., {d}, y, x]; got {tuple(a.shape)}")


def divergence(a: Any, L: float) -> Any:
    """Divergence ``d a_x/dx + d a_y/dy`` of a vector ``[..., 2, y, x]``; units [a] m^-1."""
    _check_components(a, 2, "a vector field")
    return ddx(a[..., 0, :, :], L) + ddy(a[..., 1, :, :], L)


def curl(a: Any, L: float) -> Any:
    """Curl ``d a_y/dx - d a_x/dy`` of a vector ``[..., 2, y, x]``; units [a] m^-1."""
    _check_components(a, 2, "a vector field")
    return ddx(a[..., 1, :, :], L) - ddy(a[..., 0, :, :], L)


def tensor_divergence(tau: Any, L: float) -> Any:
    """Divergence of a symmetric tensor ``[..., 3(xx, xy, yy), y, x]``.

    Returns the vector ``(d tau_xx/dx + d tau_xy/dy, d tau_xy/dx + d tau_yy/dy)``
    laid out ``[..., 2, y, x]``, in [tau] m^-1 (m s^-2 for a momentum flux in m^2 s^-2).
    """
    _check_components(tau, 3, "a symmetric tensor field (xx, xy, yy)")
    txx, txy, tyy = tau[..., 0, :, :], tau[..., 1, :, :], tau[..., 2, :, :]
    return stack([ddx(txx, L) + ddy(txy, L), ddx(txy, L) + ddy(tyy, L)], axis=-3)


def momentum_tendency(tau: Any, L: float) -> Any:
    """Momentum tendency ``du/dt = -div(tau)`` (m s^-2) of a momentum flux tau (m^2 s^-2).

    ``tau`` is ``[..., 3(xx, xy, yy), y, x]``; the result is ``[..., 2(x, y), y, x]``.
    """
    return -tensor_divergence(tau, L)


def buoyancy_tendency(Fb: Any, L: float) -> Any:
    """Tendency ``db/dt = -div(F_b)`` (m^2 s^-2) of b = psi_1 - psi_2 from a buoyancy flux (m^3 s^-2).

    ``Fb`` is ``[..., 2(x, y), y, x]``; the result is ``[..., y, x]``.
    """
    return -divergence(Fb, L)


def biharmonic_damping_multiplier(n: int, L: float, rate: float) -> np.ndarray:
    """Multiplier ``M`` [1/(m^2 s)] with ``S^ = M psi^`` for a biharmonic viscosity on relative vorticity.

    ``S = -nu4 lap^2 zeta`` with ``zeta = lap psi`` [1/s] and ``nu4 = rate (dx/pi)^4`` [m^4/s],
    ``dx = L/n``: a vorticity mode at the grid's Nyquist wavenumber ``pi/dx`` decays at ``rate``
    [1/s], whatever the resolution. Spectrally ``M = nu4 K^6`` with ``K^2 = k^2 + l^2`` (pyqg's
    wavenumbers, Nyquist kept: the operator is even). It is ``-curl(div tau)`` of the viscous
    momentum flux ``tau = +nu4 lap(grad u + grad u^T)`` (``du/dt = -nu4 lap^2 u``) of the velocity
    ``(u, v) = (-d psi/dy, d psi/dx)``, so it conserves momentum, its domain integral is 0, and it only drains energy
    (``-<psi S> = -nu4 sum K^6 |psi^|^2 <= 0``). ``K`` depends on ``|k|`` alone, so it commutes
    with every 90-degree rotation and reflection of the grid. Shape ``(n, n//2 + 1)``.
    """
    k, l = wavenumbers(n, L)
    nu4 = float(rate) * (L / n / math.pi) ** 4
    return nu4 * (k**2 + l**2) ** 3


def half_plane_weights(ny: int, nk: int) -> np.ndarray:
    """Weights (ny, nk) that turn a half-plane sum into a full-plane sum (even nx, rfft2 layout).

    Each interior column stands for itself and its complex conjugate (weight 2);
    k = 0 and the Nyquist column are their own conjugates (weight 1).
    """
    w = np.full((ny, nk), 2.0)
    w[:, 0] = 1.0
    w[:, -1] = 1.0
    return w


def energy_weights(n: int, F1: float, F2: float) -> np.ndarray:
    """Weights ``w`` ``(2, n, n//2+1)`` with ``sum(w * Re(conj(a^) b^)) = sum_i H_i/H <a_i b_i>``.

    ``<.>`` sums over the grid (Parseval); ``a^`` is an unnormalised rfft2 (pyqg's). The half-plane columns
    0 < k < n/2 stand for two modes (weight 2), the k = 0 and Nyquist columns for one. The layer
    weights are the depth fractions, ``H1/H = F2/(F1+F2)`` and ``H2/H = F1/(F1+F2)`` (pyqg:
    ``F1 = 1/(rd^2 (1+delta))``, ``F2 = delta F1``, ``delta = H1/H2``), so with ``a = psi``,
    ``b = dq/dt`` this is minus the rate of change of the total (kinetic + available potential)
    energy, summed over the grid, per unit mass.
    """
    half = half_plane_weights(n, n // 2 + 1)
    return np.stack([F2 / (F1 + F2) * half, F1 / (F1 + F2) * half]) / n**2


def stretching_coefficients(rd: float, delta: float) -> tuple[float, float]:
    """pyqg's two-layer stretching coefficients (m^-2).

    ``F1 = rd^-2 / (1 + delta)``, ``F2 = delta F1`` with deformation radius
    ``rd`` (m) and layer thickness ratio ``delta = H1/H2``.
    """
    F1 = rd**-2 / (1.0 + delta)
    return F1, delta * F1


class PVForcingOperator:
    """The two-layer PV forcing of :func:`pv_forcing_from_fluxes` as one fused spectral operator.

    With the five flux components of layer ``i`` stacked as
    ``(tau_xx, tau_xy, tau_yy, F_x, F_y)``, the forcing is
    ``S_i^ = sum_c M[i, c] * flux_i,c^`` with precomputed multipliers

    * ``-curl(div tau) -> (il ik) tau_xx^ + ((il)^2 - (ik)^2) tau_xy^ - (ik il) tau_yy^``,
    * ``+F1 div F_1 -> F1 (ik F_x^ + il F_y^)`` and ``-F2 div F_2`` likewise,

    (``ik``, ``il`` with the Nyquist row and column zeroed, as for every odd
    derivative here). One forward and one inverse FFT per call instead of a
    chain of derivatives: this is what the timestep hook and the training loss
    run at every step. Works on numpy arrays and torch tensors (multipliers are
    cached per device and precision).
    """

    def __init__(self, n: int, L: float, F1: float, F2: float):
        if n % 2:
            raise ValueError(f"grid size must be even; got n={n}")
        self.n, self.L, self.F1, self.F2 = int(n), float(L), float(F1), float(F2)
        ik, il = _odd_multipliers(self.n, self.L)
        tau_part = [il * ik, il * il - ik * ik, -ik * il]
        self.multipliers = np.stack([np.stack(tau_part + [sign * ik, sign * il])
                                     for sign in (self.F1, -self.F2)])  # (2 lev, 5 comp, n, n//2+1)
        self._cache: dict = {}

    def _m(self, x: Any) -> Any:
        if not is_torch(x):
            return self.multipliers
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = _multiplier(x, self.multipliers)
        return self._cache[key]

    def __call__(self, fluxes: Any) -> Any:
        """``fluxes [..., 2(lev), 5(txx, txy, tyy, Fx, Fy), n, n]`` (SI) -> S ``[..., 2(lev), n, n]`` in s^-2."""
        if fluxes.ndim < 4 or tuple(fluxes.shape[-4:]) != (2, 5, self.n, self.n):
            raise ValueError(f"fluxes must have shape [..., 2(lev), 5(txx, txy, tyy, Fx, Fy), {self.n}, {self.n}]; "
                             f"got {tuple(fluxes.shape)}")
        fft, fh, n = _spectral(fluxes)
        sh = (fh * self._m(fluxes)).sum(-3)
        return fft.irfft2(sh, s=(n, n))


def pv_forcing_from_fluxes(tau: Any, Fb: Any, F1: float, F2: float, L: float) -> Any:
    """Two-layer PV forcing (s^-2) implied by momentum and buoyancy fluxes (docs/design.md §3).

    ``S_1 = -curl(div tau_1) + F1 div F_1`` and
    ``S_2 = -curl(div tau_2) - F2 div F_2``, so that S is what is added to
    dq/dt (pyqg's q-parameterization convention); it is the PV counterpart of
    ``du/dt = -div(tau)`` and ``db/dt = -div(F)``. (Upper layer: q1 contains
    -F1*eta, so an eta flux enters with +F1; lower: q2 contains +F2*eta.)
    Evaluated by :class:`PVForcingOperator`.

    Parameters
    ----------
    tau:
        Momentum flux ``[..., 2(lev), 3(xx, xy, yy), y, x]`` in m^2 s^-2.
    Fb:
        Buoyancy flux ``[..., 2(lev), 2(x, y), y, x]`` in m^3 s^-2, the flux of
        b = psi_1 - psi_2 by each layer's velocity.
    F1, F2:
        pyqg's stretching coefficients in m^-2 (:func:`stretching_coefficients`).
    L:
        Domain side in m.

    Returns
    -------
    ``[..., 2(lev), y, x]`` in s^-2.
    """
    if tau.ndim < 4 or tau.shape[-4] != 2 or tau.shape[-3] != 3:
        raise ValueError(f"tau must have shape [..., 2(lev), 3(xx, xy, yy), y, x]; got {tuple(tau.shape)}")
    if Fb.ndim < 4 or Fb.shape[-4] != 2 or Fb.shape[-3] != 2:
        raise ValueError(f"Fb must have shape [..., 2(lev), 2(x, y), y, x]; got {tuple(Fb.shape)}")
    n = _check_square(tau)
    if is_torch(tau):
        import torch

        fluxes = torch.cat([tau, Fb.to(tau.dtype)], dim=-3)
    else:
        fluxes = np.concatenate([np.asarray(tau), np.asarray(Fb)], axis=-3)
    return PVForcingOperator(n, L, F1, F2)(fluxes)


def inversion_matrix(n: int, L: float, F1: float, F2: float) -> np.ndarray:
    """pyqg's PV inversion psi_hat = a @ q_hat, shape (2, 2, n, n//2+1); the mean mode maps to 0."""
    k, l = wavenumbers(n, L)
    wv2 = np.broadcast_to(k**2 + l**2, (n, n // 2 + 1))
    det = wv2 * (wv2 + F1 + F2)
    det_inv = np.zeros_like(det)
    nz = det != 0
    det_inv[nz] = 1.0 / det[nz]
    return np.array([[-(wv2 + F2) * det_inv, -F1 * det_inv], [-F2 * det_inv, -(wv2 + F1) * det_inv]])


def invert_pv(q: Any, F1: float, F2: float, L: float) -> Any:
    """Streamfunction psi (m^2 s^-1) from two-layer PV q (s^-1), as pyqg inverts it.

    Solves ``q1 = lap psi1 + F1 (psi2 - psi1)``, ``q2 = lap psi2 + F2 (psi1 - psi2)``
    mode by mode; the domain mean of psi is set to 0 (the k = l = 0 mode of q
    is not inverted). ``q`` is ``[..., 2(lev), y, x]``.
    """
    fft, qh, n = _spectral(q)
    a = _multiplier(q, inversion_matrix(n, L, F1, F2) + 0j)
    ph = stack([a[0, 0] * qh[..., 0, :, :] + a[0, 1] * qh[..., 1, :, :],
                 a[1, 0] * qh[..., 0, :, :] + a[1, 1] * qh[..., 1, :, :]], -3)
    return fft.irfft2(ph, s=(n, n))


def velocity_from_streamfunction(psi: Any, L: float) -> Any:
    """Velocity ``(u, v) = (-d psi/dy, d psi/dx)`` in m s^-1 from psi in m^2 s^-1.

    ``psi`` is ``[..., y, x]``; the result is ``[..., 2(x, y), y, x]``.
    """
    return stack([-ddy(psi, L), ddx(psi, L)], axis=-3)


def pv_from_streamfunction(psi: Any, F1: float, F2: float, L: float) -> Any:
    """Two-layer PV (s^-1) from psi ``[..., 2(lev), y, x]`` (m^2 s^-1), pyqg's definition.

    ``q1 = lap psi1 + F1 (psi2 - psi1)``, ``q2 = lap psi2 + F2 (psi1 - psi2)``.
    """
    lap = laplacian(psi, L)
    eta = psi[..., 0, :, :] - psi[..., 1, :, :]
    return stack([lap[..., 0, :, :] - F1 * eta, lap[..., 1, :, :] + F2 * eta], -3)
