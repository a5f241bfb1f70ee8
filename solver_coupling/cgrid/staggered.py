r"""Numba kernels between an Arakawa C-grid and collocated cell centres.

Index convention (the only one used in roteq-param)
---------------------------------------------------
Arrays are laid out ``[..., y, x]`` (docs/design.md §2): index ``j`` runs along y,
index ``i`` along x, and y grows with j. The domain is doubly periodic with
``ny`` x ``nx`` cells of size ``dx`` x ``dy``; every kind of point therefore has
exactly ``ny * nx`` locations and every array has shape ``[..., ny, nx]``.
Entry ``[j, i]`` of each kind lives at the *west* / *south* / *south-west* side
of tracer cell ``(j, i)``::

           y
           ^   z[j+1,i]        v[j+1,i]       z[j+1,i+1]
           |      +---------------o---------------+
           |      |                               |
           |      |                               |
           |   u[j,i] >        b[j,i] *           > u[j,i+1]
           |      |                               |
           |      |                               |
           |      +---------------o---------------+
           |   z[j,i]           v[j,i]          z[j,i+1]
           +------------------------------------------------> x

==========  =========================  ==============================  =====================
point       x                          y                               holds
==========  =========================  ==============================  =====================
centre      ``(i + 1/2) dx``           ``(j + 1/2) dy``                b, tau_xx, tau_yy
u-point     ``i dx`` (west face)       ``(j + 1/2) dy``                u, du, F_x
v-point     ``(i + 1/2) dx``           ``j dy`` (south face)           v, dv, F_y
corner      ``i dx``                   ``j dy`` (south-west corner)    tau_xy, vorticity
==========  =========================  ==============================  =====================

Centres coincide with pyqg's grid points (``x_i = (i + 1/2) dx``) and with the
points :mod:`roteq_param.symmetry` rotates about the domain centre. This is
MITgcm's convention and xgcm's ``'left'`` position on both axes. A model that
stores u on the *east* face (``x = (i + 1) dx``, e.g. veros) converts with
``np.roll(u_east, 1, axis=-1)`` and back with ``np.roll(u, -1, axis=-1)``;
likewise for v along ``axis=-2``.

Land masks
----------
A land mask is given once, at centres: ``mask[j, i]`` is True for a wet (ocean)
cell. The masks of the other points are derived from it:

* a u-point or v-point is wet only if both cells it separates are wet;
* a corner is wet only if all four cells around it are wet.

Rules, chosen so that land never leaks into the ocean and walls carry no flux:

* Values stored on land points are never read (they may be NaN); every output
  is exactly 0 on land points of its kind.
* Interpolation uses fixed weights (1/2 between two points, 1/4 between four)
  with land points counting as 0. For face -> centre this is the physically
  right rule: the normal velocity on a wall face is 0 (no flow through walls),
  so the centre next to a wall gets half the velocity of its wet face, the
  second-order value of a profile that vanishes at the wall. Corner values
  touching land are 0 (a free-slip, stress-free wall for tau_xy). With fixed
  weights each "to centres" kernel is exactly the transpose of its "from
  centres" kernel, masks included (``<A a, c> = <a, A^T c>`` to round-off).
  Constants are reproduced exactly wherever all the points averaged are wet.
* Divergences are in flux form on the control volume of each output point, and
  a flux through a face of that volume counts only if the control volumes on
  both sides of it are wet. Walls thus exert no parameterised stress and carry
  no tracer flux, and the domain sums of ``du`` (over wet u-points), ``dv`` (wet
  v-points) and ``db`` (wet centres) vanish to round-off, with or without land.

Kernels
-------
All kernels are ``@njit(cache=True)`` on 2-D ``(ny, nx)`` slices; the public
wrappers below accept any leading dimensions (layers, batch) and keep the input
dtype (float32 or float64). ``parallel=True`` is not used: at the sizes coupled
here (2 x 64^2) a whole kernel takes a few microseconds, less than numba's
thread-pool dispatch, and the machine's cores are better spent on ensemble
members. Mask arguments are arrays or None; numba compiles a separate, mask-free
specialisation for None, so unmasked grids pay nothing for masking. The
periodic wrap is handled by peeling the first/last column so the inner loops
have affine indices and vectorise.

The two fused kernels :func:`cgrid_to_centres_kernel` and
:func:`centred_fluxes_to_tendencies_kernel` are what :mod:`solver_coupling.cgrid`
calls every time step; they are compositions of the single kernels (a test
checks this to round-off) run in one compiled call.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
from numba import njit

from roteq_param.symmetry import Element, Kind, act, component_matrix

__all__ = [
    "CGridMasks",
    "u_to_centre",
    "v_to_centre",
    "centre_to_u",
    "centre_to_v",
    "centre_to_corner",
    "corner_to_centre",
    "tensor_divergence",
    "flux_divergence",
    "vorticity",
    "cgrid_to_centres_kernel",
    "centred_fluxes_to_tendencies_kernel",
    "rotate_cgrid_state",
]


# --------------------------------------------------------------------------- masks


@dataclass(frozen=True)
class CGridMasks:
    """Wet masks of the four kinds of C-grid points, derived from the centre mask.

    Attributes are boolean ``(ny, nx)`` arrays, True on wet points: ``centre``,
    ``u`` (wet iff both cells west and east of the face are wet), ``v`` (both
    cells south and north) and ``corner`` (all four cells around it). Without a
    land mask all four are None, which selects the kernels' unmasked
    specialisation.
    """

    centre: np.ndarray | None
    u: np.ndarray | None
    v: np.ndarray | None
    corner: np.ndarray | None

    @classmethod
    def from_centre(cls, mask, shape: tuple[int, int], name: str = "mask") -> "CGridMasks":
        """Build the masks for a ``shape = (ny, nx)`` grid from a centre mask (None: all wet).

        Raises ValueError if ``mask`` is not a ``(ny, nx)`` array of booleans
        (or of 0/1 values), or if the grid has fewer than 2 cells along an axis.
        """
        ny, nx = shape
        if ny < 2 or nx < 2:
            raise ValueError(f"a periodic C-grid needs at least 2 cells along each axis; got (ny, nx) = {(ny, nx)}")
        if mask is None:
            return cls(None, None, None, None)
        m = np.asarray(mask)
        if m.shape != (ny, nx):
            raise ValueError(
                f"{name} must be a centre mask of shape (ny, nx) = {(ny, nx)} (True on wet cells); got shape {m.shape}"
            )
        if m.dtype != np.bool_:
            if not np.issubdtype(m.dtype, np.number) or not np.all((m == 0) | (m == 1)):
                raise ValueError(f"{name} must hold booleans (True = wet cell) or 0/1 values; got dtype {m.dtype}")
            m = m.astype(bool)
        c = np.ascontiguousarray(m)
        # u[j, i] separates cells (j, i-1) and (j, i); v[j, i] separates (j-1, i) and (j, i);
        # corner[j, i] touches u-points (j-1, i) and (j, i), hence all four cells.
        u = c & np.roll(c, 1, axis=1)
        v = c & np.roll(c, 1, axis=0)
        z = u & np.roll(u, 1, axis=0)
        return cls(c, u, v, z)


# --------------------------------------------------------------------------- 2-D kernels
# Mask arguments are either boolean (ny, nx) arrays or None. numba compiles a separate specialisation for None
# and prunes the mask tests from it, so unmasked grids pay nothing for masking (a runtime flag cost 2x here).


@njit(cache=True)
def _sel(value, m, j, i):
    """``value`` if point (j, i) of mask ``m`` is wet (or there is no mask), else 0.

    A select, not a product with the mask, so NaN stored on land never propagates.
    """
    if m is None:
        return value
    return value if m[j, i] else 0.0


@njit(cache=True)
def _u_to_centre_2d(u, mu, mc, out):
    ny, nx = u.shape
    for j in range(ny):
        for i in range(nx - 1):
            out[j, i] = _sel(0.5 * (_sel(u[j, i], mu, j, i) + _sel(u[j, i + 1], mu, j, i + 1)), mc, j, i)
        i = nx - 1
        out[j, i] = _sel(0.5 * (_sel(u[j, i], mu, j, i) + _sel(u[j, 0], mu, j, 0)), mc, j, i)


@njit(cache=True)
def _v_to_centre_2d(v, mv, mc, out):
    ny, nx = v.shape
    for j in range(ny):
        jp = j + 1 if j < ny - 1 else 0
        for i in range(nx):
            out[j, i] = _sel(0.5 * (_sel(v[j, i], mv, j, i) + _sel(v[jp, i], mv, jp, i)), mc, j, i)


@njit(cache=True)
def _centre_to_u_2d(c, mu, out):
    # A wet u-point has two wet cells, so only wet centre values are ever read.
    ny, nx = c.shape
    for j in range(ny):
        out[j, 0] = _sel(0.5 * (c[j, nx - 1] + c[j, 0]), mu, j, 0)
        for i in range(1, nx):
            out[j, i] = _sel(0.5 * (c[j, i - 1] + c[j, i]), mu, j, i)


@njit(cache=True)
def _centre_to_v_2d(c, mv, out):
    ny, nx = c.shape
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        for i in range(nx):
            out[j, i] = _sel(0.5 * (c[jm, i] + c[j, i]), mv, j, i)


@njit(cache=True)
def _centre_to_corner_2d(c, mz, out):
    ny, nx = c.shape
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        out[j, 0] = _sel(0.25 * ((c[jm, nx - 1] + c[jm, 0]) + (c[j, nx - 1] + c[j, 0])), mz, j, 0)
        for i in range(1, nx):
            out[j, i] = _sel(0.25 * ((c[jm, i - 1] + c[jm, i]) + (c[j, i - 1] + c[j, i])), mz, j, i)


@njit(cache=True)
def _corner_pair(z, mz, j, i, ip):
    return _sel(z[j, i], mz, j, i) + _sel(z[j, ip], mz, j, ip)


@njit(cache=True)
def _corner_to_centre_2d(z, mz, mc, out):
    ny, nx = z.shape
    for j in range(ny):
        jp = j + 1 if j < ny - 1 else 0
        for i in range(nx - 1):
            out[j, i] = _sel(0.25 * (_corner_pair(z, mz, j, i, i + 1) + _corner_pair(z, mz, jp, i, i + 1)), mc, j, i)
        i = nx - 1
        out[j, i] = _sel(0.25 * (_corner_pair(z, mz, j, i, 0) + _corner_pair(z, mz, jp, i, 0)), mc, j, i)


@njit(cache=True)
def _du_point(txx, txy, mu, mz, idx, idy, j, jp, i, im, ip):
    # Control volume of u[j, i]: x from centre (j, i-1) to centre (j, i), y from corner (j, i) to (j+1, i).
    # A centre flux counts only if the u-points on both sides are wet (no stress through walls).
    east = _sel(txx[j, i], mu, j, ip)
    west = _sel(txx[j, im], mu, j, im)
    north = _sel(txy[jp, i], mz, jp, i)
    south = _sel(txy[j, i], mz, j, i)
    return _sel(-((east - west) * idx + (north - south) * idy), mu, j, i)


@njit(cache=True)
def _dv_point(txy, tyy, mv, mz, idx, idy, j, jm, jp, i, ip):
    # Control volume of v[j, i]: x from corner (j, i) to (j, i+1), y from centre (j-1, i) to centre (j, i).
    east = _sel(txy[j, ip], mz, j, ip)
    west = _sel(txy[j, i], mz, j, i)
    north = _sel(tyy[j, i], mv, jp, i)
    south = _sel(tyy[jm, i], mv, jm, i)
    return _sel(-((east - west) * idx + (north - south) * idy), mv, j, i)


@njit(cache=True)
def _tensor_divergence_2d(txx, txy, tyy, mu, mv, mz, idx, idy, du, dv):
    # du and dv are filled in separate loops: with one output array per loop LLVM vectorises
    # (a joint loop ran 3x slower).
    ny, nx = txx.shape
    for j in range(ny):
        jp = j + 1 if j < ny - 1 else 0
        du[j, 0] = _du_point(txx, txy, mu, mz, idx, idy, j, jp, 0, nx - 1, 1)
        for i in range(1, nx - 1):
            du[j, i] = _du_point(txx, txy, mu, mz, idx, idy, j, jp, i, i - 1, i + 1)
        du[j, nx - 1] = _du_point(txx, txy, mu, mz, idx, idy, j, jp, nx - 1, nx - 2, 0)
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        jp = j + 1 if j < ny - 1 else 0
        for i in range(nx - 1):
            dv[j, i] = _dv_point(txy, tyy, mv, mz, idx, idy, j, jm, jp, i, i + 1)
        dv[j, nx - 1] = _dv_point(txy, tyy, mv, mz, idx, idy, j, jm, jp, nx - 1, 0)


@njit(cache=True)
def _flux_divergence_point(fx, fy, mu, mv, mc, idx, idy, j, jp, i, ip):
    # A wet face always has wet cells on both sides, so masking the face fluxes is the whole rule.
    east = _sel(fx[j, ip], mu, j, ip)
    west = _sel(fx[j, i], mu, j, i)
    north = _sel(fy[jp, i], mv, jp, i)
    south = _sel(fy[j, i], mv, j, i)
    return _sel(-((east - west) * idx + (north - south) * idy), mc, j, i)


@njit(cache=True)
def _flux_divergence_2d(fx, fy, mu, mv, mc, idx, idy, out):
    ny, nx = fx.shape
    for j in range(ny):
        jp = j + 1 if j < ny - 1 else 0
        for i in range(nx - 1):
            out[j, i] = _flux_divergence_point(fx, fy, mu, mv, mc, idx, idy, j, jp, i, i + 1)
        out[j, nx - 1] = _flux_divergence_point(fx, fy, mu, mv, mc, idx, idy, j, jp, nx - 1, 0)


@njit(cache=True)
def _vorticity_2d(u, v, mz, idx, idy, out):
    # A wet corner has its four faces wet, so only wet velocities are read.
    ny, nx = u.shape
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        out[j, 0] = _sel((v[j, 0] - v[j, nx - 1]) * idx - (u[j, 0] - u[jm, 0]) * idy, mz, j, 0)
        for i in range(1, nx):
            out[j, i] = _sel((v[j, i] - v[j, i - 1]) * idx - (u[j, i] - u[jm, i]) * idy, mz, j, i)


# --------------------------------------------------------------------------- fused kernels


@njit(cache=True)
def _open_tensor_divergence_2d(txx, txy, tyy, idx, idy, du, dv):
    # No land: tau_xy's corner average folds into the differences, so du and dv are one stencil each
    # on the centred components (north - south corner = (row j+1 - row j-1) / 4 of column pairs, and
    # likewise east - west), with no corner array written and read back. The edge columns are peeled
    # so that the interior loops have no wrap-around index and vectorise.
    ny, nx = txx.shape
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        jp = j + 1 if j < ny - 1 else 0
        du[j, 0] = -((txx[j, 0] - txx[j, nx - 1]) * idx
                     + 0.25 * ((txy[jp, nx - 1] + txy[jp, 0]) - (txy[jm, nx - 1] + txy[jm, 0])) * idy)
        for i in range(1, nx):
            du[j, i] = -((txx[j, i] - txx[j, i - 1]) * idx
                         + 0.25 * ((txy[jp, i - 1] + txy[jp, i]) - (txy[jm, i - 1] + txy[jm, i])) * idy)
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        dv[j, 0] = -(0.25 * ((txy[jm, 1] + txy[j, 1]) - (txy[jm, nx - 1] + txy[j, nx - 1])) * idx
                     + (tyy[j, 0] - tyy[jm, 0]) * idy)
        for i in range(1, nx - 1):
            dv[j, i] = -(0.25 * ((txy[jm, i + 1] + txy[j, i + 1]) - (txy[jm, i - 1] + txy[j, i - 1])) * idx
                         + (tyy[j, i] - tyy[jm, i]) * idy)
        i = nx - 1
        dv[j, i] = -(0.25 * ((txy[jm, 0] + txy[j, 0]) - (txy[jm, i - 1] + txy[j, i - 1])) * idx
                     + (tyy[j, i] - tyy[jm, i]) * idy)


@njit(cache=True)
def _open_flux_divergence_2d(fx, fy, idx, idy, out):
    # No land: the face averages fold into centred differences, one stencil on the centred fluxes.
    ny, nx = fx.shape
    for j in range(ny):
        jm = j - 1 if j > 0 else ny - 1
        jp = j + 1 if j < ny - 1 else 0
        out[j, 0] = -0.5 * ((fx[j, 1] - fx[j, nx - 1]) * idx + (fy[jp, 0] - fy[jm, 0]) * idy)
        for i in range(1, nx - 1):
            out[j, i] = -0.5 * ((fx[j, i + 1] - fx[j, i - 1]) * idx + (fy[jp, i] - fy[jm, i]) * idy)
        i = nx - 1
        out[j, i] = -0.5 * ((fx[j, 0] - fx[j, i - 1]) * idx + (fy[jp, i] - fy[jm, i]) * idy)


@njit(cache=True)
def cgrid_to_centres_kernel(u, v, mu, mv, mc, uc, vc):
    """u (u-points) and v (v-points), shape ``(nz, ny, nx)``, to centres, written into ``uc``, ``vc``.

    Low-level (no checks): arrays C-contiguous; masks boolean ``(ny, nx)`` or all None.
    """
    for k in range(u.shape[0]):
        _u_to_centre_2d(u[k], mu, mc, uc[k])
        _v_to_centre_2d(v[k], mv, mc, vc[k])


@njit(cache=True)
def centred_fluxes_to_tendencies_kernel(tau, fb, mc, mu, mv, mz, idx, idy, du, dv, db):
    """C-grid tendencies from fluxes given at centres, written into ``du``, ``dv``, ``db``.

    ``tau`` (nz, 3, ny, nx): components (xx, xy, yy) at centres, m^2 s^-2;
    ``fb`` (nz, 2, ny, nx): components (x, y) at centres, units of b times m s^-1.
    tau_xy is averaged to corners and fb to u- and v-points, then
    ``du = -(d_x tau_xx + d_y tau_xy)`` (u-points), ``dv = -(d_x tau_xy + d_y tau_yy)``
    (v-points) and ``db = -div fb`` (centres): the composition of the public
    kernels, in one compiled call. ``idx = 1/dx``, ``idy = 1/dy`` in m^-1.
    Low-level (no checks): arrays C-contiguous; masks boolean ``(ny, nx)`` or all None.
    """
    if mz is None:  # (numba prunes this branch per specialisation: masks are all None or all arrays)
        for k in range(tau.shape[0]):
            _open_tensor_divergence_2d(tau[k, 0], tau[k, 1], tau[k, 2], idx, idy, du[k], dv[k])
            _open_flux_divergence_2d(fb[k, 0], fb[k, 1], idx, idy, db[k])
        return
    ny, nx = tau.shape[-2:]
    txy = np.empty((ny, nx), dtype=du.dtype)
    fx = np.empty((ny, nx), dtype=db.dtype)
    fy = np.empty((ny, nx), dtype=db.dtype)
    for k in range(tau.shape[0]):
        _centre_to_corner_2d(tau[k, 1], mz, txy)
        _tensor_divergence_2d(tau[k, 0], txy, tau[k, 2], mu, mv, mz, idx, idy, du[k], dv[k])
        _centre_to_u_2d(fb[k, 0], mu, fx)
        _centre_to_v_2d(fb[k, 1], mv, fy)
        _flux_divergence_2d(fx, fy, mu, mv, mc, idx, idy, db[k])


# --------------------------------------------------------------------------- public wrappers


def _as_field(a, name: str, where: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim < 2:
        raise ValueError(f"{name} must be an array [..., ny, nx] on {where}; got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{name} must hold real floating-point values; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _same_shape(ref: np.ndarray, ref_name: str, other: np.ndarray, name: str) -> None:
    if other.shape != ref.shape:
        raise ValueError(f"{name} must have the same shape as {ref_name}, {ref.shape}; got {other.shape}")


def _spacing(value: float, name: str) -> float:
    d = float(value)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"{name} must be a positive grid spacing in metres; got {value!r}")
    return d


def _apply(kernel, inputs, mask_args, scalars=(), n_out=1):
    """Run a 2-D kernel over all leading dims of the (same-shaped) inputs."""
    shape = inputs[0].shape
    flat = [a.reshape(-1, *shape[-2:]) for a in inputs]
    outs = [np.empty(flat[0].shape, dtype=inputs[0].dtype) for _ in range(n_out)]
    for k in range(flat[0].shape[0]):
        kernel(*(a[k] for a in flat), *mask_args, *scalars, *(o[k] for o in outs))
    outs = [o.reshape(shape) for o in outs]
    return outs[0] if n_out == 1 else tuple(outs)


def u_to_centre(u, mask=None) -> np.ndarray:
    """u-points (west faces) -> centres: ``(u[j, i] + u[j, i+1]) / 2``.

    ``u`` is ``[..., ny, nx]``; ``mask`` an optional ``(ny, nx)`` centre mask (True = wet).
    Returns an array of u's shape and dtype, at centres (0 on land).
    """
    u = _as_field(u, "u", "u-points")
    m = CGridMasks.from_centre(mask, u.shape[-2:])
    return _apply(_u_to_centre_2d, [u], (m.u, m.centre))


def v_to_centre(v, mask=None) -> np.ndarray:
    """v-points (south faces) -> centres: ``(v[j, i] + v[j+1, i]) / 2``. See :func:`u_to_centre`."""
    v = _as_field(v, "v", "v-points")
    m = CGridMasks.from_centre(mask, v.shape[-2:])
    return _apply(_v_to_centre_2d, [v], (m.v, m.centre))


def centre_to_u(c, mask=None) -> np.ndarray:
    """Centres -> u-points: ``(c[j, i-1] + c[j, i]) / 2``; the transpose of :func:`u_to_centre`.

    Returns an array of c's shape and dtype, on u-points (0 on land faces).
    """
    c = _as_field(c, "c", "centres")
    m = CGridMasks.from_centre(mask, c.shape[-2:])
    return _apply(_centre_to_u_2d, [c], (m.u,))


def centre_to_v(c, mask=None) -> np.ndarray:
    """Centres -> v-points: ``(c[j-1, i] + c[j, i]) / 2``; the transpose of :func:`v_to_centre`."""
    c = _as_field(c, "c", "centres")
    m = CGridMasks.from_centre(mask, c.shape[-2:])
    return _apply(_centre_to_v_2d, [c], (m.v,))


def centre_to_corner(c, mask=None) -> np.ndarray:
    """Centres -> corners: mean of the four cells around corner ``(j, i)``; transpose of 4x :func:`corner_to_centre`.

    Returns an array of c's shape and dtype, at corners (0 on corners touching land).
    """
    c = _as_field(c, "c", "centres")
    m = CGridMasks.from_centre(mask, c.shape[-2:])
    return _apply(_centre_to_corner_2d, [c], (m.corner,))


def corner_to_centre(z, mask=None) -> np.ndarray:
    """Corners -> centres: mean of the four corners of cell ``(j, i)``, land corners counting as 0.

    The transpose of :func:`centre_to_corner` (both use weights 1/4).
    """
    z = _as_field(z, "z", "corners")
    m = CGridMasks.from_centre(mask, z.shape[-2:])
    return _apply(_corner_to_centre_2d, [z], (m.corner, m.centre))


def tensor_divergence(txx, txy, tyy, dx: float, dy: float, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Momentum tendency of a flux tensor on the C-grid: ``(du, dv) = -div tau``.

    Parameters
    ----------
    txx, tyy : ``[..., ny, nx]`` at centres, m^2 s^-2.
    txy : ``[..., ny, nx]`` at corners, m^2 s^-2.
    dx, dy : grid spacings in metres.
    mask : optional ``(ny, nx)`` centre mask (True = wet).

    Returns
    -------
    du = -(d_x tau_xx + d_y tau_xy) on u-points and dv = -(d_x tau_xy + d_y tau_yy)
    on v-points, in m s^-2, each of txx's shape and dtype. Their sums over wet
    points vanish to round-off.
    """
    txx = _as_field(txx, "txx", "centres")
    txy = _as_field(txy, "txy", "corners")
    tyy = _as_field(tyy, "tyy", "centres")
    _same_shape(txx, "txx", txy, "txy")
    _same_shape(txx, "txx", tyy, "tyy")
    idx, idy = 1.0 / _spacing(dx, "dx"), 1.0 / _spacing(dy, "dy")
    m = CGridMasks.from_centre(mask, txx.shape[-2:])
    return _apply(_tensor_divergence_2d, [txx, txy, tyy], (m.u, m.v, m.corner), (idx, idy), n_out=2)


def flux_divergence(fx, fy, dx: float, dy: float, mask=None) -> np.ndarray:
    """Tracer tendency ``db = -div F`` at centres from ``fx`` on u-points and ``fy`` on v-points.

    ``fx``, ``fy`` are ``[..., ny, nx]`` in units of b times m s^-1; dx, dy in metres.
    Returns db at centres in units of b per second; its sum over wet centres vanishes to round-off.
    """
    fx = _as_field(fx, "fx", "u-points")
    fy = _as_field(fy, "fy", "v-points")
    _same_shape(fx, "fx", fy, "fy")
    idx, idy = 1.0 / _spacing(dx, "dx"), 1.0 / _spacing(dy, "dy")
    m = CGridMasks.from_centre(mask, fx.shape[-2:])
    return _apply(_flux_divergence_2d, [fx, fy], (m.u, m.v, m.centre), (idx, idy))


def vorticity(u, v, dx: float, dy: float, mask=None) -> np.ndarray:
    """Curl ``d_x v - d_y u`` at corners from u on u-points and v on v-points (s^-1 for velocities in m s^-1).

    Applied to the tendencies (du, dv) it gives the PV forcing of the momentum flux, in s^-2.
    Corners touching land get 0.
    """
    u = _as_field(u, "u", "u-points")
    v = _as_field(v, "v", "v-points")
    _same_shape(u, "u", v, "v")
    idx, idy = 1.0 / _spacing(dx, "dx"), 1.0 / _spacing(dy, "dy")
    m = CGridMasks.from_centre(mask, u.shape[-2:])
    return _apply(_vorticity_2d, [u, v], (m.corner,), (idx, idy))


# --------------------------------------------------------------------------- symmetry


def rotate_cgrid_state(g: Element | int, u, v, b=None):
    """Apply a grid-exact rotation/reflection ``g`` to C-grid data (u, v on faces, b at centres).

    ``g`` is a :class:`roteq_param.symmetry.Element` that maps the grid onto itself
    (a multiple of 90 degrees, optionally with the reflection), or an int, read as
    that many +90 degree (counter-clockwise) turns. Rotations are about the domain
    centre, as in :mod:`roteq_param.symmetry`. ``u``, ``v`` are ``[..., ny, nx]``
    on u- and v-points, ``b`` (optional) a scalar ``[..., ny, nx]`` at centres.
    The same call rotates tendencies ``(du, dv, db)``, which live on the same points.

    How staggered data moves: the component matrix M of g (a signed permutation)
    sends component s of (u, v) to component d with sign ``M[d, s]``; the
    source array is moved by ``symmetry.act`` as a scalar field, which maps
    centre-like positions correctly. Its faces lie on the axis that becomes axis
    d; where that axis is reversed (``M[d, s] = -1``) face ``i dx`` lands on
    ``(n - i) dx``, one index beyond where a centre-based rotation puts it, so
    the array is rolled by +1 along axis d. For +90 degrees::

        u'[j, i] = -v_rot[j, i - 1]   (v-points become u-points, shifted one cell in x)
        v'[j, i] =  u_rot[j, i]       (u-points become v-points, no shift)

    where ``a_rot = symmetry.act(g, a, 'scalar')``. Returns ``(u', v', b')``
    (``b'`` is None when ``b`` is None), arrays of the input shapes.
    """
    if not isinstance(g, Element):
        g = Element(4, int(g))
    if not g.is_grid_exact:
        raise ValueError(f"{g} does not map the C-grid onto itself; only multiples of 90 degrees do")
    u = np.asarray(u)
    v = np.asarray(v)
    if u.shape != v.shape or u.ndim < 2:
        raise ValueError(f"u and v must have the same shape [..., ny, nx]; got {u.shape} and {v.shape}")
    M = np.rint(component_matrix(g, Kind.VECTOR)).astype(int)
    out = []
    for d, axis in ((0, -1), (1, -2)):
        s = int(np.flatnonzero(M[d])[0])
        moved = act(g, (u, v)[s], Kind.SCALAR)
        out.append(-np.roll(moved, 1, axis=axis) if M[d, s] < 0 else moved)
    b_out = None if b is None else act(g, np.asarray(b), Kind.SCALAR)
    return out[0], out[1], b_out
