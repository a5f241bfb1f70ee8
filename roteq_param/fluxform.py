"""Spectral calculus in flux form on a doubly periodic square domain.

Solver-agnostic: used by the data pipeline (numpy, float64), by the pyqg hook
and by the training loss (torch, float32/float64, autograd through
``torch.fft``). Every function accepts a numpy array or a torch tensor laid out
``[..., y, x]`` (any leading batch dimensions) and returns the same type,
dtype and device.

Conventions (docs/design.md §2-§3)
----------------------------------
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
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from roteq_param.arrays import concat, is_torch, stack

__all__ = [
    "wavenumbers",
    "shell_index",
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
    "Stratification",
    "FluxSource",
    "flux_form_multipliers",
    "flux_sources",
    "interface_flux_pairs",
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
    # fftfreq order; an odd ny has (ny + 1) // 2 non-negative rows and no Nyquist row
    l = (2.0 * math.pi / W) * np.append(np.arange(0.0, (ny + 1) // 2), np.arange(-(ny // 2), 0.0))[:, None]
    return k, l


def shell_index(n: int, L: float, *, ny: int | None = None, W: float | None = None) -> np.ndarray:
    """Isotropic shell of each rfft2 coefficient of an ``ny x n`` grid of size ``W x L`` (m):
    ``rint(|K| / dk_r)`` with ``dk_r = max(2 pi / L, 2 pi / W)``, integers of shape ``(ny, n//2 + 1)``.
    Shell ``s`` holds the modes with ``(s - 1/2) dk_r <= |K| < (s + 1/2) dk_r``; shell 0 is the mean."""
    k, l = wavenumbers(n, L, ny=ny, W=W)
    W = L if W is None else W
    return np.rint(np.sqrt(k**2 + l**2) / max(2 * math.pi / L, 2 * math.pi / W)).astype(np.int64)


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


def energy_weights(n: int, depth_fractions: Sequence[float]) -> np.ndarray:
    """Weights ``w`` ``(N, n, n//2+1)`` with ``sum(w * Re(conj(a^) b^)) = sum_i H_i/H <a_i b_i>``.

    ``<.>`` sums over the grid (Parseval); ``a^`` is an unnormalised rfft2 (pyqg's). The half-plane columns
    0 < k < n/2 stand for two modes (weight 2), the k = 0 and Nyquist columns for one. The layer
    weights are the depth fractions ``H_i/H`` (:attr:`Stratification.depth_fractions`; two layers:
    ``H1/H = F2/(F1+F2)``, ``H2/H = F1/(F1+F2)``), so with ``a = psi``, ``b = dq/dt`` this is minus the
    rate of change of the total (kinetic + available potential) energy, summed over the grid, per
    unit mass.
    """
    half = half_plane_weights(n, n // 2 + 1)
    return np.stack([float(h) * half for h in depth_fractions]) / n**2


def stretching_coefficients(rd: float, delta: float) -> tuple[float, float]:
    """pyqg's two-layer stretching coefficients (m^-2).

    ``F1 = rd^-2 / (1 + delta)``, ``F2 = delta F1`` with deformation radius
    ``rd`` (m) and layer thickness ratio ``delta = H1/H2``.
    """
    F1 = rd**-2 / (1.0 + delta)
    return F1, delta * F1


@dataclass(frozen=True)
class Stratification:
    """The vertical coupling of an N-layer QG model (N >= 2), from pyqg's stretching matrix.

    With ``b_j = psi_j - psi_{j+1}`` at interface ``j = 1 ... N-1`` (m^2 s^-1),
    ``q_i = lap psi_i + G[i, i-1] b_{i-1} - G[i, i] b_i`` with ``G[i, j] = f0^2 / (H_i g'_j)`` (m^-2).
    ``upper[j-1] = G[j, j]`` is how interface j enters the layer above it, ``lower[j-1] = G[j+1, j]``
    how it enters the layer below. Two layers: ``upper = (F1,)``, ``lower = (F2,)`` (docs/design.md §3).
    """

    upper: tuple[float, ...]
    lower: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "upper", tuple(float(g) for g in self.upper))
        object.__setattr__(self, "lower", tuple(float(g) for g in self.lower))
        if not self.upper or len(self.upper) != len(self.lower):
            raise ValueError(f"a stratification needs one (upper, lower) coupling per interface; got "
                             f"upper={self.upper}, lower={self.lower}")
        if not all(math.isfinite(g) and g > 0 for g in self.upper + self.lower):
            raise ValueError(f"stretching couplings must be finite and > 0 m^-2; got upper={self.upper}, "
                             f"lower={self.lower}")

    @classmethod
    def two_layer(cls, F1: float, F2: float) -> "Stratification":
        """pyqg ``QGModel``'s coupling: ``F1``, ``F2`` in m^-2 (:func:`stretching_coefficients`)."""
        return cls((F1,), (F2,))

    @classmethod
    def from_matrix(cls, S: Any) -> "Stratification":
        """From pyqg's stretching matrix ``m.S`` ``(N, N)`` in m^-2 (``q = lap psi + S psi``), which must
        be tridiagonal with rows summing to 0 (every layer couples to its neighbours only)."""
        S = np.asarray(S, dtype=np.float64)
        N = S.shape[0] if S.ndim == 2 else 0
        if S.shape != (N, N) or N < 2:
            raise ValueError(f"the stretching matrix must be (N, N) with N >= 2 layers; got shape {S.shape}")
        expected = np.zeros_like(S)
        for j in range(N - 1):
            expected[j, j + 1], expected[j + 1, j] = S[j, j + 1], S[j + 1, j]
        expected -= np.diag(expected.sum(1))
        if not np.allclose(S, expected, rtol=1e-12, atol=0.0):
            raise ValueError(f"the stretching matrix is not tridiagonal with zero row sums (layers coupled to "
                             f"their neighbours only): {S.tolist()}")
        return cls(tuple(S[j, j + 1] for j in range(N - 1)), tuple(S[j + 1, j] for j in range(N - 1)))

    @property
    def nlayers(self) -> int:
        return len(self.upper) + 1

    @property
    def matrix(self) -> np.ndarray:
        """The stretching matrix ``(N, N)`` in m^-2, laid out as pyqg's ``m.S``."""
        N = self.nlayers
        S = np.zeros((N, N))
        for j in range(N - 1):
            S[j, j], S[j, j + 1] = S[j, j] - self.upper[j], self.upper[j]
            S[j + 1, j + 1], S[j + 1, j] = S[j + 1, j + 1] - self.lower[j], self.lower[j]
        return S

    @property
    def depth_fractions(self) -> tuple[float, ...]:
        """``H_i/H`` per layer: ``H_j G[j, j] = H_{j+1} G[j+1, j] = f0^2/g'_j``, so the couplings alone fix
        the depth ratios."""
        H = [1.0]
        for up, low in zip(self.upper, self.lower):
            H.append(H[-1] * up / low)
        return tuple(h / sum(H) for h in H)

    def coupling(self, layer: int, interface: int) -> float:
        """The coefficient of ``div F`` in ``S_layer`` for the flux ``F`` of ``b_interface`` by layer
        ``layer`` (both counted from 1): ``+G[i, i]`` for the interface below, ``-G[i, i-1]`` above."""
        if interface == layer and layer < self.nlayers:
            return self.upper[interface - 1]
        if interface == layer - 1 and layer > 1:
            return -self.lower[interface - 1]
        raise ValueError(f"layer {layer} does not touch interface {interface} (of {self.nlayers - 1})")


FluxSource = tuple[str, int, "int | None", int]
"""What one flux channel is: ``("tau", layer, None, component)`` with components (xx, xy, yy), or
``("Fb", layer, interface, component)`` with components (x, y); layers and interfaces from 1."""


def flux_form_multipliers(n: int, L: float, strat: Stratification, sources: Sequence[FluxSource]) -> np.ndarray:
    """Spectral multipliers ``M`` ``(N, C, n, n//2+1)`` with ``S_i^ = sum_c M[i, c] flux_c^`` (docs/design.md §3):

    * ``-curl(div tau_i) -> (il ik) tau_xx^ + ((il)^2 - (ik)^2) tau_xy^ - (ik il) tau_yy^``;
    * ``coupling(i, j) div F_{i,j} -> coupling(i, j) (ik F_x^ + il F_y^)``

    (``ik``, ``il`` with the Nyquist row and column zeroed, as for every odd derivative here). A
    channel acts on its own layer only.
    """
    if n % 2:
        raise ValueError(f"grid size must be even; got n={n}")
    ik, il = _odd_multipliers(n, L)
    tau_part, flux_part = (il * ik, il * il - ik * ik, -ik * il), (ik, il)
    M = np.zeros((strat.nlayers, len(sources), n, n // 2 + 1), complex)
    for c, (what, layer, interface, comp) in enumerate(sources):
        if not 1 <= layer <= strat.nlayers:
            raise ValueError(f"flux channel {c} ({what}) is for layer {layer}; the stratification has "
                             f"{strat.nlayers} layers")
        if what == "tau":
            M[layer - 1, c] = tau_part[comp]
        elif what == "Fb":
            M[layer - 1, c] = strat.coupling(layer, interface) * flux_part[comp]
        else:
            raise ValueError(f"flux channel {c}: unknown kind {what!r} (expected 'tau' or 'Fb')")
    return M


def interface_flux_pairs(nlayers: int) -> list[tuple[int, int]]:
    """The ``(layer, interface)`` pairs with a buoyancy flux ``F_{i,j} = bar(u_i b_j) - bar(u_i) bar(b_j)``,
    layer by layer, the interface above before the one below: 2(N-1) in all (two layers:
    ``[(1, 1), (2, 1)]``, one flux per layer)."""
    if nlayers < 2:
        raise ValueError(f"a layered QG model has >= 2 layers; got {nlayers}")
    return [(i, j) for i in range(1, nlayers + 1) for j in (i - 1, i) if 1 <= j < nlayers]


def flux_sources(nlayers: int) -> list[FluxSource]:
    """The channels of :class:`PVForcingOperator`'s input, in its order: per layer, tau (xx, xy, yy),
    then the (x, y) components of that layer's buoyancy fluxes (:func:`interface_flux_pairs`)."""
    pairs = interface_flux_pairs(nlayers)
    return [src for i in range(1, nlayers + 1)
            for src in [("tau", i, None, c) for c in range(3)]
            + [("Fb", i, j, c) for (layer, j) in pairs if layer == i for c in range(2)]]


class PVForcingOperator:
    """The N-layer PV forcing of :func:`pv_forcing_from_fluxes` as one fused spectral operator.

    The forcing of layer ``i`` is ``S_i^ = sum_c M[i, c] flux_c^`` over that layer's channels
    (:func:`flux_sources`: tau (xx, xy, yy), then its buoyancy fluxes) with the precomputed
    multipliers of :func:`flux_form_multipliers`. One batched forward FFT per layer and one inverse
    FFT instead of a chain of derivatives: this is what the training loss and the data pipeline run. Works on numpy
    arrays and torch tensors (multipliers are cached per device and precision).
    """

    def __init__(self, n: int, L: float, strat: Stratification):
        if n % 2:
            raise ValueError(f"grid size must be even; got n={n}")
        self.n, self.L, self.strat = int(n), float(L), strat
        sources = flux_sources(strat.nlayers)
        M = flux_form_multipliers(self.n, self.L, strat, sources)
        self._layer_channels = [[c for c, src in enumerate(sources) if src[1] == i + 1] for i in range(strat.nlayers)]
        self.multipliers = [M[i, idx] for i, idx in enumerate(self._layer_channels)]  # per layer (C_i, n, n//2+1)
        self._cache: dict = {}

    def _m(self, x: Any, i: int) -> Any:
        if not is_torch(x):
            return self.multipliers[i]
        key = (x.device, x.dtype, i)
        if key not in self._cache:
            self._cache[key] = _multiplier(x, self.multipliers[i])
        return self._cache[key]

    def __call__(self, tau: Any, Fb: Any) -> Any:
        """``tau [..., N, 3(xx, xy, yy), n, n]`` and ``Fb [..., 2(N-1), 2(x, y), n, n]`` (SI, pairs in
        :func:`interface_flux_pairs` order) -> S ``[..., N, n, n]`` in s^-2."""
        N, P = self.strat.nlayers, 2 * (self.strat.nlayers - 1)
        if tau.ndim < 4 or tuple(tau.shape[-4:]) != (N, 3, self.n, self.n):
            raise ValueError(f"tau must have shape [..., {N}(lev), 3(xx, xy, yy), {self.n}, {self.n}]; "
                             f"got {tuple(tau.shape)}")
        if Fb.ndim < 4 or tuple(Fb.shape[-4:]) != (P, 2, self.n, self.n):
            raise ValueError(f"Fb must have shape [..., {P}(flux pairs), 2(x, y), {self.n}, {self.n}] "
                             f"(pairs {interface_flux_pairs(N)}); got {tuple(Fb.shape)}")
        pairs = interface_flux_pairs(N)
        if is_torch(tau):
            Fb = Fb.to(tau.dtype)
        layers = []
        for i in range(N):
            # this layer's channels in flux_sources order: tau (xx, xy, yy), then its pairs' (x, y)
            parts = [tau[..., i, :, :, :]] + [Fb[..., p, :, :, :] for p, (layer, _) in enumerate(pairs) if layer == i + 1]
            fft, fh, n = _spectral(concat(parts, -3))
            layers.append((fh * self._m(tau, i)).sum(-3))
        return fft.irfft2(stack(layers, -3), s=(self.n, self.n))


def pv_forcing_from_fluxes(tau: Any, Fb: Any, strat: Stratification, L: float) -> Any:
    """N-layer PV forcing (s^-2) implied by momentum and buoyancy fluxes (docs/design.md §3).

    ``S_i = -curl(div tau_i) + G[i, i] div F_{i,i} - G[i, i-1] div F_{i,i-1}`` (two layers:
    ``S_1 = -curl(div tau_1) + F1 div F_1``, ``S_2 = -curl(div tau_2) - F2 div F_2``), so that S is
    what is added to dq/dt (pyqg's q-parameterization convention); it is the PV counterpart of
    ``du/dt = -div(tau)`` and ``db_j/dt = -div(F_j)``. (q_i contains ``-G[i, i] b_i`` and
    ``+G[i, i-1] b_{i-1}``.) Evaluated by :class:`PVForcingOperator`.

    Parameters
    ----------
    tau:
        Momentum flux ``[..., N(lev), 3(xx, xy, yy), y, x]`` in m^2 s^-2.
    Fb:
        Buoyancy fluxes ``[..., 2(N-1), 2(x, y), y, x]`` in m^3 s^-2, the flux of
        ``b_j = psi_j - psi_{j+1}`` by layer i's velocity for each pair of
        :func:`interface_flux_pairs` (two layers: one per layer, ``[..., 2(lev), 2, y, x]``).
    strat:
        The layers' coupling (:class:`Stratification`; pyqg QGModel:
        ``Stratification.two_layer(m.F1, m.F2)``).
    L:
        Domain side in m.

    Returns
    -------
    ``[..., N(lev), y, x]`` in s^-2.
    """
    return PVForcingOperator(_check_square(tau), L, strat)(tau, Fb)


def inversion_matrix(n: int, L: float, strat: Stratification) -> np.ndarray:
    """pyqg's PV inversion ``psi^ = a @ q^``, shape (N, N, n, n//2+1); the mean mode maps to 0.

    ``a = (S - K^2 I)^-1`` per wavenumber, with S the stretching matrix; in closed form for two
    layers and by ``numpy.linalg.inv`` for more, as pyqg computes it, so the result is pyqg's.
    """
    k, l = wavenumbers(n, L)
    wv2 = np.broadcast_to(k**2 + l**2, (n, n // 2 + 1))
    if strat.nlayers == 2:
        (F1,), (F2,) = strat.upper, strat.lower
        det = wv2 * (wv2 + F1 + F2)
        det_inv = np.zeros_like(det)
        nz = det != 0
        det_inv[nz] = 1.0 / det[nz]
        return np.array([[-(wv2 + F2) * det_inv, -F1 * det_inv], [-F2 * det_inv, -(wv2 + F1) * det_inv]])
    M = strat.matrix[None, None] - np.eye(strat.nlayers) * wv2[..., None, None]
    M[0, 0] = np.eye(strat.nlayers)  # the mean mode (S is singular there) is not inverted
    a = np.moveaxis(np.linalg.inv(M), (-2, -1), (0, 1)).copy()
    a[:, :, 0, 0] = 0.0
    return a


def invert_pv(q: Any, strat: Stratification, L: float) -> Any:
    """Streamfunction psi (m^2 s^-1) from N-layer PV q (s^-1), as pyqg inverts it.

    Solves ``q_i = lap psi_i + sum_j S_ij psi_j`` (two layers: ``q1 = lap psi1 + F1 (psi2 - psi1)``,
    ``q2 = lap psi2 + F2 (psi1 - psi2)``) mode by mode; the domain mean of psi is set to 0 (the
    k = l = 0 mode of q is not inverted). ``q`` is ``[..., N(lev), y, x]``.
    """
    fft, qh, n = _spectral(q)
    a = _multiplier(q, inversion_matrix(n, L, strat) + 0j)
    N = strat.nlayers
    ph = stack([sum(a[i, j] * qh[..., j, :, :] for j in range(N)) for i in range(N)], -3)
    return fft.irfft2(ph, s=(n, n))


def velocity_from_streamfunction(psi: Any, L: float) -> Any:
    """Velocity ``(u, v) = (-d psi/dy, d psi/dx)`` in m s^-1 from psi in m^2 s^-1.

    ``psi`` is ``[..., y, x]``; the result is ``[..., 2(x, y), y, x]``.
    """
    return stack([-ddy(psi, L), ddx(psi, L)], axis=-3)


def pv_from_streamfunction(psi: Any, strat: Stratification, L: float) -> Any:
    """N-layer PV (s^-1) from psi ``[..., N(lev), y, x]`` (m^2 s^-1), pyqg's definition.

    ``q_i = lap psi_i + G[i, i-1] b_{i-1} - G[i, i] b_i`` with ``b_j = psi_j - psi_{j+1}``
    (:class:`Stratification`; two layers: ``q1 = lap psi1 - F1 b``, ``q2 = lap psi2 + F2 b``).
    """
    lap = laplacian(psi, L)
    b = [psi[..., j, :, :] - psi[..., j + 1, :, :] for j in range(strat.nlayers - 1)]
    q = []
    for i in range(strat.nlayers):
        qi = lap[..., i, :, :]
        if i > 0:
            qi = qi + strat.lower[i - 1] * b[i - 1]
        if i < strat.nlayers - 1:
            qi = qi - strat.upper[i] * b[i]
        q.append(qi)
    return stack(q, -3)
