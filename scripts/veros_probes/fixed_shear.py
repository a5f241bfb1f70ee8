"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): SHEAR=x: the network is always given the background
shear U_1 - U_2 = x [m/s] (default 0.025, pyqg's), not the one read from Veros's velocities."""
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A
shear = float(os.environ.get("SHEAR", "0.025"))
orig = A.NetworkClosure.__call__
def call(self, u, v, b):
    self.U = np.array([[shear, 0.0], [0.0, 0.0]])
    return orig(self, u, v, b)
A.NetworkClosure.__call__ = call
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
