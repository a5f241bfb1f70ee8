"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): LAYER=1|2: Veros gets the closure's velocity
sources on that layer's levels only (the other layer's are set to 0; the temperature source is kept)."""
import os, sys, runpy, numpy as np
from solver_coupling.veros import closure as C
layer = int(os.environ.get("LAYER", "1"))
orig = C.VerosClosure.tendencies
def tend(self, state):
    s = orig(self, state)
    u, v = np.array(s.u_source), np.array(s.v_source)
    other = self.groups.levels[2 - layer]
    u[..., other] = 0.0
    v[..., other] = 0.0
    return C.VerosSources(u, v, s.temp_source)
C.VerosClosure.tendencies = tend
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
