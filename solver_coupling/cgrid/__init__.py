"""Arakawa C-grid coupling: numba staggering kernels and the generic C-grid adapter.

Solver-agnostic on purpose (an import contract forbids pyqg here): any C-grid model can hand
its face velocities and centre tracers to :class:`CGridAdapter`.
"""

from solver_coupling.cgrid.adapter import CGridAdapter, CGridTendencies, FluxModel, GradientModel, NetworkClosure
from solver_coupling.cgrid.balanced import ChannelBalance

__all__ = ["CGridAdapter", "CGridTendencies", "ChannelBalance", "FluxModel", "GradientModel", "NetworkClosure"]
