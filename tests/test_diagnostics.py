"""Rollout-stability and skill diagnostics: exact identities, agreement with pyqg, and the evaluate command.

Real pyqg on 16^2 / 32^2 grids for a few hundred steps; no mocks.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyqg
import pytest
import scipy.stats
import xarray as xr
from pyqg.diagnostic_tools import calc_ispec, diagnostic_similarities

from roteq_param import diagnostics as dg
from roteq_param import fluxform
from solver_coupling.cli import build_parser
from solver_coupling.pyqg import diagnostics as pd

L = 1e6
DT = 4 * 3600.0  # 4 h keeps the CFL number < 0.05 at 16^2 and 32^2 while the runs stay short
KW = {"L": L, "dt": DT}


def _model(nx: int, seed: int, **extra) -> pyqg.QGModel:
    m = pyqg.QGModel(nx=nx, ntd=1, log_level=0, **KW, **extra)
    m.q = 1e-6 * np.random.default_rng(seed).standard_normal((2, nx, nx))
    return m


def _truncate(q: np.ndarray, nx: int) -> np.ndarray:
    """Spectral truncation of (..., N, N) fields to nx (dropping the coarse Nyquist row and column)."""
    N = q.shape[-1]
    qh = np.fft.rfft2(q)
    h = nx // 2
    coarse = np.zeros(q.shape[:-2] + (nx, h + 1), dtype=complex)
    coarse[..., :h, :h] = qh[..., :h, :h]
    coarse[..., h + 1:, :h] = qh[..., N - h + 1:, :h]
    return np.fft.irfft2(coarse * (nx / N) ** 2, s=(nx, nx))


def _runs(seeds, nx=16, hires=None, steps=240, every=12) -> xr.Dataset:
    """Runs at nx (or at `hires` truncated to nx), a snapshot every `every` steps, as an evaluate dataset."""
    qs = []
    for seed in seeds:
        m = _model(hires or nx, seed)
        snaps = []
        for step in range(steps):
            m._step_forward()
            if (step + 1) % every == 0:
                snaps.append(_truncate(m.q, nx) if hires else np.array(m.q))
        qs.append(snaps)
    x = (np.arange(nx) + 0.5) * L / nx
    return xr.Dataset(
        {"q": (("run", "time", "lev", "y", "x"), np.array(qs), {"units": "s-1"})},
        coords={"run": np.arange(len(seeds)), "time": ("time", DT * every * np.arange(1, steps // every + 1),
                                                       {"units": "s"}),
                "lev": [1, 2], "y": x, "x": x},
        attrs={"config": json.dumps({"nx": nx, **KW})},
    )


@pytest.fixture(scope="module")
def data():
    """Truth (32^2 truncated to 16^2), an independent truth, an unparameterized 16^2 baseline."""
    return {
        "truth": _runs([0, 1], hires=32),
        "truth_b": _runs([2, 3], hires=32),
        "baseline": _runs([4, 5]),
    }


# --------------------------------------------------------------------------- Wasserstein-1
def test_wasserstein_matches_scipy_and_identities():
    rng = np.random.default_rng(1)
    for n, m in [(500, 500), (300, 700), (1001, 37), (1, 5)]:
        a, b = rng.standard_normal(n), 2 * rng.standard_exponential(m) - 1
        assert dg.wasserstein1(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    a = rng.standard_normal((7, 11))
    assert dg.wasserstein1(a, a) == 0.0
    assert dg.wasserstein1(a, rng.permutation(a.ravel())) == 0.0
    for c in (3.5, -0.25):
        assert dg.wasserstein1(a, a + c) == pytest.approx(abs(c), rel=1e-12)
    with pytest.raises(ValueError, match="finite"):
        dg.wasserstein1(a, np.array([np.nan, 1.0]))


def test_quantile_summary_error_is_small():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(200_000), 1.1 * rng.standard_normal(150_000) + 0.05
    exact = dg.wasserstein1(a, b)
    approx = dg.wasserstein1(dg.quantile_summary(a, 10_000), dg.quantile_summary(b, 10_000))
    assert abs(approx - exact) / exact < 1e-3  # measured 1.6e-4 (10^4 quantiles of 1.5-2 x 10^5 values)
    assert np.array_equal(dg.quantile_summary(a[:50], 10_000), np.sort(a[:50]))


# --------------------------------------------------------------------------- isotropic spectra
@pytest.mark.parametrize("nx,ny,W", [(32, 32, L), (16, 24, 1.5 * L)])
def test_isotropic_spectrum_parseval(nx, ny, W):
    rng = np.random.default_rng(3)
    f = rng.standard_normal((2, ny, nx))
    f -= f.mean(axis=(-1, -2), keepdims=True)
    dens = dg.spectral_density(f)
    for binning in ("shell", "pyqg"):
        kr, E = dg.isotropic_spectrum(dens, L, W, binning=binning, truncate=False)
        dkr = kr[1] - kr[0]
        np.testing.assert_allclose(E.sum(-1) * dkr, f.var(axis=(-1, -2)), rtol=1e-12)
    # truncated: exactly the modes inside the inner circle (shell n <= n_max)
    k, l = (a.ravel() for a in fluxform.wavenumbers(nx, L, ny=ny, W=W))
    wv = np.hypot(k[None, :], l[:, None])
    width = max(2 * np.pi / L, 2 * np.pi / W)
    kmax = min(k.max(), np.abs(l).max())
    inside = np.rint(wv / width) <= np.floor(kmax / width + 0.5)
    kr, E = dg.isotropic_spectrum(dens, L, W)
    expect = (fluxform.half_plane_weights(ny, nx // 2 + 1) * dens * inside).sum((-1, -2))
    np.testing.assert_allclose(E.sum(-1) * width, expect, rtol=1e-12)
    np.testing.assert_allclose(np.diff(kr), width, rtol=1e-12)


def test_isotropic_spectrum_matches_calc_ispec():
    m = _model(32, 0)
    for _ in range(50):
        m._step_forward()
    m._invert()
    m._calc_derived_fields()
    for name, pick in [("KEspec", lambda d: d[0]), ("KEflux", lambda d: d), ("APEgenspec", lambda d: d)]:
        dens = pick(m.diagnostics[name]["function"](m))
        for average in (False, True):
            for truncate in (True, False):
                kr0, E0 = calc_ispec(m, dens, averaging=average, truncate=truncate)
                kr, E = dg.isotropic_spectrum(dens, m.L, m.W, binning="pyqg", average=average, truncate=truncate)
                np.testing.assert_allclose(kr, kr0, rtol=1e-14)
                np.testing.assert_allclose(E, E0, rtol=1e-11, atol=1e-14 * np.abs(E0).max())


# --------------------------------------------------------------------------- pyqg budget
def _run_collecting(m: pyqg.QGModel, steps: int) -> np.ndarray:
    """Step m, returning q at every step where pyqg accumulates its diagnostics (t >= dt)."""
    snaps = []
    for _ in range(steps):
        if m.t >= m.dt:
            snaps.append(np.array(m.q))
        m._step_forward()
    return np.array(snaps)


def test_snapshot_spectra_equal_model_accumulated_diagnostics():
    m = _model(16, 7)
    for _ in range(200):  # spin up without diagnostics
        m._step_forward()
    m2 = pyqg.QGModel(nx=16, ntd=1, log_level=0, tavestart=0.0, taveint=DT, **KW)
    m2.q = np.array(m.q)
    snaps = _run_collecting(m2, 30)
    ours = pd.time_mean_spectra(snaps, {"nx": 16, **KW})
    for name in pd.PYQG_SPECTRA:
        assert m2.diagnostics[name]["count"] == len(snaps) == 29
        ref = m2.get_diagnostic(name)
        # Same q, same inversion and the same pyqg functions: only the order of summation can differ,
        # so the agreement is to round-off (measured <= 1e-14 of the largest value).
        np.testing.assert_allclose(ours[name], ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_fields_and_energy_definitions():
    m = _model(16, 8)
    for _ in range(20):
        m._step_forward()
    ev = pd.SnapshotDiagnostics({"nx": 16, **KW})
    ev.load(m.q)
    f = ev.fields()
    # u = -d psi/dy, v = d psi/dx, zeta = laplacian(psi), spectrally
    psi = np.fft.irfft2(ev.m.ph, s=(16, 16))
    k, l = (a.ravel() for a in fluxform.wavenumbers(16, L))
    ph = np.fft.rfft2(psi)
    np.testing.assert_allclose(f["u"], np.fft.irfft2(-1j * l[:, None] * ph, s=(16, 16)), atol=1e-12 * abs(f["u"]).max())
    np.testing.assert_allclose(f["v"], np.fft.irfft2(1j * k[None, :] * ph, s=(16, 16)), atol=1e-12 * abs(f["v"]).max())
    zeta = np.fft.irfft2(-(k[None, :] ** 2 + l[:, None] ** 2) * ph, s=(16, 16))
    np.testing.assert_allclose(f["enstrophy"], zeta ** 2 / 2, rtol=1e-10, atol=1e-12 * (zeta ** 2).max())
    assert ev.energy() == pytest.approx(ev.m._calc_ke(), rel=1e-10)
    # halved KE spectrum integrates to the layer KE
    kr, E = dg.isotropic_spectrum(0.5 * ev.spectra()["KEspec"], L, truncate=False)
    np.testing.assert_allclose(E.sum(-1) * (kr[1] - kr[0]), f["KE"].mean(axis=(-1, -2)), rtol=1e-10)


# --------------------------------------------------------------------------- similarity
def test_similarity_identical_baseline_and_worse(data):
    truth = data["truth"]
    kw = pd.model_kwargs_from_attrs(truth)
    summary = {c: pd.summarise([truth.assign(q=c * truth.q)], f"x{c}", kw, n_quantiles=None).diagnostics
               for c in (1.0, 1.2, 1.5)}
    ref = pd.summarise([truth], "truth", kw, n_quantiles=None).diagnostics
    k_max = 2 / 3 * math.pi * 16 / L
    dist = {name: summary[c].distances(ref, k_max) for name, c in
            [("identical", 1.0), ("baseline", 1.2), ("worse", 1.5)]}
    table = dg.SimilarityTable(dist, baseline="baseline")
    assert all(s == 1.0 for s in table.similarity("identical").values())
    assert all(d == 0.0 for d in dist["identical"].values())
    worse = table.similarity("worse")
    assert all(s < 0 for s in worse.values())
    # Scaling q by c scales linear quantities (q, u, v) by c, quadratic ones (KE, enstrophy,
    # spectra, APE generation, drag) by c^2 and triple products (fluxes) by c^3, so each score is exact.
    def expect(p):
        return 1 - (1.5 ** p - 1) / (1.2 ** p - 1)
    for label, s in worse.items():
        p = 1 if label[:-1] in ("q", "u", "v") else 3 if label in ("KEflux", "APEflux") else 2
        assert s == pytest.approx(expect(p), rel=1e-9), label
    assert table.summary("worse")["min"] == pytest.approx(expect(3), rel=1e-9)
    baseline_scores = dg.similarity_scores(dist["baseline"], dist["baseline"])
    assert all(s == 0.0 for s in baseline_scores.values())
    assert len(ref.labels()) == 18


def test_similarity_agrees_with_pyqg_diagnostic_similarities():
    """Where the definitions coincide (pyqg's isotropic estimator, all its wavenumbers, RMSE), scores agree."""
    models, snaps = {}, {}
    for name, seed, extra in [("target", 0, {}), ("baseline", 1, {"rek": 1.2e-6}), ("model", 2, {"rek": 8e-7})]:
        m = pyqg.QGModel(nx=16, ntd=1, log_level=0, tavestart=0.0, taveint=DT, **KW, **extra)
        m.q = 1e-6 * np.random.default_rng(seed).standard_normal((2, 16, 16))
        snaps[name] = (_run_collecting(m, 120), extra)
        models[name] = m
    theirs = diagnostic_similarities(models["model"], models["target"], models["baseline"])
    spectra = {}
    for name, (q, extra) in snaps.items():
        mean = pd.time_mean_spectra(q, {"nx": 16, **KW, **extra})
        iso = {}
        for s, value in mean.items():
            for label, dens in ([(f"{s}{z + 1}", value[z]) for z in range(2)] if value.ndim == 3 else [(s, value)]):
                iso[label] = dg.isotropic_spectrum(dens, L, binning="pyqg", average=True)[1]
        spectra[name] = iso
    d_model = {k: dg.rmse(spectra["model"][k], spectra["target"][k]) for k in spectra["target"]}
    d_base = {k: dg.rmse(spectra["baseline"][k], spectra["target"][k]) for k in spectra["target"]}
    ours = dg.similarity_scores(d_model, d_base)
    # Our KE-spec and enstrophy spectra are halved; the factor cancels in the ratio.
    assert set(ours) <= set(theirs)
    for label, s in ours.items():
        assert s == pytest.approx(theirs[label], rel=1e-9, abs=1e-12), label


# --------------------------------------------------------------------------- stability
def test_stability_summary_flags_nan_and_energy_growth():
    time = 86400.0 * np.arange(1, 11)
    energy = np.full((3, 10), 1e-3)
    energy[1, 4:] = np.nan
    energy[2, 6:] = 1.0
    s = dg.stability_summary(energy, time, energy_bound=1e-2)
    assert s["stable"] == [True, False, False]
    assert s["fraction_stable"] == pytest.approx(1 / 3)
    assert math.isnan(s["blowup_time"][0])
    assert s["blowup_time"][1:] == [time[4], time[6]]
    assert s["blowup_days"] == [None, 5.0, 7.0]
    finite = np.ones((3, 10), bool)
    finite[0, 8] = False
    assert dg.stability_summary(energy, time, 1e-2, finite)["blowup_days"][0] == 9.0


def test_summarise_detects_blowup_and_excludes_unstable_runs(data):
    base = data["baseline"]
    q = base.q.values.copy()
    q = np.concatenate([q, q[:1], q[:1]])  # runs 2 and 3: copies of run 0 that go wrong
    q[2, 5:, 0, 3, 3] = np.nan
    q[3, 9:] *= 100.0
    ds = base.isel(run=[0, 0, 0, 0]).assign_coords(run=np.arange(4)).copy(data={"q": q})
    kw = pd.model_kwargs_from_attrs(ds)
    bound = 10 * float(pd.summarise([base], "b", kw).energy.max())
    s = pd.summarise([ds], "blowup", kw, energy_bound=bound, n_quantiles=None)
    t = ds.time.values
    assert s.stability["stable"] == [True, True, False, False]
    assert s.stability["blowup_time"][2:] == [t[5], t[9]]
    assert np.isnan(s.energy[2, 5:]).all() and np.isfinite(s.energy[2, :5]).all()
    assert s.diagnostics.ds.attrs["n_snapshots"] == 2 * t.size  # only the two stable runs pooled
    clean = pd.summarise([base], "clean", kw, n_quantiles=None)
    xr.testing.assert_allclose(s.diagnostics.ds.drop_attrs(), clean.diagnostics.ds.drop_attrs())


# --------------------------------------------------------------------------- evaluate
def _cli(argv):
    args = build_parser().parse_args(["evaluate", *argv])
    return args.func(args)


def test_evaluate_cli_end_to_end(tmp_path, data, capsys):
    files = {}
    for name in ("truth", "truth_b", "baseline"):
        files[name] = str(tmp_path / f"{name}.nc")
        data[name].to_netcdf(files[name])
    # a "candidate" that is the other truth half: scores like the ceiling; a damped one scores badly
    files["damped"] = str(tmp_path / "damped.nc")
    data["baseline"].assign(q=0.5 * data["baseline"].q).to_netcdf(files["damped"])
    out = tmp_path / "out"
    rc = _cli(["--truth", files["truth"], "--baseline", files["baseline"], "--truth-b", files["truth_b"],
               "--run", f"good={files['truth_b']}", "--run", f"damped={files['damped']}",
               "--last-years", "0.2", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "noise ceiling" in printed and "KEflux" in printed and "mean" in printed
    result = json.loads((out / "evaluate.json").read_text())
    assert set(result["runs"]) == {"baseline", "good", "damped", "truth-b"}
    good, ceiling = result["runs"]["good"], result["runs"]["truth-b"]
    assert good["similarity"] == ceiling["similarity"]
    assert "similarity" not in result["runs"]["baseline"]  # 0 by definition, not reported
    assert len(result["diagnostics"]) == 18
    assert result["runs"]["damped"]["stability"]["fraction_stable"] == 1.0
    for stem in ("spectra", "energy_budget", "distributions", "energy_timeseries", "snapshots"):
        assert (out / f"{stem}.png").stat().st_size > 1000


def test_stored_reference_and_run_selection_give_the_same_scores(tmp_path, data, capsys):
    truth, base, cand = (str(tmp_path / f"{n}.nc") for n in ("truth", "base", "cand"))
    data["truth"].to_netcdf(truth)
    data["baseline"].to_netcdf(base)
    data["truth_b"].to_netcdf(cand)
    ref = str(tmp_path / "ref.nc")
    common = ["--baseline", base, "--run", f"c={cand}", "--last-years", "0.2"]
    assert _cli(["--truth", truth, *common, "--out", str(tmp_path / "a"), "--save-reference", ref]) == 0
    assert _cli(["--reference", ref, *common, "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "evaluate.json").read_text())["runs"]["c"]["similarity"]
    b = json.loads((tmp_path / "b" / "evaluate.json").read_text())["runs"]["c"]["similarity"]
    assert a == b
    # FILE@RUNS selects members: all runs listed explicitly is the same as the whole file
    n = data["truth"].sizes["run"]
    assert _cli(["--truth", f"{truth}@0-{n - 1}", *common, "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "evaluate.json").read_text())["runs"]["c"]["similarity"] == a
    capsys.readouterr()
    for bad, message in ((f"{truth}@{n}", f"cannot select [{n}]"), (f"{truth}@x", "run selection")):
        with pytest.raises(SystemExit):
            _cli(["--truth", bad, *common, "--out", str(tmp_path / "d")])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(["--truth", truth, "--reference", ref, *common, "--out", str(tmp_path / "e")])
    assert "either as --truth" in capsys.readouterr().err


def test_evaluate_cli_bad_input(tmp_path, data, capsys):
    truth, base = str(tmp_path / "truth.nc"), str(tmp_path / "base.nc")
    data["truth"].to_netcdf(truth)
    data["baseline"].to_netcdf(base)
    bad = {
        "novar": (data["baseline"].rename({"q": "psi"}), "no variable 'q'"),
        "grid": (_runs([9], nx=8, steps=24), "nx = 8"),
    }
    for name, (ds, message) in bad.items():
        path = str(tmp_path / f"{name}.nc")
        ds.to_netcdf(path)
        with pytest.raises(SystemExit) as exc:
            _cli(["--truth", truth, "--baseline", base, "--run", f"x={path}", "--out", str(tmp_path / "o")])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    nan_truth = str(tmp_path / "nan_truth.nc")
    q = data["truth"].q.values.copy()
    q[0, 3, 1, 2, 2] = np.nan
    data["truth"].copy(data={"q": q}).to_netcdf(nan_truth)
    with pytest.raises(SystemExit) as exc:
        _cli(["--truth", nan_truth, "--baseline", base, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "NaN" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _cli(["--truth", truth, "--baseline", base, "--set", "nosuch=1", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_model_kwargs_from_generate_config():
    ds = _runs([0], nx=16, steps=12).assign_attrs(
        config=json.dumps({"name": "eddy", "params": {"nx": 256, "L": L, "rek": 7e-8, "ntd": 1}, "coarse_nx": 16}))
    kw = pd.model_kwargs_from_attrs(ds, {"beta": 1e-11})
    assert kw["nx"] == 16 and kw["rek"] == 7e-8 and kw["beta"] == 1e-11 and "ntd" not in kw
    with pytest.raises(ValueError, match="grid spacing"):
        pd.model_kwargs_from_attrs(ds, {"L": 2 * L})
