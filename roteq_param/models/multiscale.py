"""The multiscale (U-Net) topology of a flux network, shared by the escnn network and its export.

Why: a network's skill grew with the stencil it sees at every step measured (README), but a stack of
full-resolution convolutions pays for every cell of that stencil at every grid point. Here most
layers run on coarser copies of the grid, so the view grows by doubling per level. Measured on this
CPU (README "Training through the solver; architectures ..."): 16,32,64 / 3,3,3 sees 30 cells but
costs about as much per call as the 17-cell dilated stack (per-op overhead of pads, interpolation
and stacking at these sizes) and scores lower offline (S R^2 0.55 / 0.69 against 0.60 / 0.79).

Topology, for ``L`` levels with widths ``c_0..c_{L-1}`` (``ModelConfig.channels``) and kernels
``k_0..k_{L-1}``; level ``l`` has cells ``2^l`` times the grid's::

    e_0 = act(conv_e0(x))                                    # full resolution
    e_l = act(conv_el(pool(e_{l-1})))                        # l = 1..L-1
    d_{L-1} = e_{L-1}
    d_l = act(conv_dl([e_l, up(d_{l+1})]))                   # l = L-2..0, at level l: c_l + c_{l+1} -> c_l
    y = conv_out(d_0)

``conv_el`` and ``conv_dl`` use kernel ``k_l``; ``[a, b]`` stacks channels. ``pool`` is the 2 x 2 mean
and ``up`` the periodic bilinear (half-cell aligned) interpolation back to twice the resolution.
The decoder convolves at the finer level, after the skip joins: the PV forcing is made of second
derivatives of the fluxes, so the grid-scale detail must be computed at full resolution (measured:
a first version that convolved before upsampling reached S R^2 0.08 where a 7 x 7 stack reached 0.40
on the same data).

Exactness: pyqg's grid points sit at cell centres and the group acts about the domain centre, so
the index map of every 90-degree element is ``i -> n-1-i`` and/or a transpose. It maps the 2 x 2
blocks ``(2j, 2j+1)`` onto blocks (``j -> n/2-1-j``) and the bilinear weights
``up[2j] = 3/4 c[j] + 1/4 c[j-1]``, ``up[2j+1] = 3/4 c[j] + 1/4 c[j+1]`` onto their mirror images, so
``pool`` and ``up`` commute with every exact element; both act on each channel alike, so they
commute with any representation on the channels. Each level needs an even grid: the grid must be
divisible by ``2^(L-1)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["pool", "up", "unet_forward", "check_grid", "receptive_field"]


def pool(h: torch.Tensor) -> torch.Tensor:
    """Mean over 2 x 2 blocks of the last two axes: ``[..., 2n, 2m] -> [..., n, m]``.

    Summed as ``(h00 + h11) + (h01 + h10)``, an order that every 90-degree element of the block maps
    onto itself, so the result is the same bit for bit in every frame (``avg_pool2d`` is not)."""
    t = h.reshape(*h.shape[:-2], h.shape[-2] // 2, 2, h.shape[-1] // 2, 2)
    return 0.25 * ((t[..., 0, :, 0] + t[..., 1, :, 1]) + (t[..., 0, :, 1] + t[..., 1, :, 0]))


def up(h: torch.Tensor) -> torch.Tensor:
    """Periodic bilinear interpolation to twice the resolution, cell-centre aligned: ``[B, C, n, m] -> [B, C, 2n, 2m]``.

    Output ``(2i+a, 2j+b)`` is ``9/16 c + 3/16 (c_y + c_x) + 1/16 c_xy`` with ``c_y``, ``c_x``, ``c_xy``
    the coarse neighbours on its side (``i-1`` for ``a = 0``, ``i+1`` for ``a = 1``; likewise in x):
    ``F.interpolate`` on the circularly padded field, cropped (3.5x faster here than the same weights
    written out with rolls). Its sums are not ordered symmetrically, so it commutes with the
    90-degree elements to round-off (as every convolution does), not bit for bit.
    """
    padded = F.pad(h, (1, 1, 1, 1), mode="circular")
    return F.interpolate(padded, scale_factor=2, mode="bilinear", align_corners=False)[..., 2:-2, 2:-2]


def check_grid(shape: Sequence[int], levels: int) -> None:
    """Raise a clear error unless the grid ``(..., ny, nx)`` can be halved ``levels - 1`` times."""
    ny, nx = shape[-2], shape[-1]
    f = 2 ** (levels - 1)
    if ny % f or nx % f:
        raise ValueError(f"a {levels}-level multiscale network needs grid sides divisible by {f}; got {ny} x {nx}")


def unet_forward(e0: torch.Tensor, encoder: Sequence[Callable], decoder: Sequence[Callable], out: Callable,
                 act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Evaluate the topology above from ``e0 = act(conv_e0(x))``, which the caller computes (the export
    folds the constant inputs into that layer's bias); ``encoder[l-1]`` is ``conv_el`` for l >= 1 and
    ``decoder[l]`` is ``conv_dl``."""
    levels = len(encoder) + 1
    if not torch.jit.is_tracing():  # a trace would freeze the check; Predictor checks before its call
        check_grid(e0.shape, levels)
    skips, h = [e0], e0
    for conv in encoder:
        h = act(conv(pool(h)))
        skips.append(h)
    for lev in reversed(range(levels - 1)):
        h = act(decoder[lev](torch.cat((skips[lev], up(h)), dim=1)))
    return out(h)


def receptive_field(kernel_sizes: Sequence[int], out_kernel_size: int) -> int:
    """Grid cells across that one output of the topology above depends on (the widest over positions).

    Counted on one axis (every operator is a product of one-axis operators in its support) by
    propagating boolean dependency matrices through the same sequence of operators."""
    import numpy as np

    levels = len(kernel_sizes)
    n = 2 ** (levels - 1) * (sum(kernel_sizes) + out_kernel_size + 8) * 4  # wide enough not to wrap
    n -= n % 2 ** (levels - 1)

    def conv(dep, k):  # dep: [cells, n] bool, rows = cells at this level
        out = dep.copy()
        for s in range(1, k // 2 + 1):
            out |= np.roll(dep, s, axis=0) | np.roll(dep, -s, axis=0)
        return out

    def pool_(dep):
        return dep[0::2] | dep[1::2]

    def up_(dep):
        fine = np.repeat(dep, 2, axis=0)
        fine[0::2] |= np.roll(dep, 1, axis=0)  # even cells read the coarse cell before
        fine[1::2] |= np.roll(dep, -1, axis=0)
        return fine

    dep = np.eye(n, dtype=bool)
    skips = []
    for lev, k in enumerate(kernel_sizes):
        dep = conv(pool_(dep) if lev else dep, k)
        skips.append(dep)
    for lev in reversed(range(levels - 1)):
        dep = conv(skips[lev] | up_(dep), kernel_sizes[lev])
    dep = conv(dep, out_kernel_size)
    cols = np.arange(n)
    return int(max(cols[row].max() - cols[row].min() + 1 for row in dep[n // 2: n // 2 + 2 ** levels]))
