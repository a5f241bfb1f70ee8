"""Built-in equivariant operators, each a :class:`RadialOperator` with a known profile.

Differential operators use centred finite differences on the axis stencil (order 2 or 4), whose
weights are a radial profile times the pairing's unit field:

=====================  ===========================  ===================  ==========================
operator               kinds                        unit field           profile (order 2)
=====================  ===========================  ===================  ==========================
gradient               scalar -> vector             ``n``                ``1 / (2 h)`` at r = h
skew_gradient          pseudoscalar -> vector       ``J n``              ``1 / (2 h)``: (-d_y, d_x)
divergence             vector -> scalar             ``n . v``            ``1 / (2 h)``
curl                   vector -> pseudoscalar       ``n . J v``          ``-1 / (2 h)``: d_x v_y - d_y v_x
laplacian              any kind -> same kind        identity             ``1 / h^2``, centre ``-2 (dx^-2 + dy^-2)``
symmetric_gradient     vector -> tensor             ``sym(n v)``         ``1 / (2 h)``
tensor_divergence      tensor -> vector             ``T n``              ``1 / (2 h)``
=====================  ===========================  ===================  ==========================

(h is the grid spacing along the axis the offset lies on; pseudo inputs give pseudo outputs where
the parity rule of :mod:`.angular` says so.) The integral operators sample a continuous kernel:
Gaussian diffusion (:class:`.profiles.HeatKernel`) and the Poisson Green's function and its
gradient (:class:`.profiles.PoissonGreen`). :func:`neural` builds a learnable operator for any
pairing.
"""

from __future__ import annotations

import math

from roteq_param.symmetry import Kind

from .angular import check_gridded, n_terms, parity, rank
from .operator import RadialOperator
from .profiles import AxisStencil, HeatKernel, PoissonGreen, RadialBasisProfile

__all__ = ["gradient", "skew_gradient", "divergence", "curl", "laplacian", "symmetric_gradient",
           "tensor_divergence", "gaussian_diffusion", "green_potential", "green_field", "neural"]

# Centred first and second derivatives: weights per shell (distance in cells) and at the centre.
_FIRST = {2: [0.5], 4: [2.0 / 3.0, -1.0 / 12.0]}
_SECOND = {2: ([1.0], -2.0), 4: ([4.0 / 3.0, -1.0 / 12.0], -5.0 / 2.0)}


def _first(order: int, sign: float = 1.0) -> AxisStencil:
    if order not in _FIRST:
        raise ValueError(f"finite-difference order must be one of {sorted(_FIRST)}; got {order!r}")
    return AxisStencil([[sign * w for w in _FIRST[order]]], power=1)


def _same_parity_kind(template: Kind, parity_of: int) -> Kind:
    """The kind of ``template``'s rank with the given parity (tensors are always true)."""
    table = {(0, 1): Kind.SCALAR, (0, -1): Kind.PSEUDOSCALAR, (1, 1): Kind.VECTOR, (1, -1): Kind.PSEUDOVECTOR,
             (2, 1): Kind.TENSOR}
    return table[(rank(template), parity_of)]


def _checked(kind: Kind | str, want_rank: int, what: str) -> Kind:
    kind = check_gridded(kind)
    if rank(kind) != want_rank:
        names = {0: "a scalar or pseudoscalar", 1: "a vector or pseudovector", 2: "a tensor"}[want_rank]
        raise ValueError(f"{what} acts on {names} field; got kind {kind.value!r}")
    return kind


def _first_derivative(kind: Kind | str, in_rank: int, out_rank_template: Kind, keep_parity: bool, what: str,
                      dx: float, dy: float | None, boundary: str, order: int, sign: float = 1.0) -> RadialOperator:
    """A first-derivative operator on the axis stencil: the pairing's one unit field of the wanted parity."""
    kind = _checked(kind, in_rank, what)
    out = _same_parity_kind(out_rank_template, parity(kind) if keep_parity else -parity(kind))
    return RadialOperator(kind, out, _first(order, sign), dx=dx, dy=dy, boundary=boundary)


def gradient(dx: float, dy: float | None = None, *, boundary: str = "periodic", order: int = 2,
             kind: Kind | str = Kind.SCALAR) -> RadialOperator:
    """``grad f`` (units of f per m): scalar -> vector, pseudoscalar -> pseudovector."""
    return _first_derivative(kind, 0, Kind.VECTOR, True, "the gradient", dx, dy, boundary, order)


def skew_gradient(dx: float, dy: float | None = None, *, boundary: str = "periodic", order: int = 2,
                  kind: Kind | str = Kind.PSEUDOSCALAR) -> RadialOperator:
    """``(-d_y f, d_x f)``: a pseudoscalar streamfunction to its (true) velocity, as in pyqg."""
    return _first_derivative(kind, 0, Kind.VECTOR, False, "the skew gradient", dx, dy, boundary, order)


def divergence(dx: float, dy: float | None = None, *, boundary: str = "periodic", order: int = 2,
               kind: Kind | str = Kind.VECTOR) -> RadialOperator:
    """``d_x v_x + d_y v_y``: vector -> scalar, pseudovector -> pseudoscalar."""
    return _first_derivative(kind, 1, Kind.SCALAR, True, "the divergence", dx, dy, boundary, order)


def curl(dx: float, dy: float | None = None, *, boundary: str = "periodic", order: int = 2,
         kind: Kind | str = Kind.VECTOR) -> RadialOperator:
    """``d_x v_y - d_y v_x``: vector -> pseudoscalar (vorticity), pseudovector -> scalar."""
    # The parity-changing unit field is n . (J v) = -(d_x v_y - d_y v_x) / (2h) at order 2: flip the sign.
    return _first_derivative(kind, 1, Kind.SCALAR, False, "the curl", dx, dy, boundary, order, sign=-1.0)


def laplacian(dx: float, dy: float | None = None, *, boundary: str = "periodic", order: int = 2,
              kind: Kind | str = Kind.SCALAR) -> RadialOperator:
    """The Laplacian of each component (units of the field per m^2), any gridded kind to itself."""
    kind = check_gridded(kind)
    if order not in _SECOND:
        raise ValueError(f"finite-difference order must be one of {sorted(_SECOND)}; got {order!r}")
    shells, centre = _SECOND[order]
    # The identity is the first unit field of every kind -> same kind pairing.
    return RadialOperator(kind, kind, AxisStencil([shells], power=2, centre=[centre]), dx=dx, dy=dy,
                          boundary=boundary, terms=(0,))


def symmetric_gradient(dx: float, dy: float | None = None, *, boundary: str = "periodic",
                       order: int = 2) -> RadialOperator:
    """``(grad v + grad v^T) / 2`` as (xx, xy, yy) = (d_x v_x, (d_x v_y + d_y v_x)/2, d_y v_y)."""
    return RadialOperator(Kind.VECTOR, Kind.TENSOR, _first(order), dx=dx, dy=dy, boundary=boundary, terms=(1,))


def tensor_divergence(dx: float, dy: float | None = None, *, boundary: str = "periodic",
                      order: int = 2) -> RadialOperator:
    """``(div T)_a = d_b T_ab`` of a symmetric tensor (xx, xy, yy): tensor -> vector."""
    return RadialOperator(Kind.TENSOR, Kind.VECTOR, _first(order), dx=dx, dy=dy, boundary=boundary, terms=(1,))


def gaussian_diffusion(kappa, time: float, dx: float, dy: float | None = None, *, boundary: str = "periodic",
                       kind: Kind | str = Kind.SCALAR, truncate: float = 8.0) -> RadialOperator:
    """Diffuse each component for ``time`` (s) at diffusivity ``kappa`` (m^2/s; may require grad).

    The spectral reference is the multiplier ``exp(-kappa time |k|^2)``.
    """
    kind = check_gridded(kind)
    return RadialOperator(kind, kind, HeatKernel(kappa, time, truncate), dx=dx, dy=dy, boundary=boundary,
                          terms=(0,))


def _domain_rmax(rmax: float | None, shape: tuple[int, int] | None, dx: float, dy: float) -> float:
    if rmax is not None:
        return float(rmax)
    if shape is None:
        raise ValueError("give the Green's function's support: rmax (m), or the grid shape (ny, nx) to cover it")
    ny, nx = shape
    return math.hypot(nx * dx, ny * dy)


def green_potential(dx: float, dy: float | None = None, *, shape: tuple[int, int] | None = None,
                    rmax: float | None = None, boundary: str = "zero") -> RadialOperator:
    """``psi = G * rho`` with ``laplacian(psi) = rho``, ``G = ln(r) / (2 pi)`` (free space).

    With ``shape=(ny, nx)`` the kernel covers the whole domain, so on a bounded (``"zero"``) domain the
    result is the free-space potential of the charge inside it. Units: those of rho times m^2.
    """
    dy = dx if dy is None else dy
    return RadialOperator(Kind.SCALAR, Kind.SCALAR, PoissonGreen("potential", _domain_rmax(rmax, shape, dx, dy)),
                          dx=dx, dy=dy, boundary=boundary)


def green_field(dx: float, dy: float | None = None, *, shape: tuple[int, int] | None = None,
                rmax: float | None = None, boundary: str = "zero") -> RadialOperator:
    """``grad psi`` of :func:`green_potential`'s potential, straight from rho (units of rho times m)."""
    dy = dx if dy is None else dy
    return RadialOperator(Kind.SCALAR, Kind.VECTOR, PoissonGreen("field", _domain_rmax(rmax, shape, dx, dy)),
                          dx=dx, dy=dy, boundary=boundary)


def neural(kind_in: Kind | str, kind_out: Kind | str, rmax: float, dx: float, dy: float | None = None, *,
           n_basis: int = 16, spacing: str = "linear", rmin: float | None = None, scale: float = 1.0,
           boundary: str = "periodic", method: str = "auto") -> RadialOperator:
    """A learnable operator ``kind_in -> kind_out``: one hat-function profile per unit field.

    See :class:`.profiles.RadialBasisProfile` for ``rmax``, ``n_basis``, ``spacing``, ``rmin`` and ``scale``.
    The weights start at zero (the zero operator).
    """
    profile = RadialBasisProfile(n_terms(kind_in, kind_out), rmax, n_basis=n_basis, spacing=spacing, rmin=rmin,
                                 scale=scale)
    return RadialOperator(kind_in, kind_out, profile, dx=dx, dy=dy, boundary=boundary, method=method)
