"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): BG=slope|zonal: the network's background taken from b's slope."""
# BG=slope: the network's background shear from the wet-mean meridional slope of b (not from u), b minus that slope
# BG=zonal: ... and also the zonal means of b, u, v removed from what the network sees
import os, sys, runpy, numpy as np
from solver_coupling.veros import closure as C
bg = os.environ.get("BG", "")
orig = C.VerosClosure.read_state
def read_state(self, state):
    cg = orig(self, state)
    m = self.mask
    b_tot = np.where(m, cg.b - (cg.U[0] - cg.U[1]) * self.y_anomaly, 0.0)
    y = self.y_anomaly
    s = (b_tot[m] * y[m]).sum() / (y[m] ** 2).sum()
    b = np.where(m, b_tot - s * y, 0.0)
    b = np.where(m, b - b[m].mean(), 0.0)
    u, v = cg.u, cg.v
    if bg == "zonal":
        ny = self.ny
        b[:ny] -= b[:ny].mean(axis=1, keepdims=True)
        u = u.copy(); u[:, :ny] -= u[:, :ny].mean(axis=2, keepdims=True)
        v = v.copy(); v[:, 1:ny] -= v[:, 1:ny].mean(axis=2, keepdims=True)
    U = np.array([cg.U[1] - s, cg.U[1]])
    return C.CGridState(u, v, b, U)
C.VerosClosure.read_state = read_state
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
