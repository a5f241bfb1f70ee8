"""Unit kernel fields: the angular half of an equivariant kernel.

A linear operator between gridded fields that commutes with translations and with rotations
(and reflections, where the kinds allow) is a convolution with a kernel ``K(r)`` that obeys
``K(R r) = rho_out(R) K(r) rho_in(R)^-1``. Every such kernel is a sum of terms::

    K(r) = sum_t phi_t(|r|) U_t(r_hat)

(a sum over t of a scalar radial profile ``phi_t`` times a fixed *unit field* ``U_t`` built from the unit vector
``n = r / |r|``, its quarter turn ``m = J n = (-n_y, n_x)`` and the identity). This module lists the
``U_t`` for every pairing of the gridded kinds of :mod:`roteq_param.symmetry` and evaluates them
on arrays of ``n``.

Parity. A *pseudo* kind (pseudoscalar, pseudovector) changes sign under reflections. A term that
maps a true kind to a true kind (or pseudo to pseudo) is built from ``n`` and the identity only;
a term that changes parity carries one quarter turn ``J``, which commutes with rotations and
anticommutes with reflections. There is no nonzero radial operator between a scalar and a
pseudoscalar (a radial function cannot change sign under a reflection), and the symmetric tensor
has no pseudo variant in the schema, so tensor -> tensor terms always keep parity.

Component order follows :mod:`roteq_param.symmetry`: vectors ``(x, y)``, symmetric tensors
``(xx, xy, yy)``. A tensor input is contracted as the symmetric matrix it stands for, so its
``xy`` component meets the kernel twice.

Completeness (tested): without reflections the terms of both parities together span every
``n_out x n_in`` matrix at ``n = e_x``, which is the dimension of SO(2)-equivariant kernels;
with reflections each parity's terms span exactly the matrices the reflection fixing ``e_x``
allows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from roteq_param.symmetry import Kind, n_components

__all__ = ["term_names", "unit_fields", "n_terms", "rank", "parity", "check_gridded"]

_RANK = {Kind.SCALAR: 0, Kind.PSEUDOSCALAR: 0, Kind.VECTOR: 1, Kind.PSEUDOVECTOR: 1, Kind.TENSOR: 2}
_PARITY = {Kind.SCALAR: 1, Kind.PSEUDOSCALAR: -1, Kind.VECTOR: 1, Kind.PSEUDOVECTOR: -1, Kind.TENSOR: 1}

_J = np.array([[0.0, -1.0], [1.0, 0.0]])  # +90 degree turn of (x, y)
_I = np.eye(2)


def check_gridded(kind: Kind | str) -> Kind:
    """Parse ``kind`` and refuse the constant kinds, which have no spatial part to convolve."""
    kind = Kind.parse(kind)
    if kind.is_constant:
        raise ValueError(
            f"a radial operator acts on gridded fields; {kind.value!r} has no spatial part. "
            f"Broadcast it first (its gridded kind is {kind.broadcast.value!r})."
        )
    return kind


def rank(kind: Kind | str) -> int:
    """Tensor rank of a gridded kind: 0 (scalar), 1 (vector) or 2 (symmetric tensor)."""
    return _RANK[check_gridded(kind)]


def parity(kind: Kind | str) -> int:
    """+1 for true kinds, -1 for pseudo kinds (sign under reflections beyond the rotation)."""
    return _PARITY[check_gridded(kind)]


# Each term maps n [..., 2] to a full-index array [..., *out_idx, *in_idx] (rank-2 indices as 2x2).
_Term = Callable[[np.ndarray], np.ndarray]


def _e(spec: str, *ops: np.ndarray) -> np.ndarray:
    return np.einsum(spec, *ops)


def _sym(a: np.ndarray, i: int, j: int) -> np.ndarray:
    """Symmetrise a full-index array in the two axes counted from the end (negative i, j)."""
    return 0.5 * (a + np.swapaxes(a, i, j))


# Parity-keeping terms, by (rank_out, rank_in), with the names used in docs and reprs.
_KEEP: dict[tuple[int, int], list[tuple[str, _Term]]] = {
    (0, 0): [("1", lambda n: np.ones(n.shape[:-1]))],
    (1, 0): [("n", lambda n: n)],
    (0, 1): [("n.", lambda n: n)],
    (1, 1): [("I", lambda n: np.broadcast_to(_I, n.shape[:-1] + (2, 2)).copy()),
             ("n n.", lambda n: _e("...a,...b->...ab", n, n))],
    (2, 1): [("I n.", lambda n: _e("ab,...c->...abc", _I, n)),
             ("sym(n I)", lambda n: _sym(_e("...a,bc->...abc", n, _I), -3, -2)),
             ("n n n.", lambda n: _e("...a,...b,...c->...abc", n, n, n))],
    (1, 2): [("n tr", lambda n: _e("...a,bc->...abc", n, _I)),
             ("T n", lambda n: _sym(_e("ab,...c->...abc", _I, n), -2, -1)),
             ("n (n.T.n)", lambda n: _e("...a,...b,...c->...abc", n, n, n))],
    (2, 0): [("I", lambda n: np.broadcast_to(_I, n.shape[:-1] + (2, 2)).copy()),
             ("n n", lambda n: _e("...a,...b->...ab", n, n))],
    (0, 2): [("tr", lambda n: np.broadcast_to(_I, n.shape[:-1] + (2, 2)).copy()),
             ("n.T.n", lambda n: _e("...a,...b->...ab", n, n))],
    (2, 2): [("T", lambda n: np.broadcast_to(
                 0.5 * (_e("ac,bd->abcd", _I, _I) + _e("ad,bc->abcd", _I, _I)), n.shape[:-1] + (2,) * 4).copy()),
             ("I tr", lambda n: np.broadcast_to(_e("ab,cd->abcd", _I, _I), n.shape[:-1] + (2,) * 4).copy()),
             ("I n.T.n", lambda n: _e("ab,...c,...d->...abcd", _I, n, n)),
             ("n n tr", lambda n: _e("...a,...b,cd->...abcd", n, n, _I)),
             ("n n n.T.n", lambda n: _e("...a,...b,...c,...d->...abcd", n, n, n, n))],
}


def _flip_terms(ro: int, ri: int) -> list[tuple[str, _Term]]:
    """Parity-changing terms: a quarter turn on the vector side, or the explicit tensor ones."""
    keep = _KEEP[(ro, ri)]
    if ro == 1:
        # Turn the output vector: U'[a, ...] = J[a, e] U[e, ...]. The output axis sits before ri input axes.
        return [(f"J {name}", (lambda t: lambda n: np.moveaxis(
                    _e("ae,...e->...a", _J, np.moveaxis(t(n), -ri - 1, -1)), -1, -ri - 1))(t))
                for name, t in keep]
    if ri == 1:
        # Turn the input vector: U'[..., b] = U[..., e] J[e, b].
        return [(f"{name} J", (lambda t: lambda n: _e("...e,eb->...b", t(n), _J))(t)) for name, t in keep]
    if (ro, ri) == (2, 0):
        return [("sym(n m)", lambda n: _sym(_e("...a,...b->...ab", n, n @ _J.T), -2, -1))]
    if (ro, ri) == (0, 2):
        return [("n.T.m", lambda n: _sym(_e("...a,...b->...ab", n, n @ _J.T), -2, -1))]
    return []


def _terms(kind_in: Kind, kind_out: Kind) -> list[tuple[str, _Term]]:
    ro, ri = _RANK[kind_out], _RANK[kind_in]
    if _PARITY[kind_in] == _PARITY[kind_out]:
        return _KEEP[(ro, ri)]
    terms = _flip_terms(ro, ri)
    if not terms:
        raise ValueError(
            f"no nonzero rotation-equivariant radial operator maps a {kind_in.value} to a {kind_out.value}: "
            "a radial kernel cannot change sign under a reflection. Use the kind of the other parity "
            "(e.g. pseudoscalar -> pseudoscalar), or compose with an operator through a vector kind."
        )
    return terms


def term_names(kind_in: Kind | str, kind_out: Kind | str) -> tuple[str, ...]:
    """Names of the unit fields for this pairing, in the order their profiles are expected."""
    return tuple(name for name, _ in _terms(check_gridded(kind_in), check_gridded(kind_out)))


def n_terms(kind_in: Kind | str, kind_out: Kind | str) -> int:
    """Number of independent radial profiles an operator ``kind_in -> kind_out`` has."""
    return len(term_names(kind_in, kind_out))


def _to_components(full: np.ndarray, ro: int, ri: int) -> np.ndarray:
    """Full-index kernel [..., *out, *in] -> component kernel [..., n_out, n_in] in the schema's order."""
    lead = full.shape[: full.ndim - ro - ri]
    if ri == 2:
        # A symmetric input T contributes K_ab T_ab: xy meets both off-diagonal entries.
        full = np.stack([full[..., 0, 0], full[..., 0, 1] + full[..., 1, 0], full[..., 1, 1]], axis=-1)
    elif ri == 0:
        full = full[..., None]
    if ro == 2:
        full = np.stack([full[..., 0, 0, :], full[..., 0, 1, :], full[..., 1, 1, :]], axis=-2)
    elif ro == 0:
        full = full[..., None, :]
    return full.reshape(lead + full.shape[-2:])


def _monomial_average_rounding(avg: np.ndarray) -> np.ndarray:
    # Angular means of products of up to four components of n are 0, 1/2, 1/8 or 3/8: multiples of 1/8.
    # Rounding the sampled mean to them makes the r = 0 value exactly isotropic, hence exactly equivariant.
    snapped = np.round(avg * 8.0) / 8.0
    if np.max(np.abs(snapped - avg)) > 1e-12:
        raise RuntimeError("an angular mean of a unit field is not a multiple of 1/8: a unit field of degree > 4 "
                           "was added to the basis; extend the exact means at r = 0 before using it")
    return snapped


def unit_fields(kind_in: Kind | str, kind_out: Kind | str, n: np.ndarray, at_origin: np.ndarray | None = None
                ) -> np.ndarray:
    """Evaluate the unit fields of a pairing at unit vectors ``n``.

    Parameters
    ----------
    kind_in, kind_out:
        Gridded kinds of the operator's input and output.
    n:
        Unit vectors ``(n_x, n_y)``, shape ``[P, 2]`` (dimensionless).
    at_origin:
        Optional boolean mask ``[P]`` of points at ``r = 0``, where ``n`` is undefined. There each
        unit field takes its angular mean, the only value an equivariant kernel can have at the
        origin (an odd field vanishes, ``n n`` becomes ``I/2``).

    Returns
    -------
    Array ``[n_terms, P, n_out, n_in]`` (float64).
    """
    kind_in, kind_out = check_gridded(kind_in), check_gridded(kind_out)
    ro, ri = _RANK[kind_out], _RANK[kind_in]
    n = np.asarray(n, dtype=np.float64)
    terms = _terms(kind_in, kind_out)
    out = np.empty((len(terms), n.shape[0], n_components(kind_out), n_components(kind_in)))
    for t, (_, term) in enumerate(terms):
        out[t] = _to_components(term(n), ro, ri)
    if at_origin is not None and np.any(at_origin):
        angles = 2.0 * np.pi * np.arange(16) / 16.0
        ring = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
        for t, (_, term) in enumerate(terms):
            mean = _to_components(term(ring), ro, ri).mean(axis=0)
            out[t, np.asarray(at_origin)] = _monomial_average_rounding(mean)
    return out
