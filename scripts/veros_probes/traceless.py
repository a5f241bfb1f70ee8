"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): MODE=traceless: the isotropic part (trace) of the network's tau removed; prints trace/deviator ratios."""
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A
mode = os.environ.get("MODE", "")
orig = A.NetworkClosure.__call__
stats = []
def patched(self, u, v, b):
    tau, fb = orig(self, u, v, b)
    tr = 0.5 * (tau[:, 0] + tau[:, 2])
    dev = np.sqrt(0.25 * (tau[:, 0] - tau[:, 2])**2 + tau[:, 1]**2)
    stats.append((np.abs(tr).mean(axis=(1, 2)), dev.mean(axis=(1, 2))))
    if len(stats) % 48 == 0:
        print("trace/dev per layer", (stats[-1][0] / stats[-1][1]).round(2), flush=True)
    if "traceless" in mode:
        tau = tau.copy(); tau[:, 0] -= tr; tau[:, 2] -= tr
    return tau, fb
A.NetworkClosure.__call__ = patched
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
