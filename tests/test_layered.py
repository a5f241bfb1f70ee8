"""N-layer QG (pyqg LayeredModel): the stratification, inversion and PV against pyqg, the flux-form
forcing against explicit derivatives, the coarse-graining identity, and the plugin on a live
LayeredModel (conservation, exact equivariance of whole turned and mirrored configurations, refusals)."""

import numpy as np
import pyqg
import pytest
import torch

from roteq_param import coarsen, fluxform as ff, models, symmetry
from roteq_param.fields import qg_constants, qg_schema
from roteq_param.forcing import PVForcing
from roteq_param.symmetry import Element, Kind
from solver_coupling.pyqg.plugin import ModelMismatchError, RotEqParameterization
from solver_coupling.pyqg.state import state_from_model, stratification

pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")

# a three-layer ocean: thin surface layer, sheared background flow with a meridional part
LAYERS = dict(nz=3, H=[500.0, 1000.0, 2500.0], rho=[1025.0, 1025.275, 1025.640], U=[0.05, 0.01, 0.0],
              V=[0.005, 0.0, 0.0], beta=1.5e-11, rek=5.787e-7, L=1e6, dt=3600.0)


def _layered(nx, q=None, **overrides):
    m = pyqg.LayeredModel(nx=nx, log_level=0, ntd=1, **{**LAYERS, **overrides})
    if q is not None:
        m.q = np.ascontiguousarray(q)
        m._invert()
    return m


def _without_nyquist_and_mean(q):
    n = q.shape[-1]
    qh = np.fft.rfft2(q)
    qh[..., n // 2, :] = 0
    qh[..., :, n // 2] = 0
    qh[..., 0, 0] = 0
    return np.fft.irfft2(qh, s=(n, n))


@pytest.fixture(scope="module")
def spun_up():
    """A 32^2 three-layer LayeredModel after 600 one-hour steps (its state in physical units)."""
    np.random.seed(0)  # pyqg draws its initial PV from numpy's global generator
    m = _layered(32, tmax=3600.0 * 600)
    m.run()
    return _layered(32, _without_nyquist_and_mean(m.q))


def test_stratification_is_pyqgs(spun_up):
    strat = stratification(spun_up)
    assert strat.nlayers == 3
    np.testing.assert_allclose(strat.matrix, spun_up.S, rtol=1e-14, atol=0)
    np.testing.assert_allclose(strat.depth_fractions, spun_up.Hi / spun_up.Hi.sum(), rtol=1e-12)
    two = pyqg.QGModel(nx=8, log_level=0)
    assert ff.Stratification.from_matrix(two.S) == ff.Stratification.two_layer(two.F1, two.F2)
    np.testing.assert_allclose(ff.Stratification.two_layer(two.F1, two.F2).depth_fractions, two.Hi / two.Hi.sum(),
                               rtol=1e-14)
    with pytest.raises(ValueError, match="not tridiagonal"):
        ff.Stratification.from_matrix(np.array([[-2.0, 1.0, 1.0], [1.0, -2.0, 1.0], [1.0, 1.0, -2.0]]))
    with pytest.raises(ValueError, match="> 0"):
        ff.Stratification((1e-9, -1e-9), (1e-9, 1e-9))


def test_inversion_and_pv_are_pyqgs(spun_up):
    m, strat = spun_up, stratification(spun_up)
    psi = ff.invert_pv(m.q, strat, m.L)
    psi_pyqg = m.ifft(m.ph)
    np.testing.assert_allclose(psi, psi_pyqg, atol=1e-12 * np.abs(psi_pyqg).max())
    np.testing.assert_allclose(ff.pv_from_streamfunction(psi, strat, m.L), m.q, atol=1e-11 * np.abs(m.q).max())


def test_energy_weights_are_parseval_with_the_depth_fractions(spun_up):
    strat = stratification(spun_up)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 32, 32))
    w = ff.energy_weights(32, strat.depth_fractions)
    spectral = float((w * (np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b)).real).sum())
    H = spun_up.Hi / spun_up.Hi.sum()
    grid = float(sum(H[i] * (a[i] * b[i]).sum() for i in range(3)))
    assert abs(spectral - grid) <= 1e-12 * abs(grid)


@pytest.mark.parametrize("nlayers", [2, 3, 4])
def test_flux_form_forcing_equals_explicit_derivatives(nlayers):
    """S_i = -curl(div tau_i) + G[i,i] div F_{i,i} - G[i,i-1] div F_{i,i-1}, spelled out with the
    module's derivatives, in numpy and torch."""
    rng = np.random.default_rng(nlayers)
    n, L = 16, 1e6
    strat = ff.Stratification(tuple(rng.uniform(1e-9, 5e-9, nlayers - 1)), tuple(rng.uniform(1e-9, 5e-9, nlayers - 1)))
    pairs = ff.interface_flux_pairs(nlayers)
    assert len(pairs) == 2 * (nlayers - 1)
    tau = ff.laplacian(rng.standard_normal((nlayers, 3, n, n)), L) * 1e10  # smooth-ish, m^2 s^-2
    Fb = rng.standard_normal((len(pairs), 2, n, n)) * 1e3
    S = ff.pv_forcing_from_fluxes(tau, Fb, strat, L)
    expected = np.stack([ff.curl(ff.momentum_tendency(tau[i], L), L) for i in range(nlayers)])
    for p, (layer, interface) in enumerate(pairs):
        sign = 1.0 if interface == layer else -1.0  # the interface below layer i, or the one above it
        G = strat.upper[interface - 1] if interface == layer else strat.lower[interface - 1]
        expected[layer - 1] += sign * G * ff.divergence(Fb[p], L)
    np.testing.assert_allclose(S, expected, atol=1e-12 * np.abs(expected).max())
    assert np.abs(S.mean(axis=(-2, -1))).max() < 1e-14 * np.abs(S).max()
    St = ff.pv_forcing_from_fluxes(torch.tensor(tau), torch.tensor(Fb), strat, L)
    np.testing.assert_allclose(St.numpy(), S, atol=1e-12 * np.abs(S).max())
    with pytest.raises(ValueError, match="Fb must have shape"):
        ff.pv_forcing_from_fluxes(tau, Fb[:-1], strat, L)


def test_coarse_graining_identity_for_three_layers():
    """S_flux from the N-layer fluxes equals the directly filtered forcing (operators that commute
    with derivatives), on a 64^2 LayeredModel state coarsened to 16^2."""
    np.random.seed(1)
    m = _layered(64, tmax=3600.0 * 300)
    m.run()
    strat = stratification(m)
    out = coarsen.coarse_grain(m.q, strat, m.L, coarsen.make_operator("spectral", 64, 16, m.L))
    assert out["b"].shape == (2, 16, 16) and out["Fb"].shape == (4, 2, 16, 16) and out["tau"].shape == (3, 3, 16, 16)
    assert coarsen.commutation_residual(out).max() < 1e-11
    # the coarse state is consistent: its PV is the PV of its own streamfunction
    psi = ff.invert_pv(out["q"], strat, m.L)
    np.testing.assert_allclose(ff.velocity_from_streamfunction(psi, m.L)[:, 0], out["u"], atol=1e-10 * np.abs(out["u"]).max())
    np.testing.assert_allclose(psi[:-1] - psi[1:], out["b"], atol=1e-10 * np.abs(out["b"]).max())


def _fresh_net(state, group, seed=0):
    torch.manual_seed(seed)
    net = models.build_model(group=group, channels=(16, 16), kernel_sizes=(5, 1), schema=qg_schema(3).to_dict())
    rms = {k: float(np.sqrt(np.mean(np.asarray(v) ** 2))) or 1.0 for k, v in state.items()}
    out = {f.name: (rms["vel_1"] ** 2 if f.name.startswith("tau") else rms["vel_1"] * rms["b_1"]) * 0.05
           for f in net.schema.outputs}
    net.set_normalization(rms, out)
    return net.eval()


def test_plugin_runs_a_layered_model(spun_up):
    """A three-layer network in a live LayeredModel: the hook's dq equals the named-input route, its
    domain integral vanishes per layer, and the model steps on."""
    net = _fresh_net(state_from_model(spun_up), "C4")
    P = RotEqParameterization(net, dtype=torch.float64)
    dq = P(spun_up)
    assert dq.shape == (3, 32, 32) and np.isfinite(dq).all() and np.abs(dq).max() > 0
    assert np.abs(dq.mean(axis=(-2, -1))).max() < 1e-13 * np.abs(dq).max()
    named = PVForcing(models.Predictor(net, dtype=torch.float64), strat=stratification(spun_up), L=spun_up.L,
                      n=32)(state_from_model(spun_up))
    np.testing.assert_allclose(dq, named, atol=1e-12 * np.abs(dq).max())
    m = _layered(32, spun_up.q, tmax=3600.0 * 20, q_parameterization=RotEqParameterization(net))
    m.run()
    assert np.isfinite(m.q).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("group, g", [("C4", Element(4, 2)), ("D4", Element(4, 0, 1)), ("D4", Element(4, 2, 1))])
def test_hook_is_exact_for_a_turned_or_mirrored_layered_configuration(spun_up, dtype, group, g):
    """The whole three-layer configuration moved by g (q, beta and every layer's (U, V)) gives the
    moved dq, on the physical state, to 1e-10 in float64 and 1e-5 in float32."""
    net = _fresh_net(state_from_model(spun_up), group, seed=1)
    dq = RotEqParameterization(net, dtype=dtype)(spun_up)
    beta = np.array([0.0, LAYERS["beta"]])
    U = np.stack([LAYERS["U"], LAYERS["V"]], -1)
    moved = qg_schema(3).transform(g, qg_constants(beta, U))
    assert moved["beta"][0] == 0.0  # pyqg's beta points along y, so only these elements can be held
    m = _layered(32, symmetry.act(g, spun_up.q, Kind.PSEUDOSCALAR), beta=float(moved["beta"][1]),
                 U=[float(moved[f"U_{i}"][0]) for i in (1, 2, 3)], V=[float(moved[f"U_{i}"][1]) for i in (1, 2, 3)])
    got = RotEqParameterization(net, dtype=dtype)(m)
    expected = symmetry.act(g, dq, Kind.PSEUDOSCALAR)
    err = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert err <= {torch.float64: 1e-10, torch.float32: 1e-5}[dtype], (group, str(g), err)


def test_layered_models_energy_transfers_are_qgmodels():
    """`roteq evaluate` reads LayeredModel's KEflux_div / APEflux_div as QGModel's KEflux / APEflux: on a
    two-layer LayeredModel holding a QGModel's state every scored spectrum agrees (the APE transfer to
    3e-4: the two classes evaluate analytically equal Jacobians differently on the grid)."""
    from solver_coupling.pyqg.diagnostics import SnapshotDiagnostics

    np.random.seed(0)
    qg = pyqg.QGModel(nx=32, dt=3600.0, tmax=3600.0 * 300, log_level=0)
    qg.run()
    common = dict(nx=32, L=qg.L, beta=qg.beta, rek=qg.rek, dt=3600.0, rd=qg.rd, delta=qg.delta)
    two = SnapshotDiagnostics(dict(common, H1=qg.Hi[0], U1=qg.U1, U2=qg.U2))
    layered = SnapshotDiagnostics(dict(common, nz=2, H=list(qg.Hi), U=list(qg.Ubg), V=[0.0, 0.0]))
    assert type(layered.m) is pyqg.LayeredModel
    two.load(qg.q)
    layered.load(qg.q)
    a, b = two.spectra(), layered.spectra()
    for name in a:
        err = np.abs(a[name] - b[name]).max() / np.abs(a[name]).max()
        assert err <= (1e-3 if name == "APEflux" else 1e-12), (name, err)


def test_layer_count_mismatch_is_refused(spun_up):
    three = _fresh_net(state_from_model(spun_up), "C4")
    with pytest.raises(ModelMismatchError, match="nz: the model predicts fluxes for 3 layers, the solver has 2"):
        RotEqParameterization(three)(pyqg.QGModel(nx=32, log_level=0))
    two = models.build_model(group="C4", channels=(8,), kernel_sizes=(3,))
    with pytest.raises(ModelMismatchError, match="nz: the model predicts fluxes for 2 layers, the solver has 3"):
        RotEqParameterization(two)(spun_up)


def test_layered_configuration_from_data_to_online_run(tmp_path):
    """The whole path for three layers, through the commands: `roteq generate --config layered3` (a
    LayeredModel), `roteq train` (the schema follows the data's layers), `roteq rollout` with the
    trained model and with pyqg's backscatter; the torch twin is refused by name."""
    from solver_coupling.cli import main as roteq

    data = tmp_path / "l3.nc"
    assert roteq(["generate", "--config", "layered3", "--set", "nx=32", "--coarse-nx", "16", "--members", "3",
                  "--years", str(600 / 8640), "--spinup-years", str(300 / 8640), "--snapshot-hours", "60",
                  "--serial", "--out-file", str(data)]) == 0
    import xarray as xr

    with xr.open_dataset(data) as ds:
        assert ds["b"].dims == ("run", "time", "iface", "y", "x") and ds.sizes["iface"] == 2
        assert ds["Fb"].dims == ("run", "time", "pair", "comp", "y", "x") and list(ds["pair"].values) == \
            ["1,1", "2,1", "2,2", "3,2"]
        strat = ff.Stratification(tuple(ds.attrs["stretching_upper"]), tuple(ds.attrs["stretching_lower"]))
        from solver_coupling.pyqg.config import get_config

        np.testing.assert_allclose(strat.matrix, get_config("layered3").make_model(nx=16).S, rtol=1e-15)
        S_direct, S_flux = ds["S_direct"].values, ds["S_flux"].values
        assert np.abs(S_flux - S_direct).max() <= 1e-5 * np.abs(S_direct).max()  # float32 on disk
    model = tmp_path / "model"
    assert roteq(["train", "--data", str(data), "--channels", "8,8", "--kernel-sizes", "3,1", "--epochs", "2",
                  "--holdout", "1", "--out", str(tmp_path / "run"), "--name", str(model), "--no-progress"]) == 0
    assert models.load_model(model).schema == qg_schema(3)
    rollouts = {}
    for label, closure in (("model", str(model)), ("backscatter", "backscatter"), ("none", "none")):
        out = tmp_path / label
        assert roteq(["rollout", "--config", "layered3", "--nx", "16", "--model", closure, "--members", "2",
                      "--years", str(96 / 8640), "--snapshot-days", "1", "--out", str(out)]) == 0
        rollouts[label] = str(out / "rollout.nc")
        with xr.open_dataset(rollouts[label]) as ds:
            assert ds.sizes["lev"] == 3 and np.isfinite(ds["q"].values).all()
    assert roteq(["evaluate", "--truth", f"{data}@0-1", "--truth-b", f"{data}@2", "--baseline", rollouts["none"],
                  "--run", f"model={rollouts['model']}", "--run", f"backscatter={rollouts['backscatter']}",
                  "--out", str(tmp_path / "evaluate")]) == 0
    import json

    scores = json.loads((tmp_path / "evaluate" / "evaluate.json").read_text())
    assert {"q3", "KE3", "KEspec3", "KEflux", "APEflux"} <= set(scores["diagnostics"])
    assert all(np.isfinite(scores["runs"][name]["mean"]) for name in ("model", "backscatter", "truth-b"))
    with pytest.raises(SystemExit):
        roteq(["rollout", "--config", "layered3", "--nx", "16", "--engine", "torch", "--years", "0.001",
               "--out", str(tmp_path / "torch")])


def test_layered_configuration_errors():
    from solver_coupling.pyqg.config import get_config

    with pytest.raises(ValueError, match="'H' must be a list of 3 finite numbers"):
        get_config("layered3", {"H": [500.0, 3500.0]})
    with pytest.raises(ValueError, match="rho must increase downwards"):
        get_config("layered3", {"rho": [1026.0, 1025.0, 1027.0]})
    with pytest.raises(ValueError, match="cannot be set: the layer count comes with the configuration"):
        get_config("eddy", {"nz": 3})
    with pytest.raises(AttributeError, match="LayeredModel: use .stratification"):
        get_config("layered3").F1
