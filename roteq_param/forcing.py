"""Coarse QG state -> PV forcing S [s^-2]: the :class:`~roteq_param.models.Predictor`, then the
fused flux-form multipliers of :func:`~roteq_param.fluxform.flux_form_multipliers`.

Solver-agnostic: the pyqg hook hands it pyqg's spectral streamfunction (numpy), the torch twin
hands it its own (torch, on its device); both get back ``S`` with, for N layers,

    S_i = -curl(div tau_i) + G[i, i] div Fb_{i,i} - G[i, i-1] div Fb_{i,i-1}

(two layers: S_1 = -curl(div tau_1) + F1 div Fb_1, S_2 = -curl(div tau_2) - F2 div Fb_2;
``du/dt = -div tau``, ``db/dt = -div Fb``; S is added to dq/dt), plus the model's fixed closure
terms where its config sets them (:meth:`PVForcing._closure_terms`): a grid-scale damping
``-nu4 lap^2 zeta`` (``grid_damping``) and an energy-consistent backscatter ``-a lap zeta`` that
returns a multiple (``energy_backscatter``) of the energy the network drains. Every term is a curl of
a divergence or a divergence, so the domain integral of S vanishes exactly.
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
    """PV forcing of an N-layer QG state through a trained flux network.

    Parameters
    ----------
    network:
        A :class:`Predictor` (inference: exact, cheap, no autograd; its device and dtype are used
        throughout) or a :class:`FluxNet` (training through a solver: autograd reaches the network's
        weights; its buffers' device and dtype are used).
    strat:
        The layers' coupling [m^-2] (:class:`~roteq_param.fluxform.Stratification`; any pyqg model:
        ``Stratification.from_matrix(m.S)``); its layer count must be the schema's.
    L:
        Side of the doubly periodic square domain [m].
    n:
        Grid points per side.
    closure_terms:
        Add the model's fixed closure terms (``ModelConfig.closure``); ``False`` gives the network's
        forcing alone (what calibration compares with the truth).
    drag:
        The solver's bottom drag rate [1/s] (pyqg ``rek``). A network with the regime inputs
        (:func:`~roteq_param.fields.qg_has_regime`) needs it, with ``strat``'s couplings, on the solver
        route (:meth:`from_spectral`); the named route (``__call__``) takes them from the named state.
    """

    def __init__(self, network: Predictor | FluxNet, *, strat: fluxform.Stratification, L: float, n: int,
                 closure_terms: bool = True, drag: float | None = None):
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
        if layers != list(range(1, strat.nlayers + 1)):
            raise ValueError(f"the solver has {strat.nlayers} layers; the network predicts fluxes for layers {layers}")
        self.nlayers = N = strat.nlayers
        # the regime inputs are constants of the run: named once here, packed with beta and U
        self._regime: dict[str, torch.Tensor] | None = {}
        if fields.qg_has_regime(self.schema):
            self._regime = None if drag is None else {
                name: torch.as_tensor(np.asarray(value, dtype=np.float64), device=device).to(dtype)
                for name, value in fields.qg_regime_inputs(np.array(strat.upper), np.array(strat.lower),
                                                           np.array(float(drag))).items()}
        self.n = int(n)
        self.dx = float(L) / self.n  # grid spacing [m]: what a similarity-scaled network needs
        network.check_grid(self.n, self.n)
        k, l = fluxform.wavenumbers(self.n, L)  # pyqg's k, l (Nyquist kept, as pyqg's own velocity has it)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self._cdtype = cdtype
        # Two fused spectral operators (built once; each call is then one contraction + FFT on the
        # way in and one FFT + contraction on the way out):
        #   in:  spectral psi (N layers) -> the network's gridded channels, in its own channel order;
        #   out: every output channel -> S per layer (the flux-form operator, 0 for unused channels).
        ik = np.broadcast_to(1j * k, (self.n, self.n // 2 + 1))
        il = np.broadcast_to(1j * l, (self.n, self.n // 2 + 1))
        self._sources = fields.qg_grid_sources(self.schema)
        to_grid = np.zeros((len(self._sources), N, self.n, self.n // 2 + 1), complex)
        for c, (what, layer) in enumerate(self._sources):
            if what == "b":  # b_j = psi_j - psi_{j+1}
                to_grid[c, layer - 1], to_grid[c, layer] = 1.0, -1.0
            else:
                to_grid[c, layer - 1] = -il if what == "u" else ik
        self._to_grid = torch.as_tensor(to_grid, dtype=cdtype, device=device)
        to_s = fluxform.flux_form_multipliers(self.n, L, strat, fields.qg_flux_sources(self.schema))
        self._to_s = torch.as_tensor(to_s, dtype=cdtype, device=device)
        # The model's fixed closure terms on top of the network (ModelConfig): both act on the
        # spectral streamfunction psi^ of each layer, so they are built here as multipliers.
        K2 = k**2 + l**2
        closure = network.closure if closure_terms else {}
        self.grid_damping = float(closure.get("grid_damping", 0.0))
        self.energy_backscatter = float(closure.get("energy_backscatter", 0.0))
        self._damping = self._backscatter_shape = None
        if self.grid_damping > 0.0:  # S^ += M psi^, a biharmonic viscosity on relative vorticity
            self._damping = torch.as_tensor(fluxform.biharmonic_damping_multiplier(self.n, L, self.grid_damping),
                                            dtype=dtype, device=device)
        if self.energy_backscatter > 0.0:  # S^ += -a K^(2p) psi^, a sized from the network's energy drain
            order = int(closure.get("backscatter_order", 2))
            self._backscatter_shape = torch.as_tensor(-(K2**order), dtype=dtype, device=device)
        # psi^ from the velocity the network sees, for the named-input route: psi^ = -zeta^ / K^2
        self._psi_from_zeta = torch.as_tensor(np.where(K2 > 0, -1.0 / np.where(K2 > 0, K2, 1.0), 0.0),
                                              dtype=dtype, device=device)
        self._ik = torch.as_tensor(np.ascontiguousarray(ik), dtype=cdtype, device=device)
        self._il = torch.as_tensor(np.ascontiguousarray(il), dtype=cdtype, device=device)
        self._weights = torch.as_tensor(fluxform.energy_weights(self.n, strat.depth_fractions), dtype=dtype,
                                        device=device)
        self._const_cache: tuple | None = None

    def _outputs(self, state: Mapping[str, Any], batch: tuple[int, ...]) -> torch.Tensor:
        """Stacked network outputs ``[B, C_out, n, n]`` for named inputs."""
        if self.net is not None:
            x = self.schema.stack({f.name: torch.as_tensor(state[f.name]).to(self.dtype) for f in self.schema.inputs})
            return self.net(x.reshape(-1, *x.shape[-3:]), self.dx)
        return self.predictor.stacked(*self.predictor.pack(state, batch, self.n, self.n), self.dx)

    @property
    def _has_closure_terms(self) -> bool:
        return self._damping is not None or self._backscatter_shape is not None

    def _forcing(self, state: Mapping[str, Any], batch: tuple[int, ...], P: torch.Tensor | None = None
                 ) -> torch.Tensor:
        if P is None and self._has_closure_terms:
            P = self._streamfunction_from_velocity(state)
        return self._to_forcing(self._outputs(state, batch), batch, P)

    def _streamfunction_from_velocity(self, state: Mapping[str, Any]) -> torch.Tensor:
        """Spectral streamfunction ``[B, N, n, n//2+1]`` from the named velocity inputs (pyqg's
        normalisation: unnormalised rfft2), through the vorticity ``zeta^ = ik v^ - il u^``."""
        u, v = (torch.as_tensor(a).to(device=self.device, dtype=self.dtype).reshape(-1, self.nlayers, self.n, self.n)
                for a in fields.qg_velocity(state, self.nlayers))
        return self._psi_from_zeta * (self._ik * torch.fft.rfft2(v) - self._il * torch.fft.rfft2(u))

    def _to_forcing(self, y: torch.Tensor, batch: tuple[int, ...], P: torch.Tensor | None = None) -> torch.Tensor:
        """S ``[*batch, N, n, n]`` from stacked outputs ``y`` ``[B, C_out, n, n]``: one FFT of every output
        channel, the fused flux-form multipliers, the model's closure terms on the spectral
        streamfunction ``P`` ``[B, N, n, n//2+1]`` (needed only when it has some), one inverse FFT
        (autograd only for a FluxNet)."""
        with torch.set_grad_enabled(self.net is not None and torch.is_grad_enabled()):
            sh = (self._to_s * torch.fft.rfft2(y)[:, None]).sum(2)
            if self._has_closure_terms:
                sh = sh + self._closure_terms(sh, P.reshape(sh.shape))
            return torch.fft.irfft2(sh, s=(self.n, self.n)).reshape(*batch, self.nlayers, self.n, self.n)

    def _closure_terms(self, sh: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        """The fixed terms ``[B, N, n, n//2+1]`` added to the network's spectral forcing ``sh``.

        * grid damping: ``M psi^`` (:func:`~roteq_param.fluxform.biharmonic_damping_multiplier`);
        * energy backscatter: ``-a K^(2p) psi^`` per member (``p = backscatter_order``; p = 2:
          ``-a lap zeta``, an anti-diffusion of vorticity, the shape of Jansen & Held's backscatter;
          p = 1: ``+a zeta``, an anti-drag on relative vorticity), with ``a >= 0`` chosen so
          that it returns the multiple ``energy_backscatter`` of the energy the network's forcing
          drains, ``D = sum_i H_i/H <psi_i S_i>`` (0 when the network injects energy). Every sum is
          over all wavenumbers, so ``a`` is the same for a rotated or mirrored state.
        """
        extra = torch.zeros_like(sh)
        if self._damping is not None:
            extra = extra + self._damping * P
        if self._backscatter_shape is not None:
            w = self._weights
            drain = (w * (P.conj() * sh).real).sum((-3, -2, -1))
            shape = self._backscatter_shape * P
            gain = -(w * (P.conj() * shape).real).sum((-3, -2, -1))  # energy input per unit a, >= 0
            a = self.energy_backscatter * drain.clamp_min(0.0) / gain.clamp_min(torch.finfo(gain.dtype).tiny)
            extra = extra + a[:, None, None, None] * shape
        return extra

    def __call__(self, state: Mapping[str, Any]) -> np.ndarray:
        """Forcing ``[..., N, n, n]`` (float64 numpy) from the schema's named inputs (validated)."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        return self._forcing(state, batch).detach().to(torch.float64).cpu().numpy()

    def from_spectral(self, ph: Any, beta: Any, U: Any) -> Any:
        """Forcing from the spectral streamfunction: the hot path of the timestep hook.

        ``ph`` is ``[..., N, n, n//2+1]`` in pyqg's layout (rfft2 along (y, x), unnormalised
        forward transform) [m^2/s]; ``beta`` the vector (0, beta) [1/(m s)]; ``U`` the background
        velocities ``[N, 2]`` [m/s] (pyqg: (U_i, V_i); or per-member ``[..., 2]`` and ``[..., N, 2]``). numpy in gives
        float64 numpy out (pyqg); a torch tensor in gives a tensor on the network's device. A
        non-finite state raises :class:`~roteq_param.fields.SchemaError` naming the field.
        """
        torch_in = is_torch(ph)
        P = (ph if torch_in else torch.from_numpy(np.asarray(ph))).to(device=self.device, dtype=self._cdtype)
        batch = tuple(P.shape[:-3])
        # u = -d psi/dy, v = d psi/dx per layer and b_j = psi_j - psi_{j+1}, in the network's channel order
        # (a broadcast product and a sum: einsum turns this into many tiny matrix products, 5x slower)
        grid = torch.fft.irfft2((self._to_grid * P[..., None, :, :, :]).sum(-3), s=(self.n, self.n))
        # NaN/inf reach the sum; only then is the state checked field by field for the message
        if not bool(torch.isfinite(grid.sum())):
            self.schema.validate(self._state(grid, beta, U, batch), "inputs")
        B = grid.numel() // (grid.shape[-3] * self.n * self.n)
        if self.net is not None:  # training through a solver: the general (differentiable) route
            S = self._forcing(self._state(grid, beta, U, batch), batch, P)
        else:
            y = self.predictor.stacked(grid.reshape(B, -1, self.n, self.n), self._constants(beta, U, B), self.dx)
            S = self._to_forcing(y, batch, P)
        return S if torch_in else S.detach().to(torch.float64).cpu().numpy()

    def _split(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, v, b) of the layers from the gridded channels built by :meth:`from_spectral` (b as
        :func:`~roteq_param.fields.qg_inputs` takes it)."""
        named = dict(zip(self._sources, grid.unbind(-3)))
        layers, interfaces = range(1, self.nlayers + 1), range(1, self.nlayers)
        b = named["b", 1] if self.nlayers == 2 else torch.stack([named["b", j] for j in interfaces], -3)
        return (torch.stack([named["u", i] for i in layers], -3), torch.stack([named["v", i] for i in layers], -3), b)

    def _state(self, grid: torch.Tensor, beta: Any, U: Any, batch: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Every named input of the network: the gridded channels, beta, U and the regime constants."""
        state = fields.qg_inputs(*self._split(grid), *self._constant_arrays(beta, U, batch))
        state.update({name: value.expand(*batch, 1) for name, value in self._regime_constants().items()})
        return state

    def _named_constants(self, beta: Any, U: Any) -> dict[str, torch.Tensor]:
        return {**fields.qg_constants(*self._constant_arrays(beta, U)), **self._regime_constants()}

    def _regime_constants(self) -> dict[str, torch.Tensor]:
        if self._regime is None:
            raise ValueError("this network sees the solver's regime (stretching couplings and bottom drag): build "
                             "the PVForcing with drag=rek [1/s]")
        return self._regime

    def _constant_arrays(self, beta: Any, U: Any, batch: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        as_t = lambda x: (x if is_torch(x) else torch.from_numpy(np.asarray(x, dtype=np.float64))).to(  # noqa: E731
            device=self.device, dtype=self.dtype)
        beta, U = as_t(beta), as_t(U)
        return (beta.expand(*batch, 2), U.expand(*batch, self.nlayers, 2)) if batch else (beta, U)

    def _constants(self, beta: Any, U: Any, B: int) -> torch.Tensor:
        """The predictor's ``[B, C_const]`` constants, reused while (beta, U) and B stay the same."""
        if is_torch(beta) or is_torch(U):
            return self.predictor.pack_constants(self._named_constants(beta, U), B)
        key = (np.asarray(beta, dtype=np.float64).tobytes(), np.asarray(U, dtype=np.float64).tobytes(), B)
        if self._const_cache is None or self._const_cache[0] != key:
            self._const_cache = (key, self.predictor.pack_constants(self._named_constants(beta, U), B))
        return self._const_cache[1]

    def energy_drain(self, state: Mapping[str, Any], S: Any) -> np.ndarray:
        """``sum_i H_i/H <psi_i S_i>`` per sample [m^2 s^-3, summed over the grid]: the rate at which the
        forcing ``S`` ``[..., N, n, n]`` [s^-2] removes total energy from the named state (positive:
        it drains). psi comes from the state's velocity (its domain mean is irrelevant: S has none)."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        P = self._streamfunction_from_velocity(state)
        S = torch.as_tensor(S).to(device=self.device, dtype=self.dtype)
        Sh = torch.fft.rfft2(S.reshape(P.shape[0], self.nlayers, self.n, self.n))
        drain = (self._weights * (P.conj() * Sh).real).sum((-3, -2, -1))
        return drain.reshape(batch).detach().to(torch.float64).cpu().numpy()

    def fluxes(self, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau [..., nz, 3, y, x], Fb [..., nz, 2, y, x])`` as tensors on the device."""
        batch, _ = self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        y = self._outputs(state, batch)
        return fields.qg_fluxes(self.schema.unstack(y.reshape(*batch, *y.shape[-3:]), "outputs"))
