"""Generic C-grid adapter: C-grid state in, C-grid subgrid tendencies out.

A C-grid ocean model keeps u and v on cell faces; the flux models of
roteq-param (the equivariant network, or any closure) work on collocated cell
centres. :class:`CGridAdapter` bridges the two with the numba kernels of
:mod:`solver_coupling.cgrid.staggered`, whose module docstring fixes the index
convention (u on west faces, v on south faces, b at centres, tau_xy at
south-west corners; all arrays ``[..., ny, nx]``, doubly periodic, optional land
mask at centres).

One call does::

    u (u-points), v (v-points), b (centres)
        --average--> u_c, v_c, b_c at centres
        --flux_model--> tau (xx, xy, yy) and Fb (x, y) at centres
        --average tau_xy to corners, Fb to faces; flux-form divergence-->
    du (u-points), dv (v-points), db (centres)

with ``du = -(d_x tau_xx + d_y tau_xy)``, ``dv = -(d_x tau_xy + d_y tau_yy)``
(the "du = -div tau" convention of docs/design.md §3) and ``db = -div Fb``. The
tendencies are ready to be added to a solver's momentum and tracer equations
(e.g. veros' ``u_source`` / ``v_source``); their sums over wet points vanish to
round-off.

Buoyancy: following docs/design.md §3, ``b`` is for the two-layer QG model the
interface field ``b = psi_1 - psi_2`` in m^2 s^-1 (one field, shape
``(ny, nx)``); a layered model may pass one tracer per layer, ``(nz_b, ny, nx)``.

:class:`GradientModel` is a physical reference closure (not a network) used by
the example and the tests.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from roteq_param import fluxform
from roteq_param.fields import qg_fluxes, qg_has_regime, qg_inputs, qg_regime_inputs
from roteq_param.models import Predictor
from solver_coupling.cgrid.staggered import (
    CGridMasks,
    centred_fluxes_to_tendencies_kernel,
    cgrid_to_centres_kernel,
)

__all__ = ["CGridAdapter", "CGridTendencies", "GradientModel", "NetworkClosure", "FluxModel"]

FluxModel = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class CGridTendencies(NamedTuple):
    """Subgrid tendencies on the C-grid, each ``(nz, ny, nx)``, 0 on land points of its kind.

    Attributes
    ----------
    du
        on u-points (west faces), m s^-2.
    dv
        on v-points (south faces), m s^-2.
    db
        at centres, units of b per second (m^2 s^-2 for the QG interface field);
        ``db[k] = -div Fb[k]``, one field per flux layer k.
    """

    du: np.ndarray
    dv: np.ndarray
    db: np.ndarray


class CGridAdapter:
    """Couple a collocated flux model to a C-grid solver.

    Parameters
    ----------
    flux_model:
        Callable ``flux_model(u_c, v_c, b_c) -> (tau, Fb)`` on collocated
        centre arrays: ``u_c``, ``v_c`` of shape (nz, ny, nx) in m s^-1,
        ``b_c`` of b's shape. It returns ``tau`` of shape (nz, 3, ny, nx),
        components (xx, xy, yy) in m^2 s^-2, and ``Fb`` of shape
        (nz, 2, ny, nx), components (x, y) in units of b times m s^-1, all at
        centres. Inputs are 0 on land cells; outputs on land cells are ignored.
    dx, dy:
        Grid spacings in metres.
    mask:
        Optional centre mask (ny, nx), True on wet cells. Face and corner
        masks are derived from it (see :mod:`solver_coupling.cgrid.staggered`).
    check_finite:
        Check that the state at wet points and the fluxes the model returns
        are finite (about 15 us per call at 2 x 64^2, as much as the kernels); values on land
        are never read and may be NaN.
    """

    def __init__(self, flux_model: FluxModel, dx: float, dy: float, mask=None, *, check_finite: bool = True):
        if not callable(flux_model):
            raise ValueError(f"flux_model must be callable as flux_model(u_c, v_c, b_c); got {type(flux_model).__name__}")
        self.flux_model = flux_model
        self.dx = _spacing(dx, "dx")
        self.dy = _spacing(dy, "dy")
        self.mask = None if mask is None else np.asarray(mask)
        self.check_finite = check_finite
        self._masks: CGridMasks | None = None
        if self.mask is not None:
            if self.mask.ndim != 2:
                raise ValueError(f"mask must be a centre mask of shape (ny, nx); got shape {self.mask.shape}")
            self._masks = CGridMasks.from_centre(self.mask, self.mask.shape)

    # ---------------------------------------------------------------- checks

    def _grid_masks(self, shape: tuple[int, int]) -> CGridMasks:
        if self._masks is None:
            return CGridMasks.from_centre(None, shape)
        if self._masks.centre.shape != shape:
            raise ValueError(
                f"mask has shape {self._masks.centre.shape} but the state is on a (ny, nx) = {shape} grid"
            )
        return self._masks

    def _check_state(self, u, v, b):
        u = _float_array(u, "u")
        v = _float_array(v, "v", dtype=u.dtype)
        b = _float_array(b, "b", dtype=u.dtype)
        if u.ndim != 3:
            raise ValueError(f"u must have shape (nz, ny, nx), on u-points (west faces); got shape {u.shape}")
        if v.shape != u.shape:
            raise ValueError(f"v must have u's shape (nz, ny, nx) = {u.shape}, on v-points (south faces); got {v.shape}")
        if b.ndim not in (2, 3) or b.shape[-2:] != u.shape[-2:]:
            raise ValueError(
                f"b must have shape (ny, nx) = {u.shape[-2:]} or (nz_b, ny, nx), at centres; got shape {b.shape}"
            )
        return u, v, b

    # ---------------------------------------------------------------- the two halves

    def to_centres(self, u, v, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Average the C-grid state to centres.

        ``u`` (nz, ny, nx) on u-points and ``v`` (nz, ny, nx) on v-points, in
        m s^-1; ``b`` (ny, nx) or (nz_b, ny, nx) at centres. Returns
        ``(u_c, v_c, b_c)`` at centres, in u's dtype, 0 on land.
        """
        u, v, b = self._check_state(u, v, b)
        m = self._grid_masks(u.shape[-2:])
        uc = np.empty_like(u)
        vc = np.empty_like(v)
        cgrid_to_centres_kernel(u, v, m.u, m.v, m.centre, uc, vc)
        bc = b if m.centre is None else np.where(m.centre, b, 0.0).astype(b.dtype, copy=False)
        if self.check_finite:
            # Land values never reach the centre arrays, so this sees the wet points only.
            for name, arr, where in (("u", uc, "wet u-points"), ("v", vc, "wet v-points"), ("b", bc, "wet centres")):
                if not np.isfinite(arr).all():
                    raise ValueError(f"{name} has non-finite values (NaN or inf) at {where}")
        return uc, vc, bc

    def fluxes_to_tendencies(self, tau, fb) -> CGridTendencies:
        """C-grid tendencies from centre fluxes.

        ``tau`` (nz, 3, ny, nx): (xx, xy, yy) at centres in m^2 s^-2; ``fb``
        (nz, 2, ny, nx): (x, y) at centres. tau_xy goes to corners, fb to u-
        and v-points, then the flux-form divergence gives du (u-points), dv
        (v-points) in m s^-2 and db (centres); see :class:`CGridTendencies`.
        """
        tau = _float_array(tau, "tau")
        fb = _float_array(fb, "Fb", dtype=tau.dtype)
        if tau.ndim != 4 or tau.shape[1] != 3:
            raise ValueError(f"tau must have shape (nz, 3, ny, nx), components (xx, xy, yy) at centres; got {tau.shape}")
        nz, _, ny, nx = tau.shape
        if fb.shape != (nz, 2, ny, nx):
            raise ValueError(f"Fb must have shape (nz, 2, ny, nx) = {(nz, 2, ny, nx)}, components (x, y) at centres; "
                             f"got {fb.shape}")
        m = self._grid_masks((ny, nx))
        du = np.empty((nz, ny, nx), dtype=tau.dtype)
        dv = np.empty_like(du)
        db = np.empty_like(du)
        centred_fluxes_to_tendencies_kernel(tau, fb, m.centre, m.u, m.v, m.corner, 1.0 / self.dx, 1.0 / self.dy,
                                            du, dv, db)
        if self.check_finite:
            # Tendencies are finite iff every flux value they read (wet points only) is.
            if not (np.isfinite(du).all() and np.isfinite(dv).all()):
                raise ValueError("tau has non-finite values (NaN or inf) at wet centres")
            if not np.isfinite(db).all():
                raise ValueError("Fb has non-finite values (NaN or inf) at wet centres")
        return CGridTendencies(du, dv, db)

    def __call__(self, u, v, b) -> CGridTendencies:
        """Subgrid tendencies for the C-grid state ``(u, v, b)``.

        ``u`` (nz, ny, nx) on u-points (west faces) and ``v`` (nz, ny, nx) on
        v-points (south faces), in m s^-1; ``b`` (ny, nx) or (nz_b, ny, nx) at
        centres (for the two-layer QG model, ``b = psi_1 - psi_2`` in m^2 s^-1).
        Returns :class:`CGridTendencies` (du on u-points, dv on v-points in
        m s^-2, db at centres), in u's dtype.
        """
        uc, vc, bc = self.to_centres(u, v, b)
        tau, fb = self.flux_model(uc, vc, bc)
        tau = np.asarray(tau)
        fb = np.asarray(fb)
        expected_tau = (uc.shape[0], 3, *uc.shape[1:])
        if tau.shape != expected_tau:
            raise ValueError(f"flux_model returned tau of shape {tau.shape}; expected (nz, 3, ny, nx) = {expected_tau}")
        expected_fb = (uc.shape[0], 2, *uc.shape[1:])
        if fb.shape != expected_fb:
            raise ValueError(f"flux_model returned Fb of shape {fb.shape}; expected (nz, 2, ny, nx) = {expected_fb}")
        return self.fluxes_to_tendencies(tau.astype(uc.dtype, copy=False), fb.astype(uc.dtype, copy=False))


class GradientModel:
    """The gradient (Clark/Leith-type) closure on a collocated periodic grid.

    With the velocity gradient ``G_ab = d_b u_a`` from centred differences::

        tau = c Delta^2 G G^T:  tau_xx = c D^2 (u_x^2 + u_y^2),
                                tau_xy = c D^2 (u_x v_x + u_y v_y),
                                tau_yy = c D^2 (v_x^2 + v_y^2)      [m^2 s^-2]
        Fb  = c Delta^2 G grad b:  Fb_x = c D^2 (u_x b_x + u_y b_y),
                                   Fb_y = c D^2 (v_x b_x + v_y b_y)   [b m s^-1]

    ``c = 1/12`` is the gradient model's coefficient for a box filter of width
    ``Delta`` (metres). b may be one field (ny, nx), shared by all layers (the
    QG interface field), or one per layer (nz, ny, nx). Both expressions are
    covariant (tau a tensor, Fb a vector) under the grid's 90-degree rotations
    and reflections, so the closure commutes with them exactly when dx == dy.

    ``derivative`` chooses how gradients are taken: ``"centred"`` (second-order
    differences, what a C-grid model would run) or ``"spectral"`` (exact for
    band-limited periodic fields; the reference in convergence tests).
    """

    def __init__(self, dx: float, dy: float, delta: float, c: float = 1.0 / 12.0, derivative: str = "centred"):
        self.dx = _spacing(dx, "dx")
        self.dy = _spacing(dy, "dy")
        self.coefficient = float(c) * _spacing(delta, "delta") ** 2
        if derivative not in ("centred", "spectral"):
            raise ValueError(f"derivative must be 'centred' or 'spectral'; got {derivative!r}")
        self.derivative = derivative

    def gradient(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d_x f, d_y f) of a periodic centre field ``[..., ny, nx]``, in units of f per metre."""
        if self.derivative == "centred":
            fx = (np.roll(f, -1, axis=-1) - np.roll(f, 1, axis=-1)) / (2.0 * self.dx)
            fy = (np.roll(f, -1, axis=-2) - np.roll(f, 1, axis=-2)) / (2.0 * self.dy)
            return fx, fy
        ny, nx = f.shape[-2:]
        k, l = fluxform.wavenumbers(nx, nx * self.dx, ny=ny, W=ny * self.dy)
        ik, il = 1j * k, 1j * l
        if nx % 2 == 0:
            ik[..., -1] = 0.0  # the Nyquist mode has no well-defined odd derivative
        if ny % 2 == 0:
            il[ny // 2] = 0.0
        fh = np.fft.rfft2(f)
        return np.fft.irfft2(ik * fh, s=(ny, nx)), np.fft.irfft2(il * fh, s=(ny, nx))

    def __call__(self, u_c: np.ndarray, v_c: np.ndarray, b_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tau, Fb)`` at centres from ``u_c``, ``v_c`` (nz, ny, nx) and ``b_c`` (ny, nx) or (nz, ny, nx)."""
        ux, uy = self.gradient(u_c)
        vx, vy = self.gradient(v_c)
        bx, by = self.gradient(b_c)
        a = self.coefficient
        tau = a * np.stack([ux * ux + uy * uy, ux * vx + uy * vy, vx * vx + vy * vy], axis=1)
        fb = a * np.stack([ux * bx + uy * by, vx * bx + vy * by], axis=1)
        return tau.astype(u_c.dtype, copy=False), fb.astype(u_c.dtype, copy=False)


class NetworkClosure:
    """A trained roteq-param flux network as a C-grid ``flux_model``.

    The same network and schema as the pyqg hook: collocated ``u_c, v_c``
    ``(2, ny, nx)`` [m/s] and ``b_c`` ``(ny, nx)`` [m^2/s] plus the constant
    vectors the network was trained with (``beta`` = (beta_x, beta_y) [1/(m s)],
    ``U`` = background velocity per layer ``(2, 2)`` [m/s]) in, ``tau``
    ``(2, 3, ny, nx)`` [m^2/s^2] and ``Fb`` ``(2, 2, ny, nx)`` [m^3/s^2] out.
    Inference in float32 by default; inputs are validated (NaNs and shapes name the field). ``dx`` is the
    grid spacing [m], needed by a similarity-scaled model (``roteq train --similarity``).
    ``regime = (F1, F2, rek)``: the stretching couplings [m^-2] and the bottom drag rate [1/s], needed
    by a model that sees the regime (``roteq train --regime-inputs``) and refused by any other.
    ``device`` (``"cpu"``, ``"cuda"``) and ``dtype`` (``torch.float32`` or ``torch.float64``) are the
    network's, as for :class:`~roteq_param.models.Predictor`, and are checked here.
    """

    def __init__(self, model, beta, U, dx: float | None = None, regime: tuple[float, float, float] | None = None, *,
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.predictor = Predictor(model, device=device, dtype=dtype)
        if qg_has_regime(self.predictor.schema) != (regime is not None):
            raise ValueError("this model sees the solver's regime: pass regime=(F1 [m^-2], F2 [m^-2], rek [1/s])"
                             if regime is None else "this model does not see the regime; drop regime=")
        if regime is not None:
            F1, F2, rek = (float(v) for v in regime)
        self.regime = {} if regime is None else qg_regime_inputs(np.array([F1]), np.array([F2]), np.array(rek))
        self.dx = None if dx is None else _spacing(dx, "dx")
        if self.predictor.needs_grid_spacing and self.dx is None:
            raise ValueError("this model is similarity-scaled: pass the grid spacing dx [m] to NetworkClosure")
        self.beta = np.asarray(beta, dtype=float)
        self.U = np.asarray(U, dtype=float)
        if self.beta.shape != (2,) or self.U.shape != (2, 2):
            raise ValueError(f"beta must have shape (2,) and U shape (2, 2); got {self.beta.shape} and {self.U.shape}")

    def __call__(self, u_c: np.ndarray, v_c: np.ndarray, b_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if b_c.ndim == 3:
            if b_c.shape[0] != 1:
                raise ValueError(f"the QG network takes one interface field b; got b with shape {b_c.shape}")
            b_c = b_c[0]
        tau, Fb = qg_fluxes(self.predictor({**qg_inputs(u_c, v_c, b_c, self.beta, self.U), **self.regime}, self.dx))
        return tau.astype(np.float64), Fb.astype(np.float64)


def _spacing(value: float, name: str) -> float:
    d = float(value)
    if not (np.isfinite(d) and d > 0):
        raise ValueError(f"{name} must be a positive length in metres; got {value!r}")
    return d


def _float_array(a, name: str, dtype=None) -> np.ndarray:
    arr = np.asarray(a)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must hold real floating-point values; got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(arr, dtype=dtype)
