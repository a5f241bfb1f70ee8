"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): FILTER_IN: 1-2-1 passes on the network's inputs."""
# FILTER_IN=n: n 1-2-1 passes (x, then y with mirror walls: u, b even, v odd) on the network's centre inputs
import os, sys, runpy, numpy as np
from solver_coupling.cgrid import adapter as A
n_in = int(os.environ.get("FILTER_IN", "0"))
def f121(a, odd, ny):
    a = 0.25 * (np.roll(a, 1, -1) + 2 * a + np.roll(a, -1, -1))
    w = a[..., :ny, :]
    s = -1.0 if odd else 1.0
    lo = np.concatenate([s * w[..., :1, :], w[..., :-1, :]], axis=-2)
    hi = np.concatenate([w[..., 1:, :], s * w[..., -1:, :]], axis=-2)
    out = np.zeros_like(a); out[..., :ny, :] = 0.25 * (lo + 2 * w + hi)
    return out
orig = A.NetworkClosure.__call__
def call(self, u, v, b):
    ny = u.shape[-2] - 1  # the land row
    for _ in range(n_in):
        u, v, b = f121(u, False, ny), f121(v, True, ny), f121(b, False, ny)
    return orig(self, u, v, b)
A.NetworkClosure.__call__ = call
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
