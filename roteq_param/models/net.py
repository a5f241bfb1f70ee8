"""The C_N / D_N-equivariant flux network and a plain-CNN baseline.

What the network computes
-------------------------
A :class:`FluxNet` maps the stacked input channels of a :class:`~roteq_param.fields.Schema`
(default :func:`~roteq_param.fields.qg_schema`: ``vel_i`` in m/s, ``b = psi_1 - psi_2`` in
m^2/s, the constant vectors ``beta`` in 1/(m s) and ``U_i`` in m/s broadcast over the grid)
to the stacked output channels (``tau_i`` in m^2/s^2, ``Fb_i`` in m^3/s^2)::

    y = out_scale * net(x / in_scale)

``in_scale`` / ``out_scale`` hold ONE positive number per field (repeated over that field's
components), so the normalisation commutes with every rotation and reflection: a vector or
tensor is divided by a scalar, never component by component, and nothing is subtracted.
They are buffers, set from training data by :meth:`FluxNet.set_normalization`.

``net`` is (``arch="escnn"``) a stack of escnn ``R2Conv`` layers on the group's regular
representation with pointwise nonlinearities, ending in a conv onto the schema's output
field type (escnn splits each tensor into trace + deviatoric irreps by itself), or
(``arch="cnn"``) the same stack of plain ``Conv2d`` layers with the same channel counts: the
non-equivariant baseline, equal in cost after export. Every spatial conv pads circularly
(the domain is doubly periodic).

Default architecture and why (measured, ``benchmarks/bench_models.py``)
------------------------------------------------------------------------
The budget when this default was chosen was a parameterised 64^2 two-layer pyqg step <= 2x a bare
step (docs/design.md §6 has the current one). A bare step measured 0.17-0.18 ms on one core here,
so the network got about one bare step. Times per call on one 64^2 state, one torch thread, ratio to
a bare step measured in the same process (busy shared 2-core machine, best of 5):

====================================  ======  ========  ============  ==========  =========
architecture (hidden channels)        params  exported  trace+freeze  opt4inf     Predictor
====================================  ======  ========  ============  ==========  =========
C4 [8], 3x3                           156     0.78x     0.69x         1.17x       1.17x
C4 [16], 3x3                          310     0.90x     0.80x         1.24x       1.22x
C4 [16, 16], 3x3 then 1x1 (default)   378     1.09x     0.98x         1.43x       1.36x
C8 [16, 16], 3x3 then 1x1             190     1.07x     0.97x         1.43x       1.35x
D4 [16, 16], 3x3 then 1x1             190     1.10x     1.00x         1.51x       1.47x
C4 [32, 32], 3x3 then 1x1             882     1.96x     1.82x         2.16x       2.32x
C4 [32, 32, 32], 3x3, 3x3, 1x1        2426    4.65x     4.36x         4.45x       5.31x
plain CNN [16, 16] (baseline)         2042    1.11x     0.95x         1.52x       1.34x
====================================  ======  ========  ============  ==========  =========

(bare step 0.180 ms; "Predictor" is the whole named-numpy-arrays-in, named-fluxes-out path
a solver hook calls, float64 in and out; a first version that stacked and broadcast through
``Schema.stack`` cost 2.5x.) With two torch threads every variant was 3x-800x slower on the
shared machine (OpenMP barriers waiting for a descheduled thread): run inference with
``torch.set_num_threads(1)``.

Hence the default: ``channels=(16, 16)``, ``kernel_sizes=(3, 1)`` -- one 3x3 equivariant
stencil layer (the only place neighbours are seen: gradients, strain, vorticity and the
divergence of the inputs are all 3x3 stencils, so a fixed finite-difference feature layer
would just be a restricted version of this learned one at the same cost), one 1x1 layer and
a 1x1 output layer; 16 channels = 4 regular fields of C4 (2 of C8 / D4). The net costs about
1.0x a bare step as a frozen trace, the full :class:`Predictor` path about 1.4x: per step
that exceeds the 2x budget once the hook's spectral divergence is added, so the hook should
reuse the forcing for 2 steps (or use ``channels=(8,)``, 1.2x through the Predictor). Wider
nets are 2x-5x a bare step. TorchScript ``trace`` + ``freeze`` is 10-15% faster than eager at this size and is
what :class:`Predictor` uses; ``optimize_for_inference`` (mkldnn) is slower below ~32
channels. The receptive field is 3x3: a wider stencil costs proportionally more.

Tried and not taken (30 epochs on one real 256^2 -> 64^2 eddy run, validation on another):
a pointwise x^2 activation (the gradient model's quadratic family) was no better than ReLU
with one hidden layer and unstable with two; [32, 32] and two 3x3 layers gave S R^2 within
+-0.1 of the default at 2x the cost. On that data the gradient model itself reaches flux
R^2 of only 0.08-0.19 (spectral-truncation operator), so the flux R^2 of any 3x3-local net
is low; the PV forcing S, which the solver feels, is predicted better (R^2 ~0.2-0.35 there).

Resolution transfer: with ``ModelConfig.similarity`` every input and output is also measured in
units of the grid spacing and the sample's velocity-gradient scale
(:mod:`roteq_param.models.similarity`); the calls then take the grid spacing ``dx`` (m).
"""


from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from roteq_param.fields import Schema, escnn_field_type
from roteq_param.models import multiscale, similarity, view
from roteq_param.models.config import ModelConfig
from roteq_param.models.export import ExportedFluxNet
from roteq_param.symmetry import Group

__all__ = ["FluxNet", "build_model"]


def _channel_scales(schema: Schema, which: str, scales: Mapping[str, float]) -> torch.Tensor:
    """One positive scale per field, repeated over its components -> ``[C]`` float32."""
    names = [f.name for f in schema.fields(which)]
    missing = [n for n in names if n not in scales]
    unknown = sorted(set(scales) - set(names))
    if missing or unknown:
        raise ValueError(f"{which} scales must name exactly the schema's {which} {names}; "
                         f"missing {missing}, unknown {unknown}")
    out = []
    for f in schema.fields(which):
        s = float(scales[f.name])
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"scale of field {f.name!r} must be finite and > 0, got {s}")
        out += [s] * f.n_components
    return torch.tensor(out, dtype=torch.float32)


class FluxNet(nn.Module):
    """Flux network ``y = out_scale * net(x / in_scale)`` on stacked channels ``[B, C, y, x]``.

    Build with :func:`build_model`. ``forward`` takes the stacked input tensor of the schema
    (``Schema.stack``) and returns the stacked outputs (``Schema.unstack`` names them).
    Use :meth:`export` for inference.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.schema = config.get_schema()
        self.group = Group.parse(config.group)
        c_in, c_out = self.schema.n_channels("inputs"), self.schema.n_channels("outputs")
        self.register_buffer("in_scale", torch.ones(c_in))
        self.register_buffer("out_scale", torch.ones(c_out))
        if config.similarity:  # only then, so that the files of models without it keep their keys
            # the training data's grid spacing [m] and mean velocity-gradient scale [1/s]: where the
            # per-sample similarity factors are 1
            self.register_buffer("similarity_reference", torch.ones(2))
            # fixed by the schema: read once, not on every forward
            self._velocity_channels = similarity.velocity_channels(self.schema)
            self._exponents = tuple(similarity.channel_exponents(self.schema, w) for w in ("inputs", "outputs"))
        if config.arch == "escnn":
            self.net = self._build_escnn()
        else:
            self.net = self._build_cnn(c_in, c_out)

    # -- construction -----------------------------------------------------------------------------
    def _build_escnn(self):
        from escnn import nn as enn

        cfg = self.config
        in_type = escnn_field_type(self.schema, "inputs", self.group)
        out_type = escnn_field_type(self.schema, "outputs", self.group)
        gspace = in_type.gspace
        self.in_type, self.out_type = in_type, out_type
        hidden = [enn.FieldType(gspace, [gspace.regular_repr] * (c // self.group.order)) for c in cfg.channels]

        def conv(a, b, k, d=1):
            layer = enn.R2Conv(a, b, k, padding=d * (k // 2), dilation=d, padding_mode="circular")
            if d > 1:
                self._check_dilated_basis(layer, k, d)
            return layer

        if cfg.multiscale:  # U-Net: ModuleList in export order (encoder, decoder, output)
            return nn.ModuleList(self._multiscale_convs(conv, in_type, hidden, out_type))
        act = enn.ReLU if cfg.activation == "relu" else enn.ELU
        layers, t = [], in_type
        for h, k, d in zip(hidden, cfg.kernel_sizes, cfg.dilations):
            layers += [conv(t, h, k, d), act(h)]
            t = h
        layers.append(conv(t, out_type, cfg.out_kernel_size))
        return enn.SequentialModule(*layers)

    # escnn's sampled steerable basis of a dilated stencil is equivariant under the 90-degree rotations
    # only up to a point (measured, random weights: kernel 3 up to dilation 4 to 4e-5, dilation 5 to 0.1;
    # kernel 5 up to dilation 6 to 9e-4, dilation 7 to 0.02). Beyond it the trained escnn net and its
    # exactly equivariant export would be different functions, so such a layer is refused.
    DILATED_BASIS_TOLERANCE = 1e-3

    def _check_dilated_basis(self, layer, k: int, d: int) -> None:
        w, b = layer.expand_parameters()
        exact, _ = _project_equivariant(w, b, layer.in_type, layer.out_type, self.group)
        err = float((w.detach().double() - exact).abs().max() / w.detach().abs().max())
        if err > self.DILATED_BASIS_TOLERANCE:
            raise ValueError(f"a {k}x{k} stencil with dilation {d}: escnn samples its steerable basis too coarsely to "
                             f"be equivariant (relative error {err:.1e} > {self.DILATED_BASIS_TOLERANCE:g}); use a "
                             "smaller dilation (3x3 stencils: at most 4, 5x5: at most 6) or more layers")

    def _multiscale_convs(self, conv, t_in, hidden: list, t_out) -> list:
        """Convolutions of the U-Net (:mod:`roteq_param.models.multiscale`) in the order encoder
        (level 0..L-1), decoder (``conv_dl``, l = 0..L-2), output. ``hidden`` holds escnn field types
        or channel counts: for both, ``a + b`` is channels ``a`` stacked on ``b`` (for field types the
        direct sum, and stacked regular fields are regular fields)."""
        ks = self.config.kernel_sizes
        enc = [conv(t_in if lev == 0 else hidden[lev - 1], hidden[lev], ks[lev]) for lev in range(len(hidden))]
        dec = [conv(hidden[lev] + hidden[lev + 1], hidden[lev], ks[lev]) for lev in range(len(hidden) - 1)]
        return enc + dec + [conv(hidden[0], t_out, self.config.out_kernel_size)]

    def _build_cnn(self, c_in: int, c_out: int) -> nn.Module:
        cfg = self.config

        def conv(a, b, k, d=1):
            return nn.Conv2d(a, b, k, padding=d * (k // 2), dilation=d, padding_mode="circular")

        if cfg.multiscale:
            return nn.ModuleList(self._multiscale_convs(conv, c_in, list(cfg.channels), c_out))
        act = nn.ReLU if cfg.activation == "relu" else nn.ELU
        layers, c_prev = [], c_in
        for c, k, d in zip(cfg.channels, cfg.kernel_sizes, cfg.dilations):
            layers += [conv(c_prev, c, k, d), act()]
            c_prev = c
        layers.append(conv(c_prev, c_out, cfg.out_kernel_size))
        return nn.Sequential(*layers)

    # -- normalisation ----------------------------------------------------------------------------
    def set_normalization(self, input_scales: Mapping[str, float], output_scales: Mapping[str, float]) -> None:
        """Set one scale per field (in the field's units), e.g. its RMS norm over the training data."""
        self.in_scale.copy_(_channel_scales(self.schema, "inputs", input_scales))
        self.out_scale.copy_(_channel_scales(self.schema, "outputs", output_scales))

    def set_similarity_reference(self, dx: float, gradient_scale: float) -> None:
        """The grid spacing [m] and velocity-gradient scale [1/s] at which the similarity factors are 1."""
        if not (dx > 0 and gradient_scale > 0 and math.isfinite(dx) and math.isfinite(gradient_scale)):
            raise ValueError(f"the similarity reference needs dx > 0 [m] and G > 0 [1/s], got {dx}, {gradient_scale}")
        self.similarity_reference.copy_(torch.tensor([dx, gradient_scale]))

    def fit_similarity_reference(self, x: torch.Tensor, dx: float) -> None:
        """Set the reference from samples: ``dx`` [m] and the mean velocity-gradient scale of ``x``."""
        self.set_similarity_reference(dx, float(self._gradient_scale(x, dx).mean()))

    def _gradient_scale(self, x: torch.Tensor, dx: float) -> torch.Tensor:
        return similarity.gradient_scale(x[:, self._velocity_channels].double(), dx)

    def similarity_factors(self, x: torch.Tensor, dx: float | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(inputs [B, C_in], outputs [B, C_out])`` factors of the similarity scaling for stacked inputs
        ``x`` on a grid of spacing ``dx`` [m]; ``None`` for a model without it."""
        if not self.config.similarity:
            return None
        dx = similarity.require_grid_spacing(dx)
        dx_ref, g_ref = self.similarity_reference.double()
        g_ratio = self._gradient_scale(x, dx) / g_ref
        return tuple(similarity.channel_factors(e, dx / dx_ref, g_ratio).to(x.dtype) for e in self._exponents)

    def field_scales(self, which: str) -> dict[str, float]:
        """The per-field scales currently stored (inverse of :meth:`set_normalization`)."""
        buf = self.in_scale if which == "inputs" else self.out_scale
        return {name: float(buf[s.start]) for name, s in self.schema.channel_slices(which).items()}

    # -- evaluation -------------------------------------------------------------------------------
    def forward_with_units(self, x: torch.Tensor, dx: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs in units, units)``: the network's normalised outputs (what the training loss
        compares) and what one unit is per output channel, ``[C, 1, 1]`` or, with similarity scaling,
        ``[B, C, 1, 1]``; their product is :meth:`forward`. ``dx`` [m] is the grid spacing, needed
        with similarity scaling."""
        factors = self.similarity_factors(x, dx)
        if factors is None:
            in_units, out_units = self.in_scale[:, None, None], self.out_scale[:, None, None]
        else:
            in_units = (self.in_scale * factors[0])[..., None, None]
            out_units = (self.out_scale * factors[1])[..., None, None]
        x = x / in_units
        if self.config.multiscale:
            return self._multiscale_forward(x), out_units
        if self.config.view_spacing is None:
            return self._stack_forward(x), out_units
        halo = self.config.receptive_field // 2
        return view.on_view_grid(self._stack_forward, x, dx, self.config.view_spacing, halo), out_units

    def _stack_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.arch == "escnn":
            from escnn.nn import GeometricTensor

            return self.net(GeometricTensor(x, self.in_type)).tensor
        return self.net(x)

    def check_grid(self, ny: int, nx: int) -> None:
        """Raise a clear ``ValueError`` unless the network can run on an ``ny x nx`` grid."""
        multiscale.check_grid((ny, nx), len(self.config.channels) if self.config.multiscale else 1)

    def _multiscale_forward(self, x: torch.Tensor) -> torch.Tensor:
        convs = list(self.net)
        if self.config.arch == "escnn":
            from escnn.nn import GeometricTensor

            # each conv on plain tensors; the hidden fields are regular, so a pointwise activation on the
            # raw channels is escnn's own (it permutes channels only)
            convs = [lambda t, c=c: c(GeometricTensor(t, c.in_type)).tensor for c in convs]
        levels = len(self.config.channels)
        act = torch.relu if self.config.activation == "relu" else F.elu
        return multiscale.unet_forward(act(convs[0](x)), convs[1:levels], convs[levels:2 * levels - 1], convs[-1], act)

    def forward(self, x: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Stacked fluxes in physical units; ``dx`` [m] is the grid spacing, needed with similarity scaling."""
        y, units = self.forward_with_units(x, dx)
        return y * units

    def converted(self, dtype: torch.dtype, device: str | torch.device | None = None) -> "FluxNet":
        """A copy of the network in ``dtype`` (and on ``device``); the original is untouched.

        Use this, not ``net.double()`` or ``net.to(...)``: escnn 1.0.11 shares the sampled kernel bases
        of equal layers between networks through a global cache, so converting one network in place
        converts the bases of every other network built in the process (measured: a later
        ``load_model`` then failed with a dtype mismatch inside escnn).
        """
        mode = self.training
        self.train()  # escnn's eval-mode caches (expanded filters, built under autograd) cannot be deep-copied
        try:
            twin = copy.deepcopy(self)
        finally:
            self.train(mode)
        return twin.to(device=device, dtype=dtype).train(mode)

    @property
    def closure(self) -> dict[str, float]:
        """The fixed closure terms the forcing adds to the network (:attr:`ModelConfig.closure`)."""
        return self.config.closure

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @staticmethod
    def _is_cache(key: str) -> bool:
        # escnn's eval-mode caches of the expanded filter and bias, recomputed from the weights
        return key.endswith(".filter") or key.endswith(".expanded_bias")

    def canonical_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights, normalisation and escnn's sampled kernel bases, without eval-mode caches.

        The bases are kept on purpose: escnn's basis for a representation with repeated irreps
        (the tensor: two copies of a sign irrep under C4) is not the same from one construction
        to the next, so weights are only meaningful together with the basis they were trained on.
        """
        return {k: v.detach().clone() for k, v in self.state_dict().items() if not self._is_cache(k)}

    def load_canonical_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Inverse of :meth:`canonical_state_dict` (refreshes escnn's caches)."""
        expected = {k for k in self.state_dict() if not self._is_cache(k)}
        missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or unexpected:
            raise ValueError(f"weights do not fit the architecture: missing {missing}, unexpected {unexpected}")
        mode = self.training
        self.train()  # drops escnn's caches; train(False) below rebuilds them from the loaded weights
        self.load_state_dict(dict(sd), strict=False)
        self.train(mode)

    # -- export -----------------------------------------------------------------------------------
    def _layer_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.config.arch == "escnn":
            from escnn import nn as enn

            # Expand in float64 (a converted copy): the float32 expansion's sums are ordered by the
            # CPU's vector kernels, which moved the shipped model's float64 hook output by 1.1e-7
            # relative from one machine to another (AVX2 -> AVX-512, measured); in float64 that is ~1e-16.
            source = self if self.in_scale.dtype == torch.float64 else self.converted(torch.float64)
            convs = [m for m in source.net.modules() if isinstance(m, enn.R2Conv)]
            return [_project_equivariant(*c.expand_parameters(), c.in_type, c.out_type, self.group) for c in convs]
        convs = [m for m in self.net.modules() if isinstance(m, nn.Conv2d)]
        return [(c.weight.detach().clone(), None if c.bias is None else c.bias.detach().clone()) for c in convs]

    @torch.no_grad()
    def export(self, dtype: torch.dtype = torch.float32) -> "ExportedFluxNet":
        """Plain-torch inference module computing the same function (no escnn needed), in ``dtype``."""
        weights = self._layer_weights()
        reference = tuple(float(v) for v in self.similarity_reference) if self.config.similarity else None
        return ExportedFluxNet(self.schema, weights, self.in_scale.clone(), self.out_scale.clone(),
                               self.config.activation, dtype, dilations=self.config.dilations + (1,),
                               closure=self.config.closure, multiscale=self.config.multiscale,
                               similarity_reference=reference, view_spacing=self.config.view_spacing)


def _signed_permutation(rho: np.ndarray, what: str) -> np.ndarray:
    """``rho`` rounded to its exact entries: a 90-degree element acts on every field type here (our
    vectors, tensors, regular fields) by a signed permutation; escnn's float64 products only
    approximate its 0s and 1s."""
    exact = np.round(rho)
    if np.abs(rho - exact).max() > 1e-9:
        raise AssertionError(f"{what}: a 90-degree element is not a signed permutation ({np.abs(rho - exact).max():g})")
    return exact


def _project_equivariant(weight: torch.Tensor, bias: torch.Tensor | None, in_type, out_type,
                         group: Group) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Project an expanded escnn filter onto the exactly equivariant ones (returned in float64).

    escnn samples its steerable bases in float32, so the expanded filter ``W`` satisfies
    ``W(g d) = rho_out(g) W(d) rho_in(g)^-1`` only to ~1e-7; on physical states, where large
    contributions cancel (the constant inputs' bias, for one), that left outputs equivariant to only
    1e-5 and the hook's forcing to 2e-4. Averaging over the grid-exact elements (the Reynolds
    operator) ``W <- mean_g rho_out(g) W(g^-1 .) rho_in(g)^-1`` in float64 makes the relation exact
    for every 90-degree element. Those act on channels by signed permutations and on the stencil by
    an index permutation, so rounding to float32 later keeps the result exactly equivariant. The bias
    lives on invariant channels and is averaged the same way.
    """
    from roteq_param import symmetry
    from roteq_param.fields import escnn_element
    from roteq_param.symmetry import Kind

    w = weight.detach().to(torch.float64)
    b = None if bias is None else bias.detach().to(torch.float64)
    w_sum = torch.zeros_like(w)
    b_sum = None if b is None else torch.zeros_like(b)
    elements = group.exact_elements()
    for g in elements:
        e = escnn_element(g, in_type.gspace)
        r_in = torch.from_numpy(_signed_permutation(np.asarray(in_type.representation(e)), "input type"))
        r_out = torch.from_numpy(_signed_permutation(np.asarray(out_type.representation(e)), "output type"))
        # spatial part: the filter is a scalar function of the stencil offset (cross-correlation
        # turns the condition W(g d) = rho_out W(d) rho_in^-1 into the same form)
        moved = symmetry.act(g, w, Kind.SCALAR)
        w_sum += torch.einsum("oa,abhw,bi->oihw", r_out, moved, r_in.T)  # rho_in^-1 = rho_in^T
        if b is not None:
            b_sum += r_out @ b
    return w_sum / len(elements), None if b is None else b_sum / len(elements)


def build_model(config: ModelConfig | Mapping[str, Any] | None = None, **overrides: Any) -> FluxNet:
    """Build a :class:`FluxNet` from a :class:`ModelConfig`, a dict (unknown keys are an error) or keywords."""
    if config is None:
        config = ModelConfig(**overrides)
    elif isinstance(config, ModelConfig):
        config = ModelConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config
    else:
        config = ModelConfig.from_dict({**dict(config), **overrides})
    return FluxNet(config)

