"""``TorchQGModel``: a batched, differentiable torch twin of pyqg's two-layer ``QGModel``.

The twin reproduces one step of pyqg 0.7.2 term by term, in the order of pyqg's
Cython kernel (``pyqg/kernel.pyx``) and ``Model._step_forward``:

1. ``_invert``: ``ph = a @ qh`` with pyqg's inversion matrix (the k = l = 0 mode
   is not inverted: ``a`` is 0 there), ``uh = -il ph``, ``vh = ik ph``,
   ``u, v = irfft2(uh), irfft2(vh)``;
2. ``_do_advection``: ``uq = (u + U_i) q``, ``vq = v q`` on the grid (``q`` is
   the stored grid PV, i.e. ``irfft2`` of the last ``qh``), then
   ``dq/dt = -(ik fft(uq) + il fft(vq) + ik Qy_i ph)``, where
   ``Qy_1 = beta + F1 (U1 - U2)`` and ``Qy_2 = beta - F2 (U1 - U2)`` hold both
   the beta term and the background shear;
3. ``_do_friction``: ``dq_2/dt += rek (k^2 + l^2) ph_2`` (lower layer only);
4. ``_do_uv_subgrid_parameterization`` then ``_do_q_subgrid_parameterization``:
   ``dq/dt += -il fft(du) + ik fft(dv)`` and ``dq/dt += fft(dq)``;
5. diagnostics hooks (pyqg's ``_calc_diagnostics`` sits here);
6. ``_forward_timestep``: ``qh <- filtr * (qh + dt1 dq/dt + dt2 dq/dt_prev + dt3 dq/dt_prevprev)``
   with forward Euler, then AB2, then AB3 coefficients (pyqg's ``ablevel``
   start-up), ``q <- irfft2(qh)``, ``tc += 1``, ``t += dt``.

Units (SI, as in pyqg): PV ``q`` in s^-1, streamfunction in m^2 s^-1, velocities
in m s^-1, tendencies (``dqhdt``, a parameterization's ``dq``) in s^-2,
``t`` and ``dt`` in seconds, ``rek`` in s^-1, ``beta`` in m^-1 s^-1, ``rd``,
``L``, ``W``, ``H1`` in m.

Shapes: ``members`` independent models run side by side. Grid fields are
``(members, 2, ny, nx)``; spectral fields ``(members, 2, nl, nk)`` with
``nl = ny``, ``nk = nx // 2 + 1`` (pyqg's rfft layout). Every operation acts per
member (elementwise, or FFTs over the last two axes), so members never mix:
a member that blows up cannot contaminate the others.

Physical parameters (``beta, rd, delta, H1, U1, U2, rek, filterfac``) may be
Python numbers, 0-d tensors or 1-d tensors with one value per member, and may
require grad: the derived constants (inversion matrix, PV gradients, filter)
are rebuilt from them in torch, so gradients flow to them.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any, Callable

import numpy as np
import pyqg
import torch
from torch.utils.checkpoint import checkpoint

from roteq_param.arrays import torch_device, torch_float_dtype

__all__ = ["TorchQGModel", "pyqg_parameter_names"]

# Parameters that enter the dynamics and may be tensors (scalar or one per member).
_TENSOR_PARAMS = ("beta", "rd", "delta", "H1", "U1", "U2", "rek", "filterfac")
# Grid and time step: plain numbers (they fix array shapes and the AB3 coefficients).
_GRID_PARAMS = ("nx", "ny", "L", "W", "dt")
# Kept because pyqg keeps them: averaging window of the diagnostics, run length,
# and the constants of pyqg's vertical_modes().
_STORED_PARAMS = ("tmax", "tavestart", "taveint", "f", "g")
_PARAMETERIZATION_PARAMS = ("q_parameterization", "uv_parameterization", "parameterization")
# Accepted for drop-in compatibility with pyqg call sites, with no effect, because:
_IGNORED_PARAMS = {
    "ntd": "FFTW thread count; the twin runs on torch's threads (torch.set_num_threads)",
    "log_level": "pyqg's KE/CFL logger; the twin does not log",
    "logfile": "pyqg's KE/CFL logger; the twin does not log",
    "twrite": "interval of pyqg's KE/CFL log lines, which the twin does not write",
    "diagnostics_list": "the twin's diagnostics are opt-in (solver_coupling.torchqg.diagnostics)",
    "useAB2": "pyqg 0.7.2's kernel ignores it too: it always goes Euler -> AB2 -> AB3",
}


def _pyqg_signature() -> dict[str, Any]:
    """Keyword parameters of ``pyqg.QGModel`` and their defaults, as pyqg accepts them.

    Walks the constructors up the MRO while they forward ``**kwargs`` (QGModel ->
    Model), exactly the set of names pyqg itself would accept. ``nz`` is dropped:
    QGModel fixes it to 2 and passing it raises in pyqg too.
    """
    names: dict[str, Any] = {}
    for cls in pyqg.QGModel.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for name, p in params.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            names.setdefault(name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    names.pop("nz", None)
    return names


_PYQG_DEFAULTS = _pyqg_signature()
_HANDLED = set(_TENSOR_PARAMS + _GRID_PARAMS + _STORED_PARAMS + _PARAMETERIZATION_PARAMS) | set(_IGNORED_PARAMS)


def pyqg_parameter_names() -> list[str]:
    """The ``pyqg.QGModel`` keyword names the twin accepts (sorted)."""
    return sorted(_PYQG_DEFAULTS)


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    unknown = [k for k in kwargs if k not in _PYQG_DEFAULTS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, _PYQG_DEFAULTS, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"TorchQGModel got unknown pyqg.QGModel parameter(s) {', '.join(hints)}; "
            f"valid names: {', '.join(pyqg_parameter_names())}; "
            "twin-only keywords: members, device, dtype, call_interval")
    unsupported = [k for k in kwargs if k not in _HANDLED]
    if unsupported:  # a future pyqg grew a parameter the twin does not implement
        raise NotImplementedError(f"pyqg parameter(s) {unsupported} are not implemented by TorchQGModel")


def _is_zero(x) -> bool:
    return not torch.is_tensor(x) and x == 0


class _Clock:
    """pyqg's time bookkeeping: ``t`` [s] (accumulated ``t += dt`` as pyqg does),
    step count ``tc``, Adams-Bashforth level ``ablevel`` (0: next step is forward
    Euler, 1: AB2, 2: AB3), and the step at which the parameterization was last
    evaluated (for ``call_interval``)."""

    __slots__ = ("t", "tc", "ablevel", "param_tc")

    def __init__(self, t=0.0, tc=0, ablevel=0, param_tc=None):
        self.t, self.tc, self.ablevel, self.param_tc = float(t), int(tc), int(ablevel), param_tc

    def copy(self) -> "_Clock":
        return _Clock(self.t, self.tc, self.ablevel, self.param_tc)


class TorchQGModel:
    r"""Two-layer quasi-geostrophic model, pyqg's ``QGModel`` in torch, batched over members.

    Parameters
    ----------
    members : int
        Number of independent models stepped together (leading axis of all fields).
    device, dtype :
        Where and in which precision to run: ``torch.float64`` (default; complex128
        spectra) or ``torch.float32`` (complex64 spectra). Constants are computed in
        float64 and then rounded, as pyqg-jax does.
    call_interval : int
        Evaluate the parameterization every ``call_interval`` steps and reuse its
        last forcing in between (1: every step, as pyqg).
    **pyqg_kwargs :
        Any ``pyqg.QGModel`` parameter (defaults are pyqg's). ``parameterization``,
        ``q_parameterization`` and ``uv_parameterization`` take *torch* callables:
        ``P(model) -> dq`` with ``dq`` of shape ``(members, 2, ny, nx)`` in s^-2
        (q type), or ``P(model) -> (du, dv)`` in m s^-2 (uv type, declared by
        ``P.parameterization_type == "uv_parameterization"`` as in pyqg). The
        callable sees the model after inversion and advection, so it can read
        ``model.q``, ``model.qh``, ``model.ph``, ``model.u``, ``model.v`` ...
        ``ntd, log_level, logfile, twrite, diagnostics_list, useAB2`` are accepted
        and ignored (see ``_IGNORED_PARAMS`` for why). Unknown names raise ``TypeError``.

    The initial PV is pyqg's: for each member, drawn from NumPy's global generator
    with pyqg's formula, so ``np.random.seed(s)`` gives member 0 the same initial
    state as ``pyqg.QGModel`` after the same seed.
    """

    nz = 2

    def __init__(self, members: int = 1, *, device=None, dtype: torch.dtype = torch.float64,
                 call_interval: int = 1, **pyqg_kwargs):
        _check_kwargs(pyqg_kwargs)
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive int, got {members!r}")
        torch_float_dtype(dtype, (torch.float64, torch.float32))
        if isinstance(call_interval, bool) or not isinstance(call_interval, int) or call_interval < 1:
            raise ValueError(f"call_interval must be a positive int, got {call_interval!r}")
        if pyqg_kwargs.get("useAB2"):
            warnings.warn("useAB2=True is ignored, as pyqg 0.7.2's kernel ignores it: "
                          "the twin steps with AB3 after the Euler/AB2 start-up", stacklevel=2)
        cfg = {k: v for k, v in _PYQG_DEFAULTS.items()}
        cfg.update(pyqg_kwargs)
        self.members = members
        self.device = torch_device("cpu" if device is None else device)
        self.dtype = dtype
        self.cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.call_interval = call_interval

        # grid (pyqg's Model._initialize_grid, in NumPy float64 so k, l, wv2 are bitwise pyqg's)
        self.nx = int(cfg["nx"])
        self.ny = int(cfg["ny"]) if cfg["ny"] is not None else self.nx
        if self.ny != self.nx:
            # pyqg 0.7.2 allocates its grid buffers as (nz, ny, ny) and builds ll from nx
            raise ValueError(f"pyqg's QGModel supports only nx == ny (got nx={self.nx}, ny={self.ny})")
        self.L = float(cfg["L"])
        self.W = float(cfg["W"]) if cfg["W"] is not None else self.L
        self.dt = float(cfg["dt"])
        for name in _STORED_PARAMS:
            setattr(self, name, cfg[name])
        self.nl, self.nk = self.ny, self.nx // 2 + 1
        self.M = self.nx * self.ny
        self.dx, self.dy = self.L / self.nx, self.W / self.ny
        self._init_grid()

        self._phys: dict[str, Any] = {}
        for name in _TENSOR_PARAMS:
            self._phys[name] = self._check_param(name, cfg[name])
        self._consts = None
        self._consts_key = None

        self.q_parameterization, self.uv_parameterization = _split_parameterizations(
            cfg["parameterization"], cfg["q_parameterization"], cfg["uv_parameterization"])

        self._hooks: list[Callable[["TorchQGModel"], None]] = []
        self._clock = _Clock()
        self._param_cache: tuple | None = None
        zeros = torch.zeros((members, 2, self.nl, self.nk), dtype=self.cdtype, device=self.device)
        self.dqhdt_p, self.dqhdt_pp = zeros, zeros.clone()
        self.dqhdt = zeros.clone()
        self.q = self._pyqg_initial_q()

    # ------------------------------------------------------------------ setup
    def _init_grid(self) -> None:
        nx, nk = self.nx, self.nk
        dk, dl = 2.0 * np.pi / self.L, 2.0 * np.pi / self.W
        ll = dl * np.append(np.arange(0.0, nx / 2), np.arange(-nx / 2, 0.0))  # pyqg uses nx here (nx == ny)
        kk = dk * np.arange(0.0, nk)
        k, l = np.meshgrid(kk, ll)
        wv2 = k**2 + l**2
        cphi = 0.65 * np.pi
        wvx = np.sqrt((k * self.dx) ** 2.0 + (l * self.dy) ** 2.0)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=self.device)  # noqa: E731
        self._kk64, self._ll64, self._wv2_64 = t(kk), t(ll), t(wv2)
        # the filter's wavenumber argument does not depend on any parameter
        self._filter_arg64 = t((wvx - cphi) ** 4.0)
        self._filter_pass = torch.as_tensor(wvx <= cphi, device=self.device)
        r, c = self.dtype, self.cdtype
        self.kk, self.ll = self._kk64.to(r), self._ll64.to(r)
        self.k, self.l = t(k).to(r), t(l).to(r)
        self.wv2 = self._wv2_64.to(r)
        self.wv = torch.sqrt(self._wv2_64).to(r)
        # ik, il broadcast over (members, layer, l, k) like pyqg's _ik[i], _il[j]
        self.ik = torch.complex(torch.zeros_like(self.k), self.k).to(c)
        self.il = torch.complex(torch.zeros_like(self.l), self.l).to(c)
        self.x, self.y = (t(a).to(r) for a in np.meshgrid(np.arange(0.5, self.nx, 1.0) / self.nx * self.L,
                                                            np.arange(0.5, self.ny, 1.0) / self.ny * self.W))

    def _check_param(self, name: str, value):
        if torch.is_tensor(value):
            if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, self.members)):
                raise ValueError(f"parameter {name!r} must be a number, a 0-d tensor or a 1-d tensor "
                                 f"of length members={self.members}; got shape {tuple(value.shape)}")
            if value.is_complex():
                raise ValueError(f"parameter {name!r} must be real")
            return value.to(self.device)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"parameter {name!r} must be a number or a tensor, got {type(value).__name__}") from None

    def _pyqg_initial_q(self) -> torch.Tensor:
        # pyqg's QGModel.__init__: q1 = 1e-7 rand(ny, nx) + 1e-6 ones(ny,1) rand(1,nx), q2 = 0
        qs = []
        for _ in range(self.members):
            q1 = 1e-7 * np.random.rand(self.ny, self.nx) + 1e-6 * (
                np.ones((self.ny, 1)) * np.random.rand(1, self.nx))
            qs.append(np.stack([q1, np.zeros_like(q1)]))
        return torch.as_tensor(np.stack(qs), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ parameters
    def param(self, name: str) -> torch.Tensor:
        """Parameter ``name`` as a float64 tensor of shape ``(P,)``, ``P`` = 1 or ``members``."""
        return self._col(self._phys[name])

    def _consts_version(self):
        key = []
        for name, v in self._phys.items():
            if torch.is_tensor(v):
                if v.requires_grad:
                    return None  # rebuild every call so each call gets a fresh graph to the parameter
                key.append((name, id(v), v._version))
            else:
                key.append((name, v))
        return tuple(key)

    def constants(self) -> dict[str, torch.Tensor]:
        """Derived constants (pyqg's ``a``, ``_ikQy``, ``filtr``, ...), built in float64 then rounded.

        Cached while no parameter requires grad; parameters that require grad get
        a fresh graph on every public call (``step``, ``unroll``).
        """
        key = self._consts_version()
        if key is not None and self._consts is not None and key == self._consts_key:
            return self._consts
        c = self._build_constants()
        self._consts, self._consts_key = (c, key) if key is not None else (None, None)
        return c

    def _build_constants(self) -> dict[str, torch.Tensor]:
        p = {name: self._phys[name] for name in _TENSOR_PARAMS}
        # Scalar algebra exactly as pyqg's QGModel._initialize_background writes it; on Python
        # floats this is bitwise pyqg's arithmetic, on tensors it is differentiable.
        F1 = p["rd"] ** -2 / (1.0 + p["delta"])
        F2 = p["delta"] * F1
        Qy1 = p["beta"] + F1 * (p["U1"] - p["U2"])
        Qy2 = p["beta"] - F2 * (p["U1"] - p["U2"])
        col = self._col
        F1, F2, Qy1, Qy2 = col(F1), col(F2), col(Qy1), col(Qy2)
        U1, U2, H1, delta = col(p["U1"]), col(p["U2"]), col(p["H1"]), col(p["delta"])
        rek, filterfac, rd = col(p["rek"]), col(p["filterfac"]), col(p["rd"])
        wv2 = self._wv2_64  # (nl, nk)
        F1g, F2g = F1[:, None, None], F2[:, None, None]

        # inversion matrix (QGModel._initialize_inversion_matrix); the k = l = 0 mode is
        # masked to 0 there. Double where() keeps the gradient finite at that mode.
        det = wv2 * (wv2 + F1g + F2g)
        zero = wv2 == 0.0
        det_inv = torch.where(zero, torch.zeros_like(det), 1.0 / torch.where(zero, torch.ones_like(det), det))
        a = torch.stack([torch.stack([-(wv2 + F2g) * det_inv, -F1g * det_inv], 1),
                         torch.stack([-F2g * det_inv, -(wv2 + F1g) * det_inv], 1)], 1)  # (P, 2, 2, nl, nk)

        Qy = torch.stack([Qy1, Qy2], 1)  # (P, 2)
        # kernel: _ikQy = 1j * (kk[None, :] * Qy[:, None]), broadcast over l
        kQy = self._kk64[None, None, :] * Qy[:, :, None]
        ikQy = torch.complex(torch.zeros_like(kQy), kQy)[:, :, None, :]  # (P, 2, 1, nk)
        Ubg = torch.stack([U1, U2], 1)  # (P, 2)
        # friction (kernel _do_friction: rek * _k2l2 * ph on the last layer); layer 0 gets an
        # exact zero, which leaves its tendency unchanged
        fric = torch.stack([torch.zeros_like(rek[:, None, None] * wv2), rek[:, None, None] * wv2], 1)
        # exponential filter (Model._initialize_filter)
        filtr = torch.where(self._filter_pass, torch.ones_like(self._filter_arg64),
                            torch.exp(-filterfac[:, None, None] * self._filter_arg64))  # (P, nl, nk)
        Hi = torch.stack([H1, H1 / delta], 1)  # (P, 2)
        r, c = self.dtype, self.cdtype
        return {
            "a": a.to(c), "a_real": a.to(r),
            "ikQy": ikQy.to(c), "Qy": Qy.to(r),
            "Ubg": Ubg.to(r)[:, :, None, None],
            "fric": fric.to(c), "has_friction": not _is_zero(p["rek"]),
            "filtr": filtr.to(r)[:, None], "filtr_c": filtr.to(c)[:, None],
            "F1": F1.to(r), "F2": F2.to(r), "rd": rd.to(r), "rek": rek.to(r),
            "Hi": Hi.to(r), "H": Hi.sum(1).to(r),
            "del1": (delta / (delta + 1.0)).to(r), "del2": ((delta + 1.0) ** -1).to(r),
            "U": (U1 - U2).to(r),
        }

    def _col(self, x) -> torch.Tensor:
        if torch.is_tensor(x):
            return x.to(device=self.device, dtype=torch.float64).reshape(-1)
        return torch.tensor([x], dtype=torch.float64, device=self.device)

    @property
    def Hi(self) -> torch.Tensor:
        """Layer thicknesses ``(P, 2)`` [m] (pyqg's ``Hi = [H1, H1/delta]``)."""
        return self.constants()["Hi"]

    @property
    def H(self) -> torch.Tensor:
        """Total depth ``(P,)`` [m]."""
        return self.constants()["H"]

    @property
    def unfiltered(self) -> torch.Tensor:
        """Boolean ``(ny, nx//2 + 1)`` mask (rfft2 layout) of the wavenumbers pyqg's exponential filter
        leaves alone (``|k| dx <= 0.65 pi``); above it the filter damps every step."""
        return self._filter_pass

    # ------------------------------------------------------------------ state
    @property
    def q(self) -> torch.Tensor:
        """Grid PV anomaly ``(members, 2, ny, nx)`` [s^-1]."""
        return self._q

    @q.setter
    def q(self, value: torch.Tensor) -> None:
        # like pyqg's q setter: keep the given grid field, qh = fft(q); the AB history is kept
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        if value.shape != (self.members, 2, self.ny, self.nx):
            raise ValueError(f"q must have shape {(self.members, 2, self.ny, self.nx)}, got {tuple(value.shape)}")
        self._q = value
        self._qh = self.fft(value)

    @property
    def qh(self) -> torch.Tensor:
        """Spectral PV ``(members, 2, nl, nk)`` (unnormalised rfft2, as pyqg)."""
        return self._qh

    @qh.setter
    def qh(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value, dtype=self.cdtype, device=self.device)
        if value.shape != (self.members, 2, self.nl, self.nk):
            raise ValueError(f"qh must have shape {(self.members, 2, self.nl, self.nk)}, got {tuple(value.shape)}")
        self._qh = value
        self._q = self.ifft(value)

    @property
    def t(self) -> float:
        """Model time [s]."""
        return self._clock.t

    @property
    def tc(self) -> int:
        """Number of steps taken."""
        return self._clock.tc

    @property
    def ablevel(self) -> int:
        """pyqg's Adams-Bashforth level: 0 next step is Euler, 1 AB2, 2 AB3."""
        return self._clock.ablevel

    def finite_members(self) -> torch.Tensor:
        """Bool tensor ``(members,)``: True where the member's PV is all finite."""
        return torch.isfinite(self._q).flatten(1).all(1)

    def get_state(self) -> dict[str, Any]:
        """A detached copy of the prognostic state and clock (for restarts and repeated unrolls)."""
        return {"q": self._q.detach().clone(), "qh": self._qh.detach().clone(),
                "dqhdt_p": self.dqhdt_p.detach().clone(), "dqhdt_pp": self.dqhdt_pp.detach().clone(),
                "t": self.t, "tc": self.tc, "ablevel": self.ablevel,
                "param_cache": None if self._param_cache is None else tuple(
                    None if x is None else x.detach().clone() for x in self._param_cache),
                "param_tc": self._clock.param_tc}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` (tensors are used as given, so they may carry grad)."""
        self._qh = state["qh"].to(device=self.device, dtype=self.cdtype)
        self._q = state["q"].to(device=self.device, dtype=self.dtype)
        self.dqhdt_p = state["dqhdt_p"].to(device=self.device, dtype=self.cdtype)
        self.dqhdt_pp = state["dqhdt_pp"].to(device=self.device, dtype=self.cdtype)
        self._param_cache = state.get("param_cache")
        self._clock = _Clock(state["t"], state["tc"], state["ablevel"], state.get("param_tc"))

    # ------------------------------------------------------------------ spectral helpers
    def fft(self, x: torch.Tensor) -> torch.Tensor:
        """rfft2 over the last two axes (pyqg's ``m.fft``, any leading shape)."""
        return torch.fft.rfft2(x)

    def ifft(self, xh: torch.Tensor) -> torch.Tensor:
        """irfft2 over the last two axes to an ``(ny, nx)`` grid (pyqg's ``m.ifft``)."""
        return torch.fft.irfft2(xh, s=(self.ny, self.nx))

    # ------------------------------------------------------------------ hooks
    def add_step_hook(self, hook: Callable[["TorchQGModel"], None]) -> None:
        """Call ``hook(model)`` every step after the tendency is complete and before the
        AB3 update: the point where pyqg computes its diagnostics. Hooks are not
        re-run when a checkpointed unroll recomputes steps during backward."""
        self._hooks.append(hook)

    def remove_step_hook(self, hook) -> None:
        self._hooks.remove(hook)

    # ------------------------------------------------------------------ one step
    def _tendency(self, qh, q, c, clock: _Clock, cache):
        """Inversion, advection, friction and parameterization: dq/dt in spectral space [s^-2].

        Sets the scratch fields ``ph, uh, vh, u, v`` (and ``dqh``/``duh``/``dvh`` for a
        parameterization) on ``self`` before calling the parameterization, as pyqg
        does. Returns ``(dqhdt, cache)``.
        """
        ik, il = self.ik, self.il
        a = c["a"]  # complex, as the kernel stores it: (a + 0j) * qh is exactly a * qh
        ph = a[:, :, 0] * qh[:, 0:1] + a[:, :, 1] * qh[:, 1:2]
        uh = -il * ph
        vh = ik * ph
        u = self.ifft(uh)
        v = self.ifft(vh)
        uqh = self.fft((u + c["Ubg"]) * q)
        vqh = self.fft(v * q)
        dqhdt = -(ik * uqh + il * vqh + c["ikQy"] * ph)
        if c["has_friction"]:  # pyqg skips the friction loop when rek == 0
            dqhdt = dqhdt + c["fric"] * ph
        self._qh, self._q, self.ph, self.uh, self.vh, self.u, self.v = qh, q, ph, uh, vh, u, v
        self.dqhdt = dqhdt
        if self.q_parameterization is None and self.uv_parameterization is None:
            return dqhdt, cache
        due = (cache is None or clock.param_tc is None
               or clock.tc - clock.param_tc >= self.call_interval)
        if due:
            cache = self._evaluate_parameterization()
            clock.param_tc = clock.tc
        duh, dvh, dqh = cache
        self.duh, self.dvh, self.dqh = duh, dvh, dqh
        if duh is not None:  # kernel: dqhdt + (-_il duh + _ik dvh)
            dqhdt = dqhdt + (-il * duh + ik * dvh)
        if dqh is not None:
            dqhdt = dqhdt + dqh
        self.dqhdt = dqhdt
        return dqhdt, cache

    def _evaluate_parameterization(self):
        duh = dvh = dqh = None
        shape = (self.members, 2, self.ny, self.nx)
        if self.uv_parameterization is not None:
            out = self.uv_parameterization(self)
            if isinstance(out, (tuple, list)) and len(out) == 2:
                du, dv = out
            else:
                out = torch.as_tensor(out)
                if out.shape[0] != 2:
                    raise ValueError("a uv parameterization must return (du, dv)")
                du, dv = out[0], out[1]
            duh = self.fft(self._check_forcing(du, shape, "du"))
            dvh = self.fft(self._check_forcing(dv, shape, "dv"))
        if self.q_parameterization is not None:
            dq = self.q_parameterization(self)
            dqh = self.fft(self._check_forcing(dq, shape, "dq"))
        return duh, dvh, dqh

    def _check_forcing(self, x, shape, name):
        if not torch.is_tensor(x):
            raise TypeError(f"the parameterization must return torch tensors ({name} is {type(x).__name__})")
        if tuple(x.shape) != shape:
            raise ValueError(f"parameterization output {name} has shape {tuple(x.shape)}, expected {shape}")
        return x.to(self.dtype)

    def _advance(self, n, qh, q, hp, hpp, cache, clock: _Clock, c, save_every, run_hooks):
        """``n`` steps from the given state; pure in its tensor inputs (the clock is a copy).

        Returns the new ``(qh, q, hp, hpp, cache)`` and the ``q`` snapshots taken when
        the step count reaches a multiple of ``save_every``.
        """
        saved = []
        dt = self.dt
        self._clock = clock  # hooks and the parameterization read t, tc, ablevel through the model
        for _ in range(n):
            # the history before this step, visible to hooks (pyqg's Dissspec needs it)
            self.dqhdt_p, self.dqhdt_pp = hp, hpp
            dqhdt, cache = self._tendency(qh, q, c, clock, cache)
            if run_hooks:
                for hook in self._hooks:
                    hook(self)
            # kernel _forward_timestep: pyqg's Adams-Bashforth start-up
            if clock.ablevel == 0:
                new = qh + dt * dqhdt  # dt2 = dt3 = 0 terms add exact zeros in pyqg
                clock.ablevel = 1
            elif clock.ablevel == 1:
                new = qh + (1.5 * dt) * dqhdt + (-0.5 * dt) * hp
                clock.ablevel = 2
            else:
                new = qh + (23.0 / 12.0 * dt) * dqhdt + (-16.0 / 12.0 * dt) * hp + (5.0 / 12.0 * dt) * hpp
            qh = c["filtr_c"] * new
            hpp, hp = hp, dqhdt
            q = self.ifft(qh)
            clock.tc += 1
            clock.t += dt
            if save_every and clock.tc % save_every == 0:
                saved.append(q)
        return (qh, q, hp, hpp, cache), saved

    # ------------------------------------------------------------------ public stepping
    def step(self, n: int = 1) -> None:
        """Advance all members ``n`` steps (no checkpointing; see :meth:`unroll`)."""
        self.unroll(n)

    def unroll(self, n: int, *, checkpoint_every: int | None = None,
               save_every: int | None = None) -> torch.Tensor:
        """Advance ``n`` steps and return the PV.

        Parameters
        ----------
        checkpoint_every : int, optional
            With autograd on, wrap each block of this many steps in
            ``torch.utils.checkpoint`` (non-reentrant): only block boundaries are kept
            and the steps inside are recomputed during backward, so memory grows with
            ``n / checkpoint_every`` instead of ``n``.
        save_every : int, optional
            Also collect ``q`` whenever the step count ``tc`` is a multiple of
            ``save_every`` and return them stacked as ``(snapshots, members, 2, ny, nx)``.

        Returns
        -------
        The final ``q`` ``(members, 2, ny, nx)`` [s^-1], or the stacked snapshots.
        """
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        c = self.constants()
        state = (self._qh, self._q, self.dqhdt_p, self.dqhdt_pp, self._param_cache)
        saved: list[torch.Tensor] = []
        use_ckpt = checkpoint_every is not None and torch.is_grad_enabled()
        block = int(checkpoint_every) if use_ckpt else max(n, 1)
        if block < 1:
            raise ValueError("checkpoint_every must be >= 1")
        done = 0
        while done < n:
            m = min(block, n - done)
            if use_ckpt:
                state, snaps = self._checkpointed_block(m, state, c, save_every)
            else:
                clock = self._clock.copy()
                state, snaps = self._advance(m, *state, clock, c, save_every, run_hooks=True)
                self._clock = clock
            saved.extend(snaps)
            done += m
        self._qh, self._q, self.dqhdt_p, self.dqhdt_pp, self._param_cache = state
        if save_every:
            if not saved:
                return self._q.new_zeros((0,) + tuple(self._q.shape))
            return torch.stack(saved)
        return self._q

    _SCRATCH = ("ph", "uh", "vh", "u", "v", "dqhdt", "duh", "dvh", "dqh", "_qh", "_q",
                "dqhdt_p", "dqhdt_pp", "_clock")

    def _checkpointed_block(self, m, state, c, save_every):
        start = self._clock.copy()
        result_clock = []
        cache = state[4]
        n_cache = 0 if cache is None else len(cache)

        def block(qh, q, hp, hpp, *flat_cache):
            cache_in = None if n_cache == 0 else tuple(flat_cache)
            recompute = bool(result_clock)  # second call: torch is recomputing during backward
            if recompute:
                # keep the model's visible fields as they were after the forward pass
                snapshot = {k: getattr(self, k, None) for k in self._SCRATCH}
            try:
                clock = start.copy()
                (qh, q, hp, hpp, cache_out), snaps = self._advance(
                    m, qh, q, hp, hpp, cache_in, clock, c, save_every, run_hooks=not recompute)
            finally:
                if recompute:
                    for k, v in snapshot.items():
                        setattr(self, k, v)
            if not recompute:
                result_clock.append(clock)
            return qh, q, hp, hpp, cache_out, snaps

        flat = () if cache is None else tuple(cache)
        qh, q, hp, hpp, cache_out, snaps = checkpoint(block, *state[:4], *flat, use_reentrant=False,
                                                      preserve_rng_state=True)
        self._clock = result_clock[0]
        return (qh, q, hp, hpp, cache_out), snaps

    # ------------------------------------------------------------------ pyqg interop
    @classmethod
    def from_pyqg(cls, m, members: int | None = None, *, device=None, dtype: torch.dtype = torch.float64,
                  call_interval: int = 1, parameterization=None, q_parameterization=None,
                  uv_parameterization=None) -> "TorchQGModel":
        """A twin with the configuration and state of pyqg model(s) ``m``.

        ``m`` is one ``pyqg.QGModel`` (replicated over ``members``, default 1) or a
        sequence of them with identical configuration (one member each). The state
        copied is ``q``, ``qh``, the AB history ``dqhdt_p``, ``dqhdt_pp`` and the clock
        ``t``, ``tc``, ``ablevel``, so the twin continues exactly where pyqg would.
        pyqg's own (NumPy) parameterizations cannot run in torch: pass a torch one
        (e.g. from ``solver_coupling.torchqg.closures``).
        """
        models = list(m) if isinstance(m, (list, tuple)) else [m]
        if members is None:
            members = len(models)
        if len(models) > 1 and members != len(models):
            raise ValueError(f"{len(models)} pyqg models given but members={members}")
        cfgs = [_pyqg_config(x) for x in models]
        for other in cfgs[1:]:
            if other != cfgs[0]:
                diff = sorted(k for k in cfgs[0] if cfgs[0][k] != other[k])
                raise ValueError(f"pyqg models differ in configuration: {diff}")
        if any(x.ablevel != models[0].ablevel or x.tc != models[0].tc or x.t != models[0].t for x in models):
            raise ValueError("pyqg models must share the clock (t, tc, ablevel) to be stepped together")
        has_numpy_param = any(x.q_parameterization is not None or x.uv_parameterization is not None
                              for x in models)
        torch_params = dict(parameterization=parameterization, q_parameterization=q_parameterization,
                            uv_parameterization=uv_parameterization)
        if has_numpy_param and all(v is None for v in torch_params.values()):
            raise ValueError("the pyqg model has a (NumPy) parameterization; pass its torch counterpart "
                             "(parameterization=..., see solver_coupling.torchqg.closures)")
        state = np.random.get_state()  # the constructor's pyqg initial condition must not move NumPy's RNG
        try:
            twin = cls(members, device=device, dtype=dtype, call_interval=call_interval,
                       **cfgs[0], **{k: v for k, v in torch_params.items() if v is not None})
        finally:
            np.random.set_state(state)
        twin._check_against_pyqg(models[0])
        reps = 1 if len(models) > 1 else members
        stack = lambda name: torch.as_tensor(  # noqa: E731
            np.concatenate([np.asarray(getattr(x, name))[None] for x in models] * reps),
            device=twin.device)
        twin._qh = stack("qh").to(twin.cdtype)
        twin._q = stack("q").to(twin.dtype)
        twin.dqhdt_p = stack("dqhdt_p").to(twin.cdtype)
        twin.dqhdt_pp = stack("dqhdt_pp").to(twin.cdtype)
        twin.dqhdt = stack("dqhdt").to(twin.cdtype)
        twin._clock = _Clock(models[0].t, models[0].tc, models[0].ablevel)
        return twin

    def _check_against_pyqg(self, m) -> None:
        """The twin's constants must be pyqg's (catches pyqg attributes edited after construction,
        which pyqg itself does not propagate to its derived arrays)."""
        c = self.constants()
        checks = {"a": (c["a_real"][0], np.asarray(m.a).real), "filtr": (c["filtr"][0, 0], np.asarray(m.filtr)),
                  "Qy": (c["Qy"][0], np.asarray(m.Qy)), "Ubg": (c["Ubg"][0, :, 0, 0], np.asarray(m.Ubg))}
        for name, (mine, theirs) in checks.items():
            mine = mine.detach().cpu().double().numpy()
            tol = 1e-12 if self.dtype == torch.float64 else 1e-6
            if not np.allclose(mine, theirs, rtol=tol, atol=tol * np.abs(theirs).max()):
                raise ValueError(f"pyqg model's {name} does not follow from its parameters "
                                 "(were attributes changed after construction?)")

    def config(self, member: int = 0) -> dict[str, Any]:
        """pyqg keyword arguments reproducing this model (parameters of ``member``, as floats)."""
        cfg = {"nx": self.nx, "ny": self.ny, "L": self.L, "W": self.W, "dt": self.dt}
        for name in _STORED_PARAMS:
            cfg[name] = getattr(self, name)
        for name in _TENSOR_PARAMS:
            v = self._phys[name]
            if torch.is_tensor(v):
                v = v.detach().reshape(-1)
                v = float(v[member] if v.numel() > 1 else v[0])
            cfg[name] = v
        return cfg

    def to_pyqg(self, i: int = 0, **pyqg_kwargs) -> "pyqg.QGModel":
        """Member ``i`` as a real ``pyqg.QGModel`` (same configuration, state, AB history and clock).

        Stepping the returned model continues the twin's trajectory (to round-off of
        the two FFT libraries). Extra keyword arguments go to ``pyqg.QGModel`` (e.g. a
        pyqg ``parameterization``); ``ntd=1, log_level=0`` unless given.
        """
        if not 0 <= i < self.members:
            raise IndexError(f"member {i} out of range for {self.members} members")
        kw = self.config(i)
        kw.update(ntd=1, log_level=0)
        kw.update(pyqg_kwargs)
        return _make_pyqg(kw, qh=self._qh[i], q=self._q[i], dqhdt=self.dqhdt[i] if self.tc else None,
                          dqhdt_p=self.dqhdt_p[i], dqhdt_pp=self.dqhdt_pp[i],
                          t=self.t, tc=self.tc, ablevel=self.ablevel)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v if not torch.is_tensor(v) else tuple(v.shape)}" for k, v in self._phys.items())
        return (f"TorchQGModel(members={self.members}, nx={self.nx}, L={self.L:g}, dt={self.dt:g}, {ps}, "
                f"dtype={self.dtype}, device={self.device}, tc={self.tc})")


# a TorchQGModel attribute per physical parameter; assignment invalidates the cached constants
def _phys_property(name: str) -> property:
    def fget(self):
        return self._phys[name]

    def fset(self, value):
        self._phys[name] = self._check_param(name, value)
        self._consts = None

    return property(fget, fset, doc=f"pyqg parameter {name!r} (number, or tensor: scalar or one per member)")


for _name in _TENSOR_PARAMS:
    setattr(TorchQGModel, _name, _phys_property(_name))


def _split_parameterizations(param, q_param, uv_param):
    """pyqg's rule: an explicit ``parameterization`` goes to q or uv by its ``parameterization_type``
    (a plain callable counts as a q parameterization)."""
    for p in (param, q_param, uv_param):
        if isinstance(p, pyqg.parameterizations.Parameterization):
            raise TypeError(f"{p!r} is a pyqg (NumPy) parameterization; the twin needs a torch callable "
                            "(see solver_coupling.torchqg.closures)")
        if p is not None and not callable(p):
            raise TypeError(f"parameterization {p!r} is not callable")
    if param is not None:
        ptype = getattr(param, "parameterization_type", "q_parameterization")
        if ptype == "uv_parameterization":
            if uv_param is not None:
                raise ValueError("both parameterization (uv type) and uv_parameterization given")
            uv_param = param
        elif ptype == "q_parameterization":
            if q_param is not None:
                raise ValueError("both parameterization (q type) and q_parameterization given")
            q_param = param
        else:
            raise ValueError(f"unknown parameterization type {ptype!r}")
    return q_param, uv_param


def _pyqg_config(m) -> dict[str, Any]:
    """pyqg keyword arguments that rebuild model ``m`` (what the twin needs of it)."""
    cfg = {"nx": int(m.nx), "ny": int(m.ny), "L": float(m.L), "W": float(m.W), "dt": float(m.dt),
           "rek": float(m.rek), "filterfac": float(m.filterfac), "beta": float(m.beta), "rd": float(m.rd),
           "delta": float(m.delta), "H1": float(m.Hi[0]), "U1": float(m.U1), "U2": float(m.U2),
           "tmax": m.tmax, "tavestart": m.tavestart, "taveint": m.taveint, "g": m.g,
           "f": getattr(m, "f", None)}
    return cfg


# pyqg's kernel keeps t, tc and ablevel read-only; its Cython pickle state is the one
# supported way to set them. The state tuple lists the cdef attributes in sorted order
# (pyqg 0.7.2 kernel.pyx), followed by the instance __dict__.
_KERNEL_FIELDS = (
    "Qy", "Ubg", "_dummy_fft", "_dummy_fft_in", "_dummy_fft_out", "_dummy_ifft", "_dummy_ifft_in",
    "_dummy_ifft_out", "_ik", "_ikQy", "_il", "_k2l2", "a", "ablevel", "chunksize", "dq", "dqh", "dqhdt",
    "dqhdt_p", "dqhdt_pp", "dt", "du", "duh", "dv", "dvh", "fft_dq_to_dqh", "fft_du_to_duh",
    "fft_dv_to_dvh", "fft_q_to_qh", "fft_uq_to_uqh", "fft_vq_to_vqh", "filtr", "ifft_qh_to_q",
    "ifft_uh_to_u", "ifft_vh_to_v", "kk", "ll", "nk", "nl", "num_threads", "nx", "ny", "nz", "ph", "q",
    "qh", "rek", "t", "tc", "u", "uh", "uq", "uqh", "v", "vh", "vq", "vqh")


def _noop_param(m):  # only allocates pyqg's parameterization buffers (see _make_pyqg)
    raise AssertionError("placeholder parameterization must never be called")


def _set_pyqg_clock(m, t: float, tc: int, ablevel: int) -> None:
    state = list(m.__reduce__()[2])
    idx = {name: i for i, name in enumerate(_KERNEL_FIELDS)}
    ok = (len(state) == len(_KERNEL_FIELDS) + 1 and state[idx["ablevel"]] == m.ablevel
          and state[idx["tc"]] == m.tc and state[idx["t"]] == m.t and state[idx["dt"]] == m.dt
          and state[idx["rek"]] == m.rek and state[idx["nx"]] == m.nx and state[idx["nz"]] == m.nz)
    if not ok:
        raise RuntimeError("unexpected pyqg kernel layout: cannot set t/tc/ablevel of this pyqg version")
    state[idx["t"]], state[idx["tc"]], state[idx["ablevel"]] = float(t), int(tc), int(ablevel)
    m.__setstate__(tuple(state))
    if (m.t, m.tc, m.ablevel) != (float(t), int(tc), int(ablevel)):
        raise RuntimeError("setting pyqg's clock failed")


def _make_pyqg(kw: dict[str, Any], *, qh, q, dqhdt, dqhdt_p, dqhdt_pp, t, tc, ablevel):
    """Build a pyqg.QGModel from keyword arguments and load a state and clock into it."""
    q_param, uv_param = kw.pop("q_parameterization", None), kw.pop("uv_parameterization", None)
    param = kw.pop("parameterization", None)
    if param is not None:
        if param.parameterization_type == "uv_parameterization":
            uv_param = param
        else:
            q_param = param
    np_state = np.random.get_state()  # pyqg draws its initial PV from NumPy's global generator
    try:
        # placeholders make pyqg allocate every kernel buffer, which its pickle state needs
        m = pyqg.QGModel(q_parameterization=_noop_param, uv_parameterization=_noop_param, **kw)
    finally:
        np.random.set_state(np_state)
    m.q_parameterization, m.uv_parameterization = q_param, uv_param
    as_np = lambda x: x.detach().cpu().to(torch.complex128 if x.is_complex() else torch.float64).numpy()  # noqa
    m.qh = as_np(qh)               # setter: copies qh (and computes q with FFTW) ...
    np.asarray(m.q)[...] = as_np(q)  # ... then the twin's grid q verbatim, as pyqg stores both
    np.asarray(m.dqhdt_p)[...] = as_np(dqhdt_p)
    np.asarray(m.dqhdt_pp)[...] = as_np(dqhdt_pp)
    if dqhdt is not None:
        np.asarray(m.dqhdt)[...] = as_np(dqhdt)
    _set_pyqg_clock(m, t, tc, ablevel)
    return m
