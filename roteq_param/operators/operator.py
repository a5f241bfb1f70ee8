"""The equivariant linear operator: a convolution with ``sum_t phi_t(|r|) U_t(r_hat)``.

``out(x) = sum_r K(r) f(x + r)`` over the profile's support (a correlation, as
``torch.nn.functional.conv2d`` computes it), with ``K(r) = sum_t phi_t(|r|) U_t(r / |r|)``: the
profile's radial values times the pairing's unit fields (:mod:`.angular`). Grid points sit at
cell centres and the offsets r are whole cells, ``r = (i dx, j dy)``.

Why it is exactly equivariant under the grid's 90-degree turns and reflections (square grid,
dx = dy): the support is a symmetric set, ``|r|`` and ``r / |r|`` of a turned offset are the
same floating-point numbers permuted and negated, so ``K(R r) = rho_out(R) K(r) rho_in(R)^-1``
holds bit for bit, and only the summation order of the convolution differs (round-off).

Boundaries: ``"periodic"`` wraps (a kernel wider than the domain is summed over its periodic
images); ``"zero"`` treats the field as zero outside the domain (a bounded domain, zero padding).
Both commute with the rotations and reflections about the domain centre.

Application: a direct convolution for small kernels, FFTs (with the kernel folded onto the
periodic or padded grid) for large ones; both are differentiable with respect to the input and
the profile's parameters.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from roteq_param.symmetry import Kind, n_components

from .angular import check_gridded, term_names, unit_fields
from .profiles import RadialProfile

__all__ = ["RadialOperator", "BOUNDARIES", "METHODS"]

BOUNDARIES = ("periodic", "zero")
METHODS = ("auto", "direct", "fft")
# Direct convolution up to this many taps in the kernel's bounding box; FFTs beyond (measured on one
# core: a 9x9 direct conv on 128^2 float64 costs about as much as the two FFTs it replaces).
DIRECT_MAX_TAPS = 81


class RadialOperator(torch.nn.Module):
    """A translation- and rotation-equivariant linear operator between gridded fields.

    Parameters
    ----------
    kind_in, kind_out:
        Gridded kinds (:class:`roteq_param.symmetry.Kind` or their names): scalar, pseudoscalar,
        vector, pseudovector or tensor.
    profile:
        The radial profiles, one per unit field of the pairing (``profile.n_terms`` must equal
        :func:`~roteq_param.operators.angular.n_terms`), or fewer with ``terms`` naming which.
    dx, dy:
        Grid spacing along x and y (m); ``dy`` defaults to ``dx``.
    boundary:
        ``"periodic"`` or ``"zero"`` (bounded domain, field zero outside).
    method:
        ``"direct"``, ``"fft"`` or ``"auto"`` (direct for kernels of at most ``DIRECT_MAX_TAPS`` taps).
    terms:
        Indices of the pairing's unit fields the profile's rows multiply (default: all, in order).

    Input ``[..., y, x]`` (scalar kinds), ``[..., 2, y, x]`` (vectors, (x, y)) or ``[..., 3, y, x]``
    (tensors, (xx, xy, yy)); output in the layout of ``kind_out``; the profile is evaluated in the
    input's dtype.
    """

    def __init__(self, kind_in: Kind | str, kind_out: Kind | str, profile: RadialProfile, *, dx: float,
                 dy: float | None = None, boundary: str = "periodic", method: str = "auto",
                 terms: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.kind_in, self.kind_out = check_gridded(kind_in), check_gridded(kind_out)
        names = term_names(self.kind_in, self.kind_out)
        self.terms = tuple(range(len(names))) if terms is None else tuple(int(t) for t in terms)
        if any(t < 0 or t >= len(names) for t in self.terms) or len(set(self.terms)) != len(self.terms):
            raise ValueError(f"terms must be distinct indices into the unit fields {names}; got {terms!r}")
        if profile.n_terms != len(self.terms):
            raise ValueError(
                f"a {self.kind_in.value} -> {self.kind_out.value} operator with terms {self.terms} needs a profile "
                f"with {len(self.terms)} rows (unit fields {[names[t] for t in self.terms]}); "
                f"the profile has n_terms={profile.n_terms}"
            )
        self.profile = profile
        self.dx = float(dx)
        self.dy = float(dx if dy is None else dy)
        if not (self.dx > 0 and self.dy > 0 and math.isfinite(self.dx) and math.isfinite(self.dy)):
            raise ValueError(f"grid spacings must be finite and positive (m); got dx={dx!r}, dy={dy!r}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}; got {boundary!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        self.boundary, self.method = boundary, method

    def extra_repr(self) -> str:
        names = term_names(self.kind_in, self.kind_out)
        return (f"{self.kind_in.value} -> {self.kind_out.value}, terms={[names[t] for t in self.terms]}, "
                f"dx={self.dx:g}, dy={self.dy:g}, boundary={self.boundary!r}, method={self.method!r}")

    # -- the kernel -------------------------------------------------------------------------------
    def stencil(self, dtype: torch.dtype = torch.float64, device: Any = None) -> tuple[np.ndarray, torch.Tensor]:
        """The kernel on its support.

        Returns
        -------
        offsets:
            int array ``[P, 2]`` of ``(i, j)`` (cells along x, y).
        kernel:
            tensor ``[n_out, n_in, P]``: ``out(x) = sum_p kernel[:, :, p] @ f(x + (i_p dx, j_p dy))``.
        """
        offsets = self.profile.support(self.dx, self.dy)
        xy = offsets * np.array([self.dx, self.dy])
        r = np.hypot(xy[:, 0], xy[:, 1])
        origin = r == 0
        n = xy / np.where(origin, 1.0, r)[:, None]
        units = unit_fields(self.kind_in, self.kind_out, n, at_origin=origin)[list(self.terms)]
        phi = self.profile(torch.as_tensor(r, dtype=dtype, device=device), offsets, self.dx, self.dy)
        kernel = torch.einsum("tp,tpoi->oip", phi, torch.as_tensor(units, dtype=dtype, device=device))
        return offsets, kernel

    # -- application --------------------------------------------------------------------------------
    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        d_in = n_components(self.kind_in)
        shape = tuple(x.shape)
        if d_in == 1:
            if len(shape) < 2:
                raise ValueError(f"a {self.kind_in.value} input must be [..., y, x]; got shape {shape}")
            lead = shape[:-2]
            return x.reshape(-1, 1, *shape[-2:]), lead
        if len(shape) < 3 or shape[-3] != d_in:
            comps = "(x, y)" if d_in == 2 else "(xx, xy, yy)"
            raise ValueError(f"a {self.kind_in.value} input must be [..., {d_in}, y, x] with components {comps}; "
                             f"got shape {shape}")
        lead = shape[:-3]
        return x.reshape(-1, d_in, *shape[-2:]), lead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to ``x`` (a torch tensor laid out for ``kind_in``)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"RadialOperator takes a torch tensor; got {type(x).__name__} (use torch.as_tensor)")
        if not x.is_floating_point():
            raise TypeError(f"RadialOperator needs a floating-point input; got dtype {x.dtype}")
        flat, lead = self._split(x)
        ny, nx = flat.shape[-2:]
        offsets, kernel = self.stencil(x.dtype, x.device)
        if self.boundary == "zero":
            # Offsets beyond the domain never meet data.
            inside = (np.abs(offsets[:, 0]) < nx) & (np.abs(offsets[:, 1]) < ny)
            offsets, kernel = offsets[inside], kernel[:, :, torch.as_tensor(inside, device=kernel.device)]
        rx, ry = (int(np.abs(offsets[:, 0]).max()), int(np.abs(offsets[:, 1]).max())) if len(offsets) else (0, 0)
        taps = (2 * rx + 1) * (2 * ry + 1)
        fits = self.boundary == "zero" or (rx <= nx and ry <= ny)  # circular padding needs pad <= size
        method = self.method
        if method == "auto":
            method = "direct" if taps <= DIRECT_MAX_TAPS and fits else "fft"
        if method == "direct" and not fits:
            raise ValueError(f"a periodic kernel of half-width ({rx}, {ry}) cells is wider than the {ny} x {nx} grid; "
                             "use method='fft' (which sums its periodic images) or method='auto'")
        apply: Callable = self._direct if method == "direct" else self._fft
        out = apply(flat, offsets, kernel, rx, ry)
        d_out = n_components(self.kind_out)
        return out.reshape(*lead, ny, nx) if d_out == 1 else out.reshape(*lead, d_out, ny, nx)

    def _direct(self, f: torch.Tensor, offsets: np.ndarray, kernel: torch.Tensor, rx: int, ry: int) -> torch.Tensor:
        d_out, d_in = kernel.shape[:2]
        weight = _scatter_box(f.new_zeros(d_out, d_in, 2 * ry + 1, 2 * rx + 1), offsets, kernel, rx, ry)
        if self.boundary == "periodic":
            padded = F.pad(f, (rx, rx, ry, ry), mode="circular") if (rx or ry) else f
            return F.conv2d(padded, weight)
        return F.conv2d(f, weight, padding=(ry, rx))

    def _fft(self, f: torch.Tensor, offsets: np.ndarray, kernel: torch.Tensor, rx: int, ry: int) -> torch.Tensor:
        ny, nx = f.shape[-2:]
        if self.boundary == "periodic":
            size = (ny, nx)
        else:
            # Zero padding by (ry, rx) cells makes the circular correlation a linear one on the domain.
            size = (ny + ry, nx + rx)
            f = F.pad(f, (0, rx, 0, ry))
        khat = _multiplier(kernel, offsets, size)
        out = torch.fft.irfft2(torch.einsum("oiyx,biyx->boyx", khat, torch.fft.rfft2(f)), s=size)
        return out[..., :ny, :nx]

    def multiplier(self, ny: int, nx: int, dtype: torch.dtype = torch.float64, device: Any = None) -> torch.Tensor:
        """The periodic operator's Fourier multiplier on an ``ny x nx`` grid, in ``torch.fft.rfft2``'s layout.

        ``rfft2(A f)[o] = sum_i multiplier[o, i] * rfft2(f)[i]`` exactly (periodic boundary), so a spectral
        code applies the operator with one complex multiply per component pair: shape
        ``[n_out, n_in, ny, nx // 2 + 1]``, differentiable in the profile's parameters.
        """
        if self.boundary != "periodic":
            raise ValueError("a Fourier multiplier describes a periodic operator; this one has boundary='zero'")
        offsets, kernel = self.stencil(dtype, device)
        return _multiplier(kernel, offsets, (ny, nx))


def _scatter_box(weight: torch.Tensor, offsets: np.ndarray, kernel: torch.Tensor, rx: int, ry: int) -> torch.Tensor:
    """Place kernel values at their offsets in a ``[.., 2ry+1, 2rx+1]`` box (differentiably)."""
    flat = weight.reshape(*weight.shape[:2], -1)
    idx = torch.as_tensor((offsets[:, 1] + ry) * (2 * rx + 1) + offsets[:, 0] + rx, device=weight.device)
    return flat.index_add(-1, idx, kernel).reshape(weight.shape)


def _multiplier(kernel: torch.Tensor, offsets: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """rfft2 multiplier of ``out = sum_r K(r) f(x + r)`` on a periodic grid of ``size``.

    A correlation: the conjugate of the folded kernel's transform.
    """
    return torch.fft.rfft2(_fold(kernel, offsets, size)).conj().resolve_conj()


def _fold(kernel: torch.Tensor, offsets: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Sum the kernel's values onto a periodic grid of ``size`` (its periodic images add up)."""
    ny, nx = size
    idx = torch.as_tensor((offsets[:, 1] % ny) * nx + offsets[:, 0] % nx, device=kernel.device)
    folded = kernel.new_zeros(*kernel.shape[:2], ny * nx).index_add(-1, idx, kernel)
    return folded.reshape(*kernel.shape[:2], ny, nx)

