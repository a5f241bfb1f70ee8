r"""Veros's grid and level conventions, mapped to and from the C-grid adapter's.

Veros 1.7.0 (``veros/variables.py``) stores every 3-D field as ``[x, y, z]`` with two halo cells
on each horizontal side, and level ``k = 0`` at the *bottom*. Its faces are *east/north* of their
cell: ``u[i, j]`` sits at ``xu[i] = xt[i] + dxt[i]/2`` and ``v[i, j]`` at ``yu[j] = yt[j] + dyt[j]/2``;
``maskU[i] = min(maskT[i], maskT[i+1])``. :mod:`solver_coupling.cgrid.staggered` wants ``[z, y, x]``
with u on the *west* face and v on the *south* face of cell ``(j, i)``, doubly periodic.

The mapping (one extra land row closes the channel)
---------------------------------------------------
Veros has no periodic y: a Veros domain is walled at its southern and northern edges. The adapter's
grid is therefore the ``ny`` interior rows plus **one land row** appended at the north; the
adapter's periodic wrap then meets land on both sides, so walls stay walls (the land rules of
:mod:`~solver_coupling.cgrid.staggered`: nothing is read from land, no flux crosses a wall). With
``i``, ``j`` the interior indices (Veros index ``i + 2``, ``j + 2``)::

    u_left[k, j, i] = u[(i - 1) mod nx + 2, j + 2, k]     (the east face of cell i - 1)
    v_left[k, j, i] = v[i + 2, j + 1, k],  j = 0 .. ny    (the north face of cell j - 1)

and the tendencies go back by the inverse maps. x is cyclic (``enable_cyclic_x``) and the roll
reads only interior points, never Veros's halos, so it does not depend on when they were last
exchanged.

Level groups
------------
A network layer is a group of consecutive Veros levels, split at the interface depths given (for
two layers, one depth: 500 m in the eddy configuration). The layer velocity is the thickness-weighted
mean over its levels, and a layer tendency is added to every level of its group, so the group's
thickness-weighted mean tendency is exactly the layer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LevelGroups", "adapter_mask", "faces_to_left", "left_to_faces", "centres_to_veros", "hydrostatic_pressure"]


@dataclass(frozen=True)
class LevelGroups:
    """Veros levels grouped into network layers, layer 1 at the top.

    Attributes
    ----------
    levels : tuple of int arrays
        Veros level indices (k = 0 at the bottom) of each layer, top layer first.
    weights : tuple of float arrays
        ``dzt[k] / H_layer`` for those levels (they sum to 1 per layer).
    thickness : float array
        Layer thicknesses ``H_i`` [m], top first.
    centre_depth : float array
        Thickness-weighted mean depth of each layer [m, positive down], top first.
    """

    levels: tuple
    weights: tuple
    thickness: np.ndarray
    centre_depth: np.ndarray

    @classmethod
    def split(cls, dzt, interfaces) -> "LevelGroups":
        """Group Veros levels of thickness ``dzt`` [m] (bottom first) at the ``interfaces`` depths [m].

        Every interface must coincide with a level boundary (to 1 mm), so that no level is shared
        between two layers.
        """
        dzt = np.asarray(dzt, dtype=float)
        if dzt.ndim != 1 or dzt.size < 1 or not np.all(dzt > 0):
            raise ValueError(f"dzt must be a 1-d array of positive level thicknesses [m]; got {dzt!r}")
        depth_top = np.concatenate([[0.0], np.cumsum(dzt[::-1])])  # boundaries, top down, positive down
        interfaces = np.atleast_1d(np.asarray(interfaces, dtype=float))
        if interfaces.ndim != 1 or np.any(np.diff(interfaces) <= 0):
            raise ValueError(f"interfaces must be increasing depths [m]; got {interfaces.tolist()}")
        cuts = []
        for z in interfaces:
            hit = np.flatnonzero(np.abs(depth_top[1:-1] - z) < 1e-3)
            if hit.size != 1:
                raise ValueError(
                    f"interface depth {z:g} m is not a boundary between Veros levels (boundaries at "
                    f"{np.round(depth_top[1:-1], 3).tolist()} m): choose dzt so that it is")
            cuts.append(int(hit[0]) + 1)
        nz = dzt.size
        bounds = [0, *cuts, nz]  # in top-down level counts
        levels, weights, H, zc = [], [], [], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            ks = np.arange(nz - 1 - a, nz - 1 - b, -1)  # Veros indices, top of the group first
            h = dzt[ks]
            levels.append(ks)
            weights.append(h / h.sum())
            H.append(h.sum())
            mid = depth_top[a:b] + h / 2.0
            zc.append(float(np.sum(mid * h) / h.sum()))
        return cls(tuple(levels), tuple(weights), np.array(H), np.array(zc))

    @property
    def n(self) -> int:
        """Number of layers."""
        return len(self.levels)

    def layer_mean(self, a: np.ndarray) -> np.ndarray:
        """Thickness-weighted layer means ``(n, ...)`` of a Veros field ``[x, y, z]`` -> ``(n, x, y)``."""
        return np.stack([np.tensordot(a[..., ks], w, axes=([-1], [0])) for ks, w in zip(self.levels, self.weights)])

    def spread(self, layers: np.ndarray, nz: int) -> np.ndarray:
        """Layer values ``(n, x, y)`` copied onto the Veros levels of each group -> ``[x, y, nz]``."""
        out = np.zeros((*layers.shape[1:], nz))
        for ks, val in zip(self.levels, layers):
            out[..., ks] = val[..., None]
        return out


def adapter_mask(maskT_interior: np.ndarray) -> np.ndarray:
    """The adapter's centre mask ``(ny + 1, nx)`` from Veros's interior ``maskT`` ``(nx, ny)``, plus the land row."""
    m = np.asarray(maskT_interior).astype(bool)
    return np.concatenate([m.T, np.zeros((1, m.shape[0]), dtype=bool)], axis=0)


def _check_veros_2d(a: np.ndarray, name: str, shape: tuple[int, int]) -> np.ndarray:
    a = np.asarray(a)
    if a.shape[:2] != shape:
        raise ValueError(f"{name} must be a Veros array of shape (nx + 4, ny + 4, ...) = {shape + a.shape[2:]} "
                         f"(2 halo cells each side, time level already selected); got {a.shape}")
    return a


def faces_to_left(u_east: np.ndarray, v_north: np.ndarray, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """Veros face fields ``[x, y, ...]`` (with halos) -> the adapter's ``[..., ny + 1, nx]`` west/south faces.

    ``u_east``, ``v_north``: shape ``(nx + 4, ny + 4)`` or ``(nx + 4, ny + 4, n)``; the outputs put the
    trailing axis first. Row ``ny`` of ``u_left`` is the appended land row (0); row 0 and row ``ny`` of
    ``v_left`` are the southern and northern wall faces.
    """
    u_east = _check_veros_2d(u_east, "u", (nx + 4, ny + 4))
    v_north = _check_veros_2d(v_north, "v", (nx + 4, ny + 4))
    u_int = np.roll(u_east[2:-2, 2:-2], 1, axis=0)  # east face of cell i-1 = west face of cell i
    u_left = np.zeros((nx, ny + 1, *u_east.shape[2:]))
    u_left[:, :ny] = u_int
    v_left = v_north[2:-2, 1:-2]  # north face of row j-1 = south face of row j, j = 0 .. ny
    return np.moveaxis(u_left, (0, 1), (-1, -2)), np.moveaxis(v_left, (0, 1), (-1, -2)).astype(float)


def left_to_faces(du: np.ndarray, dv: np.ndarray, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """The adapter's west/south face tendencies ``[..., ny + 1, nx]`` -> Veros arrays ``[x, y, ...]`` with halos.

    The inverse of :func:`faces_to_left` on wet points; x halos are filled cyclically, y halos and
    the appended land row are dropped (they are land).
    """
    du = np.moveaxis(np.asarray(du), (-1, -2), (0, 1))  # [x, y, ...]
    dv = np.moveaxis(np.asarray(dv), (-1, -2), (0, 1))
    if du.shape[:2] != (nx, ny + 1) or dv.shape[:2] != (nx, ny + 1):
        raise ValueError(f"tendencies must have shape [..., ny + 1, nx] = [..., {ny + 1}, {nx}]")
    u = np.zeros((nx + 4, ny + 4, *du.shape[2:]))
    v = np.zeros_like(u)
    u[2:-2, 2:-2] = np.roll(du[:, :ny], -1, axis=0)
    v[2:-2, 1:-2] = dv
    return _cyclic_x(u), _cyclic_x(v)


def centres_to_veros(c: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Centre fields ``[..., ny + 1, nx]`` of the adapter -> Veros ``[x, y, ...]`` with halos (land row dropped)."""
    c = np.moveaxis(np.asarray(c), (-1, -2), (0, 1))
    out = np.zeros((nx + 4, ny + 4, *c.shape[2:]))
    out[2:-2, 2:-2] = c[:, :ny]
    return _cyclic_x(out)


def hydrostatic_pressure(rho: np.ndarray, dzw: np.ndarray, grav: float, rho_0: float) -> np.ndarray:
    """Veros's baroclinic pressure ``p / rho_0`` [m^2 s^-2] from density ``rho`` ``[..., z]`` (k = 0 at the bottom).

    Veros's own formula (``core/external/solve_stream.py``): half a w-cell below the surface for the
    top level, then the trapezoidal rule between levels, with its ``dzw`` [m].
    """
    g = grav / rho_0
    p = np.empty_like(rho)
    p[..., -1] = 0.5 * rho[..., -1] * g * dzw[-1]
    for k in range(rho.shape[-1] - 2, -1, -1):
        p[..., k] = p[..., k + 1] + 0.5 * dzw[k] * g * (rho[..., k + 1] + rho[..., k])
    return p


def _cyclic_x(a: np.ndarray) -> np.ndarray:
    # what veros.core.utilities.enforce_boundaries does for a cyclic x axis
    a[:2] = a[-4:-2]
    a[-2:] = a[2:4]
    return a
