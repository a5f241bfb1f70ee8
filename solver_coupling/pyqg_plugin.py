"""Deprecated import path (until 0.3): the pyqg plugin now lives in :mod:`solver_coupling.pyqg.plugin`."""

import warnings

from solver_coupling.pyqg.plugin import (Ensemble, ModelFileChangedError, ModelMismatchError, OutOfRegimeWarning,
                                         RotEqParameterization)

warnings.warn("solver_coupling.pyqg_plugin is deprecated; import from solver_coupling.pyqg.plugin "
              "(RotEqParameterization, Ensemble, ...) instead", DeprecationWarning, stacklevel=2)

__all__ = ["RotEqParameterization", "Ensemble", "ModelMismatchError", "ModelFileChangedError", "OutOfRegimeWarning"]
