"""
Equivariance on a turned state
==============================

The closure's promise, checked on a physical state: turn the flow, and the forcing turns with it.
A spun-up 64² eddy state (it ships with the default model) is rotated by every element of the
network's group C4, the network is applied to each turned state, and the result is compared with
the turned output of the untouched state: ``max |f(g x) - g f(x)| / max |f(x)|``. Then the same through
pyqg's hook: a whole solver turned by 180° (β → −β, U → −U, the PV rotated) gets the turned PV
forcing. In float64 both agree to round-off (about 1e-14): equivariance holds by construction, not
by training. In float32 they agree to float32's own rounding (about 1e-6 to 1e-5).
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from roteq_param import models, symmetry
from roteq_param.symmetry import Element, Group, Kind
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.demo import demo_states_path
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.rollout import read_states
from solver_coupling.pyqg.state import state_from_model

torch.set_num_threads(1)
name = models.DEFAULT_MODEL
q = read_states(demo_states_path(name, closure=True))[0]  # (lev, y, x), s-1


def solver(q: np.ndarray, **overrides):
    """A 64² eddy pyqg model holding ``q`` (inverted, so u, v and ψ are current)."""
    m = get_config("eddy", {"nx": 64, **overrides}, coarse_nx=64).make_model(log_level=0)
    m.q = np.ascontiguousarray(q)
    m._invert()
    return m


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


m = solver(q)
net = models.load_model(name)
state = state_from_model(m)
group = Group.parse(net.config.group)
for dtype in (torch.float64, torch.float32):
    predictor = models.Predictor(net, dtype=dtype)
    out = predictor(state)
    for g in group.exact_elements():
        turned_out = predictor(net.schema.transform(g, state))
        err = max(rel(turned_out[k], v) for k, v in net.schema.transform(g, out).items())
        print(f"{str(dtype)[6:]:8s} network, element {g}: {err:.1e}")

# %%
# The hook on a whole turned solver. b = ψ₁ − ψ₂ and q are pseudoscalars: under rotations they
# turn like scalars (see *Design*, §2).
rot180 = Element(4, 2)
dq = RotEqParameterization(name, dtype=torch.float64)(m)
turned_solver = solver(symmetry.act(rot180, q, Kind.PSEUDOSCALAR), beta=-m.beta, U1=-m.U1, U2=-m.U2)
dq_turned = RotEqParameterization(name, dtype=torch.float64)(turned_solver)
print(f"hook, solver turned by 180 degrees (float64): {rel(dq_turned, symmetry.act(rot180, dq, Kind.PSEUDOSCALAR)):.1e}")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), layout="constrained")
lim = np.abs(dq[0]).max()
panels = (("PV forcing, layer 1 (s$^{-2}$)", dq[0]), ("... of the turned solver, turned back", 
          symmetry.act(rot180, dq_turned, Kind.PSEUDOSCALAR)[0]),
          ("difference", dq[0] - symmetry.act(rot180, dq_turned, Kind.PSEUDOSCALAR)[0]))
for ax, (title, field) in zip(axes, panels):
    scale = lim if title != "difference" else np.abs(field).max() or 1.0
    im = ax.imshow(field, origin="lower", cmap="RdBu_r", vmin=-scale, vmax=scale)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)
