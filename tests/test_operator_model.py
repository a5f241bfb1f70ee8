"""Operator closures as model folders (``solver_coupling.torchqg.operator_store``) and in pyqg's hook
(``solver_coupling.pyqg.operator_plugin``): saved and loaded exactly, refused when damaged, the same
operator in pyqg as in the twin (an independent FFT path), exactly equivariant on spun-up and early
pyqg states, and refusing a grid or regime it was not trained for."""

from pathlib import Path

import numpy as np
import pyqg
import pytest
import torch
from conftest_models import operator_closure_64

from roteq_param.integrity import CorruptFileError
from roteq_param.symmetry import Group, Kind, act
from solver_coupling.pyqg.data import initial_pv
from solver_coupling.pyqg.config import get_config, solver_config_of
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import ModelMismatchError, OutOfRegimeWarning
from solver_coupling.pyqg.rollout import RolloutRequest, rollout
from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg.operator_store import is_operator_model, load_operator_closure, save_operator_closure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EDDY = {"nx": 64, "dt": 3600.0, "log_level": 0}  # pyqg's defaults otherwise: the eddy configuration
SHIPPED = Path(__file__).resolve().parents[1] / "trained_models" / "eddy-operator"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A randomly weighted 64^2 eddy operator closure, saved as a model folder."""
    folder = tmp_path_factory.mktemp("op") / "random-operator"
    save_operator_closure(operator_closure_64(3), folder, solver=solver_config_of(pyqg.QGModel(**EDDY)),
                          training={"data": "none: random weights"})
    return folder


@pytest.fixture(scope="module")
def states():
    """Spun-up (the stored 64^2 eddy state) and early (90 days after a cold start) pyqg PV, s^-1."""
    spun = np.load(Path(__file__).parent / "data" / "eddy64_state.npz")["q"]
    m = pyqg.QGModel(tmax=90 * 86400.0, twrite=10**9, **EDDY)
    m.q = (initial_pv(get_config("eddy", {"nx": 64}, coarse_nx=64), seed=5, run=0))
    m.run()
    return {"spun-up": spun, "early": m.q.copy()}


def _dq(param, q) -> np.ndarray:
    m = pyqg.QGModel(**EDDY)
    m.q = q
    return param(m)


def test_save_and_load_give_the_same_operator(saved):
    closure, card, digest = load_operator_closure(saved)
    assert card["kind"] == "operator-closure" and len(digest) == 64 and is_operator_model(saved)
    assert torch.equal(closure.multiplier(), operator_closure_64(3).multiplier())
    assert not is_operator_model(Path(__file__).resolve().parents[1] / "trained_models" / "eddy-c4")


def test_a_flipped_byte_in_the_weights_is_refused(saved, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(saved, bad)
    data = bytearray((bad / "operator.pt").read_bytes())
    data[len(data) // 2] ^= 0x10
    (bad / "operator.pt").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="operator.pt"):
        load_operator_closure(bad)


@pytest.mark.parametrize("which", ["spun-up", "early"])
def test_pyqg_hook_applies_the_twins_operator(saved, states, which):
    """pyqg (pyfftw, numpy multipliers on m.qh) and the twin (torch FFTs) give the same dq to round-off."""
    param = OperatorParameterization(saved)
    q = states[which]
    dq = _dq(param, q)
    twin = TorchQGModel(1, dtype=torch.float64, parameterization=param.closure, **{k: v for k, v in EDDY.items()
                                                                                   if k != "log_level"})
    twin.q = torch.as_tensor(q)[None]
    with torch.no_grad():
        expected = param.closure(twin)[0].numpy()
    assert np.abs(dq).max() > 0
    assert np.abs(dq - expected).max() <= 1e-12 * np.abs(expected).max()
    assert np.abs(dq.mean(axis=(-2, -1))).max() <= 1e-12 * np.abs(dq).max()  # no mean PV forcing


@pytest.mark.parametrize("which", ["spun-up", "early"])
def test_pyqg_hook_is_exactly_equivariant_for_every_grid_element(saved, states, which):
    param = OperatorParameterization(saved)
    q = states[which]
    dq = _dq(param, q)
    for g in Group.parse("D4").elements():
        turned = _dq(param, act(g, q, Kind.PSEUDOSCALAR))
        err = np.abs(turned - act(g, dq, Kind.PSEUDOSCALAR)).max() / np.abs(dq).max()
        assert err <= 1e-12, (g, err)


def test_hook_refuses_another_grid_and_regime(saved):
    param = OperatorParameterization(saved)
    with pytest.raises(ModelMismatchError, match="nx=32"):
        param(pyqg.QGModel(nx=32, log_level=0))
    with pytest.raises(ModelMismatchError, match="beta"):
        param(pyqg.QGModel(beta=4e-11, **EDDY))
    allowed = OperatorParameterization(saved, allow_out_of_regime=True)
    with pytest.warns(OutOfRegimeWarning, match="beta"):
        allowed(pyqg.QGModel(beta=4e-11, **EDDY))


def test_rollout_runs_an_operator_closure_and_records_its_weights(saved, tmp_path):
    config = get_config("eddy", {"nx": 64}, coarse_nx=64)
    with pytest.raises(ValueError, match="call_interval 1"):
        RolloutRequest(config=config, model=str(saved), call_interval=2)
    req = RolloutRequest(config=config, model=str(saved), members=1, years=10 / 360, snapshot_days=5.0,
                         diag_start_years=5 / 360, checkpoint_years=10 / 360)
    ds = rollout(req, tmp_path / "out", progress=False)
    assert not ds["failed"].any() and np.isfinite(ds["q"].values).all()
    assert ds.attrs["model_sha256"] == load_operator_closure(saved)[2]


@pytest.mark.skipif(not SHIPPED.exists(), reason="the shipped operator closure is made by scripts/operator_closure.sh")
def test_shipped_operator_closure_damps_no_resolved_mode_into_growth(states):
    """The shipped closure loads, runs in the eddy configuration without a warning, and its operator is a
    physical one: bounded rates (|multiplier| well below 1/dt, so the explicit step stays stable)."""
    import warnings

    param = OperatorParameterization("eddy-operator")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the regime warnings are UserWarnings
        dq = _dq(param, states["spun-up"])
    assert np.isfinite(dq).all() and np.abs(dq).max() > 0
    rate = np.abs(param.multipliers(pyqg.QGModel(**EDDY))).max()
    assert rate * EDDY["dt"] < 0.1


def test_train_operator_command_writes_a_model_the_hook_and_rollout_load(tmp_path, capsys):
    """`roteq train-operator` end to end on a tiny real dataset (pyqg 32^2 -> 16^2, 3 runs, 4-step windows):
    it lowers the held-out loss, and its folder loads in pyqg's hook for the 16^2 grid only."""
    from conftest_models import tiny_dataset
    from solver_coupling.cli import main

    data = tiny_dataset(str(tmp_path / "tiny.nc"), window_steps=4)
    assert main(["train-operator", "--method", "twin", "--data", data, "--out", str(tmp_path / "run"), "--unroll", "2,4",
                 "--iterations", "10", "--batch", "2", "--radius-cells", "3", "--n-basis", "7"]) == 0
    out = capsys.readouterr().out
    assert "| 4 |" in out and "saved" in out
    folder = tmp_path / "run" / "model"
    card = load_operator_closure(folder)[1]
    held = card["training"]["held_out_loss"]
    assert all(r["operator"] < r["none"] for r in held.values()), held
    assert card["training"]["holdout_runs"] == [2] and card["training"]["solver"]["nx"] == 16
    param = OperatorParameterization(folder)
    m = pyqg.QGModel(nx=16, log_level=0)
    assert np.isfinite(param(m)).all()
    with pytest.raises(ModelMismatchError, match="nx=64"):
        param(pyqg.QGModel(**EDDY))


def test_one_hook_serves_an_ensemble_building_each_members_multipliers_once(saved):
    param = OperatorParameterization(saved)
    members = [pyqg.QGModel(parameterization=param, **EDDY) for _ in range(2)]
    for _ in range(3):
        for m in members:
            m._step_forward()
    assert len(param._bound) == 2 and all(param._bound[id(m)][0] is m for m in members)
