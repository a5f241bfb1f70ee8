"""The pyqg timestep-hook plugin: exact online equivariance, flux form, checks and ensembles."""

import warnings

import numpy as np
import pyqg
import pytest
import torch

from roteq_param import fluxform, models, symmetry
from roteq_param.fields import qg_schema
from roteq_param.symmetry import Group, Kind
from roteq_param.fluxform import Stratification
from roteq_param.forcing import PVForcing
from solver_coupling.pyqg.config import solver_config_of
from solver_coupling.pyqg.plugin import (Ensemble, ModelFileChangedError, ModelMismatchError, OutOfRegimeWarning,
                                         RotEqParameterization)
from solver_coupling.pyqg.state import state_from_model

NX = 32


def _forcing(net, *, strat, L, n, dtype=torch.float32):
    """The plugin's forcing for a network: the one Predictor, then the flux-form operator."""
    return PVForcing(models.Predictor(net, dtype=dtype), strat=strat, L=L, n=n)


def _spun_up_model(seed=0, nx=NX, steps=300, **kw):
    np.random.seed(seed)  # pyqg draws its initial PV from numpy's global generator
    m = pyqg.QGModel(nx=nx, dt=3600.0, tmax=3600.0 * steps, ntd=1, log_level=0, **kw)
    m.run()
    m._invert()
    return m


def _scaled_net(group="C4", channels=(8, 8), kernel_sizes=(3, 1), seed=0, state=None):
    """A real (untrained) flux network with physical normalisation taken from a pyqg state."""
    torch.manual_seed(seed)
    net = models.build_model(arch="escnn", group=group, channels=channels, kernel_sizes=kernel_sizes)
    state = state if state is not None else state_from_model(_spun_up_model())
    rms = {k: float(np.sqrt(np.mean(np.asarray(v) ** 2))) or 1.0 for k, v in state.items()}
    uu = rms["vel_1"] ** 2
    out = {f.name: (uu if f.name.startswith("tau") else rms["vel_1"] * rms["b"]) * 1e-2 for f in net.schema.outputs}
    net.set_normalization(rms, out)
    return net.eval()


@pytest.fixture(scope="module")
def model_state():
    return _spun_up_model()


@pytest.fixture(scope="module")
def net(model_state):
    return _scaled_net(state=state_from_model(model_state))


def _rotate_state(g, state):
    return qg_schema(2).transform(g, state)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_online_forcing_is_exactly_equivariant_in_float32(model_state, net, k):
    """dq for a spectrally rotated pyqg state (beta and U rotated too) == rotated dq, float32 inference."""
    g = symmetry.Element(4, k)
    m = model_state
    F1, F2 = fluxform.stretching_coefficients(m.rd, m.delta)
    forcing = _forcing(net, strat=Stratification.two_layer(F1, F2), L=m.L, n=NX, dtype=torch.float32)
    dq = forcing(state_from_model(m))

    # a second pyqg model holding the rotated state: rotate q (a pseudoscalar) and let pyqg invert it
    m2 = pyqg.QGModel(nx=NX, dt=3600.0, ntd=1, log_level=0)
    m2.q = symmetry.act(g, m.q, Kind.PSEUDOSCALAR)
    m2._invert()
    state2 = state_from_model(m2)
    # pyqg cannot point beta along x: the plugin's constant-vector inputs carry the rotation
    for name in ("beta", "U_1", "U_2"):
        state2[name] = symmetry.act(g, state_from_model(m)[name], qg_schema(2).field(name).kind)
    dq2 = forcing(state2)
    expected = symmetry.act(g, dq, Kind.PSEUDOSCALAR)
    err = np.abs(dq2 - expected).max() / np.abs(dq).max()
    assert err <= 1e-5, err
    # and the state extraction itself commutes with the rotation
    rotated = _rotate_state(g, state_from_model(m))
    for name in ("vel_1", "vel_2", "b"):
        np.testing.assert_allclose(state2[name], rotated[name], atol=1e-12 * np.abs(rotated[name]).max())


def test_reflections_are_exact_online_for_a_D4_net(model_state):
    m = model_state
    net = _scaled_net(group="D4", state=state_from_model(m))
    F1, F2 = fluxform.stretching_coefficients(m.rd, m.delta)
    forcing = _forcing(net, strat=Stratification.two_layer(F1, F2), L=m.L, n=NX)
    state = state_from_model(m)
    dq = forcing(state)
    for g in Group(4, True).elements():
        err = np.abs(forcing(_rotate_state(g, state)) - symmetry.act(g, dq, Kind.PSEUDOSCALAR)).max()
        assert err / np.abs(dq).max() <= 1e-5, (str(g), err)


def test_spectral_fast_path_equals_named_state_path(model_state, net):
    m = model_state
    F1, F2 = fluxform.stretching_coefficients(m.rd, m.delta)
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        forcing = _forcing(net, strat=Stratification.two_layer(F1, F2), L=m.L, n=NX, dtype=dtype)
        named = forcing(state_from_model(m))
        fast = forcing.from_spectral(m.ph, np.array([0.0, m.beta]), np.array([[m.U1, 0.0], [m.U2, 0.0]]))
        assert np.abs(fast - named).max() <= tol * np.abs(named).max()
    # the hook uses the fast path
    np.testing.assert_allclose(RotEqParameterization(net, dtype=torch.float64)(m), named, rtol=0,
                               atol=1e-12 * np.abs(named).max())


def test_tendencies_are_in_flux_form(model_state, net):
    m = model_state
    F1, F2 = fluxform.stretching_coefficients(m.rd, m.delta)
    forcing = _forcing(net, strat=Stratification.two_layer(F1, F2), L=m.L, n=NX, dtype=torch.float64)
    tau, Fb = forcing.fluxes(state_from_model(m))
    du = fluxform.momentum_tendency(tau, m.L)  # [nz, 2, y, x] in m/s^2
    db = fluxform.buoyancy_tendency(Fb, m.L)  # [nz, y, x] in m^2/s^2
    dq = forcing(state_from_model(m))
    for field in (du, db, torch.as_tensor(dq)):
        field = field.double()
        scale = field.abs().max().item()
        assert scale > 0
        assert abs(field.sum(dim=(-2, -1))).max().item() / (scale * NX * NX) < 1e-12


def test_plugin_runs_inside_pyqg_and_composes(net):
    P = RotEqParameterization(net)
    np.random.seed(3)
    m = pyqg.QGModel(nx=NX, dt=3600.0, tmax=3600.0 * 40, ntd=1, log_level=0, parameterization=P)
    m.run()
    assert np.all(np.isfinite(m.q))
    # pyqg's own + and * on parameterizations
    m0 = _spun_up_model(seed=4, steps=20)
    half = (0.5 * P)(m0)
    np.testing.assert_allclose(half, 0.5 * P(m0), rtol=1e-12)
    both = (P + pyqg.parameterizations.BackscatterBiharmonic())(m0)
    np.testing.assert_allclose(both, P(m0) + pyqg.parameterizations.BackscatterBiharmonic()(m0), rtol=1e-12)


def test_call_interval_reuses_the_forcing(net):
    P = RotEqParameterization(net, call_interval=3)
    m = _spun_up_model(seed=5, steps=10)
    outs = []
    for _ in range(4):
        outs.append(P(m).copy())
        m._step_forward()
        m._invert()
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[1], outs[2])
    assert not np.array_equal(outs[2], outs[3])
    with pytest.raises(ValueError, match="call_interval"):
        RotEqParameterization(net, call_interval=0)


def test_ensemble_matches_individual_members(net):
    n, steps = 3, 12
    ens = Ensemble.build(RotEqParameterization(net), n, nx=NX, dt=3600.0, ntd=1, log_level=0)
    singles = [pyqg.QGModel(nx=NX, dt=3600.0, ntd=1, log_level=0, parameterization=RotEqParameterization(net))
               for _ in range(n)]
    rng = np.random.default_rng(6)
    for e, s in zip(ens.members, singles):
        q0 = 1e-6 * rng.normal(size=s.q.shape)
        e.q, s.q = q0.copy(), q0.copy()
    for _ in range(steps):
        ens.step()
        for s in singles:
            s._step_forward()
    for e, s in zip(ens.members, singles):
        np.testing.assert_allclose(e.q, s.q, rtol=1e-6, atol=1e-6 * np.abs(s.q).max())
        assert e.tc == s.tc == steps


def _saved(tmp_path, net, solver):
    return models.save_model(net, tmp_path / "model", training={"solver": solver},
                             inference_cost={"ms_per_call_64x64_1thread": 0.0})


def test_model_for_another_grid_or_configuration_is_refused(tmp_path, net, model_state):
    solver = solver_config_of(model_state)
    d = _saved(tmp_path, net, {**solver, "nx": 64, "ny": 64})
    m = _spun_up_model(steps=2)
    with pytest.raises(ModelMismatchError, match="nx: the model was trained for nx=64, the solver has nx=32"):
        RotEqParameterization(d)(m)
    d = _saved(tmp_path, net, {**solver, "beta": 2.0e-11})
    with pytest.raises(ModelMismatchError, match=r"beta: trained 2e-11, solver 1.5e-11.*allow_out_of_regime"):
        RotEqParameterization(d)(m)
    with pytest.warns(OutOfRegimeWarning, match="beta"):
        dq = RotEqParameterization(d, allow_out_of_regime=True)(m)
    assert np.all(np.isfinite(dq))
    d = _saved(tmp_path, net, solver)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RotEqParameterization(d)(m)  # matching configuration: no warning


def test_model_file_changed_after_loading(tmp_path, net, model_state):
    d = _saved(tmp_path, net, solver_config_of(model_state))
    P = RotEqParameterization(d)
    P.verify_model_file()
    other = _scaled_net(seed=9, state=state_from_model(model_state))
    _saved(tmp_path, other, solver_config_of(model_state))  # same path, new weights
    with pytest.raises(ModelFileChangedError, match="changed on disk after loading"):
        P(_spun_up_model(steps=2))


def test_missing_and_corrupt_model_files(tmp_path, net, model_state):
    with pytest.raises(FileNotFoundError, match="no model"):
        RotEqParameterization(tmp_path / "nowhere")
    d = _saved(tmp_path, net, solver_config_of(model_state))
    (d / "model.pt").write_bytes((d / "model.pt").read_bytes()[:100])
    with pytest.raises(models.ModelFileError, match="truncated or corrupt"):
        RotEqParameterization(d)


def test_nan_state_is_a_clear_error(net):
    P = RotEqParameterization(net)
    m = _spun_up_model(steps=2)
    q = m.q.copy()
    q[0, 3, 3] = np.nan
    m.q = q
    m._invert()  # as at hook time: ph, u and v all come from the NaN state
    with pytest.raises(FloatingPointError, match="not valid network input.*'vel_1' contains NaN"):
        P(m)


def test_a_nan_member_does_not_poison_the_ensemble(net):
    ens = Ensemble.build(RotEqParameterization(net), 2, nx=NX, dt=3600.0, ntd=1, log_level=0)
    for e in ens.members:
        e.q = 1e-6 * np.random.default_rng(1).normal(size=e.q.shape)
    ens.step()
    ens.members[1].qh[0, 1, 1] = np.nan
    ens.step()
    assert np.isfinite(ens.members[0].q).all() and not np.isfinite(ens.members[1].q).all()


def test_regime_check_accepts_the_training_configuration_up_to_the_group():
    """The shipped C4 model accepts eddy turned through 180 degrees (beta -> -beta, U -> -U) and says so;
    a configuration no group element reaches (beta flipped alone) is still refused, naming beta."""
    cfg = lambda **kw: pyqg.QGModel(nx=64, dt=3600.0, ntd=1, log_level=0, **kw)  # noqa: E731
    P = RotEqParameterization("eddy-c4")
    P.check_solver(cfg())
    assert P.matched_element is None
    P.check_solver(cfg(beta=-1.5e-11, U1=-0.025))
    assert P.matched_elements == (symmetry.Element(4, 2),) and P.matched_element == symmetry.Element(4, 2)
    assert "solver frame = rot180 of" in repr(P)
    with pytest.raises(ModelMismatchError, match=r"beta: trained 1.5e-11, solver -1.5e-11.*no element"):
        P.check_solver(cfg(beta=-1.5e-11))
    with pytest.raises(ModelMismatchError, match="rek"):
        P.check_solver(cfg(beta=-1.5e-11, U1=-0.025, rek=1e-7))  # the turn cannot explain other settings


def test_a_d4_model_names_both_elements_that_reach_the_turned_configuration(tmp_path):
    """With pyqg's beta along y and U along x, eddy turned through 180 degrees is also eddy mirrored in
    x (beta is a pseudovector); a D4 model trained on eddy matches both, the C4 model only the turn."""
    from conftest_models import tiny_dataset
    from roteq_param.models import ModelConfig
    from roteq_param.train import TrainOptions, train

    summary = train(TrainOptions(data=tiny_dataset(tmp_path / "tiny.nc", runs=2), out=str(tmp_path / "run"),
                                 name=str(tmp_path / "d4"), val_runs=1, epochs=1, batch_size=4, progress=False,
                                 threads=1, model=ModelConfig(group="D4", channels=(8,), kernel_sizes=(3,))))
    P = RotEqParameterization(summary["model_dir"])
    cfg = lambda **kw: pyqg.QGModel(nx=16, dt=3600.0, ntd=1, log_level=0, **kw)  # noqa: E731
    P.check_solver(cfg())
    assert P.matched_elements == ()
    P.check_solver(cfg(beta=-1.5e-11, U1=-0.025))
    assert [str(g) for g in P.matched_elements] == ["rot180", "rot0*flip"], P.matched_elements
    assert "solver frame = rot180 = rot0*flip of" in repr(P)
    with pytest.raises(ModelMismatchError, match="no element of the model's group D4"):
        P.check_solver(cfg(beta=-1.5e-11))  # beta flipped alone: neither a turn nor a mirror
