"""The one inference path: every solver coupling, benchmark and evaluation calls :class:`Predictor`.

Named arrays go in (the schema's inputs, validated), named fluxes come out; underneath, one
tensor-level call (:meth:`Predictor.stacked`) runs the exported network on the gridded channels
and the constant-vector values. Speed work on inference belongs here and nowhere else.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Mapping

import numpy as np
import torch

from roteq_param.arrays import is_torch, torch_device, torch_float_dtype
from roteq_param.models.export import ExportedFluxNet
from roteq_param.models.net import FluxNet
from roteq_param.models.store import load_model

__all__ = ["Predictor"]


class Predictor:
    """Named input arrays -> named output fluxes, through an exported model.

    Parameters
    ----------
    model:
        A :class:`FluxNet`, an :class:`ExportedFluxNet`, or a model name / directory.
    device:
        Where the network runs (``"cpu"``, ``"cuda"``, a ``torch.device``).
    dtype:
        Inference precision: ``torch.float32`` (default, what the solvers use) or
        ``torch.float64`` (exactness checks).

    ``Predictor(model)(arrays)`` validates ``arrays`` with ``Schema.validate`` (missing fields,
    wrong shapes, non-float dtypes and NaN/inf raise :class:`~roteq_param.fields.SchemaError`
    naming the field), evaluates without autograd and returns a dict of output fields in the
    schema's units. numpy inputs give numpy outputs in the dtype of the first gridded input;
    torch inputs give torch outputs on the predictor's device. Leading batch dimensions are
    kept (none, one or more).
    """

    DTYPES = (torch.float32, torch.float64)  # the inference precisions a Predictor accepts

    def __init__(self, model: FluxNet | ExportedFluxNet | str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        torch_float_dtype(dtype, self.DTYPES)
        device = torch_device(device)  # refused here, before the model is loaded, not at the first call
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        if isinstance(model, FluxNet):
            model = model.export(dtype)  # folded in float64, rounded once to dtype
        if not isinstance(model, ExportedFluxNet):
            raise TypeError(f"expected a FluxNet, an ExportedFluxNet or a model name/path, got {type(model).__name__}")
        self.device = device
        self.dtype = dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.schema = model.schema
        self.closure = model.closure  # fixed terms the forcing operator adds (ModelConfig.closure)
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
        self._spacing: dict[float | None, torch.Tensor] = {}
        if model.view_spacing is not None:
            # a view's grid size is computed from the call's grid and dx, which a trace would freeze
            self._forward_split = self.model.forward_split
            return
        # A frozen TorchScript trace of forward_split: ~15% faster than eager per call at 64^2
        # (measured, benchmarks/bench_models.py) and exact; conv/pad ops trace shape-generically,
        # so one trace serves every batch and grid size; the example only has to be wide enough for
        # the stencil's periodic pad.
        n = max(16, self.model.halo)
        example = (torch.zeros(1, n_grid, n, n, device=self.device, dtype=dtype),
                   torch.zeros(1, n_const, device=self.device, dtype=dtype),
                   torch.tensor(1.0e4, device=self.device, dtype=dtype))
        # torch 2.13 marks TorchScript deprecated; torch is pinned (==2.13.0), so silence that here only.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace_module(self.model, {"forward_split": example})
            self._forward_split = torch.jit.freeze(traced, preserved_attrs=["forward_split"]).forward_split

    # -- tensor level -----------------------------------------------------------------------------
    def stacked(self, grid: torch.Tensor, const: torch.Tensor, dx: float | None = None) -> torch.Tensor:
        """Outputs ``[B, C_out, y, x]`` from gridded channels ``[B, C_grid, y, x]`` and constant-vector
        values ``[B, C_const]`` (schema order, the predictor's device and dtype; not validated). ``dx`` is
        the grid spacing [m], needed by a similarity-scaled model (:attr:`needs_grid_spacing`)."""
        spacing = self._spacing.get(dx)
        if spacing is None:  # one small tensor per grid, not one per call
            spacing = self._spacing[dx] = self.model.grid_spacing(dx)
        with torch.no_grad():
            return self._forward_split(grid, const, spacing)

    @property
    def needs_grid_spacing(self) -> bool:
        """True for a similarity-scaled model (``ModelConfig.similarity``): every call needs ``dx``."""
        return self.model.similarity

    def pack(self, arrays: Mapping[str, Any], batch: tuple[int, ...], ny: int, nx: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy (and cast) named inputs into the ``(grid, const)`` tensors :meth:`stacked` reads.

        No broadcast of the constant vectors over the grid and no concatenation: this runs every
        solver step. numpy inputs are packed with numpy (cheaper per call than torch for these
        small copies), then moved to the device once.
        """
        B = math.prod(batch)
        if not is_torch(arrays[self._grid_parts[0][0]]):
            np_dtype = np.float32 if self.dtype == torch.float32 else np.float64
            grid_np = np.empty((B, self._n_grid, ny, nx), dtype=np_dtype)
            for name, sl in self._grid_parts:
                grid_np[:, sl] = np.reshape(arrays[name], (B, sl.stop - sl.start, ny, nx))
            return torch.from_numpy(grid_np).to(self.device), self.pack_constants(arrays, B)
        grid = torch.empty((B, self._n_grid, ny, nx), dtype=self.dtype, device=self.device)
        for name, sl in self._grid_parts:
            grid[:, sl].copy_(arrays[name].reshape(B, sl.stop - sl.start, ny, nx))
        return grid, self.pack_constants(arrays, B)

    def pack_constants(self, arrays: Mapping[str, Any], B: int) -> torch.Tensor:
        """The constant-vector inputs as the ``[B, C_const]`` tensor :meth:`stacked` reads."""
        const = torch.empty((B, self._n_const), dtype=self.dtype, device=self.device)
        for name, sl in self._const_parts:
            value = arrays[name]
            value = value if is_torch(value) else torch.from_numpy(np.asarray(value, dtype=np.float64))
            const[:, sl].copy_(value.reshape(-1, sl.stop - sl.start).expand(B, -1))
        return const

    # -- named level ------------------------------------------------------------------------------
    def check_grid(self, ny: int, nx: int) -> None:
        """Raise a clear ``ValueError`` unless the network can run on an ``ny x nx`` grid (a multiscale
        net halves it per level); the traced graph itself cannot say why a shape fails."""
        self.model.check_grid(ny, nx)

    def __call__(self, arrays: Mapping[str, Any], dx: float | None = None) -> dict[str, Any]:
        """Named fluxes for named inputs on a grid of spacing ``dx`` [m] (needed with similarity scaling)."""
        batch, (ny, nx) = self.schema.validate(arrays, "inputs")
        self.check_grid(ny, nx)
        first = arrays[self._grid_parts[0][0]]
        y = self.stacked(*self.pack(arrays, batch, ny, nx), dx)
        if not is_torch(first):
            y, dtype = y.cpu().numpy(), np.asarray(first).dtype
            return {f.name: y[:, sl].reshape(self._out_shape(f, batch, ny, nx)).astype(dtype)
                    for f, sl in self._out_parts}
        return {f.name: y[:, sl].reshape(self._out_shape(f, batch, ny, nx)).to(first.dtype)
                for f, sl in self._out_parts}

    @staticmethod
    def _out_shape(f, batch: tuple[int, ...], ny: int, nx: int) -> tuple[int, ...]:
        return (*batch, ny, nx) if f.n_components == 1 else (*batch, f.n_components, ny, nx)
