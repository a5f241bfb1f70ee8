"""pyqg's time-averaged spectral diagnostics for a :class:`TorchQGModel`, per member.

:class:`SpectralDiagnostics` hooks into the model's step at the point where pyqg's
``Model._calc_diagnostics`` runs (tendency complete, before the AB3 update), applies
pyqg's sampling rule (``t >= dt and t >= tavestart and tc % ceil(taveint/dt) == 0``,
with the model's ``tavestart``/``taveint``) and accumulates the same formulas as
``pyqg/model.py`` (``_initialize_core_diagnostics``), ``pyqg/qg_diagnostics.py`` and
``pyqg/qg_model.py`` (``_calc_derived_fields``, ``_initialize_model_diagnostics``),
including their ``1/M^2`` normalisation (``M = nx ny``). ``get(name)`` is the running
mean, with a leading member axis, directly comparable to ``m.get_diagnostic(name)``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

__all__ = ["SpectralDiagnostics", "DIAGNOSTICS"]

# name -> (units, dims after the member axis, description), as pyqg declares them
DIAGNOSTICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "Ensspec": ("s^-2", ("lev", "l", "k"), "enstrophy spectrum"),
    "KEspec": ("m^2 s^-2", ("lev", "l", "k"), "kinetic energy spectrum"),
    "EKEdiss": ("m^2 s^-3", (), "total energy dissipation by bottom drag"),
    "KEfrictionspec": ("m^2 s^-3", ("l", "k"), "total energy dissipation spectrum by bottom drag"),
    "EKE": ("m^2 s^-2", ("lev",), "mean eddy kinetic energy"),
    "Dissspec": ("m^2 s^-3", ("l", "k"), "spectral contribution of filter dissipation to total energy"),
    "ENSDissspec": ("s^-3", ("l", "k"), "spectral contribution of filter dissipation to barotropic enstrophy"),
    "paramspec": ("m^2 s^-3", ("l", "k"), "spectral contribution of subgrid parameterization (if present)"),
    "entspec": ("m s^-2", ("l", "k"), "barotropic enstrophy spectrum"),
    "paramspec_APEflux": ("m^2 s^-3", ("l", "k"), "total additional APE flux due to subgrid parameterization"),
    "paramspec_KEflux": ("m^2 s^-3", ("l", "k"), "total additional KE flux due to subgrid parameterization"),
    "ENSflux": ("s^-3", ("l", "k"), "barotropic enstrophy flux"),
    "ENSgenspec": ("s^-3", ("l", "k"), "spectrum of the rate of generation of barotropic enstrophy"),
    "ENSfrictionspec": ("s^-3", ("l", "k"), "spectrum of barotropic enstrophy dissipation by bottom friction"),
    "APEgenspec": ("m^2 s^-3", ("l", "k"), "spectrum of the rate of generation of available potential energy"),
    "APEflux": ("m^2 s^-3", ("l", "k"), "spectral flux of available potential energy"),
    "KEflux": ("m^2 s^-3", ("l", "k"), "spectral flux of kinetic energy"),
    "APEgen": ("m^2 s^-3", (), "total available potential energy generation"),
}


def _p(x: torch.Tensor, nd: int) -> torch.Tensor:
    """A per-member parameter ``(P,)`` shaped to broadcast against ``(members, *nd axes)``."""
    return x.reshape((-1,) + (1,) * nd)


class _Fields:
    """The model's fields at hook time plus pyqg's ``_calc_derived_fields`` (QGModel)."""

    def __init__(self, m):
        c = m.constants()
        self.m, self.c = m, c
        self.qh, self.ph, self.q, self.u, self.v = m.qh, m.ph, m.q, m.u, m.v
        self.M2 = float(m.M) ** 2
        self.Hi, self.H = c["Hi"], c["H"]  # (P, 2), (P,)
        self.hr = self.Hi / self.H[:, None]  # height ratios Hi / H
        F1, F2 = c["F1"], c["F2"]
        # stretching matrix S = [[-F1, F1], [F2, -F2]] applied to a layer pair (QGModel.S)
        self.S = lambda x: torch.stack([-_p(F1, 2) * x[:, 0] + _p(F1, 2) * x[:, 1],
                                        _p(F2, 2) * x[:, 0] - _p(F2, 2) * x[:, 1]], 1)
        a = c["a"]
        self.invert = lambda x: a[:, :, 0] * x[:, 0:1] + a[:, :, 1] * x[:, 1:2]
        self.del1, self.del2 = c["del1"], c["del2"]
        self._cache: dict[str, torch.Tensor] = {}

    def _advect(self, q, u, v):
        m = self.m
        return m.ik * m.fft(u * q) + m.il * m.fft(v * q)

    def __getattr__(self, name):  # lazily computed derived fields, shared between diagnostics
        if name.startswith("_") or name not in ("p", "xi", "Jptpc", "Jpxi", "Jq", "Sph", "param_dqh"):
            raise AttributeError(name)
        if name not in self._cache:
            self._cache[name] = getattr(self, "_calc_" + name)()
        return self._cache[name]

    def _calc_p(self):
        return self.m.ifft(self.ph)

    def _calc_xi(self):
        return self.m.ifft(-self.m.wv2 * self.ph)

    def _calc_Jptpc(self):
        d1, d2 = _p(self.del1, 2), _p(self.del2, 2)
        u, v = self.u, self.v
        return -self._advect(self.p[:, 0] - self.p[:, 1], d1 * u[:, 0] + d2 * u[:, 1], d1 * v[:, 0] + d2 * v[:, 1])

    def _calc_Jpxi(self):
        return self._advect(self.xi, self.u, self.v)

    def _calc_Jq(self):
        return self._advect(self.q, self.u, self.v)

    def _calc_Sph(self):
        return self.S(self.ph)

    def _calc_param_dqh(self):
        # Model._calc_parameterization_contribution: the parameterization's PV tendency in spectral space
        m = self.m
        dqh = torch.zeros_like(self.qh)
        if m.uv_parameterization is not None:
            dqh = dqh + (-m.il * m.duh + m.ik * m.dvh)
        if m.q_parameterization is not None:
            dqh = dqh + m.dqh
        return dqh

    def paramspec_contribution(self, term):
        # QGDiagnostics._calc_paramspec_contribution
        return torch.real(self.hr[:, :, None, None] * self.ph.conj() * term).sum(1) / self.M2

    def dissipation_spectrum(self):
        m, dt = self.m, self.m.dt
        if m.ablevel == 0:
            dt1, dt2, dt3 = dt, 0.0, 0.0
        elif m.ablevel == 1:
            dt1, dt2, dt3 = 1.5 * dt, -0.5 * dt, 0.0
        else:
            dt1, dt2, dt3 = 23.0 / 12.0 * dt, -16.0 / 12.0 * dt, 5.0 / 12.0 * dt
        return (self.c["filtr"] - 1.0) * (self.qh + dt1 * m.dqhdt + dt2 * m.dqhdt_p + dt3 * m.dqhdt_pp)


def _layer_sum(weights, x):
    """sum_z weights[z] x[:, z] for weights (P, 2) and x (members, 2, ...)."""
    return (weights.reshape(weights.shape + (1,) * (x.dim() - 2)) * x).sum(1)


def _apegen(f: _Fields) -> torch.Tensor:
    m, c = f.m, f.c
    d1, d2 = _p(f.del1, 2), _p(f.del2, 2)
    ph0, ph1 = f.ph[:, 0], f.ph[:, 1]
    ik = m.ik
    full = (ik * (d1 * ph0 + d2 * ph1) * torch.conj(ph0 - ph1)).sum((-1, -2))
    # pyqg adds the columns 1 .. nk-3 a second time (its k[:, 1:-2] term), kept verbatim
    part = (ik[:, 1:-2] * (d1 * ph0[..., 1:-2] + d2 * ph1[..., 1:-2]) * torch.conj(ph0[..., 1:-2] - ph1[..., 1:-2])
            ).sum((-1, -2))
    return c["U"] * c["rd"] ** -2 * f.del1 * f.del2 * torch.real(full + part) / f.M2


_FORMULAS: dict[str, Callable[[_Fields], torch.Tensor]] = {
    "Ensspec": lambda f: torch.abs(f.qh) ** 2 / f.M2,
    "KEspec": lambda f: f.m.wv2 * torch.abs(f.ph) ** 2 / f.M2,
    "EKEdiss": lambda f: (f.Hi[:, -1] / f.H * f.c["rek"]
                          * (f.v[:, -1] ** 2 + f.u[:, -1] ** 2).mean((-1, -2))),
    "KEfrictionspec": lambda f: (_p(-f.c["rek"] * f.Hi[:, -1] / f.H, 2) * f.m.wv2
                                 * torch.abs(f.ph[:, -1]) ** 2 / f.M2),
    "EKE": lambda f: 0.5 * (f.v**2 + f.u**2).mean(-1).mean(-1),
    "Dissspec": lambda f: -torch.real(_layer_sum(f.Hi, torch.conj(f.ph) * f.dissipation_spectrum())
                                      ) / _p(f.H, 2) / f.m.dt / f.M2,
    "ENSDissspec": lambda f: torch.real(_layer_sum(f.Hi, torch.conj(f.qh) * f.dissipation_spectrum())
                                        ) / _p(f.H, 2) / f.m.dt / f.M2,
    "paramspec": lambda f: -torch.real(_layer_sum(f.hr, torch.conj(f.ph) * f.param_dqh)) / f.M2,
    "entspec": lambda f: torch.abs(_layer_sum(f.Hi, f.qh) / _p(f.H, 2)) ** 2 / f.M2,
    "paramspec_APEflux": lambda f: -f.paramspec_contribution(f.S(f.invert(f.param_dqh))),
    "paramspec_KEflux": lambda f: f.m.wv2 * f.paramspec_contribution(f.invert(f.param_dqh)),
    "ENSflux": lambda f: _layer_sum(-f.Hi, torch.real(torch.conj(f.qh) * f.Jq)) / _p(f.H, 2) / f.M2,
    # pyqg: (ilQx - ikQy) with ilQx = 0 and ikQy = Qy_z * 1j * k
    "ENSgenspec": lambda f: _layer_sum(f.Hi, torch.real(-_ikQy(f) * torch.conj(f.Sph) * f.ph)) / _p(f.H, 2) / f.M2,
    "ENSfrictionspec": lambda f: (_p(f.c["rek"] * f.Hi[:, -1] / f.H, 2) * f.m.wv2
                                  * torch.real(torch.conj(f.qh[:, -1]) * f.ph[:, -1]) / f.M2),
    "APEgenspec": lambda f: _layer_sum(f.Hi, f.c["Ubg"] * f.m.k * torch.real(1j * torch.conj(f.ph) * f.Sph)
                                       ) / _p(f.H, 2) / f.M2,
    "APEflux": lambda f: (_p(f.c["rd"] ** -2 * f.del1 * f.del2, 2)
                          * torch.real((f.ph[:, 0] - f.ph[:, 1]) * torch.conj(f.Jptpc)) / f.M2),
    "KEflux": lambda f: (torch.real(_p(f.del1, 2) * f.ph[:, 0] * torch.conj(f.Jpxi[:, 0]))
                         + torch.real(_p(f.del2, 2) * f.ph[:, 1] * torch.conj(f.Jpxi[:, 1]))) / f.M2,
    "APEgen": _apegen,
}


def _ikQy(f: _Fields) -> torch.Tensor:
    # QGModel.ikQy = Qy_z * 1j * k on the full (l, k) grid, shape (P, 2, nl, nk)
    k = f.m.k
    kQy = f.c["Qy"][:, :, None, None] * k
    return torch.complex(torch.zeros_like(kQy), kQy)


class SpectralDiagnostics:
    """Accumulate pyqg's diagnostics of a :class:`TorchQGModel` over its steps.

    Parameters
    ----------
    model : TorchQGModel
        The model to watch; the accumulator registers itself as a step hook.
    names : iterable of str, optional
        Which diagnostics (default: all of :data:`DIAGNOSTICS`).
    detach : bool
        Accumulate without autograd (default). ``False`` keeps the graph, e.g. for a
        loss on time-mean spectra over a short unroll.
    """

    def __init__(self, model, names: Iterable[str] | None = None, *, detach: bool = True):
        names = list(DIAGNOSTICS) if names is None else list(names)
        unknown = [n for n in names if n not in DIAGNOSTICS]
        if unknown:
            raise ValueError(f"unknown diagnostics {unknown}; available: {sorted(DIAGNOSTICS)}")
        self.model, self.names, self.detach = model, names, detach
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        model.add_step_hook(self._hook)

    def _due(self, m) -> bool:
        # Model._calc_diagnostics; pyqg computes taveints = ceil(taveint / dt) once at start
        taveints = math.ceil(m.taveint / m.dt)
        return m.t >= m.dt and m.t >= m.tavestart and m.tc % taveints == 0

    def _hook(self, m) -> None:
        if not self._due(m):
            return
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach):
            f = _Fields(m)
            for name in self.names:
                value = _FORMULAS[name](f).to(torch.float64)
                self.sums[name] = value if self.count == 0 else self.sums[name] + value
        self.count += 1

    def get(self, name: str) -> torch.Tensor:
        """Time mean of diagnostic ``name``, shape ``(members, *dims)`` (see :data:`DIAGNOSTICS`)."""
        if name not in self.names:
            raise KeyError(f"diagnostic {name!r} is not accumulated here; have {self.names}")
        if self.count == 0:
            raise RuntimeError(f"diagnostic {name!r} has no samples yet (check tavestart/taveint)")
        return self.sums[name] / self.count

    get_diagnostic = get

    def reset(self) -> None:
        self.sums, self.count = {}, 0

    def close(self) -> None:
        """Stop accumulating (removes the step hook)."""
        self.model.remove_step_hook(self._hook)
