"""The operator closure in the torch twin: exact equivariance and no mean forcing on the spun-up eddy
state, and training through the twin that recovers a known isotropic closure from its trajectories."""

from pathlib import Path

import numpy as np
import pytest
import torch

from roteq_param.symmetry import Group, Kind, act
from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg.online_training import TrajectoryWindows
from conftest_models import operator_closure_64
from solver_coupling.torchqg.operator_closure import closure_window_loss, train_operator_closure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EDDY = {"nx": 64, "dt": 3600.0}  # pyqg's defaults otherwise: the eddy configuration


@pytest.fixture(scope="module")
def state_q():
    """The stored spun-up 64^2 eddy PV (s^-1), tests/data/make_reference_state.py."""
    return torch.as_tensor(np.load(Path(__file__).parent / "data" / "eddy64_state.npz")["q"])


def _twin(closure, state_q) -> TorchQGModel:
    """One eddy twin member with ``closure``, at the stored spun-up state."""
    twin = TorchQGModel(1, dtype=torch.float64, parameterization=closure, **EDDY)
    twin.q = state_q[None]
    return twin


def test_closure_is_exactly_equivariant_and_adds_no_mean_pv(state_q):
    closure = operator_closure_64(1)
    twin = _twin(closure, state_q)
    with torch.no_grad():
        dq = closure(twin)
        assert dq.shape == (1, 2, 64, 64)
        assert float(dq.abs().max()) > 1e-14  # a real forcing (s^-2) on this state
        assert float(dq.mean(dim=(-2, -1)).abs().max()) <= 1e-12 * float(dq.abs().max())
        for g in Group(4, reflections=True).elements():
            twin.q = act(g, state_q[None], Kind.PSEUDOSCALAR)  # PV is a pseudoscalar (symmetry's docstring)
            turned = closure(twin)
            err = float((turned - act(g, dq, Kind.PSEUDOSCALAR)).abs().max() / dq.abs().max())
            assert err <= 1e-12, (g, err)


def test_cached_multiplier_follows_the_weights(state_q):
    """Without autograd the multiplier is cached; changing a weight in place must rebuild it."""
    closure = operator_closure_64(2)
    twin = _twin(closure, state_q)
    with torch.no_grad():
        first = closure(twin)
        closure.ops[0].profile.weight.mul_(2.0)
        second = closure(twin)
    with torch.enable_grad():
        fresh = closure(twin).detach()
    assert float((second - first).abs().max()) > 1e-3 * float(first.abs().max())
    torch.testing.assert_close(second, fresh, rtol=0, atol=1e-25)


def test_closure_refuses_another_grid():
    twin = TorchQGModel(1, dtype=torch.float64, nx=32)
    with pytest.raises(ValueError, match="built for nx=64"):
        operator_closure_64(0)(twin)


def _truth_windows(state_q, closure, runs=3, windows=2, steps=6, gap=24):
    """Trajectory windows of the twin run with ``closure``: runs start ``gap`` hours apart on the eddy state."""
    twin = _twin(closure, state_q)
    out = []
    with torch.no_grad():
        for _ in range(runs):
            run = []
            for _ in range(windows):
                twin.step(gap)
                run.append(torch.cat([twin.q[None], twin.unroll(steps, save_every=1)], dim=0)[:, 0])
            out.append(torch.stack(run))
    return TrajectoryWindows(torch.stack(out), dict(EDDY))  # [R, W, S + 1, 2, 64, 64]


def test_training_through_the_twin_recovers_a_known_operator_closure(state_q):
    """Twin experiment: trajectories made with a known closure; a closure trained from zero through
    the twin on them brings the held-out loss down by orders of magnitude and reproduces the known
    multipliers on the wavenumbers the loss sees."""
    truth = operator_closure_64(3)
    windows = _truth_windows(state_q, truth)
    learner = operator_closure_64(None)
    history = train_operator_closure(learner, windows, unroll=(3, 6), iterations=40, batch=2, val_runs=1)
    assert history[0]["val_loss_before"] > 0
    assert history[-1]["val_loss"] <= 1e-3 * history[0]["val_loss_before"], history
    band = TorchQGModel(1, dtype=torch.float64, **EDDY).unfiltered
    with torch.no_grad():
        m_true, m_fit = truth.multiplier()[..., band], learner.multiplier()[..., band]
    assert float((m_fit - m_true).abs().max() / m_true.abs().max()) <= 0.05


def test_window_loss_tells_the_true_closure_from_none(state_q):
    """On windows made with a closure, the loss of that closure is only the restart's (the twin starts each
    window with Euler/AB2 steps where the truth had an AB3 history): far below the loss of no closure."""
    closure = operator_closure_64(5)
    windows = _truth_windows(state_q, closure, runs=1, windows=1, steps=3)
    idx = torch.tensor([0]), torch.tensor([0])
    with torch.no_grad():
        own = float(closure_window_loss(closure, windows, *idx, 3))
        none = float(closure_window_loss(operator_closure_64(None), windows, *idx, 3))
    assert own <= 1e-3 * none, (own, none)


def test_windows_script_trains_and_scores_on_real_pyqg_windows(tmp_path, capsys):
    """benchmarks/operator_closure_windows.py end to end on a tiny real dataset (pyqg 32^2 -> 16^2, 3 runs,
    4-step windows): it trains, prints the three-way held-out table and a finite stability run."""
    import importlib.util

    from conftest_models import tiny_dataset

    path = tiny_dataset(str(tmp_path / "tiny.nc"), window_steps=4)
    spec = importlib.util.spec_from_file_location(
        "operator_closure_windows", Path(__file__).resolve().parents[1] / "benchmarks" / "operator_closure_windows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main([path, "--unroll", "2", "--iterations", "3", "--batch", "2", "--years", "0.01"])
    out = capsys.readouterr().out
    assert "| 2 |" in out and "operator closure" in out
    assert result["stability"]["operator"][0]
    assert result["history"][0]["val_loss"] <= result["history"][0]["val_loss_before"]
