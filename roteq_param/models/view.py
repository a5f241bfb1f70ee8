"""A network's stencils at one fixed grid spacing on any grid (``ModelConfig.view_spacing``).

Why
---
A stencil of ``k`` cells sees ``k dx`` metres of the flow, so one network sees a smaller patch on a finer
grid. Measured on the resolution-transfer data (README, "Transfer to other grids"): the 9-cell stack is
the better model at 48^2 (9 x 20.8 km) and the 17-cell stack at 96^2 (17 x 10.4 km), both about 180 km
across; no one stencil in cells serves both grids. With a view spacing the network always runs on a grid
of that spacing: the inputs are resampled spectrally onto it and the fluxes resampled back, so its
stencils cover the same kilometres on every grid. The similarity scaling
(:mod:`roteq_param.models.similarity`) still uses the native grid spacing: that is the filter scale
which sets the subgrid fluxes' size.

Measured (README, "Transfer to other grids: a view in kilometres..."): trained on three grids, the 17-cell
stack at 1000 km / 96 is worse than the same stack in cells on every grid but 48^2 (S R^2 0.51 against
0.57 at 64^2), and costs 4.2x its call at 64^2. In cells, the coarse fields of different grids look alike
(each resolved up to its own Nyquist wavenumber), which the similarity scaling relies on; on one view
grid they differ in bandwidth. The option stays for solvers whose grids differ in other ways, with that
measurement.

How
---
On each axis, a periodic field of ``n`` cells is Fourier transformed, its wavenumbers ``|k| < min(n,
m) / 2`` are kept (strictly below the coarser grid's Nyquist wavenumber) and it is evaluated on ``m``
cells covering the same domain. ``symmetry`` turns a grid of ``n`` cells about its centre, ``(n - 1) /
2`` cells from the first point, so the ``m``-cell grid is offset by ``(dx_m - dx_n) / 2`` to share
that centre. The kept band is a square that every 90-degree rotation and every reflection maps onto
itself, so resampling commutes with every grid-exact element of C_N and D_N, and the resampled
network stays equivariant to round-off (``tests/test_view.py``). ``m = n`` is the identity (no
truncation), so on its own grid a view model is the plain network.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["view_size", "resample", "on_view_grid"]


def view_size(n: int, dx: float, view_spacing: float, min_cells: int = 1) -> int:
    """Cells of the view grid across a periodic domain of ``n`` cells of ``dx`` [m]: ``round(n dx /
    view_spacing)``; a clear error when that is fewer than ``min_cells`` (the network's halo)."""
    m = max(1, round(n * float(dx) / view_spacing))
    if m < min_cells:
        raise ValueError(f"the network runs on a grid of {view_spacing:g} m spacing: {m} cells across a domain of "
                         f"{n} x {float(dx):g} m, fewer than the {min_cells} its stencils need")
    return m


def _resample_axis(x: torch.Tensor, m: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    if m == n:
        return x
    k = torch.fft.fftfreq(n, 1.0 / n, device=x.device, dtype=torch.float64)  # integer wavenumbers
    kept = torch.nonzero(k.abs() < min(n, m) / 2).flatten()
    # the m-cell grid's points sit at l L / m + L (1/m - 1/n) / 2 in the n-cell grid's coordinates
    phase = torch.polar(torch.ones_like(k[kept]), math.pi * (1.0 / m - 1.0 / n) * k[kept])
    spectrum = torch.fft.fft(x, dim=dim).index_select(dim, kept)
    shape = [1] * x.dim()
    shape[dim] = len(kept)
    spectrum = spectrum * phase.to(spectrum.dtype).reshape(shape)
    out_shape = list(x.shape)
    out_shape[dim] = m
    out = torch.zeros(out_shape, dtype=spectrum.dtype, device=x.device)
    out = out.index_copy(dim, (k[kept].long() % m), spectrum)
    # the kept band is conjugate-symmetric, so the result is real; m / n undoes fft's 1/n on the m grid
    return torch.fft.ifft(out, dim=dim).real.mul(m / n).to(x.dtype)


def resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Periodic fields ``[..., ny, nx]`` resampled spectrally onto ``size = (my, mx)`` cells covering the
    same domain, centre-aligned (module docstring); differentiable, any float dtype and device."""
    return _resample_axis(_resample_axis(x, size[1], -1), size[0], -2)


def on_view_grid(stack: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dx: float, view_spacing: float,
                 halo: int) -> torch.Tensor:
    """``stack`` (a periodic convolution stack of halo ``halo`` cells) applied to ``x`` ``[..., ny, nx]`` on a
    grid of spacing ``dx`` [m] as it runs on the view grid of ``view_spacing`` [m]: ``x`` resampled onto
    that grid, the result resampled back. The one place both the escnn net and its export do this."""
    size = tuple(x.shape[-2:])
    m = tuple(view_size(n, dx, view_spacing, halo) for n in size)
    return resample(stack(resample(x, m)), size)
