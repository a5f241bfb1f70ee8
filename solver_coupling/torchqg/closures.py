"""Torch versions of pyqg's built-in closures, for baselines in :class:`TorchQGModel`.

Same formulas, in the same order, as ``pyqg/parameterizations.py`` (0.7.2), batched
over members: every reduction is over a member's own grid and layers, so members
stay independent. Like pyqg's, each class declares ``parameterization_type``:

* :class:`Smagorinsky` is a *velocity* parameterization: it returns ``(du, dv)`` in
  m s^-2, which the model turns into the PV tendency ``-il du_h + ik dv_h``, as pyqg.
* :class:`BackscatterBiharmonic` is a *PV* parameterization: it returns ``dq`` in s^-2.

Pass either as ``TorchQGModel(parameterization=...)``; the model routes it by type.

:class:`FluxNetClosure` puts the project's trained equivariant network into the twin's graph, on
the twin's device, through the same :class:`~roteq_param.forcing.PVForcing` as the pyqg hook.
"""

from __future__ import annotations

import os

import torch

from roteq_param import fields, fluxform, models
from roteq_param.fluxform import Stratification
from roteq_param.forcing import PVForcing

__all__ = ["Smagorinsky", "BackscatterBiharmonic", "FluxNetClosure"]


class FluxNetClosure:
    """A trained flux network as an in-graph PV parameterization of :class:`TorchQGModel`.

    Parameters
    ----------
    model:
        A model name under ``trained_models/``, a model directory, or a :class:`~roteq_param.models.FluxNet`.
    dtype:
        Inference precision (default float32; the twin keeps its own precision for the state).
    differentiable:
        False (default): the exact, cheap inference path (:class:`~roteq_param.models.Predictor`, no
        autograd). True: the :class:`FluxNet` itself runs in the graph, so gradients of a loss on the
        twin's trajectory reach the network's weights (put the net in ``train()`` mode: escnn caches
        its filters outside autograd in eval mode).

    The network sees what the pyqg hook gives it: velocity and ``b = psi_1 - psi_2`` from the twin's
    spectral streamfunction, beta = (0, beta) and U_i = (U_i, 0) per member; the returned forcing is
    ``S`` in s^-2, shape ``(members, 2, ny, nx)``. Use ``TorchQGModel(call_interval=k)`` to reuse it.
    """

    parameterization_type = "q_parameterization"

    def __init__(self, model: "str | os.PathLike | models.FluxNet" = models.DEFAULT_MODEL, *,
                 dtype: torch.dtype = torch.float32, differentiable: bool = False):
        self.net = model if isinstance(model, models.FluxNet) else models.load_model(model)
        self.dtype = dtype
        self.differentiable = differentiable
        self._forcing: PVForcing | None = None
        self._bound: tuple | None = None

    def _bind(self, m) -> PVForcing:
        rd, delta, rek = (m.param(k) for k in ("rd", "delta", "rek"))
        if rd.numel() != 1 or delta.numel() != 1:
            raise ValueError("FluxNetClosure needs one rd and one delta for all members (the forcing operator's "
                             "stretching coefficients are shared)")
        regime = fields.qg_has_regime(self.net.schema)
        if regime and rek.numel() != 1:
            raise ValueError("FluxNetClosure with a network that sees the regime needs one rek for all members "
                             "(its drag input is shared)")
        key = (m.device, m.nx, float(m.L), float(rd), float(delta), float(rek) if regime else None)
        if self._bound != key:
            F1, F2 = fluxform.stretching_coefficients(float(rd), float(delta))
            if self.differentiable:
                # gradients must reach this very network, so it is not copied; escnn shares bases
                # between networks, so it is not converted in place either (FluxNet.converted)
                if self.net.in_scale.dtype != self.dtype or self.net.in_scale.device != torch.device(m.device):
                    raise ValueError(f"a differentiable closure runs the network as it is: it is "
                                     f"{self.net.in_scale.dtype} on {self.net.in_scale.device}, the closure wants "
                                     f"{self.dtype} on {m.device}; pass net.converted({self.dtype}, '{m.device}')")
                network = self.net
            else:
                network = models.Predictor(self.net, device=m.device, dtype=self.dtype)
            self._forcing = PVForcing(network, strat=Stratification.two_layer(F1, F2), L=float(m.L), n=m.nx,
                                      drag=float(rek) if regime else None)
            self._bound = key
        return self._forcing

    def __call__(self, m) -> torch.Tensor:
        forcing = self._bind(m)
        zeros = torch.zeros(m.members, dtype=torch.float64, device=m.device)
        beta = torch.stack([zeros, m.param("beta").to(torch.float64).expand(m.members)], dim=-1)
        U = torch.stack([torch.stack([m.param(k).to(torch.float64).expand(m.members), zeros], dim=-1)
                         for k in ("U1", "U2")], dim=-2)
        # a member that went non-finite is the rollout monitor's business; the network sees zeros
        # for it, so the batch's other members are not refused
        finite = torch.isfinite(torch.view_as_real(m.ph)).flatten(1).all(1)
        ph = m.ph if bool(finite.all()) else torch.where(finite[:, None, None, None], m.ph, torch.zeros_like(m.ph))
        return forcing.from_spectral(ph, beta, U)


class Smagorinsky:
    r"""Smagorinsky (1963) eddy viscosity, pyqg's ``Smagorinsky(constant)``.

    ``nu = (C_S dx)^2 sqrt(2 (S_xx^2 + S_yy^2 + 2 S_xy^2))`` [m^2 s^-1] and
    ``du = 2 (d_x(nu S_xx) + d_y(nu S_xy))``, ``dv = 2 (d_x(nu S_xy) + d_y(nu S_yy))`` [m s^-2].
    """

    parameterization_type = "uv_parameterization"

    def __init__(self, constant: float = 0.1):
        self.constant = constant

    def __call__(self, m, just_viscosity: bool = False):
        # pyqg re-transforms the grid velocities (not m.uh): keep that for round-off fidelity
        uh = m.fft(m.u)
        vh = m.fft(m.v)
        Sxx = m.ifft(uh * m.ik)
        Syy = m.ifft(vh * m.il)
        Sxy = 0.5 * m.ifft(uh * m.il + vh * m.ik)
        nu = (self.constant * m.dx) ** 2 * torch.sqrt(2 * (Sxx**2 + Syy**2 + 2 * Sxy**2))
        if just_viscosity:
            return nu
        nu_Sxxh = m.fft(nu * Sxx)
        nu_Sxyh = m.fft(nu * Sxy)
        nu_Syyh = m.fft(nu * Syy)
        du = 2 * (m.ifft(nu_Sxxh * m.ik) + m.ifft(nu_Sxyh * m.il))
        dv = 2 * (m.ifft(nu_Sxyh * m.ik) + m.ifft(nu_Syyh * m.il))
        return du, dv

    def __repr__(self) -> str:
        return f"Smagorinsky(Cs={self.constant})"


class BackscatterBiharmonic:
    r"""Jansen & Held (2014) backscatter, pyqg's ``BackscatterBiharmonic(smag_constant, back_constant)``.

    A Smagorinsky-scaled biharmonic dissipation of PV plus a negative-viscosity
    biharmonic term that returns the fraction ``C_B`` of the dissipated energy
    (ratio computed per member over its layers, weighted by ``Hi``). Returns
    ``dq`` [s^-2] of shape ``(members, 2, ny, nx)``.
    """

    parameterization_type = "q_parameterization"

    def __init__(self, smag_constant: float = 0.08, back_constant: float = 0.99, eps: float = 1e-32):
        self.smagorinsky = Smagorinsky(smag_constant)
        self.back_constant = back_constant
        self.eps = eps

    def __call__(self, m):
        # (ik)^2 as a complex product, like NumPy's square of pyqg's complex m.ik
        lap = m.ik * m.ik + m.il * m.il
        psi = m.ifft(m.ph)
        lap_lap_psi = m.ifft(lap * lap * m.ph)
        dissipation = -m.ifft(lap * m.fft(lap_lap_psi * m.dx**2 * self.smagorinsky(m, just_viscosity=True)))
        # pyqg: sum(Hi * mean(., axis=(-1, -2))): the mean over one member's grid, the sum over its layers
        Hi = m.Hi  # (1 or members, 2)
        num = (Hi * torch.mean(psi * dissipation, dim=(-1, -2))).sum(-1)
        den = (Hi * torch.mean(psi * lap_lap_psi, dim=(-1, -2))).sum(-1) + self.eps
        backscatter = -self.back_constant * lap_lap_psi * (num / den)[:, None, None, None]
        return dissipation + backscatter

    def __repr__(self) -> str:
        return f"BackscatterBiharmonic(Cs={self.smagorinsky.constant}, Cb={self.back_constant})"
