"""Coarse QG state -> PV forcing S [s^-2]: the :class:`~roteq_param.models.Predictor`, then the
fused flux-form operator :class:`~roteq_param.fluxform.PVForcingOperator`.

Solver-agnostic: the pyqg hook hands it pyqg's spectral streamfunction (numpy), the torch twin
hands it its own (torch, on its device); both get back ``S`` with

    S_1 = -curl(div tau_1) + F1 div Fb_1,    S_2 = -curl(div tau_2) - F2 div Fb_2

(``du/dt = -div tau``, ``db/dt = -div Fb``; S is added to dq/dt). Because S is a curl of a
divergence plus a divergence, its domain integral vanishes exactly.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from roteq_param import fields, fluxform
from roteq_param.arrays import is_torch
from roteq_param.models.net import FluxNet
from roteq_param.models.predictor import Predictor

__all__ = ["PVForcing"]


class PVForcing:
    """PV forcing of a two-layer QG state through a trained flux network.

    Parameters
    ----------
    network:
        A :class:`Predictor` (inference: exact, cheap, no autograd; its device and dtype are used
        throughout) or a :class:`FluxNet` (training through a solver: autograd reaches the network's
        weights; its buffers' device and dtype are used).
    F1, F2:
        Stretching coefficients of the two layers [m^-2] (pyqg's ``m.F1``, ``m.F2``).
    L:
        Side of the doubly periodic square domain [m].
    n:
        Grid points per side.
    """

    def __init__(self, network: Predictor | FluxNet, *, F1: float, F2: float, L: float, n: int):
        if isinstance(network, FluxNet):
            self.predictor, self.net = None, network
            device, dtype = network.in_scale.device, network.in_scale.dtype
        elif isinstance(network, Predictor):
            self.predictor, self.net = network, None
            device, dtype = network.device, network.dtype
        else:
            raise TypeError(f"network must be a Predictor or a FluxNet, got {type(network).__name__}")
        self.device, self.dtype = device, dtype
        self.schema = network.schema
        layers = sorted({f.layer for f in self.schema.outputs})
        if len(layers) != 2:
            raise ValueError(f"the two-layer PV forcing needs fluxes for 2 layers, the schema has {layers}")
        self.n = int(n)
        self.operator = fluxform.PVForcingOperator(self.n, L, F1, F2)
        self._flux_channels = torch.tensor(fields.qg_flux_channels(self.schema), device=device)
        k, l = fluxform.wavenumbers(self.n, L)  # pyqg's k, l (Nyquist kept, as pyqg's own velocity has it)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self._ik = torch.as_tensor(1j * k, dtype=cdtype, device=device)
        self._il = torch.as_tensor(1j * l, dtype=cdtype, device=device)

    def _outputs(self, state: Mapping[str, Any], batch: tuple[int, ...]) -> torch.Tensor:
        """Stacked network outputs ``[B, C_out, n, n]`` for named inputs."""
        if self.net is not None:
            x = self.schema.stack({f.name: torch.as_tensor(state[f.name]).to(self.dtype) for f in self.schema.inputs})
            return self.net(x.reshape(-1, *x.shape[-3:]))
        return self.predictor.stacked(*self.predictor.pack(state, batch, self.n, self.n))

    def _forcing(self, state: Mapping[str, Any], batch: tuple[int, ...]) -> torch.Tensor:
        y = self._outputs(state, batch)
        fluxes = y.index_select(1, self._flux_channels).reshape(*batch, 2, 5, self.n, self.n)
        with torch.set_grad_enabled(self.net is not None and torch.is_grad_enabled()):
            return self.operator(fluxes)

    def __call__(self, state: Mapping[str, Any]) -> np.ndarray:
        """Forcing ``[..., 2, n, n]`` (float64 numpy) from the schema's named inputs (validated)."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        return self._forcing(state, batch).detach().to(torch.float64).cpu().numpy()

    def from_spectral(self, ph: Any, beta: Any, U: Any) -> Any:
        """Forcing from the spectral streamfunction: the hot path of the timestep hook.

        ``ph`` is ``[..., 2, n, n//2+1]`` in pyqg's layout (rfft2 along (y, x), unnormalised
        forward transform) [m^2/s]; ``beta`` the vector (0, beta) [1/(m s)]; ``U`` the background
        velocities ``[2, 2]`` [m/s]. numpy in gives float64 numpy out (pyqg); a torch tensor in
        gives a tensor on the network's device. A non-finite state raises
        :class:`~roteq_param.fields.SchemaError` naming the field.
        """
        torch_in = is_torch(ph)
        cdtype = self._ik.dtype
        P = (ph if torch_in else torch.as_tensor(np.asarray(ph))).to(device=self._ik.device, dtype=cdtype)
        p1, p2 = P[..., 0, :, :], P[..., 1, :, :]
        # u = -d psi/dy, v = d psi/dx per layer, and b = psi_1 - psi_2: one batched inverse FFT
        spec = torch.stack([-self._il * p1, -self._il * p2, self._ik * p1, self._ik * p2, p1 - p2], dim=-3)
        grid = torch.fft.irfft2(spec, s=(self.n, self.n))
        batch = tuple(grid.shape[:-3])
        dtype = self.dtype
        beta_t = torch.as_tensor(np.asarray(beta) if not is_torch(beta) else beta, dtype=dtype,
                                 device=grid.device).expand(*batch, 2)
        U_t = torch.as_tensor(np.asarray(U) if not is_torch(U) else U, dtype=dtype,
                              device=grid.device).expand(*batch, 2, 2)
        state = fields.qg_inputs(grid[..., 0:2, :, :], grid[..., 2:4, :, :], grid[..., 4, :, :], beta_t, U_t)
        if not bool(torch.isfinite(grid).all()):
            self.schema.validate(state, "inputs")  # raises, naming the field
        S = self._forcing(state, batch)
        return S if torch_in else S.detach().to(torch.float64).cpu().numpy()

    def fluxes(self, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau [..., nz, 3, y, x], Fb [..., nz, 2, y, x])`` as tensors on the device."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        y = self._outputs(state, batch)
        return fields.qg_fluxes(self.schema.unstack(y.reshape(*batch, *y.shape[-3:]), "outputs"))
