"""
PV snapshots and the closure's forcing
======================================

What the closure sees and what it returns, on a coarse 64² eddy state spun up for five years with it
(the state ships with the default model): the potential vorticity anomaly q of both layers, and the PV
forcing S the closure adds to dq/dt at that instant. Beside them, a state spun up without a closure:
without the subgrid eddies' effect the coarse model piles up enstrophy near its grid scale, the
noisier field in the last column.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from roteq_param import models
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.demo import demo_states_path
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.rollout import read_states

torch.set_num_threads(1)
states = {kind: read_states(demo_states_path(models.DEFAULT_MODEL, closure=kind == "closure"))[0]
          for kind in ("closure", "none")}  # the first stored state of each set, (lev, y, x) in s-1

m = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(log_level=0)
m.q = states["closure"]
m._invert()  # pyqg's PV inversion: the velocity and streamfunction the hook reads
S = RotEqParameterization()(m)  # (lev, y, x), s-2
print(f"upper-layer q: rms {states['closure'][0].std():.2e} s-1 with the closure, "
      f"{states['none'][0].std():.2e} s-1 without; forcing S rms {S[0].std():.2e} s-2")

km = np.arange(65) * 1e3 / 64  # cell edges, km
fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), layout="constrained")
for lev in range(2):
    panels = ((f"q, layer {lev + 1}, with the closure (s$^{{-1}}$)", states["closure"][lev]),
              (f"S, layer {lev + 1} (s$^{{-2}}$)", S[lev]),
              (f"q, layer {lev + 1}, no closure (s$^{{-1}}$)", states["none"][lev]))
    for ax, (title, field) in zip(axes[lev], panels):
        lim = np.abs(field).max()
        im = ax.pcolormesh(km, km, field, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
        fig.colorbar(im, ax=ax, shrink=0.8)
for ax in axes[1]:
    ax.set_xlabel("x (km)")
