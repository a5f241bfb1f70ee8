"""Inference form of a flux network: plain torch, no escnn, circular padding restored.

:meth:`FluxNet.export` returns an :class:`ExportedFluxNet`: a plain ``torch.nn.Module`` with
float32 weights, no escnn at inference. Its filters come from ``R2Conv.expand_parameters()``
(escnn's own ``export()`` silently turns circular padding into zero padding: escnn 1.0.11), and
it pads circularly itself; ``tests/test_models.py`` checks exported == eval-mode escnn to 1e-5
including the borders.

Two exact simplifications make the exported graph cheaper than a literal translation:

* constant-vector inputs (``beta``, ``U_i``) are constant over the grid, so their part of the
  first convolution is a per-sample bias: ``sum_{taps} W[:, c] * value``. The exported net
  convolves only the gridded channels (5 of the 11 in the QG schema) and adds that bias;
* ``in_scale`` and ``out_scale`` are folded into the first and last conv weights.

With similarity scaling (``ModelConfig.similarity``) the per-sample factors of
:mod:`roteq_param.models.similarity` divide the inputs and multiply the outputs on top of that;
the calls then take the grid spacing ``dx`` [m]. With a view spacing (``ModelConfig.view_spacing``)
the stack runs on the view grid between two spectral resamplings (:mod:`roteq_param.models.view`).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from roteq_param.fields import Schema
from roteq_param.models import multiscale, similarity, view

__all__ = ["ExportedFluxNet", "time_inference"]


class ExportedFluxNet(nn.Module):
    """Inference form of a :class:`FluxNet`: circularly padded ``F.conv2d`` layers (float32 by default).

    ``forward(x)`` takes the same stacked input ``[B, C_in, y, x]`` as :class:`FluxNet` and
    returns ``[B, C_out, y, x]`` in physical units. The constant-vector channels are read at
    grid point (0, 0) and enter as a bias (exact because ``Schema.stack`` broadcasts them);
    the normalisation scales are folded into the first and last layers.
    """

    def __init__(self, schema: Schema, weights: list, in_scale: torch.Tensor, out_scale: torch.Tensor,
                 activation: str, dtype: torch.dtype = torch.float32, dilations: tuple[int, ...] | None = None,
                 closure: dict[str, float] | None = None, multiscale: bool = False,
                 similarity_reference: tuple[float, float] | None = None, view_spacing: float | None = None):
        super().__init__()
        # U-Net topology (roteq_param.models.multiscale): weights in the order encoder, decoder, output
        self.multiscale = bool(multiscale)
        self.schema = schema
        # not part of the network's function: the forcing operator adds them (ModelConfig.closure)
        self.closure = dict(closure or {})
        self.activation = activation
        grid_idx, const_idx = [], []
        for f in schema.inputs:
            idx = list(range(schema.channel_slices("inputs")[f.name].start,
                             schema.channel_slices("inputs")[f.name].stop))
            (grid_idx if f.gridded else const_idx).extend(idx)
        # Every fold is computed in float64 and rounded once at the end: a sum over taps done in
        # float32 would round differently for a rotated filter and break exact equivariance.
        f64 = torch.float64
        ws = [w.to(f64) for w, _ in weights]
        bs = [torch.zeros(w.shape[0], dtype=f64) if b is None else b.to(f64) for w, (_, b) in zip(ws, weights)]
        # Fold the normalisation into the weights: x / s_in enters layer 0, layer -1 is multiplied by s_out.
        ws[0] = ws[0] / in_scale.to(f64)[None, :, None, None]
        ws[-1] = ws[-1] * out_scale.to(f64)[:, None, None, None]
        bs[-1] = bs[-1] * out_scale.to(f64)
        w0 = ws[0]
        self.register_buffer("grid_idx", torch.tensor(grid_idx, dtype=torch.long))
        self.register_buffer("const_idx", torch.tensor(const_idx, dtype=torch.long))
        # Slicing is cheaper than index_select when the gridded channels come first and contiguous.
        self._n_grid_prefix = len(grid_idx) if grid_idx == list(range(len(grid_idx))) else -1
        self.register_buffer("w_first", w0[:, grid_idx].contiguous())
        # A constant channel sees the same value under every tap: its conv is (sum of taps) * value.
        self.register_buffer("w_const", w0[:, const_idx].sum(dim=(-2, -1)).contiguous())
        self.register_buffer("b_first", bs[0].contiguous())
        self.dilations = [1] * len(ws) if dilations is None or multiscale else [int(d) for d in dilations]
        self.pads = [d * (w.shape[-1] // 2) for w, d in zip(ws, self.dilations)]
        # A plain stack runs in channels-last (oneDNN's faster layout on CPU) on its input padded once
        # by the whole stack's halo (see _forward_scaled); the U-Net pads per layer, in NCHW.
        layout = torch.contiguous_format if self.multiscale else torch.channels_last
        self.halo = 0 if self.multiscale else sum(self.pads)
        self.w_first = self.w_first.contiguous(memory_format=layout)
        self.weights = nn.ParameterList([nn.Parameter(w.contiguous(memory_format=layout), requires_grad=False)
                                         for w in ws[1:]])
        self.biases = nn.ParameterList([nn.Parameter(b.contiguous(), requires_grad=False) for b in bs[1:]])
        # similarity scaling: (dx_ref [m], G_ref [1/s]), the velocity channels' places in the gridded
        # tensor and each channel's exponents of (Delta, G), split like the inputs
        self.similarity = similarity_reference is not None
        self.view_spacing = view_spacing  # [m] or None (ModelConfig.view_spacing)
        if self.similarity:
            e_in = similarity.channel_exponents(schema, "inputs")
            vel = similarity.velocity_channels(schema)
            self.register_buffer("sim_reference", torch.tensor(similarity_reference, dtype=f64))
            self.register_buffer("sim_velocity", torch.tensor([grid_idx.index(c) for c in vel], dtype=torch.long))
            self.register_buffer("sim_grid", e_in[grid_idx].contiguous())
            self.register_buffer("sim_const", e_in[const_idx].contiguous())
            self.register_buffer("sim_out", similarity.channel_exponents(schema, "outputs"))
        self.to(dtype)
        self.eval()

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu_(h) if self.activation == "relu" else F.elu(h, inplace=True)

    def forward(self, x: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Stacked fluxes for stacked inputs; ``dx`` [m] is the grid spacing (needed with similarity scaling)."""
        if self._n_grid_prefix >= 0:
            grid = x[:, : self._n_grid_prefix]
        else:
            grid = x.index_select(1, self.grid_idx)
        return self.forward_split(grid, x[:, self.const_idx, 0, 0], self.grid_spacing(dx))

    def grid_spacing(self, dx: float | None) -> torch.Tensor:
        """``dx`` [m] as the 0-d tensor :meth:`forward_split` takes (a model without similarity scaling
        ignores it; one with it refuses ``None``)."""
        dx = similarity.require_grid_spacing(dx) if self.similarity else 1.0
        return torch.tensor(dx, dtype=self.b_first.dtype, device=self.b_first.device)

    def forward_split(self, grid: torch.Tensor, const: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """Same as ``forward`` with the gridded channels ``[B, C_grid, y, x]`` and the constant-vector
        values ``[B, C_const]`` given separately (schema order), so nothing is broadcast over the grid;
        ``dx`` is the grid spacing [m] as a 0-d tensor (:meth:`grid_spacing`)."""
        if self.similarity:
            return self._forward_similarity(grid, const, dx)
        return self._forward_scaled(grid, const)

    def _forward_similarity(self, grid: torch.Tensor, const: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        g_ratio = similarity.gradient_scale(grid[:, self.sim_velocity], dx) / self.sim_reference[1]
        dx_ratio = dx / self.sim_reference[0]
        f_grid, f_const, f_out = (similarity.channel_factors(e, dx_ratio, g_ratio)
                                  for e in (self.sim_grid, self.sim_const, self.sim_out))
        y = self._forward_viewed(grid / f_grid[..., None, None], const / f_const, dx)
        return y * f_out[..., None, None]

    def _forward_viewed(self, grid: torch.Tensor, const: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
        """The stack on the view grid (:mod:`roteq_param.models.view`), or on ``grid`` without a view."""
        if self.view_spacing is None:
            return self._forward_scaled(grid, const)
        return view.on_view_grid(lambda g: self._forward_scaled(g, const), grid, float(dx), self.view_spacing,
                                 self.halo)

    def _forward_scaled(self, grid: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
        # [B, H] first-layer bias, including the constant vectors' contribution
        bias = torch.addmm(self.b_first, const, self.w_const.T)
        if self.multiscale:
            p = self.pads[0]
            if p:
                grid = F.pad(grid, (p, p, p, p), mode="circular")
            h = self._act(F.conv2d(grid, self.w_first).add_(bias[:, :, None, None]))
            convs = [lambda t, i=i: self._conv(i, t) for i in range(len(self.weights))]
            L = self.levels
            return multiscale.unet_forward(h, convs[: L - 1], convs[L - 1: 2 * L - 2], convs[-1], self._act)
        # One circular pad of the (few) input channels by the sum of all layers' pads, then unpadded
        # convolutions: the padded input is the periodic extension, so each layer's output is the
        # periodic extension of the per-layer-padded result and the last one is exactly the grid.
        # This spares a pad (a copy of every hidden channel) per layer and keeps channels-last throughout.
        H = self.halo
        if H:
            grid = F.pad(grid, (H, H, H, H), mode="circular")
        h = grid.contiguous(memory_format=torch.channels_last)
        h = self._act(F.conv2d(h, self.w_first, dilation=self.dilations[0]).add_(bias[:, :, None, None]))
        n = len(self.weights)
        for i in range(n):
            h = F.conv2d(h, self.weights[i], self.biases[i], dilation=self.dilations[i + 1])
            if i < n - 1:
                h = self._act(h)
        return h.contiguous()

    @property
    def levels(self) -> int:
        """Grid levels the network runs on (1 unless multiscale: L - 1 encoder, L - 1 decoder, 1 output conv)."""
        return (len(self.weights) + 2) // 2 if self.multiscale else 1

    def check_grid(self, ny: int, nx: int) -> None:
        """Raise a clear ``ValueError`` unless the network can run on an ``ny x nx`` grid."""
        multiscale.check_grid((ny, nx), self.levels)
        # one circular pad by the whole halo may wrap around the grid at most once (torch's limit)
        if self.halo > min(ny, nx):
            raise ValueError(f"the network sees {2 * self.halo + 1} cells across (a halo of {self.halo}), more "
                             f"than a periodic pad of a {ny}x{nx} grid allows: it needs at least {self.halo} "
                             "cells in each direction")

    def _conv(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """U-Net layer ``i + 1``: circular pad and convolution, no activation."""
        p = self.pads[i + 1]
        if p:
            h = F.pad(h, (p, p, p, p), mode="circular")
        return F.conv2d(h, self.weights[i], self.biases[i], dilation=self.dilations[i + 1])


def time_inference(model: ExportedFluxNet, n: int = 64, repeats: int = 200) -> float:
    """Best-of-5 mean wall time (ms) of one exported call on one ``n x n`` state (a 1000 km square, as
    pyqg's default domain), current torch threads."""
    g = torch.Generator().manual_seed(0)
    arrays = {}
    for f in model.schema.inputs:
        shape = (f.n_components,) if not f.gridded else ((f.n_components,) if f.n_components > 1 else ()) + (n, n)
        arrays[f.name] = torch.randn(shape, generator=g)
    x = model.schema.stack(arrays, "inputs")[None]
    dx = 1.0e6 / n
    with torch.no_grad():
        for _ in range(20):
            model(x, dx)
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x, dx)
            best = min(best, (time.perf_counter() - t0) / repeats)
    return best * 1e3
