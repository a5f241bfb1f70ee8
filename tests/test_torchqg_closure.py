"""The project's equivariant closure inside the torch twin: the same forcing as the pyqg hook, the
same trajectory as pyqg + plugin, exact equivariance of whole runs, and gradients that reach the
network's weights."""

from pathlib import Path

import numpy as np
import pytest
import torch

from roteq_param import models, symmetry
from roteq_param.symmetry import Element, Kind
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg.closures import FluxNetClosure


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def state_q():
    return np.load(Path(__file__).parent / "data" / "eddy64_state.npz")["q"]


def _pyqg(q, steps, param=None, **overrides):
    m = get_config("eddy", {"nx": 64, **overrides}, coarse_nx=64).make_model(
        log_level=0, tmax=3600.0 * steps, parameterization=param)
    m.q = np.ascontiguousarray(q)
    return m


def test_same_forcing_and_trajectory_as_pyqg_with_the_plugin(state_q):
    """Shipped closure in float64 on both sides: pyqg + hook against twin + in-graph closure.
    (1000 steps: 1.4e-14 measured, benchmarks/bench_torchqg.py closure; 300 here for time.)"""
    m = _pyqg(state_q, 300, RotEqParameterization("eddy-c4", dtype=torch.float64))
    twin = TorchQGModel.from_pyqg(m, dtype=torch.float64, parameterization=FluxNetClosure("eddy-c4", dtype=torch.float64))
    m.run()
    twin.step(300)
    err = float(np.abs(twin.q[0].numpy() - m.q).max() / np.abs(m.q).max())
    assert err <= 1e-10, err


def test_a_network_that_sees_the_regime_gets_the_same_drag_and_couplings_in_the_twin(state_q):
    """A network with the regime inputs (stretching couplings, drag): the twin hands it what the pyqg
    hook does, so 100 steps of both agree; a twin whose members differ in rek is refused by name."""
    from roteq_param.fields import qg_schema

    torch.manual_seed(0)
    net = models.build_model(group="C4", channels=(8,), kernel_sizes=(3,), schema=qg_schema(2, regime=True).to_dict())
    net.set_normalization({"vel_1": 0.06, "vel_2": 0.013, "b": 1.3e3, "beta": 1.2e-11, "U_1": 0.023, "U_2": 1.0,
                           "G_upper_1": 3e-9, "G_lower_1": 8e-10, "rek": 3e-7},
                          {"tau_1": 1e-3, "tau_2": 1.4e-5, "Fb_1": 13.0, "Fb_2": 1.1})
    net.eval()
    m = _pyqg(state_q, 100, RotEqParameterization(net, dtype=torch.float64))
    twin = TorchQGModel.from_pyqg(m, dtype=torch.float64, parameterization=FluxNetClosure(net, dtype=torch.float64))
    m.run()
    twin.step(100)
    err = float(np.abs(twin.q[0].numpy() - m.q).max() / np.abs(m.q).max())
    assert err <= 1e-10, err
    two = TorchQGModel(2, nx=64, dtype=torch.float64, rek=torch.tensor([5e-7, 4e-7], dtype=torch.float64),
                       parameterization=FluxNetClosure(net, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs one rek for all members"):
        two.step(1)


def test_a_run_turned_through_180_degrees_is_the_turned_run(state_q):
    """Twin + closure from the 180-degree-turned state with beta -> -beta, U -> -U: after 50 steps
    its q is the turned q of the original run (float64, both members in one batch)."""
    g = Element(4, 2)
    closure = FluxNetClosure("eddy-c4", dtype=torch.float64)
    a = TorchQGModel.from_pyqg(_pyqg(state_q, 0), dtype=torch.float64, parameterization=closure)
    turned = _pyqg(symmetry.act(g, state_q, Kind.PSEUDOSCALAR), 0, beta=-1.5e-11, U1=-0.025)
    b = TorchQGModel.from_pyqg(turned, dtype=torch.float64, parameterization=FluxNetClosure("eddy-c4", dtype=torch.float64))
    a.step(50)
    b.step(50)
    expected = symmetry.act(g, a.q[0].numpy(), Kind.PSEUDOSCALAR)
    err = float(np.abs(b.q[0].numpy() - expected).max() / np.abs(expected).max())
    assert err <= 1e-10, err


def test_gradients_reach_the_network_weights():
    """A loss on a 3-step unroll: autograd's directional derivative along a random direction of
    every network weight equals a central finite difference (float64, 16^2)."""
    torch.manual_seed(0)
    net = models.build_model(group="C4", channels=(4,), kernel_sizes=(3,)).converted(torch.float64).train()
    rng = np.random.default_rng(0)
    q0 = np.stack([1e-6 * rng.standard_normal((16, 16)), 1e-7 * rng.standard_normal((16, 16))])
    scale = {"vel_1": 1e-3, "vel_2": 1e-4, "b": 10.0, "beta": 1.5e-11, "U_1": 0.025, "U_2": 1.0}
    net.set_normalization(scale, {f.name: 1e-7 if f.name.startswith("tau") else 1e-3 for f in net.schema.outputs})
    params = [p for p in net.parameters() if p.requires_grad]
    with pytest.raises(ValueError, match="converted"):
        FluxNetClosure(models.build_model(group="C4", channels=(4,), kernel_sizes=(3,)), dtype=torch.float64,
                       differentiable=True)(TorchQGModel(members=1, nx=16, dtype=torch.float64))
    direction = [torch.randn_like(p) for p in params]

    def loss() -> torch.Tensor:
        twin = TorchQGModel(members=1, nx=16, dt=3600.0, dtype=torch.float64,
                            parameterization=FluxNetClosure(net, dtype=torch.float64, differentiable=True))
        twin.q = torch.as_tensor(q0)[None]
        twin.step(3)
        return (twin.q ** 2).sum() * 1e12

    value = loss()
    grads = torch.autograd.grad(value, params)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction))
    assert analytic != 0.0
    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
    plus = float(loss())
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
    minus = float(loss())
    numeric = (plus - minus) / (2 * h)
    assert abs(analytic - numeric) <= 1e-5 * abs(numeric), (analytic, numeric)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        TorchQGModel(members=1, nx=16, device="cuda")
