"""Measuring equivariance under arbitrary angles on analytic fields, without interpolation.

Only the grid's 90-degree turns and reflections map grid points onto grid points; for any other
rotation R the discrete operator's stencil is not R-symmetric and equivariance holds only as
the grid refines. To measure that error without resampling anything, the field is an analytic
function f and the operator is evaluated as what it is, a weighted sum over its stencil, at arbitrary points y::

    A f (y) = sum_r K(r) f(y + r)

Then the error is::

    error(R) = max_x | A (g f)(x) - rho_out(R) A f (R^-1 x) | / max_x | A f (x) |

with ``(g f)(x) = rho_in(R) f(R^-1 x)``: both terms sample f exactly, at rotated points.

The component matrices here are those of :func:`roteq_param.symmetry.component_matrix`
extended to any rotation angle (symmetry's elements stop at 45 degrees); a test holds the two
equal on every element of D8.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from roteq_param.symmetry import Kind

from .angular import check_gridded, parity, rank
from .operator import RadialOperator

__all__ = ["rotation_matrix", "component_matrix_at", "apply_to_function", "rotation_error"]

_CHUNK = 2048
AnalyticField = Callable[[np.ndarray, np.ndarray], np.ndarray]


def rotation_matrix(angle: float, flip: bool = False) -> np.ndarray:
    """``Rot(angle) @ F**flip`` acting on (x, y), with ``F: (x, y) -> (-x, y)`` as in symmetry."""
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[c, -s], [s, c]])
    return m @ np.diag([-1.0, 1.0]) if flip else m


def component_matrix_at(R: np.ndarray, kind: Kind | str) -> np.ndarray:
    """The matrix acting on a field's components under the orthogonal map R (any angle)."""
    kind = check_gridded(kind)
    det = float(round(np.linalg.det(R)))
    sign = det if parity(kind) < 0 else 1.0
    if rank(kind) == 0:
        return np.full((1, 1), sign)
    if rank(kind) == 1:
        return sign * R
    out = np.empty((3, 3))
    for c, E in enumerate((np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]]),
                           np.array([[0.0, 0.0], [0.0, 1.0]]))):
        T = R @ E @ R.T
        out[:, c] = (T[0, 0], T[0, 1], T[1, 1])
    return out


def apply_to_function(op: RadialOperator, f: AnalyticField, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sum_r K(r) f(p + r)`` at the points ``p = (x, y)`` (m), for an analytic field ``f``.

    ``f(x, y)`` takes coordinate arrays (m) and returns ``[n_in, *x.shape]``. The operator's boundary
    plays no part (f is known everywhere). Returns ``[n_out, *x.shape]`` in float64.
    """
    with torch.no_grad():
        offsets, kernel = op.stencil(torch.float64)
    kernel = kernel.numpy()
    px, py = np.ravel(x), np.ravel(y)
    out = np.zeros((kernel.shape[0], px.size))
    for start in range(0, len(offsets), _CHUNK):  # [points, offsets] blocks: vectorised, bounded memory
        i, j = offsets[start:start + _CHUNK, 0], offsets[start:start + _CHUNK, 1]
        values = f(px[:, None] + i * op.dx, py[:, None] + j * op.dy)  # [n_in, points, chunk]
        out += np.einsum("oic,ipc->op", kernel[:, :, start:start + _CHUNK], values)
    return out.reshape((kernel.shape[0],) + np.shape(x))


def rotation_error(op: RadialOperator, f: AnalyticField, x: np.ndarray, y: np.ndarray, angle: float,
                   flip: bool = False) -> float:
    """The relative equivariance error of ``op`` under ``Rot(angle) F**flip`` on the analytic ``f``.

    ``max |A(g f)(p) - rho_out A f(R^-1 p)| / max |A f(p)|`` over the points ``p = (x, y)`` (m).
    """
    R = rotation_matrix(angle, flip)
    Rinv = R.T
    rho_in = component_matrix_at(R, op.kind_in)
    rho_out = component_matrix_at(R, op.kind_out)

    def turned(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        qx, qy = Rinv[0, 0] * px + Rinv[0, 1] * py, Rinv[1, 0] * px + Rinv[1, 1] * py
        return np.einsum("ab,b...->a...", rho_in, f(qx, qy))

    qx, qy = Rinv[0, 0] * x + Rinv[0, 1] * y, Rinv[1, 0] * x + Rinv[1, 1] * y
    lhs = apply_to_function(op, turned, x, y)
    rhs = np.einsum("ab,b...->a...", rho_out, apply_to_function(op, f, qx, qy))
    return float(np.max(np.abs(lhs - rhs)) / np.max(np.abs(apply_to_function(op, f, x, y))))
