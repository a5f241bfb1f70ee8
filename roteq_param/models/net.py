"""The C_N / D_N-equivariant flux network, a plain-CNN baseline, export to plain torch, save/load.

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
The budget (DESIGN §6) is a parameterised 64^2 two-layer pyqg step <= 2x a bare step. A bare
step measured 0.17-0.18 ms on one core here (faster than DESIGN's 0.3-0.4 ms), so the
network gets about one bare step. Times per call on one 64^2 state, one torch thread, ratio to
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

Two exact simplifications make the exported graph cheaper than a literal translation:

* constant-vector inputs (``beta``, ``U_i``) are constant over the grid, so their part of the
  first convolution is a per-sample bias: ``sum_{taps} W[:, c] * value``. The exported net
  convolves only the gridded channels (5 of the 11 in the QG schema) and adds that bias;
* ``in_scale`` and ``out_scale`` are folded into the first and last conv weights.

Tried and not taken (30 epochs on one real 256^2 -> 64^2 eddy run, validation on another):
a pointwise x^2 activation (the gradient model's quadratic family) was no better than ReLU
with one hidden layer and unstable with two; [32, 32] and two 3x3 layers gave S R^2 within
+-0.1 of the default at 2x the cost. On that data the gradient model itself reaches flux
R^2 of only 0.08-0.19 (spectral-truncation operator), so the flux R^2 of any 3x3-local net
is low; the PV forcing S, which the solver feels, is predicted better (R^2 ~0.2-0.35 there).

Resolution transfer (outputs scaled by Delta^2 |grad u|^2 and dimensionless inputs) is not
done: it needs the grid spacing as an input, and the per-field scales set from the training
data already make the net well conditioned at the resolution it is trained and used at.

Exported module and the escnn 1.0.11 traps
-------------------------------------------
:meth:`FluxNet.export` returns an :class:`ExportedFluxNet`: a plain ``torch.nn.Module`` with
float32 weights, no escnn at inference. Its filters come from ``R2Conv.expand_parameters()``
(escnn's own ``export()`` would silently turn circular padding into zero padding), and it
pads circularly itself; ``tests/test_models.py`` checks exported == eval-mode escnn to 1e-5
including the borders.

Trained models
--------------
``trained_models/<name>/`` holds ``model.pt`` (config + state dict), ``card.json`` (schema,
group, architecture, training recipe with the dataset's sha256, metrics, inference cost) and
``CARD.md`` (the same, for people). :func:`save_model` writes them atomically;
:func:`load_model` reads them back with one call and explains what is wrong when it cannot.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields as dc_fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from roteq_param.atomic import atomic_write_bytes
from roteq_param.fields import Schema, escnn_field_type, qg_schema
from roteq_param.symmetry import Group

__all__ = [
    "ModelConfig",
    "FluxNet",
    "ExportedFluxNet",
    "Predictor",
    "ModelFileError",
    "build_model",
    "save_model",
    "load_model",
    "load_card",
    "model_dir",
    "TRAINED_MODELS_DIR",
    "MODEL_FORMAT",
    "sha256_file",
    "time_inference",
]

MODEL_FORMAT = "roteq-fluxnet/1"
TRAINED_MODELS_DIR = Path(__file__).resolve().parents[2] / "trained_models"
_ACTIVATIONS = ("relu", "elu")
_ARCHS = ("escnn", "cnn")


class ModelFileError(RuntimeError):
    """A trained-model directory or file is unreadable, corrupt or does not fit what was asked."""


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a flux network.

    Attributes
    ----------
    arch:
        ``"escnn"`` (equivariant) or ``"cnn"`` (plain baseline with the same channel counts).
    group:
        Symmetry group, ``"C4"``, ``"C8"``, ``"D4"``, ... (:meth:`Group.parse`). For ``"cnn"`` it
        is recorded only (the rotation-robustness table uses its exact elements).
    channels:
        Channels of each hidden layer. For ``"escnn"`` each must be a multiple of the group
        order: ``channels / |G|`` regular fields.
    kernel_sizes:
        Odd kernel size of each hidden layer (same length as ``channels``).
    out_kernel_size:
        Odd kernel size of the output layer.
    activation:
        ``"relu"`` or ``"elu"``; pointwise, hence equivariant on regular fields (the group only
        permutes their channels).
    schema:
        ``Schema.to_dict()`` of the input/output fields; ``None`` means ``qg_schema(2)``.
    """

    arch: str = "escnn"
    group: str = "C4"
    channels: tuple[int, ...] = (16, 16)
    kernel_sizes: tuple[int, ...] = (3, 1)
    out_kernel_size: int = 1
    activation: str = "relu"
    schema: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
        object.__setattr__(self, "group", Group.parse(self.group).name)
        if self.arch not in _ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; expected one of {_ARCHS}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {_ACTIVATIONS}")
        if not self.channels:
            raise ValueError("channels must list at least one hidden layer")
        if len(self.kernel_sizes) != len(self.channels):
            raise ValueError(f"kernel_sizes {self.kernel_sizes} must have one entry per hidden layer "
                             f"(channels {self.channels})")
        for k in self.kernel_sizes + (self.out_kernel_size,):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd and positive, got {k}")
        order = Group.parse(self.group).order
        if self.arch == "escnn":
            bad = [c for c in self.channels if c <= 0 or c % order]
            if bad:
                raise ValueError(f"escnn hidden channels must be positive multiples of |{self.group}| = {order}; "
                                 f"got {list(self.channels)}")
        elif any(c <= 0 for c in self.channels):
            raise ValueError(f"hidden channels must be positive, got {list(self.channels)}")
        # store the schema explicitly (None -> qg_schema(2)) so that equal configs compare equal
        schema = qg_schema(2) if self.schema is None else Schema.from_dict(self.schema)
        object.__setattr__(self, "schema", schema.to_dict())

    def get_schema(self) -> Schema:
        return Schema.from_dict(self.schema)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["kernel_sizes"] = list(self.kernel_sizes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dc_fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(d))


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------

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
        act = enn.ReLU if cfg.activation == "relu" else enn.ELU
        layers, t = [], in_type
        for c, k in zip(cfg.channels, cfg.kernel_sizes):
            hidden = enn.FieldType(gspace, [gspace.regular_repr] * (c // self.group.order))
            layers += [enn.R2Conv(t, hidden, k, padding=k // 2, padding_mode="circular"), act(hidden)]
            t = hidden
        k = cfg.out_kernel_size
        layers.append(enn.R2Conv(t, out_type, k, padding=k // 2, padding_mode="circular"))
        return enn.SequentialModule(*layers)

    def _build_cnn(self, c_in: int, c_out: int) -> nn.Sequential:
        cfg = self.config
        act = nn.ReLU if cfg.activation == "relu" else nn.ELU
        layers, c_prev = [], c_in
        for c, k in zip(cfg.channels, cfg.kernel_sizes):
            layers += [nn.Conv2d(c_prev, c, k, padding=k // 2, padding_mode="circular"), act()]
            c_prev = c
        k = cfg.out_kernel_size
        layers.append(nn.Conv2d(c_prev, c_out, k, padding=k // 2, padding_mode="circular"))
        return nn.Sequential(*layers)

    # -- normalisation ----------------------------------------------------------------------------
    def set_normalization(self, input_scales: Mapping[str, float], output_scales: Mapping[str, float]) -> None:
        """Set one scale per field (in the field's units), e.g. its RMS norm over the training data."""
        self.in_scale.copy_(_channel_scales(self.schema, "inputs", input_scales))
        self.out_scale.copy_(_channel_scales(self.schema, "outputs", output_scales))

    def field_scales(self, which: str) -> dict[str, float]:
        """The per-field scales currently stored (inverse of :meth:`set_normalization`)."""
        buf = self.in_scale if which == "inputs" else self.out_scale
        return {name: float(buf[s.start]) for name, s in self.schema.channel_slices(which).items()}

    # -- evaluation -------------------------------------------------------------------------------
    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs in units of ``out_scale`` (what the training loss compares)."""
        x = x / self.in_scale[:, None, None]
        if self.config.arch == "escnn":
            from escnn.nn import GeometricTensor

            return self.net(GeometricTensor(x, self.in_type)).tensor
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_normalized(x) * self.out_scale[:, None, None]

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
            raise ModelFileError(f"weights do not fit the architecture: missing {missing}, unexpected {unexpected}")
        mode = self.training
        self.train()  # drops escnn's caches; train(False) below rebuilds them from the loaded weights
        self.load_state_dict(dict(sd), strict=False)
        self.train(mode)

    # -- export -----------------------------------------------------------------------------------
    def _layer_weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.config.arch == "escnn":
            from escnn import nn as enn

            convs = [m for m in self.net if isinstance(m, enn.R2Conv)]
            return [tuple(t.detach().clone() if t is not None else None for t in c.expand_parameters())
                    for c in convs]
        convs = [m for m in self.net if isinstance(m, nn.Conv2d)]
        return [(c.weight.detach().clone(), None if c.bias is None else c.bias.detach().clone()) for c in convs]

    @torch.no_grad()
    def export(self) -> "ExportedFluxNet":
        """Plain-torch float32 inference module computing the same function (no escnn needed)."""
        weights = self._layer_weights()
        return ExportedFluxNet(self.schema, weights, self.in_scale.clone(), self.out_scale.clone(),
                               self.config.activation)


class ExportedFluxNet(nn.Module):
    """Inference form of a :class:`FluxNet`: circular pad + ``F.conv2d`` layers, float32.

    ``forward(x)`` takes the same stacked input ``[B, C_in, y, x]`` as :class:`FluxNet` and
    returns ``[B, C_out, y, x]`` in physical units. The constant-vector channels are read at
    grid point (0, 0) and enter as a bias (exact because ``Schema.stack`` broadcasts them);
    the normalisation scales are folded into the first and last layers.
    """

    def __init__(self, schema: Schema, weights: list, in_scale: torch.Tensor, out_scale: torch.Tensor,
                 activation: str):
        super().__init__()
        self.schema = schema
        self.activation = activation
        grid_idx, const_idx = [], []
        for f in schema.inputs:
            idx = list(range(schema.channel_slices("inputs")[f.name].start,
                             schema.channel_slices("inputs")[f.name].stop))
            (grid_idx if f.gridded else const_idx).extend(idx)
        ws = [w.to(torch.float32) for w, _ in weights]
        bs = [torch.zeros(w.shape[0]) if b is None else b.to(torch.float32) for w, (_, b) in zip(ws, weights)]
        # Fold the normalisation into the weights: x / s_in enters layer 0, layer -1 is multiplied by s_out.
        ws[0] = ws[0] / in_scale.to(torch.float32)[None, :, None, None]
        ws[-1] = ws[-1] * out_scale.to(torch.float32)[:, None, None, None]
        bs[-1] = bs[-1] * out_scale.to(torch.float32)
        w0 = ws[0]
        self.register_buffer("grid_idx", torch.tensor(grid_idx, dtype=torch.long))
        self.register_buffer("const_idx", torch.tensor(const_idx, dtype=torch.long))
        # Slicing is cheaper than index_select when the gridded channels come first and contiguous.
        self._n_grid_prefix = len(grid_idx) if grid_idx == list(range(len(grid_idx))) else -1
        self.register_buffer("w_first", w0[:, grid_idx].contiguous())
        # A constant channel sees the same value under every tap: its conv is (sum of taps) * value.
        self.register_buffer("w_const", w0[:, const_idx].sum(dim=(-2, -1)).contiguous())
        self.register_buffer("b_first", bs[0].contiguous())
        self.pads = [w.shape[-1] // 2 for w in ws]
        self.weights = nn.ParameterList([nn.Parameter(w.contiguous(), requires_grad=False) for w in ws[1:]])
        self.biases = nn.ParameterList([nn.Parameter(b.contiguous(), requires_grad=False) for b in bs[1:]])
        self.eval()

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu_(h) if self.activation == "relu" else F.elu(h, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._n_grid_prefix >= 0:
            grid = x[:, : self._n_grid_prefix]
        else:
            grid = x.index_select(1, self.grid_idx)
        return self.forward_split(grid, x[:, self.const_idx, 0, 0])

    def forward_split(self, grid: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
        """Same as ``forward`` with the gridded channels ``[B, C_grid, y, x]`` and the constant-vector
        values ``[B, C_const]`` given separately (schema order), so nothing is broadcast over the grid."""
        # [B, H] first-layer bias, including the constant vectors' contribution
        bias = torch.addmm(self.b_first, const, self.w_const.T)
        p = self.pads[0]
        if p:
            grid = F.pad(grid, (p, p, p, p), mode="circular")
        h = self._act(F.conv2d(grid, self.w_first).add_(bias[:, :, None, None]))
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            p = self.pads[i + 1]
            if p:
                h = F.pad(h, (p, p, p, p), mode="circular")
            h = F.conv2d(h, w, b)
            if i < n - 1:
                h = self._act(h)
        return h


def build_model(config: ModelConfig | Mapping[str, Any] | None = None, **overrides: Any) -> FluxNet:
    """Build a :class:`FluxNet` from a :class:`ModelConfig`, a dict (unknown keys are an error) or keywords."""
    if config is None:
        config = ModelConfig(**overrides)
    elif isinstance(config, ModelConfig):
        config = ModelConfig.from_dict({**config.to_dict(), **overrides}) if overrides else config
    else:
        config = ModelConfig.from_dict({**dict(config), **overrides})
    return FluxNet(config)


# ---------------------------------------------------------------------------------------------
# predictor: named arrays in, named fluxes out
# ---------------------------------------------------------------------------------------------

class Predictor:
    """Named input arrays -> named output fluxes, through an exported model.

    ``Predictor(model)(arrays)`` validates ``arrays`` with ``Schema.validate`` (missing fields,
    wrong shapes, non-float dtypes and NaN/inf raise :class:`~roteq_param.fields.SchemaError`
    naming the field), evaluates in float32 without autograd and returns a dict of output
    fields. numpy inputs give numpy outputs in the dtype of the first gridded input; torch
    inputs give torch outputs. Leading batch dimensions are kept (none, one or more).
    """

    def __init__(self, model: FluxNet | ExportedFluxNet | str | os.PathLike):
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        if isinstance(model, FluxNet):
            model = model.export()
        if not isinstance(model, ExportedFluxNet):
            raise TypeError(f"expected a FluxNet, an ExportedFluxNet or a model name/path, got {type(model).__name__}")
        self.model = model.eval()
        self.schema = model.schema
        # Where each input field goes: a channel range of the gridded tensor or of the constants.
        self._grid_parts, self._const_parts = [], []
        n_grid = n_const = 0
        for f in self.schema.inputs:
            if f.gridded:
                self._grid_parts.append((f.name, slice(n_grid, n_grid + f.n_components)))
                n_grid += f.n_components
            else:
                self._const_parts.append((f.name, slice(n_const, n_const + f.n_components)))
                n_const += f.n_components
        self._n_grid, self._n_const = n_grid, n_const
        self._out_parts = [(f, self.schema.channel_slices("outputs")[f.name]) for f in self.schema.outputs]
        # A frozen TorchScript trace of forward_split: ~15% faster than eager per call at 64^2
        # (measured, benchmarks/bench_models.py) and exact; conv/pad ops trace shape-generically,
        # so one trace serves every batch and grid size.
        example = (torch.zeros(1, n_grid, 16, 16), torch.zeros(1, n_const))
        # torch 2.13 marks TorchScript deprecated; torch is pinned (==2.13.0), so silence that here only.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace_module(self.model, {"forward_split": example})
            self._forward_split = torch.jit.freeze(traced, preserved_attrs=["forward_split"]).forward_split

    def __call__(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        batch, (ny, nx) = self.schema.validate(arrays, "inputs")
        first = arrays[self._grid_parts[0][0]]
        as_numpy = not isinstance(first, torch.Tensor)
        B = math.prod(batch)
        # Copy (and cast) straight into the float32 buffers the exported net reads: no broadcast
        # of the constant vectors over the grid, no concatenation. This runs every solver step,
        # so the numpy path uses numpy (cheaper per call than torch for these small copies).
        if as_numpy:
            grid_np = np.empty((B, self._n_grid, ny, nx), dtype=np.float32)
            const_np = np.empty((B, self._n_const), dtype=np.float32)
            for name, sl in self._grid_parts:
                grid_np[:, sl] = np.reshape(arrays[name], (B, sl.stop - sl.start, ny, nx))
            for name, sl in self._const_parts:
                const_np[:, sl] = np.reshape(arrays[name], (B, sl.stop - sl.start))
            grid, const = torch.from_numpy(grid_np), torch.from_numpy(const_np)
        else:
            grid = torch.empty((B, self._n_grid, ny, nx), dtype=torch.float32, device=first.device)
            const = torch.empty((B, self._n_const), dtype=torch.float32, device=first.device)
            for name, sl in self._grid_parts:
                grid[:, sl].copy_(arrays[name].reshape(B, sl.stop - sl.start, ny, nx))
            for name, sl in self._const_parts:
                const[:, sl].copy_(arrays[name].reshape(B, sl.stop - sl.start))
        with torch.no_grad():
            y = self._forward_split(grid, const)
        if as_numpy:
            y, dtype = y.numpy(), np.asarray(first).dtype
            return {f.name: y[:, sl].reshape(self._out_shape(f, batch, ny, nx)).astype(dtype)
                    for f, sl in self._out_parts}
        return {f.name: y[:, sl].reshape(self._out_shape(f, batch, ny, nx)).to(first.dtype)
                for f, sl in self._out_parts}

    @staticmethod
    def _out_shape(f, batch: tuple[int, ...], ny: int, nx: int) -> tuple[int, ...]:
        return (*batch, ny, nx) if f.n_components == 1 else (*batch, f.n_components, ny, nx)


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------

def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (used to tie a model card to its training dataset)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_dir(name_or_path: str | os.PathLike) -> Path:
    """A model directory: an existing path as given, else ``trained_models/<name>`` of this repository."""
    p = Path(name_or_path)
    if p.exists() or p.is_absolute() or len(p.parts) > 1:
        return p
    return TRAINED_MODELS_DIR / p


def time_inference(model: ExportedFluxNet, n: int = 64, repeats: int = 200) -> float:
    """Best-of-5 mean wall time (ms) of one exported call on one ``n x n`` state, current torch threads."""
    g = torch.Generator().manual_seed(0)
    arrays = {}
    for f in model.schema.inputs:
        shape = (2,) if not f.gridded else ((f.n_components,) if f.n_components > 1 else ()) + (n, n)
        arrays[f.name] = torch.randn(shape, generator=g)
    x = model.schema.stack(arrays, "inputs")[None]
    with torch.no_grad():
        for _ in range(20):
            model(x)
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
            best = min(best, (time.perf_counter() - t0) / repeats)
    return best * 1e3


def _card_markdown(card: Mapping[str, Any]) -> str:
    arch = card["architecture"]
    lines = [f"# Model card: {card['name']}", "",
             f"Rotation-equivariant subgrid flux network ({arch['arch']}, group {card['group']}), "
             f"format `{card['format']}`, created {card['created']}.", "",
             "## Fields", "", "| role | name | kind | layer | units | description |", "|---|---|---|---|---|---|"]
    for role in ("inputs", "outputs"):
        for f in card["schema"][role]:
            lines.append(f"| {role[:-1]} | `{f['name']}` | {f['kind']} | {f['layer'] if f['layer'] is not None else '-'} "
                         f"| {f['units']} | {f['long_name']} |")
    lines += ["", "## Architecture", "",
              f"- hidden channels {arch['channels']}, kernel sizes {arch['kernel_sizes']}, "
              f"output kernel {arch['out_kernel_size']}, activation {arch['activation']}, circular padding",
              f"- {card['n_parameters']} trainable parameters", ""]
    norm = card.get("normalization") or {}
    if norm:
        lines += ["## Normalisation (one scale per field, in the field's units)", ""]
        for role, scales in norm.items():
            lines.append(f"- {role}: " + ", ".join(f"`{k}` {v:.4g}" for k, v in scales.items()))
        lines.append("")
    lines += ["## Training", "", "```json", json.dumps(card.get("training", {}), indent=2, sort_keys=True), "```", "",
              "## Metrics (held-out runs)", ""]
    metrics = card.get("metrics", {})
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                  for k, v in sorted(_flatten(metrics).items())]
    else:
        lines.append("(none recorded)")
    lines += ["", "## Inference cost", "", "```json", json.dumps(card.get("inference_cost", {}), indent=2), "```", ""]
    return "\n".join(lines)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def save_model(model: FluxNet, name_or_path: str | os.PathLike, *, training: Mapping[str, Any] | None = None,
               metrics: Mapping[str, Any] | None = None, inference_cost: Mapping[str, Any] | None = None) -> Path:
    """Write ``model.pt``, ``card.json`` and ``CARD.md`` (each atomically) and return the directory.

    ``training`` is the data recipe (dataset path, its sha256, options), ``metrics`` the held-out
    scores, ``inference_cost`` e.g. ms per 64^2 call; if not given it is measured here.
    """
    d = model_dir(name_or_path)
    d.mkdir(parents=True, exist_ok=True)
    if inference_cost is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            inference_cost = {"ms_per_call_64x64_1thread": round(time_inference(model.export()), 4)}
        finally:
            torch.set_num_threads(threads)
    payload = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "state_dict": model.canonical_state_dict()}
    buf = io.BytesIO()
    torch.save(payload, buf)
    card = {
        "name": d.name,
        "format": MODEL_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "schema": model.schema.to_dict(),
        "group": model.config.group,
        "architecture": {k: v for k, v in model.config.to_dict().items() if k != "schema"},
        "n_parameters": model.n_parameters(),
        "normalization": {"inputs": model.field_scales("inputs"), "outputs": model.field_scales("outputs")},
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
        "inference_cost": dict(inference_cost),
        "model_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }
    atomic_write_bytes(d / "model.pt", buf.getvalue())
    atomic_write_bytes(d / "card.json", (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(d / "CARD.md", _card_markdown(card).encode())
    return d


def load_card(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """The ``card.json`` of a trained model (name under ``trained_models/`` or a directory)."""
    d = model_dir(name_or_path)
    path = d / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"no model card {path} (a trained model directory holds model.pt, card.json, CARD.md; "
                                f"known models: {_known_models()})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"model card {path} is not valid JSON ({e}); the file is corrupt") from e


def _known_models() -> list[str]:
    if not TRAINED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in TRAINED_MODELS_DIR.iterdir() if (p / "model.pt").is_file())


def load_model(name_or_path: str | os.PathLike, *, schema: Schema | None = None) -> FluxNet:
    """Load a trained :class:`FluxNet` (in eval mode) from ``trained_models/<name>`` or a directory.

    Checks that ``model.pt`` is readable and of this format, that ``card.json`` describes the
    same schema as the weights, and (if given) that the schema is ``schema``. Raises
    ``FileNotFoundError`` for missing files and :class:`ModelFileError` for anything corrupt or
    mismatched, with the path and the reason in the message.
    """
    d = model_dir(name_or_path)
    path = d / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no model weights {path} (known models under {TRAINED_MODELS_DIR}: {_known_models()})")
    card = load_card(d)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError for damaged files
        raise ModelFileError(f"cannot read model weights {path}: {type(e).__name__}: {e} "
                             "(the file is truncated or corrupt; re-save or re-train the model)") from e
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{path} is not a {MODEL_FORMAT} file (format {got!r})")
    config = ModelConfig.from_dict(payload["config"])
    model_schema = config.get_schema()
    card_schema = Schema.from_dict(card.get("schema", {}))
    if card_schema != model_schema:
        raise ModelFileError(f"{d / 'card.json'} describes a different schema than the weights in {path}: "
                             f"card {card_schema.to_json()} vs weights {model_schema.to_json()}")
    if schema is not None and schema != model_schema:
        raise ModelFileError(f"model {d} has schema {model_schema.to_json()}, but {schema.to_json()} was requested")
    model = FluxNet(config)
    model.load_canonical_state_dict(payload["state_dict"])
    return model.eval()
