"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): EMA=n: the network sees an exponential running mean
of its inputs (u, v, b at centres) over n closure calls (n = 48 is one day at dt = 1800 s), not the instantaneous
state; U as read each step."""
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A
n = float(os.environ.get("EMA", "48"))
orig = A.NetworkClosure.__call__
mem = {}
def call(self, u, v, b):
    if not mem:
        mem.update(u=u.copy(), v=v.copy(), b=b.copy())
    for k, x in (("u", u), ("v", v), ("b", b)):
        mem[k] += (x - mem[k]) / n
    return orig(self, mem["u"].copy(), mem["v"].copy(), mem["b"].copy())
A.NetworkClosure.__call__ = call
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
