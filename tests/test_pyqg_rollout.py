"""roteq rollout: stability monitor, checkpoints and resume after a real kill, plugin online."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr

from roteq_param import models
from solver_coupling.pyqg.config import YEAR, get_config
from solver_coupling.pyqg.config import solver_config_of
from solver_coupling.pyqg.rollout import RolloutRequest, rollout

NX = 16


def _config(**over):
    return get_config("eddy", {"nx": NX, **over}, coarse_nx=NX)


def _request(**kw):
    base = dict(config=_config(), members=2, years=0.05, snapshot_days=2.0, checkpoint_years=0.01,
                diag_start_years=0.02)
    base.update(kw)
    return RolloutRequest(**base)


def test_progress_in_a_log_file_stays_small(tmp_path, capsys):
    # stderr is not a terminal here, as in `nohup roteq rollout ... > log 2>&1 &`: the bar refreshes once
    # a minute, not every 240 steps (a 10-year log was ~10 MB of refreshes), and still ends on its total
    req = _request(years=0.2, checkpoint_years=0.1)
    rollout(req, tmp_path / "r")
    err = capsys.readouterr().err
    assert err.count("\r") <= 3 and f"{req.steps(req.years * YEAR)}/{req.steps(req.years * YEAR)}" in err
    rollout(_request(years=0.01), tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""


def test_unparameterized_rollout_writes_cf_dataset(tmp_path):
    ds = rollout(_request(), tmp_path / "r", progress=False)
    assert ds["q"].dims == ("run", "time", "lev", "y", "x") and ds["q"].attrs["units"] == "s-1"
    assert np.isfinite(ds["q"].values).all() and not ds["failed"].any()
    assert ds["time"].values[-1] == pytest.approx(0.05 * YEAR, rel=0.05)
    assert "KEspec" in ds and ds["KEspec"].dims[0] == "run"
    on_disk = xr.open_dataset(tmp_path / "r" / "rollout.nc")
    np.testing.assert_array_equal(on_disk["q"].values, ds["q"].values)
    # members start from different seeded states and stay different
    assert not np.allclose(ds["q"][0, -1], ds["q"][1, -1])
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        rollout(_request(), tmp_path / "r", progress=False)


def _poison_member_1(engine):
    if engine.name == "pyqg":
        engine.members[1].qh[0, 2, 2] = np.nan
        engine.members[1].q[0, 3, 3] = np.nan
    else:
        q = engine.twin.q.clone()
        q[1, 0, 3, 3] = float("nan")
        engine.twin.q = q


@pytest.mark.parametrize("engine", ["pyqg", "torch"])
def test_nan_injected_mid_run_is_caught_with_data_intact(tmp_path, engine):
    req = _request(years=0.04, check_hours=6.0, engine=engine)
    inject_at = 200
    healthy = rollout(_request(years=0.04, check_hours=6.0, engine=engine), tmp_path / "clean", progress=False)

    def inject(step, engine):
        if step == inject_at:
            _poison_member_1(engine)

    ds = rollout(req, tmp_path / "nan", progress=False, on_step=inject)
    assert list(ds["failed"].values) == [0, 1]
    assert "non-finite" in str(ds["failure_reason"].values[1])
    fail_t = float(ds["failure_time"].values[1])
    assert inject_at * 3600.0 <= fail_t <= (inject_at + 6) * 3600.0
    before = ds["time"].values < inject_at * 3600.0
    assert np.isfinite(ds["q"].values[1][before]).all() and before.sum() >= 3
    assert np.isnan(ds["q"].values[1][~before]).all()
    assert np.isfinite(ds["q"].values[0]).all()  # the healthy member ran to the end ...
    np.testing.assert_array_equal(ds["q"].values[0], healthy["q"].values[0])  # ... untouched by the NaN
    on_disk = xr.open_dataset(tmp_path / "nan" / "rollout.nc")
    assert int(on_disk["failed"][1]) == 1


def test_runaway_energy_is_caught(tmp_path):
    ds = rollout(_request(energy_limit=1e-12), tmp_path / "ke", progress=False)
    assert ds["failed"].all()
    assert "exceeds the limit" in str(ds["failure_reason"].values[0])


def _save_small_model(directory, solver):
    torch.manual_seed(0)
    net = models.build_model(arch="escnn", group="C4", channels=(8,), kernel_sizes=(3,))
    scales_in = {"vel_1": 1e-2, "vel_2": 1e-2, "b": 1e2, "beta": 1.5e-11, "U_1": 2.5e-2, "U_2": 1e-3}
    net.set_normalization(scales_in, {f.name: 1e-7 for f in net.schema.outputs})
    return models.save_model(net, directory, training={"solver": solver},
                             inference_cost={"ms_per_call_64x64_1thread": 0.0})


def _solver_dict():
    m = _config().make_model(log_level=0)
    return solver_config_of(m)


def test_rollout_command_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "solver_coupling.cli", "rollout", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    r = run("--model", "none", "--set", "colour=red", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "colour" in r.stderr
    r = run("--model", str(tmp_path / "missing"), "--set", f"nx={NX}", "--nx", str(NX), "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "no model" in r.stderr
    model = _save_small_model(tmp_path / "m64", {**_solver_dict(), "nx": 64, "ny": 64})
    r = run("--model", str(model), "--set", f"nx={NX}", "--nx", str(NX), "--years", "0.01", "--out", str(tmp_path / "z"))
    assert r.returncode == 2 and "nx: the model was trained for nx=64" in r.stderr


def test_baseline_closures_run_on_both_engines_alike(tmp_path):
    """pyqg's own BackscatterBiharmonic (Ross et al.'s tuning) on the pyqg engine and its torch port on
    the twin give the same rollout; the monitor and the file are those of any rollout."""
    a = rollout(_request(model="backscatter"), tmp_path / "pyqg", progress=False)
    b = rollout(_request(model="backscatter", engine="torch"), tmp_path / "torch", progress=False)
    assert a.attrs["model"] == "backscatter" and not a["failed"].any()
    np.testing.assert_allclose(b["q"].values, a["q"].values, rtol=0, atol=1e-6 * np.abs(a["q"].values).max())
    bare = rollout(_request(), tmp_path / "none", progress=False)
    scale = np.abs(a["q"].values).max()
    assert np.abs(bare["q"].values - a["q"].values).max() > 1e-5 * scale  # the closure acts, above that tolerance


def test_a_second_process_on_the_same_output_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from roteq_param.atomic import exclusive_output\n"
                               "with exclusive_output(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                               str(tmp_path / "r")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match="being written by another process"):
            rollout(_request(years=0.01), tmp_path / "r", progress=False)
        assert not (tmp_path / "r" / "rollout.nc").exists()  # nothing interleaved
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert rollout(_request(years=0.01), tmp_path / "r", progress=False)["q"].size  # the kill freed it


def test_a_built_in_closure_added_to_the_network_sums_the_two_forcings(tmp_path):
    """--add-closure: every member's forcing is the network's plus pyqg's own closure on that member
    (backscatter as a q-parameterization, Smagorinsky in pyqg's uv slot); bad requests are refused."""
    import pyqg

    from solver_coupling.pyqg.baselines import pyqg_baseline
    from solver_coupling.pyqg.plugin import Ensemble, RotEqParameterization

    model = _save_small_model(tmp_path / "m", _solver_dict())
    kwargs = dict(nx=NX, log_level=0)
    P = RotEqParameterization(str(model), dtype=torch.float64)
    ens = Ensemble.build(P, 2, add=lambda: pyqg_baseline("backscatter"), **kwargs)
    alone = Ensemble.build(RotEqParameterization(str(model), dtype=torch.float64), 2, **kwargs)
    for e in (ens, alone):
        for i, m in enumerate(e.members):
            m.q = 1e-6 * np.random.default_rng(i).standard_normal(m.q.shape)
        e.step()
    m = ens.members[0]
    m._invert()
    expected = alone.members[0].q_parameterization.dq + pyqg.parameterizations.BackscatterBiharmonic(
        np.sqrt(0.007), 1.2)(m)
    np.testing.assert_allclose(m.q_parameterization(m), expected, rtol=1e-12, atol=1e-30)
    smag = Ensemble.build(P, 1, add=lambda: pyqg_baseline("smagorinsky"), **kwargs)
    assert type(smag.members[0].uv_parameterization).__name__ == "Smagorinsky"
    ds = rollout(_request(model=str(model), add_closure="backscatter"), tmp_path / "r", progress=False)
    assert ds.attrs["model"].endswith(" + backscatter") and not ds["failed"].any()
    for bad, message in ((dict(model=str(model), add_closure="magic"), "unknown closure to add"),
                         (dict(add_closure="backscatter"), "give a model"),
                         (dict(model=str(model), add_closure="backscatter", engine="torch"), "pyqg engine")):
        with pytest.raises(ValueError, match=message):
            _request(**bad)


def test_evaluate_refuses_an_unfinished_rollout_and_scores_an_all_failed_one(tmp_path):
    """A killed rollout's file (snapshots up to its last checkpoint, NaN after) must not score as a
    blow-up: evaluation refuses it by name; one whose members all blew up ended by design."""
    from solver_coupling.pyqg.data import UsageError
    from solver_coupling.pyqg.evaluate import load_runs

    ds = rollout(_request(), tmp_path / "done", progress=False)
    assert load_runs([str(tmp_path / "done" / "rollout.nc")], "run")  # finished: accepted
    cut = ds.copy()
    cut.attrs["steps_done"] = int(ds.attrs["steps_done"]) // 2
    cut.to_netcdf(tmp_path / "cut.nc")
    with pytest.raises(UsageError, match=r"unfinished rollout \(\d+ of \d+ steps\).*--resume"):
        load_runs([str(tmp_path / "cut.nc")], "run")
    blown = rollout(_request(energy_limit=1e-12), tmp_path / "blown", progress=False)
    assert blown["failed"].all() and int(blown.attrs["steps_done"]) < int(ds.attrs["steps_done"])
    assert load_runs([str(tmp_path / "blown" / "rollout.nc")], "run")


def test_a_turned_configuration_is_mapped_back_for_scoring(tmp_path):
    """eddy turned through 180 degrees (beta -> -beta, U -> -U) runs without a flag; evaluation maps
    its q back (the 180-degree turn of the grid) and its configuration to eddy's."""
    import json

    from roteq_param import symmetry
    from solver_coupling.pyqg.data import UsageError
    from solver_coupling.pyqg.evaluate import load_runs, to_training_frame

    turned_cfg = _config(beta=-1.5e-11, U1=-0.025)
    rollout(_request(config=turned_cfg), tmp_path / "turned", progress=False)
    (ds,) = load_runs([str(tmp_path / "turned" / "rollout.nc")], "turned")
    (back,) = to_training_frame([ds], "rot180", "turned")
    g = [e for e in symmetry.Group.parse("C4").exact_elements() if str(e) == "rot180"][0]
    np.testing.assert_array_equal(back["q"].values, symmetry.act(g, ds["q"].values, "scalar"))
    params = json.loads(back.attrs["config"])["params"]
    eddy = json.loads(ds.attrs["config"])["params"]
    assert params["beta"] == 1.5e-11 and params["U1"] == 0.025 and params["U2"] == 0.0
    assert {k: v for k, v in params.items() if k not in ("beta", "U1", "U2")} == \
        {k: v for k, v in eddy.items() if k not in ("beta", "U1", "U2")}
    # the mirror in x maps this configuration to eddy's too (beta is a pseudovector: det R = -1 flips
    # it, U flips with x), but q as a pseudoscalar: mirrored and sign-flipped
    (mirrored,) = to_training_frame([ds], "rot0*flip", "turned")
    params = json.loads(mirrored.attrs["config"])["params"]
    assert params["beta"] == 1.5e-11 and params["U1"] == 0.025
    np.testing.assert_array_equal(mirrored["q"].values, -ds["q"].values[..., ::-1])
    with pytest.raises(UsageError, match="unknown element"):
        to_training_frame([ds], "rot90*twist", "turned")
    with pytest.raises(UsageError, match="pyqg cannot hold that frame"):
        to_training_frame([ds], "rot90", "turned")


def test_the_pyqg_engine_plans_its_ffts_from_the_folders_wisdom(tmp_path):
    """pyqg plans with FFTW_MEASURE, which picks different algorithms in different processes on a loaded
    machine; a rollout keeps its plans in its folder and plans from exactly them on every re-run."""
    import pickle

    import pyfftw

    def plans(wisdom):  # FFTW exports the same wisdom in another order after an import
        return [set(w.decode().splitlines()) for w in wisdom]

    def pollute():  # plans for another grid, which a run that imports the folder's wisdom forgets
        get_config("eddy", {"nx": 24}, coarse_nx=24).make_model(log_level=0)

    pollute()
    rollout(_request(years=0.01), tmp_path / "r", progress=False)
    path = tmp_path / "r" / "fftw_wisdom.pkl"
    stored = pickle.loads(path.read_bytes())
    assert plans(pyfftw.export_wisdom()) == plans(stored)  # nothing was measured beyond the stored plans
    pollute()
    assert plans(pyfftw.export_wisdom()) != plans(stored)
    rollout(_request(years=0.01), tmp_path / "r", progress=False, overwrite=True)
    assert plans(pyfftw.export_wisdom()) == plans(stored) and pickle.loads(path.read_bytes()) == stored
