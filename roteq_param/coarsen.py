"""Coarse-graining operators, dealiased products and subgrid fluxes (docs/design.md §3-§4).

Solver-agnostic and numpy-only (float64): the input is a high-resolution
N-layer PV field ``q`` (s^-1) on a doubly periodic square of side ``L`` (m)
with the layers' coupling (``fluxform.Stratification``, m^-2; two layers:
pyqg's ``F1, F2``); nothing here imports a solver.

Spectral representation
-----------------------
A real field ``f[..., n, n]`` is represented by ``rfft2(f, norm="forward")``
(shape ``[..., n, n//2+1]``). With that normalisation a Fourier coefficient does
not depend on the grid size, so moving between grids is copying coefficients.
Every spectrum produced here has its Nyquist row and column set to zero, at
the high and at the coarse resolution: products are then exact with the 3/2
rule, odd derivatives are well defined, and the identity between the two
forms of the PV forcing holds to round-off (docs/design.md §3).

Coarse-graining operators (overbar = filter then coarsen to ``n_c`` points)
---------------------------------------------------------------------------
Every operator returns the field at the coarse cell centres ``(I + 1/2) dx_c``.

* ``spectral``: truncation to ``|k|, |l| < k_c`` (``k_c = pi n_c / L``, the
  coarse Nyquist) times the coarse pyqg model's own exponential filter
  ``G(k, l) = exp(-a (w - w_c)^4)`` for ``w > w_c`` and 1 otherwise, with
  ``w = sqrt((k dx_c)^2 + (l dx_c)^2)``, ``a = filterfac = 23.6``,
  ``w_c = 0.65 pi``, ``dx_c = L / n_c`` (pyqg ``Model._initialize_filter``
  evaluated on the coarse grid).
* ``gaussian``: truncation as above times ``G = exp(-(k^2 + l^2) Delta^2 / 24)``,
  filter width ``Delta = 2 dx_c`` by default (the Gaussian with the second
  moment of a top hat of width Delta).
* ``gcm``: gcm-filters' Gaussian diffusion filter (target shape
  ``exp(-k^2 Delta^2 / 24)``, ``Delta = 2 dx_c`` by default) on the
  high-resolution periodic regular grid, followed by block averaging over
  ``r x r`` cells (``r = n / n_c``). Block averaging does not commute with
  derivatives, so for this operator the two forms of the forcing differ:
  :func:`commutation_residual` measures by how much.

Subgrid fluxes (per layer i; b_j = psi_j - psi_{j+1} at interface j, in m^2 s^-1)
---------------------------------------------------------------------------------
* momentum flux ``tau_i = bar(u_i u_i) - bar(u_i) bar(u_i)`` (m^2 s^-2),
  components (xx, xy, yy);
* buoyancy flux ``F_{i,j} = bar(u_i b_j) - bar(u_i) bar(b_j)`` (m^3 s^-2) for
  the interfaces above and below layer i (two layers: one b, one flux per layer);
* direct PV forcing ``S_i = -div(bar(u_i q_i) - bar(u_i) bar(q_i))`` (s^-2), the
  term that, added to dq/dt of the coarse model, makes its tendency the
  coarse-grained high-resolution tendency (pyqg's q-parameterization sign);
* flux-form forcing ``S_flux`` from tau and F with
  :func:`roteq_param.fluxform.pv_forcing_from_fluxes`.

All products are dealiased (3/2 rule) at both resolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import fluxform

__all__ = [
    "to_spectrum",
    "from_spectrum",
    "resize_spectrum",
    "dealiased_product",
    "Operator",
    "SpectralFilterOperator",
    "GaussianOperator",
    "GCMFiltersOperator",
    "OPERATORS",
    "make_operator",
    "pyqg_filter",
    "coarse_grain",
    "commutation_residual",
]


# --------------------------------------------------------------------------- spectra


def _zero_nyquist(fh: np.ndarray, n: int) -> np.ndarray:
    fh[..., n // 2, :] = 0.0
    fh[..., :, n // 2] = 0.0
    return fh


def to_spectrum(f: np.ndarray) -> np.ndarray:
    """``rfft2(f, norm="forward")`` of a real field ``[..., n, n]`` with its Nyquist row and column zeroed."""
    n = f.shape[-1]
    if f.shape[-2] != n or n % 2:
        raise ValueError(f"expected a field on an even square grid [..., n, n]; got shape {f.shape}")
    return _zero_nyquist(np.fft.rfft2(f, norm="forward"), n)


def from_spectrum(fh: np.ndarray, n: int) -> np.ndarray:
    """Real field ``[..., n, n]`` from a ``norm="forward"`` rfft2 spectrum ``[..., n, n//2+1]``."""
    return np.fft.irfft2(fh, s=(n, n), norm="forward")


def resize_spectrum(fh: np.ndarray, n_out: int) -> np.ndarray:
    """Move a ``norm="forward"`` spectrum to an ``n_out x n_out`` grid.

    Copies the modes ``|k|, |l| < min(n_in, n_out) / 2`` and zeroes all others,
    including the Nyquist row and column of the output. For ``n_out < n_in`` this
    is spectral truncation; for ``n_out > n_in`` it is exact zero-padding
    (interpolation) of a field whose Nyquist modes are zero.
    """
    n_in = fh.shape[-2]
    h = min(n_in, n_out) // 2
    out = np.zeros(fh.shape[:-2] + (n_out, n_out // 2 + 1), dtype=np.complex128)
    out[..., :h, :h] = fh[..., :h, :h]
    out[..., n_out - h + 1 :, :h] = fh[..., n_in - h + 1 :, :h]
    return out


def _padded_size(n: int) -> int:
    return 3 * n // 2


def dealiased_product(ah: np.ndarray, bh: np.ndarray) -> np.ndarray:
    """Spectrum of the product ``a b`` computed with the 3/2 rule.

    ``ah`` and ``bh`` are ``norm="forward"`` spectra on the same ``n x n`` grid
    with zero Nyquist modes. Both are zero-padded to ``3n/2``, multiplied on
    that grid and truncated back to ``n`` (Nyquist zeroed): every retained mode
    of the product is exact, no aliasing.
    """
    n = ah.shape[-2]
    m = _padded_size(n)
    prod = from_spectrum(resize_spectrum(ah, m), m) * from_spectrum(resize_spectrum(bh, m), m)
    return resize_spectrum(np.fft.rfft2(prod, norm="forward"), n)


# --------------------------------------------------------------------------- operators


def pyqg_filter(n: int, L: float, filterfac: float = 23.6, cphi: float = 0.65 * math.pi) -> np.ndarray:
    """pyqg's exponential small-scale filter for an ``n x n`` model of side L (m), rfft2 layout.

    ``G = exp(-filterfac (w - cphi)^4)`` where ``w = sqrt((k dx)^2 + (l dx)^2) > cphi``,
    1 elsewhere, with ``dx = L / n`` (dimensionless; as ``pyqg.Model._initialize_filter``).
    """
    k, l = fluxform.wavenumbers(n, L)
    dx = L / n
    wvx = np.sqrt((k * dx) ** 2 + (l * dx) ** 2)
    filt = np.exp(-filterfac * (wvx - cphi) ** 4)
    filt[wvx <= cphi] = 1.0
    return filt


@dataclass
class Operator:
    """A coarse-graining operator from an ``n_fine``- to an ``n_coarse``-point square grid of side L (m).

    :meth:`apply` maps fine spectra ``[..., n_fine, n_fine//2+1]`` to coarse
    spectra ``[..., n_coarse, n_coarse//2+1]`` (``norm="forward"``, Nyquist zeroed).
    """

    n_fine: int
    n_coarse: int
    L: float
    name: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.n_coarse < 4 or self.n_coarse % 2:
            raise ValueError(f"the coarse grid size must be even and >= 4; got {self.n_coarse}")
        if self.n_fine % 2:
            raise ValueError(f"the high-resolution nx must be even; got {self.n_fine}")
        if self.n_coarse > self.n_fine:
            raise ValueError(f"the coarse nx={self.n_coarse} must not exceed the high-resolution nx={self.n_fine}")

    @property
    def ratio(self) -> int | float:
        """``n_fine / n_coarse``: an int when it divides (block averaging needs that), else a float
        (spectral truncation takes any smaller grid, e.g. 256 -> 48 or 96)."""
        return self.n_fine // self.n_coarse if self.n_fine % self.n_coarse == 0 else self.n_fine / self.n_coarse

    @property
    def dx_coarse(self) -> float:
        """Coarse grid spacing in m."""
        return self.L / self.n_coarse

    def params(self) -> dict[str, Any]:
        """The operator's parameters, JSON-serialisable (for dataset attributes)."""
        return {"n_fine": self.n_fine, "n_coarse": self.n_coarse, "L": self.L}

    def apply(self, fh: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class _TruncationOperator(Operator):
    """Spectral truncation to the coarse grid times a transfer function of (k, l) on that grid."""

    def transfer(self) -> np.ndarray:
        raise NotImplementedError

    def grid_shift(self) -> np.ndarray:
        """Phase factor ``exp(i (k + l) (dx_c - dx_f) / 2)`` on the coarse spectrum.

        An rfft coefficient refers to the grid's first sample, which sits at
        ``dx_f / 2`` on the fine grid and at ``dx_c / 2`` on the coarse one; this
        factor moves the origin so that coarse samples are the continuous field at
        the coarse cell centres (as block averaging gives, and as the coarse model
        places them). Without it the coarse field would be displaced by
        ``(dx_c - dx_f) / 2`` and coarse-graining would not commute with rotations.
        """
        k, l = fluxform.wavenumbers(self.n_coarse, self.L)
        return np.exp(1j * (k + l) * 0.5 * (self.L / self.n_coarse - self.L / self.n_fine))

    def apply(self, fh: np.ndarray) -> np.ndarray:
        return resize_spectrum(fh, self.n_coarse) * (self.transfer() * self.grid_shift())


@dataclass
class SpectralFilterOperator(_TruncationOperator):
    """Truncation times the coarse pyqg model's own filter (see :func:`pyqg_filter`).

    ``bar(f)_hat(k, l) = G_c(k, l) f_hat(k, l)`` for ``|k|, |l| < pi n_c / L``, where ``G_c`` is
    :func:`pyqg_filter` evaluated on the coarse grid with ``filterfac`` (default 23.6).
    """

    filterfac: float = 23.6

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "spectral"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "filterfac": self.filterfac, "cphi": 0.65 * math.pi}

    def transfer(self) -> np.ndarray:
        return pyqg_filter(self.n_coarse, self.L, self.filterfac)


@dataclass
class GaussianOperator(_TruncationOperator):
    """Truncation times a Gaussian: ``G = exp(-(k^2 + l^2) width^2 / 24)``.

    ``width`` (m) defaults to ``2 dx_c = 2 L / n_coarse``.
    """

    width: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "gaussian"
        if self.width is None:
            self.width = 2.0 * self.dx_coarse

    def params(self) -> dict[str, Any]:
        return {**super().params(), "width": self.width}

    def transfer(self) -> np.ndarray:
        k, l = fluxform.wavenumbers(self.n_coarse, self.L)
        return np.exp(-(k**2 + l**2) * self.width**2 / 24.0)


@dataclass
class GCMFiltersOperator(Operator):
    """gcm-filters Gaussian on the fine periodic regular grid, then ``r x r`` block averaging.

    ``bar(f) = B(G_gcm f)`` where ``G_gcm`` is ``gcm_filters.Filter(filter_scale=width/dx_f,
    dx_min=1, filter_shape=GAUSSIAN, grid_type=REGULAR)`` (its regular-grid Laplacian is
    non-dimensional and periodic, so the scale is given in fine cells; target shape
    ``exp(-k^2 width^2 / 24)``), and ``B`` averages each block of ``r = n_fine / n_coarse``
    cells. ``width`` (m) defaults to ``2 dx_c``. The coarse result's Nyquist modes are zeroed
    like every coarse field. With ``n_coarse == n_fine`` (no block averaging) the operator is a
    Fourier multiplier and commutes with derivatives.
    """

    width: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = "gcm"
        if self.n_fine % self.n_coarse:
            raise ValueError(f"block averaging needs the high-resolution nx={self.n_fine} to be a multiple of the "
                             f"coarse nx={self.n_coarse}; the spectral and gaussian operators take any smaller grid")
        if self.width is None:
            self.width = 2.0 * self.dx_coarse
        import gcm_filters

        self._filter = gcm_filters.Filter(
            filter_scale=self.width / (self.L / self.n_fine),
            dx_min=1.0,
            filter_shape=gcm_filters.FilterShape.GAUSSIAN,
            grid_type=gcm_filters.GridType.REGULAR,
        )

    def params(self) -> dict[str, Any]:
        return {**super().params(), "width": self.width, "n_steps": int(self._filter.n_steps)}

    def apply(self, fh: np.ndarray) -> np.ndarray:
        import xarray as xr

        n, nc, r = self.n_fine, self.n_coarse, self.ratio
        f = from_spectrum(fh, n)
        lead = f.shape[:-2]
        da = xr.DataArray(f.reshape((-1, n, n)), dims=("batch", "y", "x"))
        g = np.asarray(self._filter.apply(da, dims=["y", "x"]).values).reshape(lead + (n, n))
        blocks = g.reshape(lead + (nc, r, nc, r)).mean(axis=(-3, -1))
        return to_spectrum(blocks)


OPERATORS: dict[str, type[Operator]] = {
    "spectral": SpectralFilterOperator,
    "gaussian": GaussianOperator,
    "gcm": GCMFiltersOperator,
}


def make_operator(name: str, n_fine: int, n_coarse: int, L: float, **params: Any) -> Operator:
    """Build the operator called ``name`` (one of :data:`OPERATORS`); ``params`` are its options."""
    try:
        cls = OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown coarse-graining operator {name!r}; expected one of: {', '.join(OPERATORS)}") from None
    return cls(n_fine, n_coarse, L, **params)


# --------------------------------------------------------------------------- fluxes


def _velocity_spectra(ph: np.ndarray, n: int, L: float) -> tuple[np.ndarray, np.ndarray]:
    """u_hat = -i l psi_hat, v_hat = i k psi_hat (Nyquist already zero in psi_hat)."""
    k, l = fluxform.wavenumbers(n, L)
    return -1j * l * ph, 1j * k * ph


def _products(fields: dict[str, np.ndarray], pairs: list[tuple[str, str]], n: int) -> dict[tuple[str, str], np.ndarray]:
    """Dealiased products of many pairs, padding each factor to the 3/2 grid once."""
    m = _padded_size(n)
    grids = {name: from_spectrum(resize_spectrum(fh, m), m) for name, fh in fields.items()}
    return {
        (a, b): resize_spectrum(np.fft.rfft2(grids[a] * grids[b], norm="forward"), n) for a, b in pairs
    }


def _layer_fields(ph: np.ndarray, qh: np.ndarray, n: int, L: float) -> dict[str, np.ndarray]:
    """Spectra of every layer's u, v, q and every interface's b_j = psi_j - psi_{j+1}."""
    uh, vh = _velocity_spectra(ph, n, L)
    N = ph.shape[-3]
    fields = {f"b{j}": ph[..., j - 1, :, :] - ph[..., j, :, :] for j in range(1, N)}
    for i in range(N):
        fields[f"u{i}"] = uh[..., i, :, :]
        fields[f"v{i}"] = vh[..., i, :, :]
        fields[f"q{i}"] = qh[..., i, :, :]
    return fields


def _pairs(nlayers: int) -> list[tuple[str, str]]:
    """Every product the subgrid fluxes need: per layer uu, uv, vv, uq, vq; per flux pair u_i b_j, v_i b_j."""
    out = [pair for i in range(nlayers) for pair in ((f"u{i}", f"u{i}"), (f"u{i}", f"v{i}"), (f"v{i}", f"v{i}"),
                                                     (f"u{i}", f"q{i}"), (f"v{i}", f"q{i}"))]
    return out + [(f"{c}{i - 1}", f"b{j}") for i, j in fluxform.interface_flux_pairs(nlayers) for c in "uv"]


def coarse_grain(q: np.ndarray, strat: fluxform.Stratification, L: float, op: Operator) -> dict[str, np.ndarray]:
    """Coarse state and subgrid fluxes of a high-resolution N-layer PV field.

    Parameters
    ----------
    q:
        High-resolution PV ``[..., N(lev), n, n]`` in s^-1 (pyqg's ``m.q``); ``n == op.n_fine``.
    strat:
        The layers' coupling (:class:`~roteq_param.fluxform.Stratification`; pyqg's QGModel:
        ``Stratification.two_layer(F1, F2)``, any pyqg model: ``Stratification.from_matrix(m.S)``).
    L:
        Domain side in m.
    op:
        The coarse-graining operator.

    Returns
    -------
    A dict of float64 arrays on the coarse grid (``nc = op.n_coarse``):

    * ``u``, ``v``: ``[..., N, nc, nc]`` coarse velocity (m s^-1), ``bar(u)`` with u = -d psi/dy, v = d psi/dx;
    * ``b``: ``bar(b_j)``, ``b_j = psi_j - psi_{j+1}`` (m^2 s^-1, interface buoyancy variable):
      ``[..., nc, nc]`` for two layers, ``[..., N-1, nc, nc]`` for more;
    * ``q``: ``[..., N, nc, nc]`` ``bar(q)`` (s^-1);
    * ``tau``: ``[..., N, 3(xx, xy, yy), nc, nc]`` momentum flux (m^2 s^-2);
    * ``Fb``: ``[..., 2(N-1), 2(x, y), nc, nc]`` buoyancy fluxes ``bar(u_i b_j) - bar(u_i) bar(b_j)``
      (m^3 s^-2) for the pairs of :func:`~roteq_param.fluxform.interface_flux_pairs` (two layers:
      one per layer);
    * ``S_direct``: ``[..., N, nc, nc]`` ``-div(bar(u q) - bar(u) bar(q))`` (s^-2);
    * ``S_flux``: ``[..., N, nc, nc]`` the forcing implied by tau and Fb (s^-2).

    The high-resolution field's Nyquist modes are dropped first, and psi is
    obtained by pyqg's inversion (mean set to 0), so the result depends on q
    only, not on a possibly stale streamfunction buffer of the solver.
    """
    n, nc, N = op.n_fine, op.n_coarse, strat.nlayers
    if q.ndim < 3 or q.shape[-3] != N or q.shape[-2:] != (n, n):
        raise ValueError(f"q must have shape [..., {N}(lev), {n}, {n}] for this operator and stratification; "
                         f"got {q.shape}")
    qh = to_spectrum(np.asarray(q, dtype=np.float64))
    ph = np.einsum("ijyx,...jyx->...iyx", fluxform.inversion_matrix(n, L, strat), qh)

    fine = _layer_fields(ph, qh, n, L)
    pairs = _pairs(N)
    fine_products = _products(fine, pairs, n)

    names = list(fine) + [f"{a}*{b}" for a, b in pairs]
    stacked = np.stack([fine[k] for k in fine] + [fine_products[p] for p in pairs])
    filtered = op.apply(stacked)
    bar = dict(zip(names, filtered))
    coarse_products = _products({k: bar[k] for k in fine}, pairs, nc)

    def sub(a: str, b: str) -> np.ndarray:
        return bar[f"{a}*{b}"] - coarse_products[(a, b)]

    k, l = fluxform.wavenumbers(nc, L)
    tau, S = [], []
    for i in range(N):
        u, v, qq = f"u{i}", f"v{i}", f"q{i}"
        tau.append(np.stack([sub(u, u), sub(u, v), sub(v, v)], axis=-3))
        S.append(-(1j * k * sub(u, qq) + 1j * l * sub(v, qq)))
    Fb = [np.stack([sub(f"u{i - 1}", f"b{j}"), sub(f"v{i - 1}", f"b{j}")], axis=-3)
          for i, j in fluxform.interface_flux_pairs(N)]

    def real(fh: np.ndarray) -> np.ndarray:
        return from_spectrum(fh, nc)

    layers = lambda name: np.stack([bar[f"{name}{i}"] for i in range(N)], axis=-3)  # noqa: E731
    b = np.stack([bar[f"b{j}"] for j in range(1, N)], axis=-3)
    out = {
        "u": real(layers("u")),
        "v": real(layers("v")),
        "b": real(b[..., 0, :, :] if N == 2 else b),
        "q": real(layers("q")),
        "tau": real(np.stack(tau, axis=-4)),
        "Fb": real(np.stack(Fb, axis=-4)),
        "S_direct": real(np.stack(S, axis=-3)),
    }
    out["S_flux"] = fluxform.pv_forcing_from_fluxes(out["tau"], out["Fb"], strat, L)
    return out


def commutation_residual(fields: dict[str, np.ndarray]) -> np.ndarray:
    """Relative mismatch between the two forms of the PV forcing, per layer.

    ``||S_direct - S_flux||_2 / ||S_direct||_2`` over all axes but the level axis
    (``[..., 2, y, x]`` -> ``[2]``). Round-off (~1e-13) for operators that commute
    with derivatives (``spectral``, ``gaussian``); O(0.1-1) for block averaging
    (``gcm``), which does not: there the identity is a modelling error to report.
    """
    d, s = fields["S_direct"], fields["S_flux"]
    axes = tuple(a for a in range(d.ndim) if a != d.ndim - 3)
    return np.sqrt(((d - s) ** 2).sum(axis=axes) / (d**2).sum(axis=axes))
