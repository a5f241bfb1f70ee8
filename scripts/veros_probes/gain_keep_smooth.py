"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): GAIN, KEEP, SMOOTH on the balanced injection (see the first comment)."""
# GAIN: scale the network's fluxes; KEEP=b|m: of the balanced result keep only db or only (du, dv);
# SMOOTH=n: n 1-2-1 passes (x and y) on S at interior corners before the inversion
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A, balanced as B
gain = float(os.environ.get("GAIN", "1")); keep = os.environ.get("KEEP", ""); smooth = int(os.environ.get("SMOOTH", "0"))
orig = A.NetworkClosure.__call__
def call(self, u, v, b):
    tau, fb = orig(self, u, v, b)
    return tau * gain, fb * gain
A.NetworkClosure.__call__ = call
orig_bal = B.ChannelBalance.__call__
def bal(self, du, dv, db):
    S = self.pv_forcing(du, dv, db)
    for _ in range(smooth):
        S = 0.25 * (np.roll(S, 1, -1) + 2 * S + np.roll(S, -1, -1))
        T = S.copy(); T[:, 0] = -S[:, 1]; T[:, self.ny] = -S[:, self.ny - 1]  # odd about the walls
        S[:, 1:self.ny] = 0.25 * (T[:, :self.ny - 1] + 2 * T[:, 1:self.ny] + T[:, 2:self.ny + 1])
        S[:, 0] = S[:, self.ny] = 0
    dpsi = self.invert(S)
    du, dv, db = self.tendencies(dpsi)
    if keep == "b": du, dv = 0 * du, 0 * dv
    if keep == "m": db = 0 * db
    return du, dv, db, dpsi
B.ChannelBalance.__call__ = bal
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
