"""Torch versions of pyqg's built-in closures, for baselines in :class:`TorchQGModel`.

Same formulas, in the same order, as ``pyqg/parameterizations.py`` (0.7.2), batched
over members: every reduction is over a member's own grid and layers, so members
stay independent. Like pyqg's, each class declares ``parameterization_type``:

* :class:`Smagorinsky` is a *velocity* parameterization: it returns ``(du, dv)`` in
  m s^-2, which the model turns into the PV tendency ``-il du_h + ik dv_h``, as pyqg.
* :class:`BackscatterBiharmonic` is a *PV* parameterization: it returns ``dq`` in s^-2.

Pass either as ``TorchQGModel(parameterization=...)``; the model routes it by type.
"""

from __future__ import annotations

import torch

__all__ = ["Smagorinsky", "BackscatterBiharmonic"]


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
