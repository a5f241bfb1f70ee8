"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): MASS=uniform|none: how the balanced injection conserves heat."""
# MASS=uniform: the balanced injection with the mass constraint met by a uniform db shift (dynamically inert in Veros)
# MASS=none: no mass constraint (Dirichlet dpsi = 0 on both walls)
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import balanced as B
mode = os.environ.get("MASS", "mode")
orig_inv = B.ChannelBalance.invert
orig_t = B.ChannelBalance.tendencies
cnt = [0]
def invert(self, S):
    d = orig_inv(self, S)
    alpha = (d[0, 0, 0] / self._mode[0, 0, 0])
    cnt[0] += 1
    if cnt[0] % 48 == 0:
        print("  alpha*mode max", abs(alpha) * np.abs(self._mode).max(), "dpsi max", np.abs(d - alpha * self._mode).max(), flush=True)
    return d - alpha * self._mode if mode in ("uniform", "none") else d
def tend(self, dpsi):
    du, dv, db = orig_t(self, dpsi)
    if mode == "uniform":
        db[: self.ny] -= db[: self.ny].mean()
    return du, dv, db
B.ChannelBalance.invert = invert
B.ChannelBalance.tendencies = tend
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
