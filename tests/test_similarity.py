"""Resolution-aware similarity scaling (``ModelConfig.similarity``): the network is a function of
dimensionless fields, so it commutes with changes of the units of length and time, takes the grid
spacing as an input (also through the traced predictor) and runs in pyqg on grids it was not trained on.
Inputs are a spun-up pyqg state in SI units."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest_models import eddy64_model, physical_normalization, tiny_dataset
from roteq_param import models
from roteq_param.models import ModelConfig, similarity
from roteq_param.train import TrainOptions, train
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import ModelMismatchError, RotEqParameterization
from solver_coupling.pyqg.state import state_from_model

pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")


@pytest.fixture(scope="module")
def eddy():
    return eddy64_model()


def _fresh(state, dx, similar: bool, seed=0):
    torch.manual_seed(seed)
    net = models.build_model(group="C4", channels=(8, 8), kernel_sizes=(3, 1), similarity=similar)
    return physical_normalization(net, state, dx)


def test_unit_exponents_are_read_from_the_schemas_unit_strings():
    assert similarity.unit_exponents("m2 s-1") == (2, -1)
    assert similarity.unit_exponents("m-1 s-1") == (-1, -1)
    assert similarity.unit_exponents("m3 s-2") == (3, -2)
    assert similarity.unit_exponents("") == (0, 0)
    with pytest.raises(ValueError, match="units made of m and s.*'K m'"):
        similarity.unit_exponents("K m")


def test_the_gradient_scale_of_a_plane_wave_is_its_analytic_norm():
    """u = U sin(k x), a second layer at rest: the centred difference of the sine is exactly
    U sin(k dx) / dx cos(k x), so G = U sin(k dx) / (2 dx) (the RMS of the cosine is 1/sqrt(2), the
    mean over two layers another 1/sqrt(2)) to round-off, and it tends to the continuous U k / 2 at
    second order in dx."""
    L, U, k = 1.0e6, 0.1, 2 * np.pi * 3 / 1.0e6
    errors = []
    for n in (32, 64):
        dx = L / n
        x = (np.arange(n) + 0.5) * dx
        vel = np.zeros((1, 4, n, n))
        vel[0, 0] = U * np.sin(k * x)[None, :]
        g = float(similarity.gradient_scale(torch.from_numpy(vel), dx))
        assert g == pytest.approx(U * np.sin(k * dx) / (2 * dx), rel=1e-12)
        errors.append(abs(g - U * k / 2) / (U * k / 2))
    assert 3.8 < errors[0] / errors[1] < 4.2, errors


def _changed_units(net, state, length, time):
    """The state in other units of length and time: a field in m^a s^c is multiplied by length^a time^c."""
    out = {}
    for f in net.schema.inputs:
        a, c = similarity.unit_exponents(f.units)
        out[f.name] = np.asarray(state[f.name]) * length**a * time**c
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_similarity_scaled_model_commutes_with_changes_of_units(eddy, dtype):
    """The same flow measured with a grid twice as coarse and a clock 3x as fast (lengths x2, times
    x1/3): the fluxes of the similarity-scaled network are the old fluxes in the new units, through
    the traced predictor (so the grid spacing is a live input of the trace). Without the scaling the
    network is tied to its grid: the same change moves its output by O(1)."""
    state, dx = state_from_model(eddy), eddy.L / eddy.nx
    length, time = 2.0, 1.0 / 3.0
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}[dtype]
    for similar in (True, False):
        net = _fresh(state, dx, similar)
        predictor = models.Predictor(net, dtype=dtype)
        before = predictor(state, dx)
        after = predictor(_changed_units(net, state, length, time), dx * length)
        worst = 0.0
        for f in net.schema.outputs:
            a, c = similarity.unit_exponents(f.units)
            expected = before[f.name] * length**a * time**c
            worst = max(worst, float(np.abs(after[f.name] - expected).max() / np.abs(expected).max()))
        if similar:
            assert worst <= tol, worst
        else:
            assert worst > 0.1, worst


def test_a_similarity_scaled_model_refuses_a_call_without_the_grid_spacing(eddy):
    state = state_from_model(eddy)
    net = _fresh(state, eddy.L / eddy.nx, True)
    x = net.schema.stack({k: torch.as_tensor(v, dtype=torch.float32) for k, v in state.items()})[None]
    for call in (lambda: net(x), lambda: net.export()(x), lambda: models.Predictor(net)(state)):
        with pytest.raises(ValueError, match=r"needs the grid spacing dx \[m\]"):
            call()
    # the C-grid closure takes it at construction, and then computes what the predictor does
    from solver_coupling.cgrid.adapter import NetworkClosure

    beta, U = (0.0, eddy.beta), ((eddy.U1, 0.0), (eddy.U2, 0.0))
    with pytest.raises(ValueError, match="similarity-scaled: pass the grid spacing dx"):
        NetworkClosure(net, beta, U)
    dx = eddy.L / eddy.nx
    u_c = np.stack([state["vel_1"][0], state["vel_2"][0]])
    v_c = np.stack([state["vel_1"][1], state["vel_2"][1]])
    tau, _ = NetworkClosure(net, beta, U, dx=dx)(u_c, v_c, state["b"])
    expected = models.Predictor(net)(state, dx)
    assert np.abs(tau[0] - expected["tau_1"]).max() <= 1e-6 * np.abs(expected["tau_1"]).max()


def test_training_with_similarity_then_running_in_pyqg_on_other_grids(tmp_path):
    """`roteq train --similarity` end to end on real 32^2 -> 16^2 data; the saved model runs in pyqg at
    16^2 (its grid), 12^2 and 24^2, where the same architecture without the scaling is refused."""
    data = tiny_dataset(tmp_path / "tiny.nc")
    saved = {}
    for similar in (True, False):
        summary = train(TrainOptions(data=data, out=str(tmp_path / f"run{similar}"), name=str(tmp_path / f"m{similar}"),
                                     model=ModelConfig(channels=(8, 8), kernel_sizes=(3, 1), similarity=similar),
                                     epochs=2, batch_size=4, progress=False, threads=1))
        assert np.isfinite(summary["metrics"]["val"]["S_mean"])
        saved[similar] = summary["model_dir"]
    net = models.load_model(saved[True])
    assert net.config.similarity
    dx_ref, g_ref = (float(v) for v in net.similarity_reference)
    assert dx_ref == pytest.approx(1.0e6 / 16, rel=1e-6) and 0 < g_ref < 1e-3  # 1/s (a weak, barely spun-up flow here)
    for n in (16, 12, 24):
        m = get_config("eddy", {"nx": n}, coarse_nx=n).make_model(log_level=0)
        m.q = np.random.default_rng(n).standard_normal((2, n, n)) * 1e-6
        m._invert()
        dq = RotEqParameterization(saved[True])(m)
        assert dq.shape == (2, n, n) and np.all(np.isfinite(dq)) and np.abs(dq).max() > 0
        if n != 16:
            with pytest.raises(ModelMismatchError, match="trained for nx=16.*--similarity` runs on other grids"):
                RotEqParameterization(saved[False])(m)


def test_roteq_score_reports_offline_skill_and_refuses_runs_it_does_not_have(tmp_path, capsys):
    import json

    from solver_coupling.cli import main

    data = tiny_dataset(tmp_path / "tiny.nc")
    summary = train(TrainOptions(data=data, out=str(tmp_path / "run"), name=str(tmp_path / "m"),
                                 model=ModelConfig(channels=(8, 8), kernel_sizes=(3, 1), similarity=True),
                                 epochs=2, batch_size=4, progress=False, threads=1))
    out = tmp_path / "score.json"
    assert main(["score", "--model", summary["model_dir"], "--data", data, "--runs", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["grid"] == 16 and result["runs"] == [2]
    # the held-out run is the training loop's validation run: the same R^2 as the card records
    assert result["r2"]["S_mean"] == pytest.approx(summary["metrics"]["val"]["S_mean"], abs=1e-6)
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main(["score", "--model", summary["model_dir"], "--data", data, "--runs", "7"])
    assert err.value.code == 2 and "--runs [7] are not in" in capsys.readouterr().err


def test_training_on_two_grids_at_once_resumes_exactly_and_records_both(tmp_path):
    """`roteq train --more-data`: 16^2 and 12^2 coarse-grainings of the same kind of runs (12 does not
    divide 32: spectral truncation), batches per grid. Stopped after one epoch and resumed, it gives
    the straight run's weights bit for bit; the card records both datasets and the held-out R^2 on each."""
    d16, d12 = tiny_dataset(tmp_path / "d16.nc"), tiny_dataset(tmp_path / "d12.nc", coarse_nx=12, seed=2)
    common = dict(data=d16, more_data=(d12,), model=ModelConfig(channels=(8, 8), kernel_sizes=(3, 1), similarity=True),
                  epochs=3, batch_size=4, progress=False, threads=1)
    straight = train(TrainOptions(out=str(tmp_path / "a"), name=str(tmp_path / "ma"), **common))
    assert not train(TrainOptions(out=str(tmp_path / "b"), name=str(tmp_path / "mb"), stop_after=1,
                                  **common))["finished"]
    resumed = train(TrainOptions(out=str(tmp_path / "b"), name=str(tmp_path / "mb"), resume=True, **common))
    a, b = models.load_model(straight["model_dir"]), models.load_model(resumed["model_dir"])
    for key, value in a.canonical_state_dict().items():
        assert torch.equal(value, b.canonical_state_dict()[key]), key
    card = models.load_card(straight["model_dir"])
    more = card["training"]["more_data"]
    assert [m["grid"] for m in more] == [12] and more[0]["val_runs"] == [2]
    assert np.isfinite(card["metrics"]["val_more_data"][Path(d12).name]["S_mean"])  # no machine path in a card
    # a resume with another second dataset is refused
    with pytest.raises(ValueError, match="the options differ"):
        train(TrainOptions(out=str(tmp_path / "b"), resume=True, **{**common, "more_data": (d16,)}))
