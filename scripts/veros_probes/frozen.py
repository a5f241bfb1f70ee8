"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): FREEZE=n: from closure call n on, the network's
fluxes are those of call n (a forcing that no longer depends on the state)."""
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A
n = int(os.environ.get("FREEZE", "48"))
orig = A.NetworkClosure.__call__
mem = {"calls": 0}
def call(self, u, v, b):
    mem["calls"] += 1
    if mem["calls"] <= n:
        mem["out"] = orig(self, u, v, b)
    return tuple(a.copy() for a in mem["out"])
A.NetworkClosure.__call__ = call
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
