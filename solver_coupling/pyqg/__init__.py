"""pyqg coupling: the timestep-hook plugin, data generation, rollouts, evaluation and benchmarks.

Everything that knows pyqg's internals lives in this package; the core (``roteq_param``)
never imports it.
"""

from solver_coupling.pyqg.output import SnapshotWriter, save_run

__all__ = ["SnapshotWriter", "save_run"]
