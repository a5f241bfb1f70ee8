"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): the closure path with a flux model that returns zeros (the bare growth)."""
# the channel with a closure whose flux model returns zeros (the same code path, no forcing): the bare growth
import sys, numpy as np, runpy
from solver_coupling.veros import closure as C
orig_init = C.VerosClosure.__init__
def init(self, model, **kw):
    zero = lambda u, v, b: (np.zeros((u.shape[0], 3, *u.shape[1:])), np.zeros((u.shape[0], 2, *u.shape[1:])))
    orig_init(self, model, flux_model=zero, **kw)
C.VerosClosure.__init__ = init
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
