"""The plugin's defaults: ``RotEqParameterization()`` with no model chooses the shipped closure for the
solver (``trained_models/defaults.json``, ``solver_coupling.pyqg.selection``), and operator families blend
operator closures fitted in several configurations (``solver_coupling.torchqg.operator_family``).

Real pyqg models of each configuration start from the stored spun-up 64^2 eddy state (s^-1) or an early
one, and the shipped closures are used as shipped."""

import json
import math
import warnings

import numpy as np
import pyqg
import pytest
import torch
from conftest_models import eddy64_model

from roteq_param.coarsen import from_spectrum, resize_spectrum, to_spectrum
from solver_coupling.cli import main
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.data import initial_pv
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import Ensemble, ModelMismatchError, RotEqParameterization
from solver_coupling.pyqg.rollout import RolloutRequest
from solver_coupling.pyqg.selection import choose_closure, default_closures
from solver_coupling.torchqg.operator_family import load_operator_family
from solver_coupling.torchqg.operator_store import load_operator_closure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MID = {"beta": 1.22e-11, "rek": 2e-7, "delta": 0.16}  # the held-out configuration of scripts/generality.sh
# (configuration, overrides, grid) -> the shipped closure the defaults run there
COVERED = [
    ("eddy", {}, 64, "eddy-c4-dilated-apost2"),
    ("eddy", {"beta": -1.5e-11, "U1": -0.025}, 64, "eddy-c4-dilated-apost2"),  # eddy turned through 180 degrees
    ("jet", {}, 64, "operators-64"),
    ("eddy", MID, 64, "operators-64"),
    ("eddy", {}, 48, "eddy-operator-48"),
    ("eddy", {}, 96, "eddy-operator-96"),
]


def _solver(config: str, overrides: dict, nx: int, state: np.ndarray, **kwargs) -> pyqg.QGModel:
    m = get_config(config, {**overrides, "nx": nx}, coarse_nx=nx).make_model(log_level=0, **kwargs)
    m.q = np.ascontiguousarray(from_spectrum(resize_spectrum(to_spectrum(state), nx), nx))
    return m


@pytest.fixture(scope="module")
def states():
    """The spun-up eddy state and an early one (60 days after a cold start), 64^2, s^-1."""
    cold = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(log_level=0, tmax=60 * 86400.0, twrite=10**9)
    cold.q = initial_pv(get_config("eddy", {"nx": 64}, coarse_nx=64), seed=5, run=0)
    cold.run()
    return {"spun-up": eddy64_model().q.copy(), "early": cold.q.copy()}


@pytest.mark.parametrize("config,overrides,nx,expected", COVERED, ids=["eddy", "eddy-rot180", "jet", "mid", "eddy48", "eddy96"])
@pytest.mark.parametrize("when", ["spun-up", "early"])
def test_no_argument_plugin_runs_each_covered_configuration_as_the_named_closure(states, config, overrides, nx,
                                                                                 expected, when):
    """RotEqParameterization() picks the expected shipped closure, raises no warning over 3 steps, and its
    forcing is, to round-off, the one the chosen closure gives when named."""
    auto = RotEqParameterization()
    m = _solver(config, overrides, nx, states[when], parameterization=auto)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # pyfftw's, inside pyqg
        for _ in range(3):
            m._step_forward()
    assert auto.chosen == expected
    named = (OperatorParameterization(expected) if auto.operator is not None
             else RotEqParameterization(expected))
    m._invert()
    got, want = auto(m), named(m)
    assert np.isfinite(got).all() and np.abs(got).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("overrides,named", [({"rd": 6e4}, "rd"), ({"beta": 4e-11}, "beta")])
def test_defaults_refuse_a_solver_outside_every_shipped_card(overrides, named):
    """rd = 60 km and beta = 4e-11 lie outside every shipped closure: refused before the first step, and the
    message names every default closure with what excludes it."""
    m = _solver("eddy", overrides, 64, eddy64_model().q, parameterization=RotEqParameterization())
    with pytest.raises(ModelMismatchError) as err:
        m._step_forward()
    text = str(err.value)
    for name in default_closures():
        assert f"{name}: " in text
    # the 64^2 closures decline on the setting itself, the other grids' on the grid
    assert text.count(f"{named}: trained") == 2 and text.count("grid: the operator closure was trained for") == 2
    assert "docs/retraining.md" in text


def test_auto_with_allow_out_of_regime_is_refused():
    with pytest.raises(ValueError, match="name the model"):
        RotEqParameterization(allow_out_of_regime=True)


def test_rollout_auto_names_the_chosen_closure():
    req = RolloutRequest(config=get_config("jet", {"nx": 64}, coarse_nx=64), model="auto", members=1)
    assert req.model == "operators-64"
    with pytest.raises(ModelMismatchError, match="no shipped closure covers"):
        RolloutRequest(config=get_config("eddy", {"nx": 64, "beta": 4e-11}, coarse_nx=64), model="auto")


def test_ensemble_with_an_automatically_chosen_operator_matches_each_member_alone(states):
    """Ensemble + RotEqParameterization() on jet: each member's forcing is the operator family's for it."""
    param = RotEqParameterization()
    kwargs = get_config("jet", {"nx": 64}, coarse_nx=64).model_kwargs(64, log_level=0)
    ens = Ensemble.build(param, 2, **kwargs)
    for m, q in zip(ens.members, states.values()):
        m.q = q
    ens.step()
    alone = OperatorParameterization("operators-64")
    for slot, q in zip(ens._slots, states.values()):  # the forcing of the step was computed from these states
        ref = pyqg.QGModel(**kwargs)
        ref.q = q
        ref._invert()
        np.testing.assert_allclose(slot.dq, alone(ref), rtol=1e-12, atol=0)


# ------------------------------------------------------------------ operator families

def _multiplier(family, config):
    with torch.no_grad():
        return family.closure_for(config).multiplier(torch.float64).numpy()


def test_family_is_each_anchor_at_its_configuration_and_the_mean_at_the_midpoint():
    family, _ = load_operator_family("operators-64")
    anchors = [load_operator_closure(n)[0] for n in family.anchor_names]
    with torch.no_grad():
        own = [a.multiplier(torch.float64).numpy() for a in anchors]
    for cfg, mult in zip(family.configs, own):
        np.testing.assert_array_equal(_multiplier(family, cfg), mult)
    # the geometric midpoint in every setting the anchors differ in (pyqg's derived couplings follow delta)
    lo, hi = family.configs
    mid = {**lo, **{k: math.sqrt(lo[k] * hi[k]) for k in ("beta", "rek", "delta")}}
    assert family.weights(mid) == pytest.approx([0.5, 0.5], abs=1e-12)
    scale = max(np.abs(o).max() for o in own)
    np.testing.assert_allclose(_multiplier(family, mid), 0.5 * (own[0] + own[1]), rtol=0, atol=1e-12 * scale)


def test_family_weights_are_a_partition_of_unity_favouring_the_nearer_anchor():
    family, _ = load_operator_family("operators-64")
    eddy, jet = family.configs
    for t in (0.1, 0.3, 0.7, 0.9):  # along the log segment from eddy to jet
        cfg = {**eddy, **{k: eddy[k] ** (1 - t) * jet[k] ** t for k in ("beta", "rek", "delta")}}
        w = family.weights(cfg)
        assert sum(w) == pytest.approx(1.0, abs=1e-14) and min(w) > 0
        assert (w[0] > w[1]) == (t < 0.5)


def test_family_blend_is_isotropic():
    """The blended multiplier depends on |k| only: equal at (k, l) and (l, k) (a quarter turn and a mirror)."""
    family, _ = load_operator_family("operators-64")
    cfg = {**family.configs[0], **MID}
    mult = _multiplier(family, cfg)  # [nz, nz, l (all), k (>= 0)]
    for il in range(33):
        for ik in range(33):
            np.testing.assert_allclose(mult[..., il, ik], mult[..., ik, il], rtol=0, atol=1e-12 * np.abs(mult).max())


def test_combine_operators_command_and_its_refusals(tmp_path, capsys):
    out = tmp_path / "fam"
    assert main(["combine-operators", "--anchor", "eddy-operator", "--anchor", "jet-operator", "--name", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "operator-family" and card["regime"]["beta"] == [1e-11, 1.5e-11]
    assert card["regime"]["rd"] == 15000.0
    m = _solver("eddy", MID, 64, eddy64_model().q, parameterization=OperatorParameterization(str(out)))
    m._step_forward()
    assert np.isfinite(m.q).all()
    # one anchor is not a family; an anchor of another grid is refused by name
    with pytest.raises(SystemExit):
        main(["combine-operators", "--anchor", "eddy-operator", "--name", str(tmp_path / "one")])
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["combine-operators", "--anchor", "eddy-operator", "--anchor", "eddy-operator-48",
              "--name", str(tmp_path / "grids")])
    assert "share grid and kernel basis" in capsys.readouterr().err
    assert not (tmp_path / "one").exists() and not (tmp_path / "grids").exists()


def test_choice_reports_why_earlier_closures_declined():
    m = _solver("jet", {}, 64, eddy64_model().q)
    choice = choose_closure(m)
    assert choice.name == "operators-64"
    assert any(d.startswith("eddy-c4-dilated-apost2: ") and "rek" in d for d in choice.declined)


def test_auto_rollout_runs_the_family_blend_alike_on_both_engines(tmp_path):
    """`roteq rollout` (model "auto") at the mid configuration runs operators-64 blended for it: the pyqg
    plugin and the torch twin's closure give the same 2-member rollout, which differs from no closure."""
    from solver_coupling.pyqg.rollout import rollout

    def request(**kw):
        return RolloutRequest(config=get_config("eddy", {**MID, "nx": 64}, coarse_nx=64), members=2, years=0.02,
                              snapshot_days=2.0, checkpoint_years=0.01, diag_start_years=0.01, **kw)

    a = rollout(request(model="auto"), tmp_path / "pyqg", progress=False)
    b = rollout(request(model="auto", engine="torch"), tmp_path / "torch", progress=False)
    assert a.attrs["model"] == "operators-64" and not a["failed"].any()
    scale = np.abs(a["q"].values).max()
    np.testing.assert_allclose(b["q"].values, a["q"].values, rtol=0, atol=1e-6 * scale)
    bare = rollout(request(model=None), tmp_path / "none", progress=False)
    assert np.abs(bare["q"].values - a["q"].values).max() > 1e-5 * scale
