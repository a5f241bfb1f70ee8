"""pyqg's built-in closures as named baselines, for rollouts and evaluation next to the network.

``backscatter``: ``BackscatterBiharmonic(sqrt(0.007), 1.2)``, the tuning Ross et al. (2023) report for
the eddy configuration (the best published closure online there: mean similarity ~0.75).
``smagorinsky``: ``Smagorinsky(0.08)`` (their constant; negative similarity there).

Both engines get the same closure: pyqg's own class on the pyqg engine, its term-by-term torch port
(:mod:`solver_coupling.torchqg.closures`) on the torch twin.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["BASELINES", "pyqg_baseline", "torch_baseline"]

BASELINES: dict[str, tuple[str, dict[str, float]]] = {
    "backscatter": ("BackscatterBiharmonic", {"smag_constant": math.sqrt(0.007), "back_constant": 1.2}),
    "smagorinsky": ("Smagorinsky", {"constant": 0.08}),
}
"""Baseline name -> (closure class name, shared by pyqg and the torch port; its arguments)."""


def pyqg_baseline(name: str) -> Any:
    """pyqg's own closure for a baseline name."""
    import pyqg

    cls, kwargs = BASELINES[name]
    return getattr(pyqg.parameterizations, cls)(**kwargs)


def torch_baseline(name: str) -> Any:
    """The torch port of the same closure, for :class:`~solver_coupling.torchqg.TorchQGModel`."""
    from solver_coupling.torchqg import closures

    cls, kwargs = BASELINES[name]
    return getattr(closures, cls)(**kwargs)
