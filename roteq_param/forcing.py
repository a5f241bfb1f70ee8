"""Coarse QG state -> PV forcing S [s^-2]: the :class:`~roteq_param.models.Predictor`, then the
fused flux-form operator :class:`~roteq_param.fluxform.PVForcingOperator`.

Solver-agnostic: the pyqg hook hands it pyqg's spectral streamfunction (numpy), the torch twin
hands it its own (torch, on its device); both get back ``S`` with

    S_1 = -curl(div tau_1) + F1 div Fb_1,    S_2 = -curl(div tau_2) - F2 div Fb_2

(``du/dt = -div tau``, ``db/dt = -div Fb``; S is added to dq/dt), plus the model's fixed
grid-scale damping ``-nu4 lap^2 zeta`` per layer when its ``grid_damping`` rate is set (the curl of
a viscous momentum flux: :func:`~roteq_param.fluxform.biharmonic_damping_multiplier`). Because S is
a curl of a divergence plus a divergence, its domain integral vanishes exactly.
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
        operator = fluxform.PVForcingOperator(self.n, L, F1, F2)
        k, l = fluxform.wavenumbers(self.n, L)  # pyqg's k, l (Nyquist kept, as pyqg's own velocity has it)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self._cdtype = cdtype
        # Two fused spectral operators (built once; each call is then one contraction + FFT on the
        # way in and one FFT + contraction on the way out):
        #   in:  spectral psi (2 layers) -> the network's gridded channels, in its own channel order;
        #   out: every output channel -> S per layer (the flux-form operator, 0 for unused channels).
        ik = np.broadcast_to(1j * k, (self.n, self.n // 2 + 1))
        il = np.broadcast_to(1j * l, (self.n, self.n // 2 + 1))
        to_grid = np.zeros((len(fields.qg_grid_sources(self.schema)), 2, self.n, self.n // 2 + 1), complex)
        for c, (what, layer) in enumerate(fields.qg_grid_sources(self.schema)):
            if what == "b":
                to_grid[c, 0], to_grid[c, 1] = 1.0, -1.0
            else:
                to_grid[c, layer - 1] = -il if what == "u" else ik
        self._to_grid = torch.as_tensor(to_grid, dtype=cdtype, device=device)
        to_s = np.zeros((2, self.schema.n_channels("outputs"), self.n, self.n // 2 + 1), complex)
        channels = fields.qg_flux_channels(self.schema)
        to_s[0, channels[:5]] = operator.multipliers[0]
        to_s[1, channels[5:]] = operator.multipliers[1]
        self._to_s = torch.as_tensor(to_s, dtype=cdtype, device=device)
        # the fixed grid-scale damping: S^ += M psi^ in each layer (None when the model has none)
        self.grid_damping = float(network.grid_damping)
        self._damping = None
        if self.grid_damping > 0.0:
            damping = fluxform.biharmonic_damping_multiplier(self.n, L, self.grid_damping)
            self._damping = torch.as_tensor(damping, dtype=dtype, device=device)
            # the same operator on the velocity the network sees: -nu4 K^4 zeta^, zeta^ = ik v^ - il u^
            self._damping_k4 = torch.as_tensor(-damping / np.maximum(k**2 + l**2, 1e-300), dtype=dtype, device=device)
            self._ik = torch.as_tensor(np.ascontiguousarray(ik), dtype=cdtype, device=device)
            self._il = torch.as_tensor(np.ascontiguousarray(il), dtype=cdtype, device=device)
        self._const_cache: tuple | None = None

    def _outputs(self, state: Mapping[str, Any], batch: tuple[int, ...]) -> torch.Tensor:
        """Stacked network outputs ``[B, C_out, n, n]`` for named inputs."""
        if self.net is not None:
            x = self.schema.stack({f.name: torch.as_tensor(state[f.name]).to(self.dtype) for f in self.schema.inputs})
            return self.net(x.reshape(-1, *x.shape[-3:]))
        return self.predictor.stacked(*self.predictor.pack(state, batch, self.n, self.n))

    def _forcing(self, state: Mapping[str, Any], batch: tuple[int, ...],
                 damping_h: torch.Tensor | None = None) -> torch.Tensor:
        if damping_h is None and self._damping is not None:
            damping_h = self._damping_from_velocity(state, batch)
        return self._to_forcing(self._outputs(state, batch), batch, damping_h)

    def _damping_from_velocity(self, state: Mapping[str, Any], batch: tuple[int, ...]) -> torch.Tensor:
        """The grid damping ``[B, 2, n, n//2+1]`` (spectral) from the named velocity inputs."""
        u, v = (torch.as_tensor(a).to(device=self.device, dtype=self.dtype).reshape(-1, 2, self.n, self.n)
                for a in fields.qg_velocity(state))
        zeta_h = self._ik * torch.fft.rfft2(v) - self._il * torch.fft.rfft2(u)
        return self._damping_k4 * zeta_h

    def _to_forcing(self, y: torch.Tensor, batch: tuple[int, ...],
                    damping_h: torch.Tensor | None = None) -> torch.Tensor:
        """S ``[*batch, 2, n, n]`` from stacked outputs ``y`` ``[B, C_out, n, n]``: one FFT of every output
        channel, the fused flux-form multipliers (plus the spectral grid damping ``damping_h``
        ``[B, 2, n, n//2+1]``, if any), one inverse FFT (autograd only for a FluxNet)."""
        with torch.set_grad_enabled(self.net is not None and torch.is_grad_enabled()):
            sh = (self._to_s * torch.fft.rfft2(y)[:, None]).sum(2)
            if damping_h is not None:
                sh = sh + damping_h
            return torch.fft.irfft2(sh, s=(self.n, self.n)).reshape(*batch, 2, self.n, self.n)

    def __call__(self, state: Mapping[str, Any]) -> np.ndarray:
        """Forcing ``[..., 2, n, n]`` (float64 numpy) from the schema's named inputs (validated)."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        return self._forcing(state, batch).detach().to(torch.float64).cpu().numpy()

    def from_spectral(self, ph: Any, beta: Any, U: Any, velocity: tuple[Any, Any] | None = None) -> Any:
        """Forcing from the spectral streamfunction: the hot path of the timestep hook.

        ``ph`` is ``[..., 2, n, n//2+1]`` in pyqg's layout (rfft2 along (y, x), unnormalised
        forward transform) [m^2/s]; ``beta`` the vector (0, beta) [1/(m s)]; ``U`` the background
        velocities ``[2, 2]`` [m/s] (or per-member ``[..., 2]`` and ``[..., 2, 2]``). numpy in gives
        float64 numpy out (pyqg); a torch tensor in gives a tensor on the network's device. A
        non-finite state raises :class:`~roteq_param.fields.SchemaError` naming the field.

        ``velocity``: the solver's own gridded perturbation velocity ``(u, v)``, each
        ``[..., 2, n, n]`` [m/s], when it holds it current (pyqg's ``m.u``, ``m.v`` at hook time equal
        ``ifft(-il ph)``, ``ifft(ik ph)`` bit for bit): then only ``b`` is transformed here.
        """
        torch_in = is_torch(ph)
        P = (ph if torch_in else torch.from_numpy(np.asarray(ph))).to(device=self.device, dtype=self._cdtype)
        batch = tuple(P.shape[:-3])
        if velocity is None:
            # u = -d psi/dy, v = d psi/dx per layer and b = psi_1 - psi_2, in the network's channel order
            # (a broadcast product and a sum: einsum turns this into many tiny matrix products, 5x slower)
            grid = torch.fft.irfft2((self._to_grid * P[..., None, :, :, :]).sum(-3), s=(self.n, self.n))
        else:
            grid = self._grid_from_velocity(velocity, P)
        # NaN/inf reach the sum; only then is the state checked field by field for the message
        if not bool(torch.isfinite(grid.sum())):
            self.schema.validate(fields.qg_inputs(*self._split(grid), *self._constant_arrays(beta, U, batch)),
                                 "inputs")
        B = grid.numel() // (grid.shape[-3] * self.n * self.n)
        damping_h = None if self._damping is None else self._damping * P.reshape(B, 2, self.n, self.n // 2 + 1)
        if self.net is not None:  # training through a solver: the general (differentiable) route
            state = fields.qg_inputs(*self._split(grid), *self._constant_arrays(beta, U, batch))
            S = self._forcing(state, batch, damping_h)
        else:
            y = self.predictor.stacked(grid.reshape(B, -1, self.n, self.n), self._constants(beta, U, B))
            S = self._to_forcing(y, batch, damping_h)
        return S if torch_in else S.detach().to(torch.float64).cpu().numpy()

    def _grid_from_velocity(self, velocity: tuple[Any, Any], P: torch.Tensor) -> torch.Tensor:
        """The network's gridded channels from the solver's ``(u, v)`` and one inverse FFT for ``b``."""
        u, v = ((w if is_torch(w) else torch.from_numpy(np.asarray(w))).to(device=self.device, dtype=self.dtype)
                for w in velocity)
        b = torch.fft.irfft2(P[..., 0, :, :] - P[..., 1, :, :], s=(self.n, self.n))
        parts = {"u": u, "v": v}
        return torch.stack([b if what == "b" else parts[what][..., layer - 1, :, :]
                            for what, layer in fields.qg_grid_sources(self.schema)], -3)

    def _split(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, v, b) of the two layers from the gridded channels built by :meth:`from_spectral`."""
        named = dict(zip(fields.qg_grid_sources(self.schema), grid.unbind(-3)))
        return (torch.stack([named["u", i] for i in (1, 2)], -3), torch.stack([named["v", i] for i in (1, 2)], -3),
                named["b", None])

    def _constant_arrays(self, beta: Any, U: Any, batch: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        as_t = lambda x: (x if is_torch(x) else torch.from_numpy(np.asarray(x, dtype=np.float64))).to(  # noqa: E731
            device=self.device, dtype=self.dtype)
        beta, U = as_t(beta), as_t(U)
        return (beta.expand(*batch, 2), U.expand(*batch, 2, 2)) if batch else (beta, U)

    def _constants(self, beta: Any, U: Any, B: int) -> torch.Tensor:
        """The predictor's ``[B, C_const]`` constants, reused while (beta, U) and B stay the same."""
        if is_torch(beta) or is_torch(U):
            return self.predictor.pack_constants(fields.qg_constants(*self._constant_arrays(beta, U)), B)
        key = (np.asarray(beta, dtype=np.float64).tobytes(), np.asarray(U, dtype=np.float64).tobytes(), B)
        if self._const_cache is None or self._const_cache[0] != key:
            self._const_cache = (key, self.predictor.pack_constants(fields.qg_constants(*self._constant_arrays(beta, U)),
                                                                    B))
        return self._const_cache[1]

    def fluxes(self, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau [..., nz, 3, y, x], Fb [..., nz, 2, y, x])`` as tensors on the device."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        y = self._outputs(state, batch)
        return fields.qg_fluxes(self.schema.unstack(y.reshape(*batch, *y.shape[-3:]), "outputs"))
