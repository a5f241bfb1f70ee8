"""Tests of the C-grid adapter (solver_coupling.cgrid), validated against pyqg's spectral state."""

import warnings

import numpy as np
import pytest

from roteq_param.symmetry import Group, Kind, act
from solver_coupling.cgrid import staggered as S
from solver_coupling.cgrid import CGridAdapter, GradientModel
from solver_coupling.pyqg.cgrid_path import cgrid_state

# A band-limited two-layer streamfunction (m^2/s): integer wavenumbers (in units of 2 pi / L) up to 3,
# so every quadratic flux stays resolved (|k| <= 6) on all grids used below.
rng = np.random.default_rng(2024)
MODES = [(kx, ky, *rng.normal(size=2), rng.uniform(0, 2 * np.pi)) for kx in range(-3, 4) for ky in range(0, 4)
         if (kx, ky) != (0, 0) and not (ky == 0 and kx < 0)]


def psi_analytic(x, y, L):
    psi = np.zeros((2, *x.shape))
    for kx, ky, a1, a2, phase in MODES:
        arg = 2 * np.pi * (kx * x + ky * y) / L + phase
        psi[0] += 1e4 * a1 * np.cos(arg)
        psi[1] += 0.4e4 * a2 * np.cos(arg)
    return psi


def pyqg_cgrid_state(n):
    """A pyqg model on an n x n grid holding the analytic state, and the exact fields derived from its ph.

    Returns (model, u_faces, v_faces, b, u_centres, v_centres): C-grid velocities come from the
    spectral streamfunction by half-cell shifts (pyqg's points are x = (i + 1/2) dx; u-points are
    dx/2 to the west, v-points dy/2 to the south).
    """
    import pyqg

    m = pyqg.QGModel(nx=n, log_level=0)
    psih = np.fft.rfft2(psi_analytic(m.x, m.y, m.L))
    qh = -m.wv2 * psih + np.stack([m.F1 * (psih[1] - psih[0]), m.F2 * (psih[0] - psih[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.q = np.fft.irfft2(qh, s=(n, n))
    m._invert()  # pyqg's own inversion: ph now holds the model's streamfunction
    u_faces, v_faces, b = cgrid_state(m)
    u_centres = np.fft.irfft2(-1j * m.l * m.ph, s=(n, n))
    v_centres = np.fft.irfft2(1j * m.k * m.ph, s=(n, n))
    return m, u_faces, v_faces, b, u_centres, v_centres


def spectral_forcing(m, u_c, v_c, b_c, delta):
    """Exact collocated path: spectral closure, spectral divergence and curl; curl returned at corners."""
    n = m.nx
    tau, fb = GradientModel(m.dx, m.dy, delta, derivative="spectral")(u_c, v_c, b_c)
    ik, il = 1j * m.k, 1j * m.l
    th, fh = np.fft.rfft2(tau), np.fft.rfft2(fb)
    duh = -(ik * th[:, 0] + il * th[:, 1])
    dvh = -(ik * th[:, 1] + il * th[:, 2])
    curlh = (ik * dvh - il * duh) * np.exp(-1j * (m.k * m.dx + m.l * m.dy) / 2)
    dbh = -(ik * fh[:, 0] + il * fh[:, 1])
    return np.fft.irfft2(curlh, s=(n, n)), np.fft.irfft2(dbh, s=(n, n))


def test_cgrid_path_converges_to_spectral_path_at_second_order():
    # The PV forcing holds wavenumbers up to 6 and four derivatives; 32^2 is pre-asymptotic (order 1.6).
    ns = np.array([64, 128, 256])
    err_curl, err_db = [], []
    for n in ns:
        m, u, v, b, u_c, v_c = pyqg_cgrid_state(n)
        delta = m.L / 16  # fixed filter width: the closure is the same continuum operator on every grid
        assert np.allclose(S.u_to_centre(u), u_c, atol=0.05 * np.abs(u_c).max())  # sanity of the shifts
        adapter = CGridAdapter(GradientModel(m.dx, m.dy, delta), m.dx, m.dy)
        du, dv, db = adapter(u, v, b)
        curl = S.vorticity(du, dv, m.dx, m.dy)  # PV forcing of the momentum flux, at corners, s^-2
        curl_ref, db_ref = spectral_forcing(m, u_c, v_c, b, delta)
        err_curl.append(np.abs(curl - curl_ref).max() / np.abs(curl_ref).max())
        err_db.append(np.abs(db - db_ref).max() / np.abs(db_ref).max())
    for name, e in (("curl", err_curl), ("db", err_db)):
        order = -np.polyfit(np.log(ns), np.log(e), 1)[0]
        assert np.all(np.diff(e) < 0), (name, e)
        print(f"{name}: relative max errors {np.round(e, 5).tolist()} at n = {ns.tolist()}, order {order:.3f}")
        assert 1.8 < order < 2.3, (name, e, order)
    assert err_curl[-1] < 0.02 and err_db[-1] < 0.01


def random_state(rng, n, nz=2, b_layers=None, dtype=np.float64):
    u, v = rng.standard_normal((2, nz, n, n)).astype(dtype)
    b = rng.standard_normal((n, n) if b_layers is None else (b_layers, n, n)).astype(dtype)
    return u, v, b


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("b_layers", [None, 2])
def test_domain_sums_of_tendencies_vanish(use_mask, b_layers):
    rng = np.random.default_rng(11)
    n = 16
    mask = rng.random((n, n)) > 0.2 if use_mask else None
    u, v, b = random_state(rng, n, b_layers=b_layers)
    if use_mask:
        u[:, ~mask] = np.nan  # land may hold anything
    adapter = CGridAdapter(GradientModel(1e4, 1e4, 2e4), 1e4, 1e4, mask)
    du, dv, db = adapter(u, v, b)
    assert du.shape == dv.shape == db.shape == (2, n, n)
    for t in (du, dv, db):
        assert np.isfinite(t).all() and np.abs(t).max() > 0
        np.testing.assert_allclose(t.sum(axis=(-2, -1)), 0.0, atol=1e-13 * np.abs(t).sum())
    if use_mask:
        m = S.CGridMasks.from_centre(mask, mask.shape)
        assert np.all(du[:, ~m.u] == 0) and np.all(dv[:, ~m.v] == 0) and np.all(db[:, ~mask] == 0)


@pytest.mark.parametrize("g", Group(4, reflections=True).elements(), ids=str)
def test_rotation_commutes_with_the_whole_cgrid_path(g):
    rng = np.random.default_rng(12)
    n = 12
    mask = rng.random((n, n)) > 0.15
    u, v, b = random_state(rng, n)
    d = 5e3
    closure = GradientModel(d, d, 2 * d)
    out = CGridAdapter(closure, d, d, mask)(u, v, b)
    mask_r = act(g, mask, Kind.SCALAR)
    out_r = CGridAdapter(closure, d, d, mask_r)(*S.rotate_cgrid_state(g, u, v, b))
    expected = S.rotate_cgrid_state(g, out.du, out.dv, out.db)
    scale = max(np.abs(t).max() for t in out)
    for got, want in zip(out_r, expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * scale)


def test_float32_is_kept():
    rng = np.random.default_rng(13)
    u, v, b = random_state(rng, 8, dtype=np.float32)
    out = CGridAdapter(GradientModel(1e3, 1e3, 2e3), 1e3, 1e3)(u, v, b)
    assert all(t.dtype == np.float32 for t in out)


def test_bad_input_raises_clear_errors():
    rng = np.random.default_rng(14)
    u, v, b = random_state(rng, 8)
    closure = GradientModel(1e3, 1e3, 2e3)
    adapter = CGridAdapter(closure, 1e3, 1e3)
    with pytest.raises(ValueError, match=r"v must have u's shape"):
        adapter(u, v[:, :, :7], b)
    with pytest.raises(ValueError, match=r"u must have shape \(nz, ny, nx\), on u-points"):
        adapter(u[0], v, b)
    with pytest.raises(ValueError, match=r"b must have shape \(ny, nx\)"):
        adapter(u, v, b[:7])
    with pytest.raises(ValueError, match="mask has shape"):
        CGridAdapter(closure, 1e3, 1e3, np.ones((9, 9), bool))(u, v, b)
    with pytest.raises(ValueError, match="dx must be a positive"):
        CGridAdapter(closure, -1.0, 1e3)
    bad = u.copy()
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="u has non-finite values"):
        adapter(bad, v, b)
    bad_b = b.copy()
    bad_b[2, 2] = np.inf
    with pytest.raises(ValueError, match="b has non-finite values"):
        adapter(u, v, bad_b)
    # NaN on land is fine: it is never read.
    mask = np.ones((8, 8), bool)
    mask[3, 4] = False
    out = CGridAdapter(closure, 1e3, 1e3, mask)(bad, v, b)
    assert all(np.isfinite(t).all() for t in out)

    def wrong_shape(u_c, v_c, b_c):
        tau, fb = closure(u_c, v_c, b_c)
        return tau[:, :2], fb

    with pytest.raises(ValueError, match=r"flux_model returned tau of shape .* expected \(nz, 3, ny, nx\)"):
        CGridAdapter(wrong_shape, 1e3, 1e3)(u, v, b)

    def nan_flux(u_c, v_c, b_c):
        tau, fb = closure(u_c, v_c, b_c)
        fb[0, 1, 2, 2] = np.nan
        return tau, fb

    with pytest.raises(ValueError, match="Fb has non-finite values"):
        CGridAdapter(nan_flux, 1e3, 1e3)(u, v, b)
