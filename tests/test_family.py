"""A family of configurations (issue #13 item 2): runs that draw beta, the deformation radius and the
drag from ranges; per-run stratification in the data and in the loss; a card that records the ranges;
a regime check that accepts any configuration inside them, up to the model's group; a network that
also sees each run's stretching couplings and drag (the regime inputs).

Real pyqg runs (32^2 coarse-grained to 16^2, a few hundred hours) and a real one-epoch escnn model.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyqg
import pytest
import torch
import xarray as xr

from conftest_models import HOUR_IN_YEARS
from roteq_param import models
from roteq_param.forcing import PVForcing
from roteq_param.models import ModelConfig
from roteq_param.train import TrainOptions, train
from roteq_param.train.data import load_dataset, pv_forcing
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.data import Request, UsageError, generate
from solver_coupling.pyqg.family import Family, parse_range
from solver_coupling.pyqg.plugin import ExtrapolationWarning, ModelMismatchError, RotEqParameterization
from solver_coupling.pyqg.state import constants, stratification
from roteq_param import symmetry

RANGES = {"beta": (1.0e-11, 2.0e-11), "rd": (12e3, 20e3), "rek": (3e-7, 8e-7)}


def _request(runs: int = 3, family: Family | None = Family.of(RANGES), seed: int = 4) -> Request:
    cfg = get_config("eddy").with_overrides({"nx": 32}, coarse_nx=16)
    return Request(cfg, runs=runs, years=300 * HOUR_IN_YEARS, spinup_years=200 * HOUR_IN_YEARS,
                   snapshot_hours=50, seed=seed, family=family)


@pytest.fixture(scope="module")
def family_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("family") / "family.nc"
    return generate(_request(), str(path), overwrite=True, serial=True, progress=False)


@pytest.fixture(scope="module")
def family_model(family_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("family_model")
    summary = train(TrainOptions(data=family_data, out=str(d / "run"), name=str(d / "model"), val_runs=1, epochs=1,
                                 batch_size=4, progress=False, threads=1,
                                 model=ModelConfig(channels=(8,), kernel_sizes=(3,))))
    return summary["model_dir"]


def test_draws_are_reproducible_inside_the_ranges_and_log_uniform():
    fam = Family.of(RANGES)
    draws = [fam.draw(4, r) for r in range(400)]
    assert draws[7] == fam.draw(4, 7) and draws[7] != fam.draw(5, 7)
    for name, (lo, hi) in RANGES.items():
        values = np.array([d[name] for d in draws])
        assert lo <= values.min() and values.max() <= hi
        # log-uniform: the log's mean sits at the log-midpoint (a uniform draw would sit above it)
        u = (np.log(values) - math.log(lo)) / math.log(hi / lo)
        assert abs(u.mean() - 0.5) < 0.05, (name, u.mean())
    u = Family.of({"U2": (-0.01, 0.01)}).draw(0, 0)["U2"]
    assert -0.01 <= u <= 0.01  # a range through zero is drawn uniformly


@pytest.mark.parametrize("text, match", [
    ("beta", "expected NAME=LO:HI"),
    ("nx=16:32", "a family varies one of beta, rek, rd, delta, U1, U2"),
    ("beta=2e-11:1e-11", "need finite LO < HI"),
    ("rd=-1:5", "must be positive"),
    ("rek=-1e-7:1e-7", "must be non-negative"),
    ("beta=a:b", "expected two numbers"),
])
def test_bad_ranges_are_refused_with_what_was_expected(text, match):
    with pytest.raises(ValueError, match=match):
        parse_range(text)


def test_a_layered_family_is_refused_by_name():
    cfg = get_config("layered3").with_overrides({"nx": 16}, coarse_nx=8)
    with pytest.raises(UsageError, match="families of LayeredModel configurations are not supported"):
        Request(cfg, years=0.01, spinup_years=0.0, snapshot_hours=24, family=Family.of({"beta": (1e-11, 2e-11)}))


def test_each_run_is_pyqg_at_its_own_draw_and_the_dataset_records_the_ranges(family_data):
    req = _request()
    with xr.open_dataset(family_data) as ds:
        solver = json.loads(ds.attrs["solver"])
        assert json.loads(ds.attrs["family"]) == {k: list(v) for k, v in RANGES.items()}
        for r in range(req.runs):
            drawn = req.family.draw(req.seed, r)
            m = req.run_config(r).make_model(nx=16, log_level=0)
            assert m.beta == drawn["beta"] and m.rd == drawn["rd"] and m.rek == drawn["rek"]
            np.testing.assert_allclose(ds["beta_vec"].values[r], [0.0, drawn["beta"]], rtol=1e-7)
            np.testing.assert_allclose(ds["stretching_upper"].values[r], [m.F1], rtol=1e-15)
            np.testing.assert_allclose(ds["stretching_lower"].values[r], [m.F2], rtol=1e-15)
            assert float(ds["rek"].values[r]) == m.rek and ds["rek"].attrs["units"] == "s-1"
        assert len({float(v) for v in ds["stretching_upper"].values[:, 0]}) == req.runs
    for name, (lo, hi) in RANGES.items():
        assert solver[name] == [lo, hi]
    # F1 = rd^-2 / (1 + delta) moves with rd: its range is taken at the ends of rd's
    delta = 0.25
    assert solver["G1up"] == pytest.approx([20e3 ** -2 / (1 + delta), 12e3 ** -2 / (1 + delta)], rel=1e-12)
    assert solver["delta"] == delta and solver["U1"] == 0.025  # what no draw moves stays a number


def test_a_family_resumes_with_the_same_draws_and_another_family_does_not_reuse_them(family_data, capsys):
    a, b = _request(), _request(family=Family.of({**RANGES, "beta": (1.0e-11, 3.0e-11)}))
    assert a.fingerprint(1) == _request().fingerprint(1)
    assert a.fingerprint(1) != b.fingerprint(1) != _request(family=None).fingerprint(1)
    generate(a, family_data, serial=True, progress=False)  # the same command again: nothing to do
    assert "already holds this ensemble" in capsys.readouterr().err


def test_the_pv_forcing_target_is_each_runs_own_flux_form_to_round_off(family_data):
    """S_flux, written by the data pipeline in float64 from each run's own couplings, is recovered from
    the stored fluxes through the weights; with run 0's couplings for every run it is not."""
    data = load_dataset(family_data)
    runs = list(range(data.n_runs))
    x, y, S = data.samples(runs)
    w = data.flux_weights(runs)
    assert w is not None and w.shape == (y.shape[0], y.shape[1])
    weighted = pv_forcing(data.schema, y.double(), data.strat, data.L, w.double())
    plain = pv_forcing(data.schema, y.double(), data.strat, data.L)
    err = lambda p: float((p - S.double()).abs().max() / S.double().abs().max())  # noqa: E731
    assert err(weighted) < 1e-5, err(weighted)  # float32 storage
    assert err(plain) > 1e-3, err(plain)
    assert data.flux_weights([0]) is None  # run 0 alone is the reference


def test_a_family_model_accepts_any_configuration_inside_its_ranges_up_to_the_group(family_model):
    card = json.load(open(f"{family_model}/card.json"))
    assert card["training"]["solver"]["beta"] == list(RANGES["beta"])
    card_text = open(f"{family_model}/CARD.md").read()  # and people read the ranges without the JSON
    assert "| `beta` | 1e-11 to 2e-11 |" in card_text and "| `delta` | 0.25 |" in card_text
    P = RotEqParameterization(family_model)
    cfg = lambda **kw: pyqg.QGModel(nx=16, dt=3600.0, ntd=1, log_level=0, **kw)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExtrapolationWarning)  # inside the training runs' span too: nothing to say
        P.check_solver(cfg(beta=1.2e-11, rd=18e3, rek=5e-7))  # inside every range, no draw's exact values
        assert P.matched_elements == ()
        P.check_solver(cfg(beta=-1.5e-11, rd=16e3, rek=4e-7, U1=-0.025))  # turned through 180 degrees, inside
        assert P.matched_elements == (symmetry.Element(4, 2),)
    with pytest.raises(ModelMismatchError, match=r"beta: trained range \[1e-11, 2e-11\], solver 3e-11"):
        P.check_solver(cfg(beta=3e-11, rd=15e3, rek=5e-7))
    with pytest.raises(ModelMismatchError, match=r"rd: trained range \[12000, 20000\], solver 30000"):
        P.check_solver(cfg(beta=1.5e-11, rd=30e3, rek=5e-7))
    with pytest.raises(ModelMismatchError, match=r"delta: trained 0.25, solver 0.5"):
        P.check_solver(cfg(beta=1.5e-11, rd=15e3, rek=5e-7, delta=0.5))
    with pytest.raises(ModelMismatchError, match="no element of the model's group C4"):
        P.check_solver(cfg(beta=-1.5e-11, rd=15e3, rek=5e-7))  # beta flipped alone


def test_a_family_model_warns_beyond_its_training_runs_inside_the_ranges(family_data, family_model):
    """The draws of the training runs (0 and 1 of 3) cover less than the family's box: the card records
    their span (each run's solver settings, as the dataset lists them), and inside the box but beyond
    the span the plugin runs with a warning that names the setting, also in a turned frame."""
    req = _request()
    with xr.open_dataset(family_data) as ds:
        assert json.loads(ds.attrs["run_solver"]) == [req.run_config(r).coarse_solver_config() for r in range(3)]
    draws = [req.family.draw(req.seed, r) for r in (0, 1)]
    span = json.load(open(f"{family_model}/card.json"))["training"]["solver_span"]
    for name in RANGES:
        assert span[name] == [min(d[name] for d in draws), max(d[name] for d in draws)]
        assert RANGES[name][0] < span[name][0] < span[name][1] < RANGES[name][1]
    assert set(span) == {"beta", "rd", "rek", "G1up", "G1low"}  # what the draws move, nothing else
    row = next(line for line in open(f"{family_model}/CARD.md") if line.startswith("| `beta` |"))
    assert row.strip() == f"| `beta` | 1e-11 to 2e-11 | {span['beta'][0]:.6g} to {span['beta'][1]:.6g} |"
    P = RotEqParameterization(family_model)
    cfg = lambda **kw: pyqg.QGModel(nx=16, dt=3600.0, ntd=1, log_level=0, **kw)  # noqa: E731
    beyond = 0.5 * (span["beta"][1] + RANGES["beta"][1])
    with pytest.warns(ExtrapolationWarning, match=rf"beta: training runs \[{span['beta'][0]:g}, "
                                                  rf"{span['beta'][1]:g}\], solver {beyond:g}") as seen:
        P.check_solver(cfg(beta=beyond, rd=16e3, rek=4e-7))
    assert "rd" not in str(seen[0].message) and "rek" not in str(seen[0].message)
    with pytest.warns(ExtrapolationWarning, match=rf"beta: training runs .*, solver {beyond:g}\b"):
        P.check_solver(cfg(beta=-beyond, rd=16e3, rek=4e-7, U1=-0.025))  # turned: beta taken back to > 0
    assert P.matched_elements == (symmetry.Element(4, 2),)
    with pytest.warns(ExtrapolationWarning, match=r"rek: training runs"):
        P.check_solver(cfg(beta=1.5e-11, rd=16e3, rek=7.5e-7))


@pytest.fixture(scope="module")
def regime_model(family_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("regime_model")
    summary = train(TrainOptions(data=family_data, out=str(d / "run"), name=str(d / "model"), val_runs=1, epochs=1,
                                 batch_size=4, progress=False, threads=1, regime_inputs=True,
                                 model=ModelConfig(group="D4", channels=(8,), kernel_sizes=(3,))))
    return summary["model_dir"]


def test_regime_inputs_carry_each_runs_couplings_and_drag_into_training(family_data, regime_model):
    from roteq_param.fields import qg_has_regime

    data = load_dataset(family_data, regime=True)
    assert qg_has_regime(data.schema) and not qg_has_regime(load_dataset(family_data).schema)
    named = data.schema.unstack(data.x.flatten(0, 1), "inputs")  # every sample of every run, in order
    per_run = data.x.shape[1]
    with xr.open_dataset(family_data) as ds:
        for r in range(data.n_runs):
            rows = slice(r * per_run, (r + 1) * per_run)
            for name, want in (("G_upper_1", ds["stretching_upper"].values[r, 0]),
                               ("G_lower_1", ds["stretching_lower"].values[r, 0]), ("rek", ds["rek"].values[r])):
                np.testing.assert_allclose(named[name][rows].numpy(), want, rtol=1e-6)  # float32, every sample
    card = json.load(open(f"{regime_model}/card.json"))
    assert card["training"]["options"]["regime_inputs"] is True
    assert {"G_upper_1", "G_lower_1", "rek"} <= {f["name"] for f in card["schema"]["inputs"]}
    assert "regime_inputs" not in TrainOptions(data="d", out="o").recipe()  # older recipes still resume


def test_a_regime_model_in_the_hook_sees_the_solvers_drag_and_couplings(regime_model):
    """The hook hands the network the solver's own rek and couplings: a different drag changes the
    forcing, and the hook equals the named route given the same regime; the turned configuration is
    still exact (D4: 180 degrees and the mirror)."""
    from roteq_param.fields import qg_regime_inputs
    from solver_coupling.pyqg.state import state_from_model

    def model(q=None, **kw):
        m = pyqg.QGModel(nx=16, dt=3600.0, ntd=1, log_level=0, **{"beta": 1.5e-11, "rd": 15e3, "rek": 5e-7, **kw})
        if q is None:
            m.set_q1q2(*(1e-6 * np.random.default_rng(0).standard_normal((2, 16, 16))))
        else:
            m.q = np.ascontiguousarray(q)
        m._invert()
        return m

    m = model()
    P = RotEqParameterization(regime_model, dtype=torch.float64)
    dq = P(m)
    assert np.abs(dq).max() > 0
    other = RotEqParameterization(regime_model, dtype=torch.float64)(model(m.q, rek=4e-7))
    assert np.abs(other - dq).max() > 1e-6 * np.abs(dq).max()  # the drag input reaches the network
    forcing = PVForcing(models.Predictor(regime_model, dtype=torch.float64), strat=stratification(m), L=m.L, n=16)
    np.testing.assert_allclose(forcing(state_from_model(m, regime=True)), dq, rtol=0, atol=1e-12 * np.abs(dq).max())
    with pytest.raises(ValueError, match="build the PVForcing with drag=rek"):
        forcing.from_spectral(m.ph, *constants(m))
    turned = model(symmetry.act(symmetry.Element(4, 2), m.q, symmetry.Kind.PSEUDOSCALAR), beta=-1.5e-11, U1=-0.025)
    got = RotEqParameterization(regime_model, dtype=torch.float64)(turned)
    want = symmetry.act(symmetry.Element(4, 2), dq, symmetry.Kind.PSEUDOSCALAR)
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()
    assert set(qg_regime_inputs(np.ones(1), np.ones(1), np.ones(())).keys()) == {"G_upper_1", "G_lower_1", "rek"}


def test_a_regime_model_on_the_c_grid_and_the_twin_needs_the_regime(regime_model):
    from solver_coupling.cgrid import NetworkClosure

    with pytest.raises(ValueError, match=r"pass regime=\(F1"):
        NetworkClosure(regime_model, beta=(0.0, 1.5e-11), U=((0.025, 0.0), (0.0, 0.0)))
    with pytest.raises(ValueError, match="does not see the regime"):
        NetworkClosure("eddy-c4", beta=(0.0, 1.5e-11), U=((0.025, 0.0), (0.0, 0.0)), regime=(1e-9, 1e-9, 5e-7))
    rng = np.random.default_rng(1)
    u, v = 0.05 * rng.standard_normal((2, 2, 16, 16))
    b = 1e3 * rng.standard_normal((16, 16))
    closure = lambda rek: NetworkClosure(regime_model, beta=(0.0, 1.5e-11), U=((0.025, 0.0), (0.0, 0.0)),  # noqa: E731
                                         regime=(3e-9, 7e-10, rek))
    tau_a, _ = closure(5e-7)(u, v, b)
    tau_b, _ = closure(4e-7)(u, v, b)
    assert np.isfinite(tau_a).all() and np.abs(tau_a - tau_b).max() > 0


def test_tools_that_need_one_configuration_refuse_a_family(family_data, family_model):
    from roteq_param.models import load_model
    from roteq_param.train.calibrate import calibrate_energy_backscatter

    with pytest.raises(ValueError, match="differ in stratification"):
        calibrate_energy_backscatter(load_model(family_model), family_data)
    assert calibrate_energy_backscatter(load_model(family_model), family_data, runs=[1])["runs"] == [1]
    from solver_coupling.pyqg.diagnostics import model_kwargs_from_attrs

    with xr.open_dataset(family_data) as ds, pytest.raises(ValueError, match="a family of configurations.*no one "
                                                                             "reference"):
        model_kwargs_from_attrs(ds)  # what roteq evaluate reads a truth set's physics from


def test_roteq_generate_vary_through_the_command_and_the_twin_refuses_a_family(tmp_path, capsys):
    from solver_coupling.cli import main as roteq
    from solver_coupling.torchqg.online_training import load_windows

    out = tmp_path / "fam.nc"
    common = ["generate", "--set", "nx=32", "--coarse-nx", "16", "--members", "2", "--years", str(250 * HOUR_IN_YEARS),
              "--spinup-years", str(200 * HOUR_IN_YEARS), "--snapshot-hours", "50", "--serial", "--out-file", str(out)]
    with pytest.raises(SystemExit) as e:
        roteq(common + ["--vary", "nx=16:32"])
    assert e.value.code == 2 and "a family varies one of beta" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        roteq(common + ["--vary", "rek=1e-7:2e-7", "--set", "rek=1e-7"])
    assert e.value.code == 2 and "rek: both --set and --vary" in capsys.readouterr().err
    assert not out.exists()
    assert roteq(common + ["--vary", "beta=1e-11:2e-11", "--window-steps", "2"]) == 0
    with xr.open_dataset(out) as ds:
        betas = ds["beta_vec"].values[:, 1]
    assert betas[0] != betas[1] and all(1e-11 <= b <= 2e-11 for b in betas)
    with pytest.raises(ValueError, match="is a family .*vary beta.*unrolls one configuration"):
        load_windows(out)
