"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): TAPER: S zeroed next to the walls."""
# TAPER=n: the network's PV forcing S set to 0 on the n corner rows next to each wall (balanced injection);
# the model's grid damping term (added after pv_forcing) is kept everywhere
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import balanced as B
n = int(os.environ.get("TAPER", "0"))
orig = B.ChannelBalance.pv_forcing
def pv(self, du, dv, db):
    S = orig(self, du, dv, db)
    S[:, : n + 1] = 0.0
    S[:, self.ny - n :] = 0.0
    return S
B.ChannelBalance.pv_forcing = pv
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
