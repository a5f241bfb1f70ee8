"""Operator closures fitted to the subgrid transfer spectra (``solver_coupling.torchqg.operator_fit``).

The closure's transfer spectra equal the energy and enstrophy budgets computed directly from pyqg's own
inversion; a closure of the same family is recovered from its own forcing to round-off; the command
fits real coarse-grained truth, lowers the held-out mismatch and writes a model pyqg's hook runs."""

from pathlib import Path

import numpy as np
import pyqg
import pytest
import torch
from conftest_models import operator_closure_64, tiny_dataset

from roteq_param.diagnostics import isotropic_spectrum
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.data import initial_pv
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import ModelMismatchError
from solver_coupling.torchqg.operator_closure import OperatorClosure
from solver_coupling.torchqg.operator_fit import (closure_transfer, fit_transfer, transfer_mismatch,
                                                  transfer_statistics)
from solver_coupling.torchqg.operator_store import load_operator_closure

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EDDY = {"nx": 64, "dt": 3600.0, "log_level": 0}  # pyqg's defaults otherwise: the eddy configuration


@pytest.fixture(scope="module")
def states():
    """Six pyqg eddy PV states (s^-1): the stored spun-up one and 1, 2, 3 days after it, and two early
    ones (60 and 90 days after a cold start)."""
    out = []
    m = pyqg.QGModel(**EDDY)
    m.q = np.load(Path(__file__).parent / "data" / "eddy64_state.npz")["q"]
    out.append(m.q.copy())
    for _ in range(3):
        for _ in range(24):
            m._step_forward()
        out.append(m.q.copy())
    for days in (60, 90):
        cold = pyqg.QGModel(tmax=days * 86400.0, twrite=10**9, **EDDY)
        cold.q = initial_pv(get_config("eddy", {"nx": 64}, coarse_nx=64), seed=7, run=0)
        cold.run()
        out.append(cold.q.copy())
    return np.stack(out)


def _applied(closure: OperatorClosure, q: np.ndarray) -> np.ndarray:
    """``dq`` (s^-2) of the closure on states ``q``, its multipliers applied with numpy's FFTs."""
    with torch.no_grad():
        mult = closure.multiplier(torch.float64).numpy().real
    return np.fft.irfft2(np.einsum("ijlk,tjlk->tilk", mult, np.fft.rfft2(q)), s=q.shape[-2:])


def test_closure_transfer_is_the_budget_from_pyqgs_own_inversion(states):
    """-(H_i/H) Re(conj(psi_i) dq_i) and (H_i/H) Re(conj(q_i) dq_i), with psi from pyqg's inversion, binned
    into shells: the statistics-based transfer of the same closure agrees to round-off."""
    closure = operator_closure_64(3)
    dq = _applied(closure, states)
    stats = transfer_statistics(states, dq, EDDY)
    m = pyqg.QGModel(**EDDY)
    energy, enstrophy = [], []
    for q, d in zip(states, dq):
        m.q = q
        m._invert()
        dqh = np.fft.rfft2(d)
        energy.append(-(np.conj(m.ph) * dqh).real)
        enstrophy.append((np.conj(m.qh) * dqh).real)
    weights = np.array([m.Hi[0], m.Hi[1]])[:, None] / m.H
    direct = np.stack([isotropic_spectrum(np.mean(energy, 0), m.L)[1] * weights,
                       isotropic_spectrum(np.mean(enstrophy, 0), m.L)[1] * weights])
    got = closure_transfer(closure, stats)
    assert np.abs(direct).max() > 0
    assert np.abs(got - direct).max() <= 1e-11 * np.abs(direct).max()
    # the forcing's own spectra (the fit's target) are the same numbers
    assert np.abs(stats.target - direct).max() <= 1e-11 * np.abs(direct).max()


def test_a_closure_of_the_family_is_recovered_from_its_own_forcing(states):
    """With S made by a closure of the same radius and basis, the fit matches every budget to round-off, on
    the fitting states and on held-out ones (the early states)."""
    truth = operator_closure_64(5)
    fit_states, held_states = states[:4], states[4:]
    stats = transfer_statistics(fit_states, _applied(truth, fit_states), EDDY)
    held = transfer_statistics(held_states, _applied(truth, held_states), EDDY)
    closure = operator_closure_64(None)
    assert all(v == 1.0 for v in transfer_mismatch(closure, held).values())
    fitted = fit_transfer(closure, stats, ridge=1e-14)
    assert max(fitted.values()) <= 1e-6, fitted
    assert max(transfer_mismatch(closure, held).values()) <= 1e-5


def test_a_per_layer_fit_keeps_the_layers_apart_and_matches_the_chosen_budgets(states):
    """``layers="separate"`` leaves the cross-layer operators exactly zero and recovers a per-layer closure from its
    own forcing; ``budgets=("energy",)`` matches the energy spectra alone, to round-off."""
    truth = operator_closure_64(5)
    with torch.no_grad():
        for op in (truth.ops[1], truth.ops[2]):  # (upper <- lower) and (lower <- upper)
            for p in op.parameters():
                p.zero_()
    stats = transfer_statistics(states, _applied(truth, states), EDDY)
    closure = operator_closure_64(3)  # nonzero cross terms to start with: the fit must clear them
    fitted = fit_transfer(closure, stats, ridge=1e-14, layers="separate")
    assert max(fitted.values()) <= 1e-6, fitted
    assert all(float(p.abs().max()) == 0.0 for op in (closure.ops[1], closure.ops[2]) for p in op.parameters())
    energy_only = fit_transfer(operator_closure_64(None), stats, ridge=1e-14, budgets=("energy",), layers="separate")
    assert max(energy_only["energy1"], energy_only["energy2"]) <= 1e-6, energy_only
    with pytest.raises(ValueError, match="budgets"):
        fit_transfer(operator_closure_64(None), stats, budgets=("momentum",))
    # the upper layer alone: its own operator recovered, every other operator exactly zero
    upper = fit_transfer(operator_closure_64(3), stats, ridge=1e-14, layers="upper")
    assert max(upper["energy1"], upper["enstrophy1"]) <= 1e-6, upper
    assert upper["energy2"] == pytest.approx(1.0) and upper["enstrophy2"] == pytest.approx(1.0)  # as no closure
    with pytest.raises(ValueError, match="layers"):
        fit_transfer(operator_closure_64(None), stats, layers="lower")


def test_statistics_refuse_mismatched_or_non_finite_input(states):
    with pytest.raises(ValueError, match="nz, ny, nx"):
        transfer_statistics(states, states, {**EDDY, "nx": 32})
    bad = states.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        transfer_statistics(bad, states, EDDY)
    stats = transfer_statistics(states, states * 1e-7, EDDY)
    with pytest.raises(ValueError, match="does not match"):
        fit_transfer(OperatorClosure(2.0e6, 64), stats)


def test_train_operator_transfer_fits_real_truth_and_writes_a_model_pyqg_runs(tmp_path, capsys):
    """`roteq train-operator` (default --method transfer) on a tiny real dataset (pyqg 32^2 -> 16^2,
    3 runs of 400 h): the fit lowers the training runs' mismatch in every budget, the card records both
    mismatches, and the folder runs in pyqg's hook for the 16^2 grid only. (Runs this short are not
    turbulent yet, so the held-out run need not improve: the shipped model's card reports that on
    spun-up truth.)"""
    from solver_coupling.cli import main

    data = tiny_dataset(str(tmp_path / "tiny.nc"), window_steps=4)
    assert main(["train-operator", "--data", data, "--out", str(tmp_path / "run"), "--radius-cells", "3",
                 "--n-basis", "4"]) == 0
    out = capsys.readouterr().out
    assert "| energy1 | 1.000 |" in out and "saved" in out
    card = load_operator_closure(tmp_path / "run" / "model")[1]
    held = card["training"]["held_out_transfer_mismatch"]
    assert card["training"]["method"] == "transfer" and card["training"]["holdout_runs"] == [2]
    assert set(held) == {"energy1", "energy2", "enstrophy1", "enstrophy2"}
    assert all(np.isfinite(r["operator"]) and r["none"] == 1.0 for r in held.values()), held
    assert all(0 < v < 0.85 for v in card["training"]["train_transfer_mismatch"].values()), card["training"]
    param = OperatorParameterization(tmp_path / "run" / "model")
    m = pyqg.QGModel(nx=16, log_level=0)
    assert np.isfinite(param(m)).all()
    with pytest.raises(ModelMismatchError, match="nx=64"):
        param(pyqg.QGModel(**EDDY))


def test_train_operator_transfer_says_what_the_data_lacks(tmp_path, capsys):
    import xarray as xr

    from roteq_param.atomic import atomic_write_bytes
    from solver_coupling.cli import main

    data = tiny_dataset(str(tmp_path / "tiny.nc"), runs=2)
    with pytest.raises(SystemExit):
        main(["train-operator", "--data", data, "--out", str(tmp_path / "a"), "--holdout", "2"])
    assert "--holdout must be between 1 and 1" in capsys.readouterr().err
    stripped = tmp_path / "stripped.nc"
    with xr.open_dataset(data) as ds:
        atomic_write_bytes(stripped, ds.drop_vars("S_direct").to_netcdf(), checksum=True)
    with pytest.raises(SystemExit):
        main(["train-operator", "--data", str(stripped), "--out", str(tmp_path / "b")])
    assert "no S_direct" in capsys.readouterr().err


def test_twin_fine_tuning_starts_from_a_fitted_closure(tmp_path, capsys):
    """`--method twin --init MODEL` starts from MODEL's weights and size and records where it started; an
    --init for another grid is refused by name."""
    from solver_coupling.cli import main

    data = tiny_dataset(str(tmp_path / "tiny.nc"), window_steps=4)
    assert main(["train-operator", "--data", data, "--out", str(tmp_path / "fit"), "--radius-cells", "3",
                 "--n-basis", "4"]) == 0
    start = load_operator_closure(tmp_path / "fit" / "model")[0]
    assert main(["train-operator", "--method", "twin", "--init", str(tmp_path / "fit" / "model"), "--data", data,
                 "--out", str(tmp_path / "tuned"), "--unroll", "2", "--iterations", "3", "--batch", "2"]) == 0
    tuned, card, _ = load_operator_closure(tmp_path / "tuned" / "model")
    assert card["config"] == start.config() and card["training"]["init"].endswith("model")
    assert not torch.equal(tuned.multiplier(), start.multiplier())  # trained, not copied
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train-operator", "--init", "eddy-operator", "--data", data, "--out", str(tmp_path / "x")])
    assert "--init eddy-operator is for nx=64" in capsys.readouterr().err
