"""The fixed closure terms a model can carry (ModelConfig.closure): the grid-scale damping against an
independent derivation on pyqg's own wavenumbers and its physics (decay rate at the grid scale,
momentum and energy); the energy-consistent backscatter (it returns exactly the asked multiple of the
network's energy drain, conserves momentum, is equivariant); the offline calibration against an
independent energy budget; both through the hook on a spun-up state; and `roteq derive`."""

import json

import numpy as np
import pytest
import torch

from roteq_param import fluxform, models, symmetry
from roteq_param.fluxform import Stratification
from roteq_param.forcing import PVForcing
from roteq_param.models import ModelConfig
from roteq_param.symmetry import Group, Kind
from solver_coupling.cli import main as roteq
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.state import state_from_model
from conftest_models import eddy64_model, tiny_dataset
from roteq_param.train.calibrate import calibrate_energy_backscatter
import xarray as xr

pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")
RATE = 2e-5  # 1/s: about 1/(0.6 day) at the grid's Nyquist wavenumber


@pytest.fixture(scope="module")
def eddy():
    """The stored spun-up 64^2 eddy state in a pyqg model (SI units)."""
    return eddy64_model()


@pytest.fixture(scope="module")
def damped(tmp_path_factory):
    """Copies of the shipped default model without closure terms and with grid damping (``roteq derive``)."""
    base = tmp_path_factory.mktemp("derived")
    assert roteq(["derive", "--model", models.DEFAULT_MODEL, "--grid-damping", "0", "--energy-backscatter", "0",
                  "--name", str(base / "plain")]) == 0
    assert roteq(["derive", "--model", str(base / "plain"), "--grid-damping", str(RATE), "--name", str(base / "damped"),
                  "--note", "test"]) == 0
    return models.load_model(base / "plain"), models.load_model(base / "damped"), base / "damped"


def test_multiplier_damps_the_grid_scale_at_the_rate_on_any_grid():
    for n, L in ((16, 1e6), (64, 1e6), (96, 4e5)):
        dx = L / n
        x = (np.arange(n) + 0.5) * dx
        psi = np.sin(np.pi * x / dx)[None, :] * np.ones((n, 1))  # the x-Nyquist mode at cell centres
        zeta = fluxform.laplacian(psi, L)
        S = np.fft.irfft2(fluxform.biharmonic_damping_multiplier(n, L, RATE) * np.fft.rfft2(psi), s=(n, n))
        # dS/dt = -rate * zeta for the grid-scale mode: the rate means the same on every grid
        np.testing.assert_allclose(S, -RATE * zeta, rtol=0, atol=1e-12 * np.abs(RATE * zeta).max())


def test_multiplier_is_minus_nu4_biharmonic_of_vorticity_and_drains_energy(eddy):
    """Against pyqg's own wavenumbers and FFT: S = -nu4 lap^2 zeta with nu4 = rate (dx/pi)^4."""
    nu4 = RATE * (eddy.dx / np.pi) ** 4
    lap = -(eddy.k**2 + eddy.l**2)
    expected = eddy.ifft(-nu4 * lap**2 * (lap * eddy.ph))
    S = eddy.ifft(fluxform.biharmonic_damping_multiplier(eddy.nx, eddy.L, RATE) * eddy.ph)
    assert np.abs(S - expected).max() <= 1e-13 * np.abs(expected).max()
    assert np.abs(S.mean(axis=(-2, -1))).max() <= 1e-15 * np.abs(S).max()  # no net source
    psi = eddy.ifft(eddy.ph)
    assert float(np.sum(psi * S)) > 0.0  # dE/dt = -<psi S> < 0: it only drains energy
    # the same as -curl(div tau) of the viscous stress tau = +nu4 lap(grad u + grad u^T) (du/dt = -nu4 lap^2 u)
    u, v = eddy.ifft(-1j * eddy.l * eddy.ph), eddy.ifft(1j * eddy.k * eddy.ph)
    ux, uy, vx, vy = (fluxform.ddx(u, eddy.L), fluxform.ddy(u, eddy.L), fluxform.ddx(v, eddy.L),
                      fluxform.ddy(v, eddy.L))
    tau = nu4 * fluxform.laplacian(np.stack([2 * ux, uy + vx, 2 * vy], -3), eddy.L)
    via_flux = fluxform.pv_forcing_from_fluxes(tau, np.zeros_like(tau[..., :2, :, :]), Stratification.two_layer(eddy.F1, eddy.F2), eddy.L)
    assert np.abs(via_flux - S).max() <= 1e-6 * np.abs(S).max()  # spectral vs Nyquist-zeroed odd derivatives


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forcing_adds_exactly_the_damping_on_a_spun_up_state(eddy, damped, dtype):
    plain, with_damping, _ = damped
    beta, U = np.array([0.0, eddy.beta]), np.array([[eddy.U1, 0.0], [eddy.U2, 0.0]])
    forcings = [PVForcing(models.Predictor(net, dtype=dtype), strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx)
                for net in (plain, with_damping)]
    hot = [f.from_spectral(eddy.ph, beta, U) for f in forcings]
    expected = eddy.ifft(fluxform.biharmonic_damping_multiplier(eddy.nx, eddy.L, RATE) * eddy.ph)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert np.abs(hot[1] - hot[0] - expected).max() <= tol * np.abs(expected).max()
    # the named-input route (vorticity from the velocity the network sees) gives the same forcing
    named = forcings[1](state_from_model(eddy))
    assert np.abs(named - hot[1]).max() <= (1e-10 if dtype == torch.float64 else 1e-5) * np.abs(hot[1]).max()


def test_damped_forcing_is_equivariant_for_every_element_on_a_physical_state(eddy, damped):
    _, net, _ = damped
    state = state_from_model(eddy)
    forcing = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx)
    dq = forcing(state)
    for g in Group.parse(net.config.group).exact_elements():
        got = forcing(net.schema.transform(g, state))
        want = symmetry.act(g, dq, Kind.PSEUDOSCALAR)
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max(), str(g)


def test_plugin_applies_the_damping_and_the_run_stays_finite(eddy, damped):
    _, _, folder = damped
    P = RotEqParameterization(str(folder), dtype=torch.float64)
    m = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(log_level=0, parameterization=P)
    m.q = eddy.q.copy()
    m._invert()
    for _ in range(48):
        m._step_forward()
    assert np.isfinite(m.q).all()
    assert P.network.config.grid_damping == RATE


def test_derive_keeps_the_network_and_records_its_origin(eddy, damped):
    plain, with_damping, folder = damped
    state = state_from_model(eddy)
    a = models.Predictor(plain, dtype=torch.float64)(state)
    b = models.Predictor(with_damping, dtype=torch.float64)(state)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the fluxes are the network's, bit for bit
    card = models.load_card(folder)
    assert card["architecture"]["grid_damping"] == RATE
    assert card["training"]["derived_from"]["model"] == "plain"
    assert card["training"]["derived_from"]["closure"]["grid_damping"] == 0.0
    assert card["training"]["solver"] == models.load_card(models.DEFAULT_MODEL)["training"]["solver"]
    assert "network" in card["metrics"]
    assert "grid-scale damping 2e-05" in (folder / "CARD.md").read_text()


def test_bad_damping_and_bad_destination_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="grid_damping must be a finite rate >= 0"):
        ModelConfig(grid_damping=-1.0)
    with pytest.raises(ValueError, match="finite"):
        ModelConfig(grid_damping=float("nan"))
    with pytest.raises(SystemExit) as e:
        roteq(["derive", "--model", models.DEFAULT_MODEL, "--grid-damping", "-3", "--name", str(tmp_path / "x")])
    assert e.value.code == 2 and "grid_damping must be" in capsys.readouterr().err
    assert not (tmp_path / "x" / "model.pt").exists()
    with pytest.raises(SystemExit) as e:
        roteq(["derive", "--model", models.DEFAULT_MODEL, "--grid-damping", "1e-5",
               "--name", str(models.model_dir(models.DEFAULT_MODEL))])
    assert e.value.code == 2 and "another folder than its source" in capsys.readouterr().err


def test_training_route_through_a_flux_net_adds_the_same_damping(eddy, damped):
    """The differentiable route (a FluxNet in the torch twin's graph) adds exactly the damping."""
    _, _, folder = damped
    beta, U = torch.tensor([0.0, eddy.beta]), torch.tensor([[eddy.U1, 0.0], [eddy.U2, 0.0]])
    ph = torch.as_tensor(eddy.ph)
    S = []
    for source in (folder.parent / "plain", folder):
        net64 = models.load_model(source).train().converted(torch.float64).eval()  # train(): no caches to copy
        S.append(PVForcing(net64, strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx).from_spectral(ph, beta, U).detach())
    expected = eddy.ifft(fluxform.biharmonic_damping_multiplier(eddy.nx, eddy.L, RATE) * eddy.ph)
    assert np.abs((S[1] - S[0]).numpy() - expected).max() <= 1e-12 * np.abs(expected).max()


BACKSCATTER = 0.6


@pytest.fixture(scope="module")
def backscattering(tmp_path_factory):
    """The shipped default model with the energy backscatter and the damping (``roteq derive``)."""
    out = tmp_path_factory.mktemp("derived") / "backscatter"
    assert roteq(["derive", "--model", models.DEFAULT_MODEL, "--energy-backscatter", str(BACKSCATTER),
                  "--grid-damping", str(RATE), "--name", str(out)]) == 0
    return models.load_model(out), out


def test_energy_weights_are_parseval_with_the_depth_fractions(eddy):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 2, 64, 64))
    w = fluxform.energy_weights(64, Stratification.two_layer(eddy.F1, eddy.F2).depth_fractions)
    spectral = float((w * (np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b)).real).sum())
    H = np.array(eddy.Hi) / eddy.H  # pyqg's own layer depths
    grid = float(sum(H[i] * (a[i] * b[i]).sum() for i in range(2)))
    assert abs(spectral - grid) <= 1e-12 * abs(grid)


def _spectral_drain(forcing, P, sh):
    return float((forcing._weights * (P.conj() * sh).real).sum())


@pytest.mark.parametrize("order", [2, 1])
def test_backscatter_returns_exactly_the_asked_multiple_of_the_network_drain(eddy, backscattering, tmp_path, order):
    """With a network forcing that drains energy (here a pure viscosity on the spun-up state), the
    term returns the asked multiple of that drain, as -a K^(2 order) psi^ (order 2: -a lap zeta,
    order 1: +a zeta) with one a >= 0 for both layers, and no net source; with one that injects
    energy it is off."""
    _, folder = backscattering
    net = models.load_model(models.derive_model(folder, tmp_path / "m", closure={"backscatter_order": order}))
    full = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx)
    P = torch.as_tensor(eddy.ph)[None]
    viscosity = torch.as_tensor(fluxform.biharmonic_damping_multiplier(eddy.nx, eddy.L, 1e-5))
    for sh, drains in ((viscosity * P, True), (-viscosity * P, False)):
        backscatter = full._closure_terms(sh, P) - full._damping * P
        if not drains:
            assert float(backscatter.abs().max()) == 0.0
            continue
        drain = _spectral_drain(full, P, sh)
        assert drain > 0
        assert abs(_spectral_drain(full, P, backscatter) + BACKSCATTER * drain) <= 1e-12 * drain
        shape = -torch.as_tensor((eddy.k**2 + eddy.l**2) ** order) * P
        a = float((backscatter.conj() * shape).real.sum() / (shape.conj() * shape).real.sum())
        assert a > 0 and float((backscatter - a * shape).abs().max()) <= 1e-12 * float(backscatter.abs().max())
        assert float(backscatter[..., 0, 0].abs().max()) == 0.0  # the k = l = 0 mode: no net source


def test_spectral_route_equals_the_named_route_with_closure_terms(eddy, backscattering):
    net, _ = backscattering
    state = state_from_model(eddy)
    full = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx)
    S = full(state)
    beta, U = np.array([0.0, eddy.beta]), np.array([[eddy.U1, 0.0], [eddy.U2, 0.0]])
    hot = full.from_spectral(eddy.ph, beta, U)
    assert np.abs(hot - S).max() <= 1e-10 * np.abs(S).max()


def test_backscatter_forcing_is_equivariant_for_every_element_on_a_physical_state(eddy, backscattering):
    net, _ = backscattering
    state = state_from_model(eddy)
    forcing = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(eddy.F1, eddy.F2), L=eddy.L, n=eddy.nx)
    dq = forcing(state)
    for g in Group.parse(net.config.group).exact_elements():
        want = symmetry.act(g, dq, Kind.PSEUDOSCALAR)
        got = forcing(net.schema.transform(g, state))
        assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max(), str(g)


def test_calibration_matches_an_independent_energy_budget(tmp_path):
    """The fraction is 1 - D_truth / D_net, with D recomputed here on the grid from psi = inverted q."""
    path = tiny_dataset(tmp_path / "tiny.nc")
    torch.manual_seed(0)
    net = models.build_model(group="C4", channels=(8,), kernel_sizes=(3,))
    net.set_normalization({"vel_1": 1e-2, "vel_2": 1e-3, "b": 1e2, "beta": 1.5e-11, "U_1": 0.025, "U_2": 1.0},
                          {f.name: 1e-4 if f.name.startswith("tau") else 1.0 for f in net.schema.outputs})
    net.eval()
    result = calibrate_energy_backscatter(net, path, runs=[1, 2])
    ds = xr.open_dataset(path).isel(run=[1, 2])
    F1, F2, L = ds.attrs["F1"], ds.attrs["F2"], float(json.loads(ds.attrs["solver"])["L"])
    psi = fluxform.invert_pv(ds["q"].values.astype(np.float64), Stratification.two_layer(F1, F2), L)
    H = np.array([F2, F1]) / (F1 + F2)
    forcing = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(F1, F2), L=L, n=psi.shape[-1])
    x = {k: ds[k].values.astype(np.float64) for k in ("u", "v", "b")}
    state = {"vel_1": np.stack([x["u"][:, :, 0], x["v"][:, :, 0]], -3),
             "vel_2": np.stack([x["u"][:, :, 1], x["v"][:, :, 1]], -3), "b": x["b"],
             "beta": np.broadcast_to(ds["beta_vec"].values[:, None], (2, psi.shape[1], 2)).astype(np.float64),
             "U_1": np.broadcast_to(ds["U_vec"].values[:, None, 0], (2, psi.shape[1], 2)).astype(np.float64),
             "U_2": np.broadcast_to(ds["U_vec"].values[:, None, 1], (2, psi.shape[1], 2)).astype(np.float64)}
    S_net = forcing(state)

    def drain(S):
        return float(np.mean([sum(H[i] * (psi[r, t, i] * S[r, t, i]).sum() for i in range(2))
                              for r in range(psi.shape[0]) for t in range(psi.shape[1])]))

    d_truth, d_net = drain(ds["S_flux"].values.astype(np.float64)), drain(S_net)
    assert result["samples"] == psi.shape[0] * psi.shape[1]
    # psi from the stored float32 velocity (calibration) vs from the stored float32 q (here)
    assert abs(result["drain_truth"] - d_truth) <= 1e-4 * abs(d_truth)
    assert abs(result["drain_network"] - d_net) <= 1e-4 * abs(d_net)
    assert result["fraction"] == pytest.approx(float(np.clip(1 - d_truth / d_net, 0, 1)) if d_net > 0 else 0.0,
                                               abs=1e-4)
    with pytest.raises(ValueError, match="not in"):
        calibrate_energy_backscatter(net, path, runs=[7])


def test_derive_auto_records_the_calibration(tmp_path, capsys):
    path = tiny_dataset(tmp_path / "tiny.nc")
    out = tmp_path / "auto"
    assert roteq(["derive", "--model", models.DEFAULT_MODEL, "--energy-backscatter", "auto", "--data",
                  f"{path}@1-2", "--name", str(out)]) == 0
    printed = capsys.readouterr().out
    card = models.load_card(out)
    cal = card["training"]["calibration"]
    # the card names the data without this machine's temporary folder (it is not under the repository)
    assert cal["runs"] == [1, 2] and cal["data"] == "tiny.nc@1-2"
    assert card["architecture"]["energy_backscatter"] == pytest.approx(cal["fraction"])
    assert "energy_backscatter =" in printed


@pytest.mark.parametrize("argv, message", [
    (["--energy-backscatter", "auto"], "needs|calibrates on a dataset"),
    (["--energy-backscatter", "-0.5"], "finite multiple >= 0"),
    (["--energy-backscatter", "lots"], "takes a number or 'auto'"),
    (["--backscatter-order", "3"], "invalid choice"),
    ([], "nothing to change"),
])
def test_derive_refuses_bad_closure_requests(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        roteq(["derive", "--model", models.DEFAULT_MODEL, "--name", str(tmp_path / "x"), *argv])
    assert e.value.code == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x" / "model.pt").exists()


def test_the_torch_twin_applies_the_same_closure_terms_as_the_pyqg_hook(eddy, backscattering):
    """A model with both closure terms: 50 steps of pyqg + hook and of the twin + in-graph closure from
    the same state agree to round-off (float64)."""
    from solver_coupling.torchqg import TorchQGModel
    from solver_coupling.torchqg.closures import FluxNetClosure

    _, folder = backscattering
    m = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(
        log_level=0, tmax=50 * 3600.0, parameterization=RotEqParameterization(str(folder), dtype=torch.float64))
    m.q = eddy.q.copy()
    m._invert()
    twin = TorchQGModel.from_pyqg(m, dtype=torch.float64, parameterization=FluxNetClosure(str(folder),
                                                                                          dtype=torch.float64))
    m.run()
    twin.step(50)
    err = float(np.abs(twin.q[0].numpy() - m.q).max() / np.abs(m.q).max())
    assert err <= 1e-10, err
