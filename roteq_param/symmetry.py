"""Group elements of C_N / D_N and how they act on gridded fields.

This module is the one place in roteq-param that rotates or reflects data.
Training, evaluation, the solver hooks and the tests all call it.

Conventions (docs/design.md §2)
-------------------------------
* Arrays are laid out ``[..., y, x]``: the last axis is x (index i), the one
  before it is y (index j), and y grows with j.
* Grid points sit at cell centres, ``x_i = (i + 1/2) dx`` as in pyqg. Rotations
  and reflections are about the centre of the (periodic, square) domain, so the
  90-degree subgroup maps grid points exactly onto grid points.
* Rotation by +90 degrees is counter-clockwise in the (x, y) plane:
  ``(x, y) -> (-y, x)``.
* The reflection ``F`` is ``(x, y) -> (-x, y)`` (mirror in the y axis).
* The element ``(k, flip)`` of C_N / D_N has matrix ``R = Rot(2*pi*k/N) @ F**flip``:
  the reflection is applied first.

How an element ``g`` with matrix ``R`` acts, per field kind:

=====================  ==============================  ==========================================
kind                   layout                          action
=====================  ==============================  ==========================================
scalar                 ``[..., y, x]``                 ``f'(x) = f(R^-1 x)``
pseudoscalar           ``[..., y, x]``                 ``f'(x) = det(R) f(R^-1 x)``
vector                 ``[..., 2, y, x]`` (x, y)       ``v'(x) = R v(R^-1 x)``
pseudovector           ``[..., 2, y, x]`` (x, y)       ``v'(x) = det(R) R v(R^-1 x)``
tensor                 ``[..., 3, y, x]``              ``T' = R T R^T``, components (xx, xy, yy)
constant_vector        ``[..., 2]`` (x, y)             ``c' = R c`` (no spatial part)
constant_pseudovector  ``[..., 2]`` (x, y)             ``c' = det(R) R c``
constant_scalar        ``[..., 1]``                    ``c' = c`` (a solver setting: invariant)
=====================  ==============================  ==========================================

Why pseudo-kinds matter for QG: pyqg holds f0 > 0 fixed, and geostrophy
``f0 z x u = -grad p`` maps a mirrored flow onto a valid flow only if the
streamfunction changes sign. So under reflections psi, q, vorticity and the
buoyancy variable ``b = psi_1 - psi_2`` are pseudoscalars, and the buoyancy
flux ``u b`` is a pseudovector; so is beta, the gradient of the planetary PV
``beta y`` that is part of q. Velocity, the background velocity and the
momentum flux are a true vector, constant vector and tensor. Under rotations
pseudo and true kinds coincide.

Both numpy arrays and torch tensors are accepted, with any leading batch
dimensions; the result has the input's type, dtype and device.

Only rotations by multiples of 90 degrees map the square grid to itself. Other
elements (odd powers of the C_8 generator) raise :class:`GridRotationError`
unless the caller passes ``interpolate=True``, which resamples with periodic
cubic interpolation. That is approximate (a rotated periodic square is not the
same periodic square) and is meant for visual checks, never for exactness
tests.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from roteq_param.arrays import is_torch

__all__ = [
    "Kind",
    "Element",
    "Group",
    "GridRotationError",
    "component_matrix",
    "act",
    "n_components",
]

SUPPORTED_ORDERS = (1, 2, 4, 8)


class GridRotationError(ValueError):
    """A group element that does not map the square grid onto itself was applied to gridded data."""


class Kind(str, enum.Enum):
    """How a field transforms under rotations and reflections."""

    SCALAR = "scalar"
    PSEUDOSCALAR = "pseudoscalar"
    VECTOR = "vector"
    PSEUDOVECTOR = "pseudovector"
    TENSOR = "tensor"
    CONSTANT_VECTOR = "constant_vector"
    CONSTANT_PSEUDOVECTOR = "constant_pseudovector"
    CONSTANT_SCALAR = "constant_scalar"

    @property
    def is_constant(self) -> bool:
        """True for kinds with no spatial part (layout ``[..., n_components]``)."""
        return self in (Kind.CONSTANT_VECTOR, Kind.CONSTANT_PSEUDOVECTOR, Kind.CONSTANT_SCALAR)

    @property
    def broadcast(self) -> "Kind":
        """The gridded kind a field of this kind becomes when broadcast over the grid."""
        return {Kind.CONSTANT_VECTOR: Kind.VECTOR, Kind.CONSTANT_PSEUDOVECTOR: Kind.PSEUDOVECTOR,
                Kind.CONSTANT_SCALAR: Kind.SCALAR}.get(self, self)

    @classmethod
    def parse(cls, kind: "Kind | str") -> "Kind":
        if isinstance(kind, Kind):
            return kind
        try:
            return cls(str(kind))
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown field kind {kind!r}; expected one of: {valid}") from None


_N_COMPONENTS = {
    Kind.SCALAR: 1,
    Kind.PSEUDOSCALAR: 1,
    Kind.VECTOR: 2,
    Kind.PSEUDOVECTOR: 2,
    Kind.TENSOR: 3,
    Kind.CONSTANT_VECTOR: 2,
    Kind.CONSTANT_PSEUDOVECTOR: 2,
    Kind.CONSTANT_SCALAR: 1,
}


def n_components(kind: Kind | str) -> int:
    """Number of components of a field of this kind (1, 2 or 3)."""
    return _N_COMPONENTS[Kind.parse(kind)]


def _exact_cos_sin(k: int, n: int) -> tuple[float, float]:
    """cos and sin of 2*pi*k/n, exact (integers) at multiples of 90 degrees."""
    k %= n
    if (4 * k) % n == 0:
        quarter = (4 * k) // n
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[quarter]
    angle = 2.0 * math.pi * k / n
    return math.cos(angle), math.sin(angle)


@dataclass(frozen=True, order=True)
class Element:
    """The element ``Rot(2*pi*k/N) @ F**flip`` of C_N (flip = 0) or D_N.

    ``F`` is the reflection ``(x, y) -> (-x, y)``.
    """

    N: int
    k: int
    flip: int = 0

    def __post_init__(self) -> None:
        if self.N not in SUPPORTED_ORDERS:
            raise ValueError(f"group order N={self.N} is not supported; expected one of {SUPPORTED_ORDERS}")
        if self.flip not in (0, 1):
            raise ValueError(f"flip must be 0 or 1, got {self.flip!r}")
        object.__setattr__(self, "k", int(self.k) % self.N)

    @property
    def angle(self) -> float:
        """Rotation angle in radians, in [0, 2*pi)."""
        return 2.0 * math.pi * self.k / self.N

    @property
    def matrix(self) -> np.ndarray:
        """2x2 matrix R acting on (x, y) coordinates; exact at multiples of 90 degrees."""
        c, s = _exact_cos_sin(self.k, self.N)
        rot = np.array([[c, -s], [s, c]])
        if self.flip:
            rot = rot @ np.array([[-1.0, 0.0], [0.0, 1.0]])
        return rot

    @property
    def det(self) -> int:
        return -1 if self.flip else 1

    @property
    def quarter_turns(self) -> int | None:
        """Number of +90 degree turns of the rotation part, or None if not a multiple of 90 degrees."""
        if (4 * self.k) % self.N:
            return None
        return (4 * self.k) // self.N

    @property
    def is_grid_exact(self) -> bool:
        """True when the element maps the square grid exactly onto itself."""
        return self.quarter_turns is not None

    def __mul__(self, other: "Element") -> "Element":
        if not isinstance(other, Element):
            return NotImplemented
        if other.N != self.N:
            raise ValueError(f"cannot compose elements of groups of order {self.N} and {other.N}")
        # Rot(a) F^f1 Rot(b) F^f2 = Rot(a + (-1)^f1 b) F^(f1 xor f2)
        k = self.k + (-other.k if self.flip else other.k)
        return Element(self.N, k, self.flip ^ other.flip)

    def inverse(self) -> "Element":
        if self.flip:
            return self  # reflections are involutions
        return Element(self.N, -self.k, 0)

    def __pow__(self, n: int) -> "Element":
        result = Element(self.N, 0, 0)
        base = self if n >= 0 else self.inverse()
        for _ in range(abs(n)):
            result = result * base
        return result

    def __str__(self) -> str:
        deg = 360.0 * self.k / self.N
        rot = f"rot{deg:g}"
        return f"{rot}*flip" if self.flip else rot


@dataclass(frozen=True)
class Group:
    """The cyclic group C_N (``reflections=False``) or dihedral group D_N."""

    N: int
    reflections: bool = False

    def __post_init__(self) -> None:
        if self.N not in SUPPORTED_ORDERS:
            raise ValueError(f"group order N={self.N} is not supported; expected one of {SUPPORTED_ORDERS}")

    @classmethod
    def parse(cls, name: "str | Group") -> "Group":
        """Parse ``'C4'``, ``'D8'``, ... (case-insensitive)."""
        if isinstance(name, Group):
            return name
        text = str(name).strip().upper()
        if len(text) >= 2 and text[0] in "CD" and text[1:].isdigit():
            return cls(int(text[1:]), text[0] == "D")
        raise ValueError(f"unknown group {name!r}; expected 'C<N>' or 'D<N>' with N in {SUPPORTED_ORDERS}")

    @property
    def name(self) -> str:
        return f"{'D' if self.reflections else 'C'}{self.N}"

    @property
    def order(self) -> int:
        return self.N * (2 if self.reflections else 1)

    @property
    def identity(self) -> Element:
        return Element(self.N, 0, 0)

    def elements(self) -> tuple[Element, ...]:
        flips = (0, 1) if self.reflections else (0,)
        return tuple(Element(self.N, k, f) for f in flips for k in range(self.N))

    def exact_elements(self) -> tuple[Element, ...]:
        """The elements that map the square grid onto itself (the 90-degree subgroup)."""
        return tuple(g for g in self.elements() if g.is_grid_exact)

    def generators(self) -> tuple[Element, ...]:
        gens = [Element(self.N, 1, 0)]
        if self.reflections:
            gens.append(Element(self.N, 0, 1))
        return tuple(gens)

    def __contains__(self, g: object) -> bool:
        return isinstance(g, Element) and g.N == self.N and (self.reflections or not g.flip)

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=None)
def _component_matrix_cached(kind: Kind, N: int, k: int, flip: int) -> np.ndarray:
    g = Element(N, k, flip)
    R = g.matrix
    if kind in (Kind.SCALAR, Kind.CONSTANT_SCALAR):
        return np.ones((1, 1))
    if kind is Kind.PSEUDOSCALAR:
        return np.full((1, 1), float(g.det))
    if kind in (Kind.VECTOR, Kind.CONSTANT_VECTOR):
        return R.copy()
    if kind in (Kind.PSEUDOVECTOR, Kind.CONSTANT_PSEUDOVECTOR):
        return g.det * R
    # Symmetric tensor stored as (xx, xy, yy): column c of M is R E_c R^T for basis tensor E_c.
    basis = [np.array([[1.0, 0.0], [0.0, 0.0]]),
             np.array([[0.0, 1.0], [1.0, 0.0]]),
             np.array([[0.0, 0.0], [0.0, 1.0]])]
    M = np.empty((3, 3))
    for c, E in enumerate(basis):
        T = R @ E @ R.T
        M[:, c] = (T[0, 0], T[0, 1], T[1, 1])
    return M


def component_matrix(g: Element, kind: Kind | str) -> np.ndarray:
    """Matrix acting on the components of a field of ``kind`` (shape d x d, d = n_components).

    For a tensor the components are (xx, xy, yy) and the matrix realises ``R T R^T``.
    """
    m = _component_matrix_cached(Kind.parse(kind), g.N, g.k, g.flip)
    return m.copy()



def _check_layout(x: Any, kind: Kind) -> None:
    d = n_components(kind)
    shape = tuple(x.shape)
    if kind.is_constant:
        if len(shape) < 1 or shape[-1] != d:
            what = "(x, y components)" if d == 2 else "(one value)"
            raise ValueError(f"a {kind.value} field must have shape [..., {d}] {what}; got shape {shape}")
        return
    if len(shape) < 2:
        raise ValueError(f"a gridded {kind.value} field must have at least 2 dims [..., y, x]; got shape {shape}")
    if d > 1 and (len(shape) < 3 or shape[-3] != d):
        comps = "(xx, xy, yy)" if kind is Kind.TENSOR else "(x, y)"
        raise ValueError(
            f"a {kind.value} field must have shape [..., {d}, y, x] with components {comps}; got shape {shape}"
        )


def _rotate_grid(x: Any, g: Element, *, interpolate: bool) -> Any:
    """Apply f'(x) = f(R^-1 x) to the last two (y, x) axes."""
    ny, nx = x.shape[-2], x.shape[-1]
    q = g.quarter_turns
    if q is None:
        if not interpolate:
            raise GridRotationError(
                f"element {g} rotates by {math.degrees(g.angle):g} degrees, which does not map the square grid onto "
                "itself; only multiples of 90 degrees are exact. Pass interpolate=True to resample (approximate)."
            )
        return _rotate_grid_interpolated(x, g)
    if q % 2 and ny != nx:
        raise GridRotationError(f"a 90-degree rotation needs a square grid; got ny={ny}, nx={nx}")
    if is_torch(x):
        import torch

        out = torch.flip(x, dims=(-1,)) if g.flip else x
        # torch.rot90 with dims (x, y) turns counter-clockwise in our [y, x] layout with y growing with j.
        return torch.rot90(out, q, dims=(-1, -2)) if q else out
    out = x[..., ::-1] if g.flip else x
    return np.rot90(out, q, axes=(-1, -2)) if q else out


def _rotate_grid_interpolated(x: Any, g: Element) -> Any:
    """Periodic cubic resampling of f(R^-1 x) about the domain centre (approximate)."""
    from scipy import ndimage

    torch_input = is_torch(x)
    arr = x.detach().cpu().numpy() if torch_input else np.asarray(x)
    ny, nx = arr.shape[-2:]
    if ny != nx:
        raise GridRotationError(f"rotation needs a square grid; got ny={ny}, nx={nx}")
    c = (nx - 1) / 2.0
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    pts = np.stack([ii - c, jj - c])  # (x, y) relative to the centre
    src = np.linalg.inv(g.matrix) @ pts.reshape(2, -1)
    coords = np.stack([src[1] + c, src[0] + c])  # (j, i) for map_coordinates
    flat = arr.reshape(-1, ny, nx)
    out = np.stack(
        [ndimage.map_coordinates(f, coords, order=3, mode="grid-wrap").reshape(ny, nx) for f in flat]
    ).reshape(arr.shape)
    if torch_input:
        import torch

        return torch.as_tensor(out, dtype=x.dtype, device=x.device)
    return out.astype(arr.dtype, copy=False)


def _mix_components(x: Any, M: np.ndarray, axis: int) -> Any:
    if is_torch(x):
        import torch

        m = torch.as_tensor(M, dtype=x.dtype, device=x.device)
        moved = torch.movedim(x, axis, -1)
        return torch.movedim(moved @ m.T, -1, axis)
    moved = np.moveaxis(np.asarray(x), axis, -1)
    return np.moveaxis(moved @ M.T.astype(moved.dtype, copy=False), -1, axis)


def act(g: Element, x: Any, kind: Kind | str, *, interpolate: bool = False) -> Any:
    """Apply group element ``g`` to field ``x`` of the given ``kind``.

    Parameters
    ----------
    g:
        The group element.
    x:
        numpy array or torch tensor, laid out as in the module docstring
        (``[..., y, x]``, ``[..., 2, y, x]``, ``[..., 3, y, x]`` or ``[..., 2]``).
    kind:
        One of :class:`Kind` (or its string value).
    interpolate:
        Allow rotations that are not multiples of 90 degrees, by periodic cubic
        resampling (approximate; numpy round trip for torch inputs).

    Returns
    -------
    The transformed field, same type, dtype, device and shape as ``x``.
    """
    kind = Kind.parse(kind)
    if not isinstance(g, Element):
        raise TypeError(f"expected a symmetry.Element, got {type(g).__name__}")
    _check_layout(x, kind)
    M = component_matrix(g, kind)
    if kind.is_constant:
        return _mix_components(x, M, -1)
    out = _rotate_grid(x, g, interpolate=interpolate)
    if kind is Kind.SCALAR:
        result = out
    elif kind is Kind.PSEUDOSCALAR:
        result = -out if g.flip else out
    else:
        result = _mix_components(out, M, -3)
    if is_torch(result):
        return result.contiguous()
    return np.ascontiguousarray(result)
