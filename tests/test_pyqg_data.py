"""pyqg configurations and training-data generation: determinism (serial == Dask), resume, bad input."""

import json
import os
import shutil

import numpy as np
import pytest
import xarray as xr

from roteq_param import coarsen
from roteq_param.fluxform import Stratification
from solver_coupling.cli import build_parser
from solver_coupling.pyqg import data as pdata
from solver_coupling.pyqg import fftw_plans
from solver_coupling.pyqg.config import YEAR, get_config, parse_assignment

# Tiny ensemble: 32^2 -> 16^2, 216 steps of 1 h, snapshots at steps 108, 144, 180, 216.
TINY = dict(runs=2, years=216 * 3600 / YEAR, spinup_years=108 * 3600 / YEAR, snapshot_hours=36, seed=7)


def _request(**kw):
    return pdata.Request(get_config("eddy", {"nx": 32}, coarse_nx=16), **{**TINY, **kw})


def _assert_identical(a_path, b_path):
    with xr.open_dataset(a_path) as a, xr.open_dataset(b_path) as b:
        assert set(a.data_vars) == set(b.data_vars)
        for v in a.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
        assert a.attrs == b.attrs


@pytest.fixture(scope="module")
def serial_file(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("serial") / "data.nc")
    return pdata.generate(_request(), out, serial=True, progress=False)


# ------------------------------------------------------------------ configuration


def test_eddy_defaults_are_pyqg_defaults():
    import pyqg

    cfg = get_config()
    m = cfg.make_model(nx=16)
    ref = pyqg.QGModel(nx=16, log_level=0)
    for name in ("beta", "rd", "delta", "U1", "U2", "rek", "L", "filterfac"):
        assert getattr(m, name) == getattr(ref, name), name
    assert (cfg.nx, cfg.coarse_nx, cfg.dt, m.ntd) == (256, 64, 3600.0, 1)
    np.testing.assert_array_equal(cfg.beta_vec, [0.0, 1.5e-11])
    np.testing.assert_array_equal(cfg.U_vec, [[0.025, 0.0], [0.0, 0.0]])
    assert (cfg.F1, cfg.F2) == (m.F1, m.F2)


def test_overrides_and_errors():
    cfg = get_config("eddy", dict([parse_assignment("beta=1e-11"), parse_assignment("useAB2=true")]))
    assert cfg.params["beta"] == 1e-11 and cfg.params["useAB2"] is True
    with pytest.raises(ValueError, match=r"unknown pyqg parameter 'betta'; valid parameters: .*beta"):
        get_config("eddy", {"betta": 1.0})
    with pytest.raises(ValueError, match="ntd.*fixed at 1"):
        parse_assignment("ntd=2")
    assert get_config("eddy", coarse_nx=48).coarse_nx == 48  # spectral truncation takes any smaller grid
    with pytest.raises(ValueError, match="coarse nx=512 must not exceed the high-resolution nx=256"):
        get_config("eddy", coarse_nx=512)
    with pytest.raises(ValueError, match="unknown configuration"):
        get_config("nope")


# ------------------------------------------------------------------ generation


def test_dataset_layout_and_content(serial_file):
    with xr.open_dataset(serial_file) as ds:
        assert dict(ds.sizes) == {"run": 2, "time": 4, "lev": 2, "y": 16, "x": 16, "comp": 2, "tcomp": 3}
        assert ds["tau"].dims == ("run", "time", "lev", "tcomp", "y", "x")
        assert ds["Fb"].dims == ("run", "time", "lev", "comp", "y", "x")
        assert ds["b"].dims == ("run", "time", "y", "x")
        assert list(ds["tcomp"].values) == ["xx", "xy", "yy"] and list(ds["comp"].values) == ["x", "y"]
        np.testing.assert_array_equal(ds["time"].values, 3600.0 * np.array([108, 144, 180, 216]))
        for v in ds.variables:
            if v not in ("lev", "comp", "tcomp", "run"):
                assert "units" in ds[v].attrs and "long_name" in ds[v].attrs, v
        for v in ds.data_vars:  # data in float32; the solver's settings per run exactly
            want = np.float64 if v == "rek" else np.float32
            assert ds[v].dtype == want and np.all(np.isfinite(ds[v].values)), v
        np.testing.assert_array_equal(ds["rek"].values, [5.787e-7] * 2)
        assert ds.attrs["operator"] == "spectral" and ds.attrs["ratio"] == 2 and ds.attrs["seed"] == 7
        np.testing.assert_array_equal(ds["beta_vec"].values, np.float32([[0, 1.5e-11]] * 2))
        # The two members differ (different seeds) and the stored forcings agree with each other.
        assert not np.array_equal(ds["q"][0].values, ds["q"][1].values)
        res = coarsen.commutation_residual({k: ds[k].values.astype(float) for k in ("S_direct", "S_flux")})
        assert np.all(res < 1e-6)  # float32 storage of two forms that agree to ~1e-15 in float64


def test_serial_and_dask_are_bitwise_identical(serial_file, tmp_path):
    out = pdata.generate(_request(), str(tmp_path / "dask.nc"), workers=2, progress=False)
    _assert_identical(serial_file, out)
    assert sorted(os.listdir(tmp_path)) == ["dask.nc", "dask.nc.sha256"]  # parts and temporaries cleaned up


def test_killed_generate_resumes(serial_file, tmp_path):
    """State after a kill: run 0 complete, run 1 a stale temporary, no final file."""
    request = _request()
    out = str(tmp_path / "resumed.nc")
    parts = out + ".parts"
    os.makedirs(parts)
    wisdom = fftw_plans.load_or_measure(parts, request.config.make_model)
    pdata.run_member(request, 0, parts, wisdom, progress=False)
    with open(os.path.join(parts, "run_00001.nc.tmp.999.deadbeef"), "wb") as fh:
        fh.write(b"truncated")
    pdata.generate(request, out, serial=True, progress=False)
    _assert_identical(serial_file, out)
    assert sorted(os.listdir(tmp_path)) == ["resumed.nc", "resumed.nc.sha256"]


def test_completed_parts_are_reused_not_recomputed(serial_file, tmp_path):
    request = _request()
    out = str(tmp_path / "reuse.nc")
    parts = out + ".parts"
    os.makedirs(parts)
    marked = pdata.simulate_run(request, 0, progress=False)
    marked["u"] = marked["u"] + np.float32(1.0)  # a recognisable (fake) completed run 0
    marked.to_netcdf(os.path.join(parts, "run_00000.nc"))
    pdata.generate(request, out, serial=True, progress=False)
    with xr.open_dataset(out) as ds, xr.open_dataset(serial_file) as ref:
        np.testing.assert_array_equal(ds["u"][1].values, ref["u"][1].values)
        np.testing.assert_allclose(ds["u"][0].values, ref["u"][0].values + 1, atol=1e-6)


# ------------------------------------------------------------------ existing pyqg output


def _pyqg_file(path, nan=False, drop=None):
    import pyqg

    m = pyqg.QGModel(nx=32, dt=3600.0, log_level=0, tmax=3600.0 * 50)
    m.run()
    ds = m.to_dataset()
    ds = ds.drop_vars([v for v in ds.variables if np.iscomplexobj(ds[v])])  # netCDF has no complex type
    if nan:
        ds["q"][0, 0, 0, 0] = np.nan
    if drop:
        ds = ds.drop_vars(drop)
    ds.to_netcdf(path)
    return m


def test_coarsen_existing_pyqg_output(tmp_path):
    src = str(tmp_path / "hr.nc")
    m = _pyqg_file(src)
    out = pdata.coarsen_files([src, src], str(tmp_path / "coarse.nc"), coarse_nx=16, operator="gaussian",
                              settings={"H1": 500.0})
    op = coarsen.make_operator("gaussian", 32, 16, m.L)
    expect = coarsen.coarse_grain(m.q, Stratification.from_matrix(m.S), m.L, op)
    with xr.open_dataset(out) as ds:
        assert ds.sizes["run"] == 2 and ds.sizes["time"] == 1
        for k in ("u", "b", "tau", "Fb", "S_direct"):
            np.testing.assert_array_equal(ds[k].values[1, 0], expect[k].astype(np.float32), err_msg=k)
        np.testing.assert_array_equal(ds["U_vec"].values[0], np.float32(m.Ubg[:, None] * [1, 0]))


# ------------------------------------------------------------------ CLI errors


def _parse(argv):
    return build_parser().parse_args(argv)


def _fails(argv, message, capsys):
    args = _parse(argv)
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys):
    out = str(tmp_path / "o.nc")
    small = ["--set", "nx=32", "--coarse-nx", "16", "--years", "0.025", "--spinup-years", "0", "--serial"]
    _fails(["generate", "--out-file", out, "--set", "betta=1"], "unknown pyqg parameter 'betta'", capsys)
    _fails(["generate", "--out-file", out, "--set", "nx=32", "--coarse-nx", "12", "--operator", "gcm"],
           "block averaging needs the high-resolution nx=32 to be a multiple of the coarse nx=12", capsys)
    _fails(["generate", "--out-file", out, "--set", "nx=32", "--coarse-nx", "16", "--snapshot-hours", "1.5"],
           "whole number of time steps", capsys)
    assert os.listdir(tmp_path) == []
    # a run that blows up (a daily step with a 3 m/s shear): one line naming the run, no traceback
    _fails(["generate", "--out-file", out, "--set", "nx=32", "--set", "dt=86400", "--set", "U1=3.0", "--coarse-nx", "16",
            "--years", "1", "--spinup-years", "0.5", "--snapshot-hours", "960", "--serial"],
           "run 0 produced non-finite PV", capsys)
    assert not os.path.exists(out)
    shutil.rmtree(out + ".parts")

    bad_nan, bad_var = str(tmp_path / "nan.nc"), str(tmp_path / "noq.nc")
    _pyqg_file(bad_nan, nan=True)
    _pyqg_file(bad_var, drop=["q"])
    _fails(["coarsen", bad_nan, "--set", "H1=500", "--coarse-nx", "16", "--out-file", out], "NaN", capsys)
    _fails(["coarsen", bad_var, "--set", "H1=500", "--coarse-nx", "16", "--out-file", out], "missing q", capsys)
    assert sorted(os.listdir(tmp_path)) == ["nan.nc", "noq.nc"]

    open(out, "w").close()
    _fails(["generate", "--out-file", out] + small, "exists; pass --overwrite", capsys)
    _fails(["coarsen", bad_nan, "--coarse-nx", "16", "--out-file", out], "exists; pass --overwrite", capsys)
    assert os.path.getsize(out) == 0
    args = _parse(["generate", "--out-file", out, "--overwrite", "--snapshot-hours", "108"] + small)
    assert args.func(args) == 0
    with xr.open_dataset(out) as ds:
        assert ds.sizes["time"] == 3  # t = 0, 108 and 216 h (0.025 y)


def test_a_second_generate_on_the_same_output_is_refused(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    out = tmp_path / "data.nc"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from roteq_param.atomic import exclusive_output\n"
                               "with exclusive_output(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
                               f"{out}.parts"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = _parse(["generate", "--set", "nx=32", "--coarse-nx", "16", "--years", str(216 * 3600 / YEAR),
                       "--spinup-years", str(108 * 3600 / YEAR), "--snapshot-hours", "36", "--serial",
                       "--out-file", str(out)])
        with pytest.raises(SystemExit) as exc:
            args.func(args)
        assert exc.value.code == 2 and "being written by another process" in capsys.readouterr().err
        assert not out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_blown_up_run_on_dask_is_one_line_without_the_workers_traceback(tmp_path, capfd):
    """On Dask the failed run comes back through the future; the worker's log must not print its
    traceback first (it did, before the one-line message)."""
    out = str(tmp_path / "o.nc")
    args = _parse(["generate", "--out-file", out, "--set", "nx=32", "--set", "dt=86400", "--set", "U1=3.0",
                   "--coarse-nx", "16", "--years", "1", "--spinup-years", "0.5", "--snapshot-hours", "960",
                   "--workers", "1"])
    with pytest.raises(SystemExit) as exc:
        args.func(args)
    err = capfd.readouterr().err
    assert exc.value.code == 2 and "run 0 produced non-finite PV" in err
    assert "Traceback" not in err and "Compute Failed" not in err, err


def test_dt_halvings_rerun_a_blown_up_run_with_half_the_step(tmp_path, capsys):
    """eddy at 32^2 with a 4-day step goes non-finite after ~128 days; at 2 days it holds. With one
    halving the run is done again at 2 days, its snapshots at the same times, and the dataset lists
    its step; without, the same command is the one-line error. A failed attempt is recorded in the
    parts, so the command resumed with a halving starts at 2 days (the data bitwise those of an
    uninterrupted run), and without one is refused at once."""
    args = ["--set", "nx=32", "--set", "dt=345600", "--coarse-nx", "16", "--years", "0.5", "--spinup-years", "0.2",
            "--snapshot-hours", "1536", "--serial"]
    resumed = str(tmp_path / "a.nc")
    _fails(["generate", "--out-file", resumed] + args, "run 0 produced non-finite PV", capsys)
    record = tmp_path / "a.nc.parts" / "run_00000.blowups.json"
    assert json.loads(record.read_text())["failed_dt_s"] == [345600.0]
    _fails(["generate", "--out-file", resumed] + args, "allow more --dt-halvings than 0", capsys)
    out = str(tmp_path / "b.nc")
    ns = _parse(["generate", "--out-file", out, "--dt-halvings", "1"] + args)
    assert ns.func(ns) == 0
    assert "running it again with dt = 172800 s" in capsys.readouterr().err
    ns = _parse(["generate", "--out-file", resumed, "--dt-halvings", "1"] + args)
    assert ns.func(ns) == 0
    err = capsys.readouterr().err
    assert "resuming it with dt = 172800 s" in err and "running it again" not in err, err
    assert not record.parent.exists()
    with xr.open_dataset(out) as ds, xr.open_dataset(resumed) as again:
        np.testing.assert_array_equal(again["q"].values, ds["q"].values)
        assert json.loads(ds.attrs["highres_dt_s"]) == [172800.0]
        np.testing.assert_allclose(ds["time"].values, [72 * 86400.0, 136 * 86400.0])  # days 72 and 136
        assert np.isfinite(ds["q"].values).all() and "dt_s" not in ds.attrs
    req = pdata.Request(get_config("eddy", {"nx": 32, "dt": 345600}, coarse_nx=16), years=0.5,
                        spinup_years=0.2, snapshot_hours=1536, dt_halvings=1)
    assert req.fingerprint(0) == pdata.Request(req.config, years=0.5, spinup_years=0.2,
                                               snapshot_hours=1536).fingerprint(0)
    with pytest.raises(pdata.UsageError, match="cannot be combined with --window-steps"):
        pdata.Request(req.config, years=0.5, spinup_years=0.2, snapshot_hours=1536, dt_halvings=1, window_steps=2)
