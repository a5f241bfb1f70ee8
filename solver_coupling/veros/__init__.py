"""The roteq-param closure inside Veros, the C-grid primitive-equation ocean model (docs/veros.md).

:class:`VerosClosure` is the plugin a ``VerosSetup`` calls from ``set_forcing``;
:class:`ChannelSetup` is a beta-plane channel in the regime the shipped networks were trained in.
The solver-free pieces it rests on live in :mod:`solver_coupling.cgrid`, which never imports this.
"""

from solver_coupling.veros.channel import CHANNEL_DEFAULTS, ChannelSetup
from solver_coupling.veros.closure import CGridState, VerosClosure, VerosClosureError, VerosSources

__all__ = ["CHANNEL_DEFAULTS", "ChannelSetup", "CGridState", "VerosClosure", "VerosClosureError", "VerosSources"]
