"""Radial profiles: the scalar half of an equivariant kernel, ``phi_t(|r|)`` for each unit field t.

A profile is a :class:`torch.nn.Module` that knows

* its *support*: the grid offsets ``(i, j)`` (i along x, j along y, in cells) where its kernel is
  nonzero. Every support here is invariant under the grid's 90-degree turns and reflections on a
  square grid (a disc ``|r| <= r_max`` or the two axes), which is what makes the discrete operator
  exactly equivariant there;
* its values on that support: ``forward(r, offsets, dx, dy)`` returns ``[n_terms, P]``, one row per
  unit field of the pairing (:func:`roteq_param.operators.angular.term_names`).

Kernel values are *weights of a discrete sum*: ``out(x) = sum_r K(r) f(x + r)``. A continuous
kernel k(r) (units of the operator per m^2) therefore enters multiplied by the cell area dx dy.

Profiles here: :class:`AxisStencil` (finite differences: gradient, divergence, curl, Laplacian),
:class:`HeatKernel` (Gaussian diffusion), :class:`PoissonGreen` (the 2-D Green's function of the
Laplacian and its gradient) and the learnable :class:`RadialBasisProfile`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["RadialProfile", "AxisStencil", "HeatKernel", "PoissonGreen", "RadialBasisProfile",
           "disc_support", "mean_log_radius_over_cell"]


def disc_support(rmax: float, dx: float, dy: float) -> np.ndarray:
    """All offsets ``(i, j)`` with ``hypot(i dx, j dy) <= rmax`` (metres), as an int array ``[P, 2]``."""
    if not (rmax >= 0 and math.isfinite(rmax)):
        raise ValueError(f"a profile's support radius must be finite and >= 0 (m); got rmax={rmax!r}")
    ri, rj = int(math.floor(rmax / dx)), int(math.floor(rmax / dy))
    j, i = np.meshgrid(np.arange(-rj, rj + 1), np.arange(-ri, ri + 1), indexing="ij")
    # The same expression for (i, j) and its turned images, so a square grid keeps the set symmetric.
    keep = np.hypot(i * dx, j * dy) <= rmax
    return np.stack([i[keep], j[keep]], axis=-1)


def mean_log_radius_over_cell(dx: float, dy: float) -> float:
    """Mean of ``ln |r|`` over the cell ``[-dx/2, dx/2] x [-dy/2, dy/2]`` (r in metres), in closed form.

    ``int_0^a int_0^b ln sqrt(x^2 + y^2) dy dx = (ab ln(a^2 + b^2) - 3ab + a^2 atan(b/a) + b^2 atan(a/b)) / 2``.
    """
    a, b = 0.5 * dx, 0.5 * dy
    integral = 0.5 * (a * b * math.log(a * a + b * b) - 3.0 * a * b + a * a * math.atan(b / a) + b * b * math.atan(a / b))
    return integral / (a * b)


class RadialProfile(torch.nn.Module):
    """Base class: ``n_terms`` radial profiles on a grid-symmetric support."""

    def __init__(self, n_terms: int) -> None:
        super().__init__()
        if n_terms < 1:
            raise ValueError(f"a profile needs at least one term; got n_terms={n_terms}")
        self.n_terms = int(n_terms)

    def support(self, dx: float, dy: float) -> np.ndarray:
        """Offsets ``(i, j)`` (cells) where the kernel is nonzero, int array ``[P, 2]``."""
        raise NotImplementedError

    def forward(self, r: torch.Tensor, offsets: np.ndarray, dx: float, dy: float) -> torch.Tensor:
        """Kernel weights ``[n_terms, P]`` at distances ``r`` (m, ``[P]``) of the support ``offsets``."""
        raise NotImplementedError


class AxisStencil(RadialProfile):
    """Finite-difference profiles on the axes: ``w_s / h^p`` at ``s`` cells along an axis of spacing h.

    Parameters
    ----------
    shells:
        ``shells[t][s - 1]`` is the dimensionless weight ``w_s`` of term t at distance s cells.
    power:
        The derivative order p: weights scale as ``h^-p`` (m^-p).
    centre:
        Optional per-term dimensionless weight ``c``; the value at ``r = 0`` is ``c (dx^-p + dy^-p)``
        (each axis's one-dimensional stencil contributes its own centre).

    On a square grid the value depends on ``|r|`` only; with dx != dy each axis is scaled by its own
    spacing, which keeps the order of accuracy (the grid then has no 90-degree symmetry to keep).
    """

    def __init__(self, shells: Sequence[Sequence[float]], power: int, centre: Sequence[float] | None = None) -> None:
        super().__init__(len(shells))
        widths = {len(s) for s in shells}
        if len(widths) != 1:
            raise ValueError(f"every term of an axis stencil needs the same number of shells; got {sorted(widths)}")
        self.width = widths.pop()
        self.power = int(power)
        self.register_buffer("shells", torch.tensor(np.asarray(shells, dtype=np.float64)))
        self.register_buffer("centre", torch.tensor(np.zeros(self.n_terms) if centre is None
                                                    else np.asarray(centre, dtype=np.float64)))

    def support(self, dx: float, dy: float) -> np.ndarray:
        s = np.arange(1, self.width + 1)
        z = np.zeros_like(s)
        i = np.concatenate([[0], s, -s, z, z])
        j = np.concatenate([[0], z, z, s, -s])
        return np.stack([i, j], axis=-1)

    def forward(self, r: torch.Tensor, offsets: np.ndarray, dx: float, dy: float) -> torch.Tensor:
        i, j = offsets[:, 0], offsets[:, 1]
        shell = np.abs(i) + np.abs(j)  # on an axis, the distance in cells
        h = np.where(i != 0, dx, dy)
        like = {"dtype": r.dtype, "device": r.device}
        out = torch.zeros(self.n_terms, len(offsets), **like)
        off = shell > 0
        w = self.shells.to(**like)[:, torch.as_tensor(shell[off] - 1, device=r.device)]
        out[:, torch.as_tensor(off, device=r.device)] = w * torch.as_tensor(h[off] ** (-self.power), **like)
        out[:, torch.as_tensor(~off, device=r.device)] = \
            (self.centre.to(**like) * (dx ** -self.power + dy ** -self.power))[:, None]
        return out


def _as_coefficient(value, name: str) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value), dtype=torch.float64)
    if t.numel() != 1 or not bool(torch.isfinite(t).all()) or float(t.detach()) <= 0:
        raise ValueError(f"{name} must be one finite positive number; got {value!r}")
    return t.reshape(())


class HeatKernel(RadialProfile):
    """Gaussian diffusion for a time ``t``: ``exp(-r^2 / (4 kappa t)) / (4 pi kappa t)`` times dx dy.

    The solution operator of ``dc/dt = kappa laplacian(c)``. ``kappa`` (m^2 s^-1) may be a tensor
    that requires grad (it is kept as given, not copied, so gradients reach the caller's leaf).
    The support is the disc of radius ``truncate * sqrt(2 kappa t)``, chosen from the current kappa
    at each call (``exp(-truncate^2 / 2)`` of the peak is dropped: 1.3e-14 at the default 8).
    """

    def __init__(self, kappa, time: float, truncate: float = 8.0) -> None:
        super().__init__(1)
        self.kappa = _as_coefficient(kappa, "the diffusivity kappa (m^2/s)")
        self.time = float(_as_coefficient(time, "the diffusion time (s)"))
        self.truncate = float(truncate)

    def support(self, dx: float, dy: float) -> np.ndarray:
        sigma = math.sqrt(2.0 * float(self.kappa.detach()) * self.time)
        return disc_support(self.truncate * sigma, dx, dy)

    def forward(self, r: torch.Tensor, offsets: np.ndarray, dx: float, dy: float) -> torch.Tensor:
        four_kt = 4.0 * self.kappa.to(dtype=r.dtype, device=r.device) * self.time
        return (dx * dy * torch.exp(-r * r / four_kt) / (math.pi * four_kt))[None]


class PoissonGreen(RadialProfile):
    """The 2-D free-space Green's function of ``laplacian(psi) = rho`` and of ``grad(psi)``.

    ``which="potential"``: ``G(r) = ln(r) / (2 pi)`` (per m^2 of charge); the self cell takes the
    exact cell mean of ``ln r``, which removes the singularity's O(1) error.
    ``which="field"``: the kernel of ``grad psi`` in the correlation form used here,
    ``-G'(r) n = -n / (2 pi r)`` (the field of a positive charge points away from it); its self cell
    is zero (the unit field n is odd).

    The support is the disc ``r <= rmax``; for the free-space answer on a bounded (zero-padded)
    domain take ``rmax`` at least the domain's diagonal.
    """

    def __init__(self, which: str, rmax: float) -> None:
        super().__init__(1)
        if which not in ("potential", "field"):
            raise ValueError(f"PoissonGreen computes 'potential' or 'field'; got {which!r}")
        self.which = which
        self.rmax = float(rmax)

    def support(self, dx: float, dy: float) -> np.ndarray:
        return disc_support(self.rmax, dx, dy)

    def forward(self, r: torch.Tensor, offsets: np.ndarray, dx: float, dy: float) -> torch.Tensor:
        origin = r == 0
        safe = torch.where(origin, torch.ones_like(r), r)
        if self.which == "potential":
            value = torch.where(origin, torch.full_like(r, mean_log_radius_over_cell(dx, dy)), torch.log(safe))
        else:
            value = torch.where(origin, torch.zeros_like(r), -1.0 / safe)
        return (dx * dy / (2.0 * math.pi) * value)[None]


class RadialBasisProfile(RadialProfile):
    """A learnable profile: piecewise-linear (hat-function) expansion in r or in log r.

    ``phi_t(r) = scale * sum_k w[t, k] hat_k(u(r))`` for r > 0, with knots equally spaced in
    ``u = r`` (``spacing="linear"``, knots from 0 to rmax) or ``u = ln r`` (``spacing="log"``, knots
    from ``rmin`` to ``rmax``; smaller r > 0 take the first knot's value); ``phi_t(0) = scale *
    w0[t]`` is a parameter of its own, since the origin is the one point where the unit fields are
    their angular means. Weights start at zero.

    Parameters
    ----------
    n_terms:
        Number of profiles (one per unit field of the pairing).
    rmax:
        Support radius (m).
    n_basis:
        Number of knots.
    spacing:
        ``"linear"`` or ``"log"``.
    rmin:
        First knot for ``spacing="log"`` (m); typically the grid spacing.
    scale:
        Fixed factor (units of the kernel weights), so that the learnable weights are of order one.
    """

    def __init__(self, n_terms: int, rmax: float, n_basis: int = 16, spacing: str = "linear",
                 rmin: float | None = None, scale: float = 1.0) -> None:
        super().__init__(n_terms)
        if spacing not in ("linear", "log"):
            raise ValueError(f"spacing must be 'linear' or 'log'; got {spacing!r}")
        if n_basis < 2:
            raise ValueError(f"a hat-function expansion needs at least 2 knots; got n_basis={n_basis}")
        if spacing == "log" and not (rmin is not None and 0 < rmin < rmax):
            raise ValueError(f"spacing='log' needs 0 < rmin < rmax (m); got rmin={rmin!r}, rmax={rmax!r}")
        self.rmax, self.spacing, self.scale = float(rmax), spacing, float(scale)
        lo, hi = (0.0, self.rmax) if spacing == "linear" else (math.log(rmin), math.log(self.rmax))
        self.register_buffer("knots", torch.linspace(lo, hi, n_basis, dtype=torch.float64))
        self.weight = torch.nn.Parameter(torch.zeros(n_terms, n_basis, dtype=torch.float64))
        self.origin = torch.nn.Parameter(torch.zeros(n_terms, dtype=torch.float64))

    def support(self, dx: float, dy: float) -> np.ndarray:
        return disc_support(self.rmax, dx, dy)

    def basis(self, r: torch.Tensor) -> torch.Tensor:
        """Hat functions at distances r > 0 (m): ``[n_basis, P]``, rows summing to one."""
        knots = self.knots.to(dtype=r.dtype, device=r.device)
        u = r if self.spacing == "linear" else torch.log(torch.clamp(r, min=float(torch.exp(self.knots[0]))))
        u = torch.clamp(u, knots[0], knots[-1])
        step = knots[1] - knots[0]
        return torch.clamp(1.0 - torch.abs(u[None, :] - knots[:, None]) / step, min=0.0)

    def forward(self, r: torch.Tensor, offsets: np.ndarray, dx: float, dy: float) -> torch.Tensor:
        origin = r == 0
        safe = torch.where(origin, torch.full_like(r, self.rmax), r)
        values = self.weight.to(dtype=r.dtype, device=r.device) @ self.basis(safe)
        return self.scale * torch.where(origin[None], self.origin.to(dtype=r.dtype, device=r.device)[:, None], values)
