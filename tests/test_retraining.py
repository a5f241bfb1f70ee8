"""Retraining from your own pyqg output, end to end (docs/retraining.md): runs saved with the documented
ways, `roteq coarsen`, `roteq train`, `roteq score` and the plugin in the configuration the data came from.

The end-to-end test runs real pyqg at 128^2 with H1 = 750 m (not pyqg's default 500, which `coarsen` once
assumed silently and the plugin then refused), saves one run with ``SnapshotWriter`` and one as plain
``m.to_dataset()`` output concatenated over time (whose ``Ubg`` gains a time axis), coarsens both to
32^2 through the command line, trains a tiny network for a few epochs and runs it in pyqg at 32^2
with H1 = 750 m.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

from solver_coupling.cli import main as roteq
from solver_coupling.pyqg import SnapshotWriter, save_run
from solver_coupling.pyqg.output import read_runs

DAY = 86400.0
H1 = 750.0


def _model(nx: int, seed: int, dt: float = 7200.0, **kwargs):
    """A two-layer pyqg QGModel (eddy's physics, H1 = 750 m) from a seeded small-amplitude start."""
    import pyqg

    m = pyqg.QGModel(nx=nx, dt=dt, H1=H1, log_level=0, ntd=1, **kwargs)
    rng = np.random.default_rng(seed)
    q = np.zeros((2, nx, nx))
    q[0] = 1e-7 * rng.random((nx, nx)) + 1e-6 * rng.random((1, nx))
    m.set_q(q)
    return m


def _plain(m):
    """``m.to_dataset()`` without its complex variables: the documented step before ``to_netcdf``."""
    ds = m.to_dataset()
    return ds.drop_vars([v for v in ds.variables if np.iscomplexobj(ds[v])])


@pytest.fixture(scope="module")
def highres(tmp_path_factory):
    """Two 128^2 runs of 150 days, a snapshot every 5 days from day 100: run 0 written by SnapshotWriter,
    run 1 as to_dataset() snapshots concatenated over time (H1 not recorded)."""
    d = tmp_path_factory.mktemp("highres")
    kwargs = dict(tmax=150 * DAY, tsnapstart=100 * DAY, tsnapint=5 * DAY)
    m = _model(128, seed=1, tmax=kwargs["tmax"])
    writer = SnapshotWriter(m)
    for _ in m.run_with_snapshots(tsnapstart=kwargs["tsnapstart"], tsnapint=kwargs["tsnapint"]):
        writer.add(m)
    writer.write(d / "run0.nc")
    m = _model(128, seed=2, tmax=kwargs["tmax"])
    pieces = [_plain(m) for _ in m.run_with_snapshots(tsnapstart=kwargs["tsnapstart"], tsnapint=kwargs["tsnapint"])]
    xr.concat(pieces, dim="time", data_vars="all").to_netcdf(d / "run1.nc")
    return d


def test_own_pyqg_runs_retrain_and_run_in_the_same_configuration(highres, tmp_path, capsys):
    run0, run1 = str(highres / "run0.nc"), str(highres / "run1.nc")
    with xr.open_dataset(run1) as ds:
        assert ds["Ubg"].dims == ("time", "lev") and ds.sizes["time"] == 11  # what used to crash coarsen
    coarse = str(tmp_path / "coarse.nc")

    # H1 is not in to_dataset() output: an error that says what to give, and nothing written
    with pytest.raises(SystemExit) as err:
        roteq(["coarsen", run0, run1, "--coarse-nx", "32", "--out-file", coarse])
    message = capsys.readouterr().err
    assert err.value.code == 2 and "does not record H1" in message and "--set H1=VALUE" in message
    assert not os.path.exists(coarse)
    # raw high-res output given to train or score: run coarsen first
    for argv in (["train", "--data", run0, "--out", str(tmp_path / "raw")], ["score", "--data", run1]):
        with pytest.raises(SystemExit):
            roteq(argv)
        message = capsys.readouterr().err
        assert "is raw pyqg output" in message and "run `roteq coarsen" in message and "S_flux" not in message

    assert roteq(["coarsen", run0, run1, "--set", f"H1={H1}", "--coarse-nx", "32", "--out-file", coarse]) == 0
    with xr.open_dataset(coarse) as ds:
        assert ds.sizes["run"] == 2 and ds.sizes["time"] == 11 and ds.sizes["x"] == 32
        solver = json.loads(ds.attrs["solver"])
        assert solver["H1"] == H1 and solver["H2"] == H1 / 0.25 and solver["nx"] == 32
        assert ds.attrs["command"].startswith("roteq coarsen") and "H1=750" in ds.attrs["command"]
        assert json.loads(ds.attrs["source_files"]) == [["run0.nc"], ["run1.nc"]]
        assert np.isfinite(ds["S_flux"].values).all() and float(np.abs(ds["tau"]).max()) > 0

    model = tmp_path / "model"
    capsys.readouterr()
    assert roteq(["train", "--data", coarse, "--holdout", "1", "--channels", "4,4", "--kernel-sizes", "3,1",
                  "--epochs", "3", "--batch-size", "4", "--out", str(tmp_path / "run"), "--name", str(model),
                  "--no-progress"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(printed.splitlines()) < 15 and "held-out R^2" in printed and str(tmp_path / "run" / "summary.json") in printed
    assert ("WARNING: poor held-out skill" in printed) == (summary["metrics"]["val"]["S_mean"] < 0
                                                           or summary["metrics"]["val"]["flux_mean"] < 0)
    card = json.loads((model / "card.json").read_text())
    assert card["training"]["solver"]["H1"] == H1
    assert card["training"]["dataset_command"].startswith("roteq coarsen")
    assert not os.path.isabs(card["training"]["dataset"])

    assert roteq(["score", "--model", str(model), "--data", coarse, "--runs", "0-1"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["runs"] == [0, 1] and np.isfinite(scores["r2"]["S_mean"])

    # the plugin in the data's own configuration: accepted without allow_out_of_regime, finite output
    import pyqg

    from solver_coupling.pyqg.plugin import ModelMismatchError, RotEqParameterization

    with xr.open_dataset(coarse) as ds:
        q0 = ds["q"].values[1, -1].astype(np.float64)
    m = _model(32, seed=0, tmax=40 * 7200.0, parameterization=RotEqParameterization(str(model)))
    m.set_q(q0)
    m.run()
    assert m.tc == 40 and np.isfinite(m.q).all()
    dq = m.q_parameterization(m)
    assert np.isfinite(dq).all() and np.abs(dq).max() > 0
    # and the default H1 = 500 m is another regime: refused, naming H1
    other = pyqg.QGModel(nx=32, dt=7200.0, log_level=0, ntd=1)
    # (the refusal says what overriding it measured: the default model on jet, worse than no closure)
    with pytest.raises(ModelMismatchError, match=r"H1: trained 750, solver 500.*-1\.02.*allow_out_of_regime=True"):
        RotEqParameterization(str(model))(other)


# ------------------------------------------------------------------ the readers, at 32^2


def _short_run(tmp_path, name, seed=0, steps=(10, 20)):
    """A 32^2 run with a snapshot after each number of steps in ``steps``, as save_run files."""
    m = _model(32, seed=seed, dt=3600.0)
    paths = []
    for k, n in enumerate(steps):
        m.tmax = n * m.dt
        m.run()
        paths.append(save_run(m, tmp_path / f"{name}_{k}.nc"))
    return m, paths


def test_pieces_of_one_run_are_joined_in_time_order(tmp_path):
    m, paths = _short_run(tmp_path, "a", steps=(10, 20, 30))
    runs = read_runs(paths[::-1], one_run=True)  # given in any order
    assert len(runs.q) == 1 and np.array_equal(runs.times, [10 * 3600.0, 20 * 3600.0, 30 * 3600.0])
    np.testing.assert_array_equal(runs.q[0][-1], m.q)
    assert runs.settings["H1"] == H1 and runs.settings["U1"] == float(m.Ubg[0])
    with pytest.raises(ValueError, match="share a snapshot time"):
        read_runs([paths[0], paths[0]], one_run=True)
    with pytest.raises(ValueError, match="other snapshot times.*--one-run"):
        read_runs(paths[:2])


def test_a_recorded_setting_cannot_be_contradicted(tmp_path):
    _, paths = _short_run(tmp_path, "b", steps=(5,))
    assert read_runs(paths, {"H1": H1}).settings["H1"] == H1
    with pytest.raises(ValueError, match="records H1=750.*--set H1=500"):
        read_runs(paths, {"H1": 500})


def test_snapshot_writer_refuses_another_model_and_a_blown_up_state():
    m = _model(32, seed=0, dt=3600.0)
    writer = SnapshotWriter(m)
    with pytest.raises(ValueError, match="no snapshots"):
        writer.dataset()
    import pyqg

    with pytest.raises(ValueError, match="settings differ"):
        writer.add(pyqg.QGModel(nx=32, dt=3600.0, log_level=0))
    m.q[0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        writer.add(m)


def test_the_train_summary_warns_loudly_on_poor_held_out_skill(tmp_path):
    from solver_coupling.cli import train_report

    summary = {"epochs_run": 30, "best_epoch": 4, "stopped_early": False, "train_seconds": 12.0,
               "model_dir": "runs/x/model", "checkpoint": "runs/x/checkpoint.pt",
               "metrics": {"val": {"flux_mean": 0.41, "S_mean": -2164.0, "S_1": -4000.0, "S_2": -328.0}}}
    text = train_report(summary, tmp_path / "summary.json")
    assert "WARNING: poor held-out skill" in text and "S mean -2.16e+03" in text and "flux mean" not in \
        text.split("WARNING")[1].split(";")[0]
    assert len(text.splitlines()) <= 8
    summary["metrics"]["val"].update(S_mean=0.5, S_1=0.4, S_2=0.6)
    assert "WARNING" not in train_report(summary, tmp_path / "summary.json")
    del summary["metrics"]
    assert "--resume" in train_report(summary, tmp_path / "summary.json")
