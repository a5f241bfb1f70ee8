"""Which shipped closure the plugin's defaults run for a given pyqg solver.

``trained_models/defaults.json`` lists the shipped closures in the order they are tried, with why each
is there. The first whose own check accepts the solver (grid, layers, physical regime; a network also
up to an exact element of its group, e.g. eddy turned through 180 degrees) is the one
``RotEqParameterization()`` and ``roteq rollout`` run without being told a model. A solver no shipped
closure accepts is refused with every closure's reason, so a user sees what is covered and what to
train (``docs/retraining.md``).

The order encodes measured skill: where two closures accept a configuration, the first is the one that
scored better there online (docs/results.md). Each check is the closure's own
(:meth:`RotEqParameterization.check_solver`, :meth:`OperatorParameterization.check_solver`), so the
selection accepts exactly what the closure, loaded by name, would run without a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyqg

from roteq_param.models import TRAINED_MODELS_DIR
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import OUT_OF_REGIME_MEASURED, ModelMismatchError, RotEqParameterization
from solver_coupling.torchqg.operator_family import is_operator

__all__ = ["DEFAULTS_FILE", "Choice", "default_closures", "choose_closure", "shipped_parameterization"]

DEFAULTS_FILE = TRAINED_MODELS_DIR / "defaults.json"


@dataclass(frozen=True)
class Choice:
    """The shipped closure chosen for a solver, its plugin object (checked against that solver) and the
    reasons the closures before it declined."""

    name: str
    parameterization: RotEqParameterization | OperatorParameterization
    declined: tuple[str, ...]


def default_closures() -> list[str]:
    """The shipped closures the defaults choose from, in the order they are tried."""
    try:
        return [entry["model"] for entry in json.loads(DEFAULTS_FILE.read_text())["closures"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{DEFAULTS_FILE} is missing or damaged ({e}); restore it from git") from None


def shipped_parameterization(name: str, **kwargs) -> RotEqParameterization | OperatorParameterization:
    """The pyqg plugin object of a shipped closure by name: an operator closure or family, else a network
    (``kwargs`` go to :class:`RotEqParameterization`)."""
    if is_operator(name):
        return OperatorParameterization(name)
    return RotEqParameterization(name, **kwargs)


def choose_closure(m: pyqg.QGModel, **kwargs: Any) -> Choice:
    """The first default closure that accepts the solver ``m`` (raises :class:`ModelMismatchError` naming
    each closure's reason when none does); ``kwargs`` go to a network's :class:`RotEqParameterization`."""
    declined = []
    for name in default_closures():
        param = shipped_parameterization(name, **kwargs)
        try:
            param.check_solver(m)
        except ModelMismatchError as e:
            # the measured warning and the remedy are said once, below, not per closure
            declined.append(f"{name}: {str(e).split('; ' + OUT_OF_REGIME_MEASURED)[0].split('. Train')[0]}")
            continue
        return Choice(name, param, tuple(declined))
    # a LayeredModel has rd and delta attributes set to None: show only the settings this solver has
    shown = ", ".join(f"{k} = {getattr(m, k):g}" for k in ("nx", "nz", "beta", "rek", "rd", "delta")
                      if isinstance(getattr(m, k, None), (int, float)))
    raise ModelMismatchError(
        f"no shipped closure covers this solver ({shown}):\n  - "
        + "\n  - ".join(declined)
        + "\nTrain a closure on this configuration's data (docs/retraining.md) and pass its folder, or name a "
          "shipped closure with allow_out_of_regime=True to run one anyway")
