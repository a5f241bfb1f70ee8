"""The pyqg timestep-hook plugin: a trained flux network as a ``pyqg.QParameterization``.

At every call pyqg hands over the model ``m`` after advection and before the
AB3 step. The plugin

1. reads the coarse state from ``m.ph`` (DESIGN.md §3): the perturbation
   velocity ``(u, v) = (-d psi/dy, d psi/dx)`` per layer [m/s], the interface
   variable ``b = psi_1 - psi_2`` [m^2/s], plus the constant vectors
   ``beta = (0, beta)`` [1/(m s)] and ``U_i = (U_i, 0)`` [m/s];
2. evaluates the exported network (float32 by default, on the chosen device)
   to get the momentum flux ``tau_i`` [m^2/s^2] and buoyancy flux ``F_i``
   [m^3/s^2] per layer;
3. returns the PV forcing in flux form (:func:`roteq_param.fluxform.pv_forcing_from_fluxes`)
   ``S_1 = -curl(div tau_1) + F1 div F_1``, ``S_2 = -curl(div tau_2) - F2 div F_2``
   in s^-2, shape (nz, ny, nx), which pyqg adds to dq/dt.

Because S is a curl of a divergence plus a divergence, its domain integral and
the implied momentum and buoyancy tendencies integrate to zero exactly.

Usage::

    import pyqg
    from solver_coupling.pyqg.plugin import RotEqParameterization
    P = RotEqParameterization("eddy-c4")            # a name under trained_models/ or a path
    m = pyqg.QGModel(nx=64, parameterization=P)     # also works with 0.5 * P + other
    m.run()
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyqg
import torch

from roteq_param import fluxform, models
from roteq_param.fields import SchemaError

__all__ = [
    "RotEqParameterization",
    "FluxForcing",
    "ModelMismatchError",
    "ModelFileChangedError",
    "OutOfRegimeWarning",
    "state_from_model",
    "velocity",
    "solver_config_of",
    "Ensemble",
]

DEFAULT_MODEL = "eddy-c4"

# Solver settings a model is tied to. Grid and layers must match exactly; the physical
# parameters define the training regime (a flag allows leaving it, with a warning).
_STRUCTURAL = ("nz", "nx", "ny")
_REGIME = ("L", "W", "rd", "delta", "beta", "U1", "U2", "H1", "H2", "rek")


class ModelMismatchError(ValueError):
    """The trained model does not fit the solver it was plugged into (the message names the field)."""


class ModelFileChangedError(RuntimeError):
    """The model's weights file changed on disk after it was loaded."""


class OutOfRegimeWarning(UserWarning):
    """The solver runs outside the configuration the model was trained on."""


def solver_config_of(m: pyqg.QGModel) -> dict[str, float]:
    """The settings of a pyqg two-layer model that a trained model is tied to (SI units)."""
    return {
        "nz": int(m.nz), "nx": int(m.nx), "ny": int(m.ny),
        "L": float(m.L), "W": float(m.W), "rd": float(m.rd), "delta": float(m.delta),
        "beta": float(m.beta), "U1": float(m.U1), "U2": float(m.U2),
        "H1": float(m.Hi[0]), "H2": float(m.Hi[1]), "rek": float(m.rek),
    }


def velocity(m: pyqg.QGModel) -> tuple[np.ndarray, np.ndarray]:
    """Perturbation velocity (u, v) = (-d psi/dy, d psi/dx), each (nz, ny, nx) in m/s, from ``m.ph``."""
    return m.ifft(-1j * m.l * m.ph), m.ifft(1j * m.k * m.ph)


def state_from_model(m: pyqg.QGModel) -> dict[str, np.ndarray]:
    """Schema inputs from the current pyqg state (float64 numpy arrays).

    Derived from ``m.ph`` with pyqg's own wavenumbers and FFT, because some of
    pyqg's spectral buffers (``m.uh``...) are scratch space at hook time.
    """
    u, v = velocity(m)
    b = m.ifft((m.ph[0] - m.ph[1])[None])[0]  # pyqg's FFT wants (nz, ny, nk) arrays
    state = {f"vel_{i + 1}": np.stack([u[i], v[i]]) for i in range(m.nz)}
    state["b"] = b
    beta, U = _constants(m)
    state["beta"] = beta
    for i in range(m.nz):
        state[f"U_{i + 1}"] = U[i]
    return state


class FluxForcing:
    """Coarse state -> PV forcing S [s^-2], through an exported flux network.

    Two entry points share one core (network, then the fused flux-to-forcing
    operator :class:`roteq_param.fluxform.PVForcingOperator`):

    * ``forcing(state)`` takes the schema's named arrays (validated: errors name
      the field), with any leading batch dimensions;
    * ``forcing.from_spectral(ph, k, l, beta, U)`` takes pyqg's spectral
      streamfunction directly and builds the network input with one inverse FFT:
      the hot path of the timestep hook and of ensembles.

    Both return ``[..., nz, ny, nx]`` float64 numpy.
    """

    def __init__(self, model: models.FluxNet, *, F1: float, F2: float, L: float, n: int,
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.schema = model.schema
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use device='cpu'")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.net = model.export().to(device=self.device, dtype=dtype).eval()
        self.n = int(n)
        self.operator = fluxform.PVForcingOperator(self.n, L, F1, F2)
        layers = sorted({f.layer for f in self.schema.outputs})
        if len(layers) != 2:
            raise ValueError(f"the two-layer PV forcing needs fluxes for 2 layers, the schema has {layers}")
        out = self.schema.channel_slices("outputs")
        # gather the network's output channels as [lev, (txx, txy, tyy, Fx, Fy)]
        index = [list(range(out[f"tau_{i}"].start, out[f"tau_{i}"].stop)) +
                 list(range(out[f"Fb_{i}"].start, out[f"Fb_{i}"].stop)) for i in layers]
        self._out_index = torch.tensor(index, device=self.device).reshape(-1)
        self._in_slices = self.schema.channel_slices("inputs")
        self._spectral_cache: dict = {}

    # -- core -------------------------------------------------------------------------------------
    def _forcing(self, x: torch.Tensor) -> np.ndarray:
        batch = x.shape[:-3]
        with torch.no_grad():
            y = self.net(x.reshape(-1, *x.shape[-3:]))
            fluxes = y.index_select(1, self._out_index).reshape(*batch, 2, 5, self.n, self.n)
            S = self.operator(fluxes)
        return S.to(torch.float64).cpu().numpy()

    def fluxes(self, state: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tau [..., nz, 3, y, x], Fb [..., nz, 2, y, x]) as torch tensors on the device."""
        x = self._stack(state)
        batch = x.shape[:-3]
        with torch.no_grad():
            y = self.net(x.reshape(-1, *x.shape[-3:]))
        out = self.schema.unstack(y.reshape(*batch, *y.shape[-3:]), "outputs")
        tau = torch.stack([out["tau_1"], out["tau_2"]], dim=-4)
        Fb = torch.stack([out["Fb_1"], out["Fb_2"]], dim=-4)
        return tau, Fb

    def _stack(self, state: Mapping[str, Any]) -> torch.Tensor:
        self.schema.validate(state, "inputs", grid_shape=(self.n, self.n), allow_extra=True)
        names = {f.name for f in self.schema.inputs}
        return self.schema.stack({k: torch.as_tensor(np.asarray(v), dtype=self.dtype).to(self.device)
                                  for k, v in state.items() if k in names}, "inputs")

    # -- entry points ----------------------------------------------------------------------------
    def __call__(self, state: Mapping[str, Any]) -> np.ndarray:
        return self._forcing(self._stack(state))

    def from_spectral(self, ph: np.ndarray, k: np.ndarray, l: np.ndarray, beta: np.ndarray,
                      U: np.ndarray) -> np.ndarray:
        """Forcing from pyqg's spectral streamfunction.

        ``ph`` is ``[..., 2, n, n//2+1]`` (pyqg's rfft layout, unnormalised forward
        transform), ``k``/``l`` pyqg's wavenumber arrays [1/m], ``beta`` the vector
        (0, beta) [1/(m s)] and ``U`` the background velocities ``[2, 2]`` [m/s].
        """
        key = (self.device, self.cdtype)
        if key not in self._spectral_cache:
            self._spectral_cache[key] = (torch.as_tensor(1j * np.asarray(k), dtype=self.cdtype, device=self.device),
                                         torch.as_tensor(1j * np.asarray(l), dtype=self.cdtype, device=self.device))
        ik, il = self._spectral_cache[key]
        P = torch.as_tensor(np.asarray(ph), device=self.device).to(self.cdtype)
        p1, p2 = P[..., 0, :, :], P[..., 1, :, :]
        spec = torch.stack([-il * p1, ik * p1, -il * p2, ik * p2, p1 - p2], dim=-3)
        grid = torch.fft.irfft2(spec, s=(self.n, self.n))  # u1, v1, u2, v2, b
        if not bool(torch.isfinite(grid).all()):
            self._stack(_named(grid.double().cpu().numpy(), beta, U))  # raises, naming the field
        batch = grid.shape[:-3]
        x = torch.empty(*batch, self.schema.n_channels("inputs"), self.n, self.n, dtype=self.dtype,
                        device=self.device)
        s = self._in_slices
        x[..., s["vel_1"], :, :] = grid[..., 0:2, :, :]
        x[..., s["vel_2"], :, :] = grid[..., 2:4, :, :]
        x[..., s["b"], :, :] = grid[..., 4:5, :, :]
        consts = {"beta": beta, "U_1": U[0], "U_2": U[1]}
        for name, value in consts.items():
            x[..., s[name], :, :] = torch.as_tensor(np.asarray(value), dtype=self.dtype,
                                                    device=self.device)[..., None, None]
        return self._forcing(x)


def _named(grid: np.ndarray, beta: np.ndarray, U: np.ndarray) -> dict[str, np.ndarray]:
    batch = grid.shape[:-3]
    return {"vel_1": grid[..., 0:2, :, :], "vel_2": grid[..., 2:4, :, :], "b": grid[..., 4, :, :],
            "beta": np.broadcast_to(beta, (*batch, 2)), "U_1": np.broadcast_to(U[0], (*batch, 2)),
            "U_2": np.broadcast_to(U[1], (*batch, 2))}


def _constants(m: pyqg.QGModel) -> tuple[np.ndarray, np.ndarray]:
    """beta = (0, beta) [1/(m s)] (pyqg's beta points along y) and U_i = (U_i, 0) [m/s]."""
    return np.array([0.0, float(m.beta)]), np.array([[float(m.Ubg[i]), 0.0] for i in range(m.nz)])


@dataclass
class _Loaded:
    model: models.FluxNet
    card: dict
    weights_path: Any
    weights_sha256: str


def _load(model: str | Any) -> _Loaded:
    if isinstance(model, models.FluxNet):
        return _Loaded(model.eval(), {"training": {}}, None, "")
    directory = models.model_dir(model)
    net = models.load_model(directory)
    card = models.load_card(directory)
    path = directory / "model.pt"
    return _Loaded(net, card, path, models.sha256_file(path))


class RotEqParameterization(pyqg.QParameterization):
    """A trained rotation-equivariant flux network as a pyqg PV parameterization.

    Parameters
    ----------
    model:
        Name of a model under ``trained_models/``, a model directory, or a
        :class:`roteq_param.models.FluxNet` (then no solver configuration is checked).
    device:
        ``"cpu"`` or ``"cuda"``; the network and the flux-to-forcing transform run there.
    call_interval:
        Evaluate the network every ``call_interval`` steps and reuse the forcing in
        between (1 = every step).
    dtype:
        Inference precision inside the float64 solver (default float32).
    allow_out_of_regime:
        Allow physical parameters (L, rd, delta, beta, U1, U2, H1, H2, rek) that differ
        from the model's training configuration; a :class:`OutOfRegimeWarning` says so.
        Grid and number of layers must always match.
    """

    def __init__(self, model: str | Any = DEFAULT_MODEL, *, device: str = "cpu", call_interval: int = 1,
                 dtype: torch.dtype = torch.float32, allow_out_of_regime: bool = False):
        if int(call_interval) != call_interval or call_interval < 1:
            raise ValueError(f"call_interval must be a positive integer, got {call_interval!r}")
        self._loaded = _load(model)
        self.device = device
        self.dtype = dtype
        self.call_interval = int(call_interval)
        self.allow_out_of_regime = allow_out_of_regime
        self._forcing: FluxForcing | None = None
        self._bound_to: int | None = None
        self._cached: np.ndarray | None = None
        self._calls = 0

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file as loaded ("" for an in-memory model)."""
        return self._loaded.weights_sha256

    @property
    def training_config(self) -> dict:
        """The solver configuration the model card declares (empty if none)."""
        return dict(self._loaded.card.get("training", {}).get("solver", {}))

    def verify_model_file(self) -> None:
        """Raise :class:`ModelFileChangedError` if the weights on disk differ from those loaded."""
        path = self._loaded.weights_path
        if path is None:
            return
        if not path.is_file():
            raise ModelFileChangedError(f"model weights {path} were removed after loading")
        now = models.sha256_file(path)
        if now != self._loaded.weights_sha256:
            raise ModelFileChangedError(
                f"model weights {path} changed on disk after loading (sha256 {self._loaded.weights_sha256[:12]}... "
                f"-> {now[:12]}...); reload the parameterization to use the new weights")

    def check_solver(self, m: pyqg.QGModel) -> None:
        """Check the model against the solver before the first step (raises :class:`ModelMismatchError`)."""
        if not isinstance(m, pyqg.QGModel):
            raise ModelMismatchError(f"RotEqParameterization supports pyqg.QGModel (two layers), got {type(m).__name__}")
        schema_layers = sorted({f.layer for f in self._loaded.model.schema.outputs})
        if m.nz != len(schema_layers):
            raise ModelMismatchError(f"nz: the model predicts fluxes for {len(schema_layers)} layers, the solver has {m.nz}")
        if m.nx != m.ny or m.L != m.W:
            raise ModelMismatchError(f"grid: the plugin needs a square doubly periodic domain, got nx={m.nx}, ny={m.ny}, "
                                     f"L={m.L}, W={m.W}")
        self.verify_model_file()
        declared = self.training_config
        actual = solver_config_of(m)
        for key in _STRUCTURAL:
            if key in declared and int(declared[key]) != actual[key]:
                raise ModelMismatchError(f"{key}: the model was trained for {key}={declared[key]}, the solver has "
                                         f"{key}={actual[key]}")
        off = [f"{k}: trained {declared[k]:g}, solver {actual[k]:g}" for k in _REGIME
               if k in declared and not math.isclose(float(declared[k]), actual[k], rel_tol=1e-6, abs_tol=1e-30)]
        if off:
            msg = "the solver runs outside the model's training configuration (" + "; ".join(off) + ")"
            if not self.allow_out_of_regime:
                raise ModelMismatchError(msg + "; pass allow_out_of_regime=True to run anyway")
            warnings.warn(msg, OutOfRegimeWarning, stacklevel=3)

    def bind(self, m: pyqg.QGModel) -> FluxForcing:
        """Check ``m`` and build the forcing operator for it (done on the first call)."""
        if self._bound_to != id(m):
            self.check_solver(m)
            F1, F2 = fluxform.stretching_coefficients(float(m.rd), float(m.delta))
            self._forcing = FluxForcing(self._loaded.model, F1=F1, F2=F2, L=float(m.L), n=int(m.nx),
                                        device=self.device, dtype=self.dtype)
            self._bound_to = id(m)
            self._cached = None
            self._calls = 0
        return self._forcing

    def __call__(self, m: pyqg.QGModel) -> np.ndarray:
        forcing = self.bind(m)
        if self._cached is None or self._calls % self.call_interval == 0:
            try:
                self._cached = forcing.from_spectral(m.ph, m.k, m.l, *_constants(m))
            except SchemaError as e:
                raise FloatingPointError(f"pyqg state at t = {m.t:g} s is not valid network input: {e}") from e
        self._calls += 1
        return self._cached

    def __repr__(self) -> str:
        return (f"RotEqParameterization({self._loaded.card.get('name', 'in-memory model')!r}, device={self.device!r}, "
                f"call_interval={self.call_interval})")


class _Precomputed(pyqg.QParameterization):
    """Hands pyqg a forcing computed outside the step (by :class:`Ensemble`)."""

    def __init__(self):
        self.dq: np.ndarray | None = None

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    def __call__(self, m):
        return self.dq


class Ensemble:
    """M pyqg members stepped in lockstep with one batched network call per step.

    Each member gets the same forcing as :class:`RotEqParameterization` would give
    it alone (the state is read after the same inversion pyqg performs), but the
    network sees all members as one batch: that is what keeps a GPU busy.

    Parameters
    ----------
    members:
        pyqg QGModels built with ``parameterization=Ensemble.slot()`` (see :meth:`build`).
    param:
        The :class:`RotEqParameterization` whose network and settings are used.
    """

    def __init__(self, members: Sequence[pyqg.QGModel], param: RotEqParameterization):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        slots = [m.q_parameterization for m in members]
        if not all(isinstance(s, _Precomputed) for s in slots):
            raise ValueError("ensemble members must be built with Ensemble.build (their parameterization slot "
                             "is filled by the ensemble)")
        self.members = list(members)
        self.param = param
        self.forcing = param.bind(members[0])
        for m in members[1:]:
            param.check_solver(m)
        self._slots = slots
        self._steps = 0

    @staticmethod
    def build(param: RotEqParameterization, n_members: int, **qg_kwargs: Any) -> "Ensemble":
        """Create ``n_members`` QGModels with ``qg_kwargs`` wired to one batched network."""
        members = [pyqg.QGModel(q_parameterization=_Precomputed(), **qg_kwargs) for _ in range(n_members)]
        return Ensemble(members, param)

    def step(self, active: Sequence[bool] | None = None) -> None:
        """Advance every (active) member by one time step."""
        idx = [i for i in range(len(self.members)) if active is None or active[i]]
        if not idx:
            return
        if self._steps % self.param.call_interval == 0:
            for i in idx:
                self.members[i]._invert()  # the same inversion _step_forward starts with: ph is current
            m0 = self.members[idx[0]]
            ph = np.stack([self.members[i].ph for i in idx])
            # A member that went non-finite must not poison the batch: it keeps a NaN forcing and
            # is left for the caller's stability monitor to stop.
            finite = np.isfinite(ph).all(axis=(1, 2, 3))
            S = np.full((len(idx), *m0.q.shape), np.nan)
            if finite.any():
                S[finite] = self.forcing.from_spectral(ph[finite], m0.k, m0.l, *_constants(m0))
            for n, i in enumerate(idx):
                self._slots[i].dq = S[n]
        for i in idx:
            self.members[i]._step_forward()
        self._steps += 1
