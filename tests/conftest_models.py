"""Shared helpers of the tests (imported, not a conftest plugin).

``tiny_dataset(path)`` writes a real dataset in the `roteq generate` format: three 2-layer
pyqg "eddy" runs at 32^2 (400 h, spin-up 200 h, a snapshot every 50 h: 5 snapshots each),
coarse-grained to 16^2 with the spectral operator by ``solver_coupling.pyqg.data``. It takes
about a second. ``eddy64_model()`` is the stored spun-up 64^2 eddy state in a pyqg model (SI units),
and ``physical_normalization(net, state)`` scales a fresh network to such a state;
``operator_closure_64(seed)`` is a randomly weighted 64^2 operator closure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from roteq_param.fields import Schema

HOUR_IN_YEARS = 3600.0 / (360 * 86400.0)


def tiny_dataset(path: str, runs: int = 3, seed: int = 1, window_steps: int = 0, coarse_nx: int = 16) -> str:
    from solver_coupling.pyqg.config import get_config
    from solver_coupling.pyqg.data import Request, generate

    cfg = get_config("eddy").with_overrides({"nx": 32}, coarse_nx=coarse_nx)
    req = Request(cfg, runs=runs, years=400 * HOUR_IN_YEARS, spinup_years=200 * HOUR_IN_YEARS,
                  snapshot_hours=50, seed=seed, window_steps=window_steps)
    return generate(req, str(path), overwrite=True, serial=True, progress=False)


def eddy64_model():
    """The stored spun-up 64^2 eddy state (tests/data/make_reference_state.py), in a pyqg model."""
    from solver_coupling.pyqg.config import get_config

    q = np.load(Path(__file__).parent / "data" / "eddy64_state.npz")["q"]
    m = get_config("eddy", {"nx": q.shape[-1]}, coarse_nx=q.shape[-1]).make_model(log_level=0)
    m.q = np.ascontiguousarray(q)
    m._invert()
    return m


def physical_normalization(net, state, dx: float | None = None):
    """``net`` (two-layer schema) normalised to a physical state: each input by its RMS over ``state``,
    the fluxes by 5 % of the gradient model's size (u^2, u b); with similarity scaling the reference is
    ``state`` on a grid of spacing ``dx`` [m]. Returns ``net`` in eval mode."""
    if net.config.similarity:
        net.fit_similarity_reference(net.schema.stack({k: torch.as_tensor(v) for k, v in state.items()})[None], dx)
    rms = {k: float(np.sqrt(np.mean(np.asarray(v) ** 2))) or 1.0 for k, v in state.items()}
    out = {f.name: (rms["vel_1"] ** 2 if f.name.startswith("tau") else rms["vel_1"] * rms["b"]) * 0.05
           for f in net.schema.outputs}
    net.set_normalization({f.name: rms[f.name] for f in net.schema.inputs}, out)
    return net.eval()


def random_inputs(schema: Schema, batch: int = 2, n: int = 16, seed: int = 0) -> torch.Tensor:
    """Stacked random inputs ``[batch, C, n, n]``: non-periodic-looking gridded fields (a ramp plus
    noise, so zero padding would show at the borders) and constant vectors broadcast by the schema."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-1.0, 2.0, n)[None, :] + torch.linspace(0.5, -1.5, n)[:, None]
    arrays = {}
    for f in schema.inputs:
        if not f.gridded:
            arrays[f.name] = torch.randn(batch, 2, generator=g)
        else:
            shape = (batch,) + ((f.n_components,) if f.n_components > 1 else ()) + (n, n)
            arrays[f.name] = torch.randn(shape, generator=g) + ramp
    return schema.stack(arrays, "inputs")


def named_inputs(schema: Schema, n: int = 16, seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    """Unbatched named numpy inputs for the predictor."""
    rng = np.random.default_rng(seed)
    out = {}
    for f in schema.inputs:
        shape = (f.n_components,) if not f.gridded else ((f.n_components,) if f.n_components > 1 else ()) + (n, n)
        out[f.name] = rng.standard_normal(shape).astype(dtype)
    return out


def operator_closure_64(weights_seed: int | None, L: float = 1.0e6):
    """A 64^2, 2-layer operator closure (3-cell kernels, 7 hat functions, rate 1e-6 s^-1) with random
    profile weights drawn from ``weights_seed``, or all zero (no closure) for None."""
    from solver_coupling.torchqg.operator_closure import OperatorClosure

    closure = OperatorClosure(L, 64, radius_cells=3.0, n_basis=7, rate=1e-6)
    if weights_seed is not None:
        g = torch.Generator().manual_seed(weights_seed)
        with torch.no_grad():
            for op in closure.ops:
                op.profile.weight.copy_(0.3 * torch.randn(op.profile.weight.shape, generator=g, dtype=torch.float64))
                op.profile.origin.copy_(-torch.rand(op.profile.origin.shape, generator=g, dtype=torch.float64))
    return closure
