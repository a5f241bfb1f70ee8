"""A batched, differentiable torch twin of pyqg's two-layer QGModel (see README.md here).

* :class:`TorchQGModel` (``model.py``): the solver, pyqg's step term by term.
* ``closures.py``: torch versions of pyqg's Smagorinsky and BackscatterBiharmonic.
* ``diagnostics.py``: pyqg's time-averaged spectral diagnostics, per member.
"""

from .model import TorchQGModel, pyqg_parameter_names

__all__ = ["TorchQGModel", "pyqg_parameter_names"]
