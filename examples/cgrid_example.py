"""
Subgrid tendencies on a C-grid basin with land
==============================================

A two-layer state on a 48 x 48 C-grid (u on west faces, v on south faces, the
interface field b = psi_1 - psi_2 at centres; see solver_coupling.cgrid.staggered)
with an island and a closed southern wall. The closure is the gradient model;
a trained network wrapped as ``flux_model(u_c, v_c, b_c) -> (tau, Fb)`` plugs in
the same way (``NetworkClosure``, see the C-grid page). Run with
``.venv/bin/python examples/cgrid_example.py``.
"""

import numpy as np

from solver_coupling.cgrid import CGridAdapter, GradientModel
from solver_coupling.cgrid.staggered import CGridMasks

n, nz = 48, 2
dx = dy = 20e3  # metres
x = (np.arange(n) + 0.5) * dx  # cell centres
y = (np.arange(n) + 0.5) * dy
X, Y = np.meshgrid(x, y)  # [y, x] layout

# Land: a round island and a wall along the southern edge (True = ocean).
mask = np.hypot(X - 0.6 * n * dx, Y - 0.5 * n * dy) > 0.15 * n * dx
mask[0, :] = False

# A smooth two-layer streamfunction (m^2/s), differenced to C-grid velocities (m/s):
# psi lives on corners, so u = -d_y psi lands on west faces and v = d_x psi on south faces.
Lx = n * dx
xg, yg = np.arange(n) * dx, np.arange(n) * dy
Xg, Yg = np.meshgrid(xg, yg)
psi = np.stack([3e3 * np.sin(2 * np.pi * Xg / Lx) * np.cos(4 * np.pi * Yg / Lx),
                1e3 * np.cos(2 * np.pi * (Xg + Yg) / Lx)])
u = -(np.roll(psi, -1, axis=-2) - psi) / dy
v = (np.roll(psi, -1, axis=-1) - psi) / dx
b = psi[0] - psi[1]  # interface field at corners; averaged to centres below
b = 0.25 * (b + np.roll(b, -1, -1) + np.roll(b, -1, -2) + np.roll(b, (-1, -1), (-2, -1)))

masks = CGridMasks.from_centre(mask, mask.shape)
u[:, ~masks.u] = np.nan  # what a model stores on land does not matter: it is never read
v[:, ~masks.v] = np.nan

adapter = CGridAdapter(GradientModel(dx, dy, delta=2 * dx), dx, dy, mask)
du, dv, db = adapter(u, v, b)

print(f"grid {n}x{n}, {nz} layers, {mask.mean():.0%} ocean")
for name, t, wet in (("du [m/s^2] on u-points", du, masks.u), ("dv [m/s^2] on v-points", dv, masks.v),
                     ("db [m^2/s^2] at centres", db, masks.centre)):
    for k in range(nz):
        w = t[k][wet]
        print(f"  {name}, layer {k}: range [{w.min():+.3e}, {w.max():+.3e}], "
              f"wet sum {w.sum():+.1e} (sum |.| {np.abs(w).sum():.1e})")

# %%
# The tendencies, land in grey: they vanish on land, and their sums over the wet points vanish to
# round-off (the flux form), which the printed "wet sum" column shows.
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
for ax, (title, t, wet) in zip(axes, (("du, layer 1 (m s$^{-2}$)", du[0], masks.u),
                                      ("dv, layer 1 (m s$^{-2}$)", dv[0], masks.v),
                                      ("db, layer 1 (m$^2$ s$^{-2}$)", db[0], masks.centre))):
    shown = np.ma.masked_where(~wet, t)
    lim = np.abs(shown).max()
    ax.set_facecolor("0.75")
    im = ax.pcolormesh(x / 1e3, y / 1e3, shown, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title)
    ax.set_xlabel("x (km)")
    ax.set_aspect("equal")
    fig.colorbar(im, ax=ax, shrink=0.8)
axes[0].set_ylabel("y (km)")
