"""Equivariance error of the shipped model on a physical state (not a test; the tests assert the bounds).

Prints max |f(g x) - g f(x)| / max |f(x)| for every exact group element, through the network (each
output field) and through the pyqg hook on a solver turned by 180 degrees or mirrored, in float64
and float32. Run: ``.venv/bin/python benchmarks/equivariance_physical.py [MODEL]``.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from roteq_param import models, symmetry
from roteq_param.symmetry import Element, Group, Kind
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.state import state_from_model


def _model(q, **overrides):
    m = get_config("eddy", {"nx": q.shape[-1], **overrides}, coarse_nx=q.shape[-1]).make_model(log_level=0)
    m.q = np.ascontiguousarray(q)
    m._invert()
    return m


def main(name: str = "eddy-c4") -> None:
    torch.set_num_threads(1)
    q = np.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "eddy64_state.npz")["q"]
    m = _model(q)
    net = models.load_model(name)
    state = state_from_model(m)
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())  # noqa: E731
    for dtype in (torch.float64, torch.float32):
        predictor = models.Predictor(net, dtype=dtype)
        out = predictor(state)
        worst = max(rel(predictor(net.schema.transform(g, state))[k], v)
                    for g in Group.parse(net.config.group).exact_elements()
                    for k, v in net.schema.transform(g, out).items())
        dq = RotEqParameterization(net, dtype=dtype)(m)
        turned = _model(symmetry.act(Element(4, 2), q, Kind.PSEUDOSCALAR), beta=-m.beta, U1=-m.U1, U2=-m.U2)
        hook = rel(RotEqParameterization(net, dtype=dtype)(turned), symmetry.act(Element(4, 2), dq, Kind.PSEUDOSCALAR))
        print(f"{name} {str(dtype).split('.')[-1]}: network, worst field over {net.config.group}: {worst:.1e}; "
              f"hook, solver turned by 180 deg: {hook:.1e}")


if __name__ == "__main__":
    main(*sys.argv[1:])
