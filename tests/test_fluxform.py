"""Spectral flux-form calculus: analytic checks, agreement with pyqg, numpy == torch, zero domain integrals."""

import numpy as np
import pytest
import torch

from roteq_param import fluxform as ff

L = 1e6


def _grid(n):
    x = (np.arange(n) + 0.5) * L / n
    return np.meshgrid(x, x, indexing="xy")  # X varies along the last axis (x), Y along y


def _smooth_random(shape, n, rng, kmax=6):
    """Random real field with only |k|, |l| <= kmax (no Nyquist content)."""
    fh = np.zeros(shape + (n, n // 2 + 1), complex)
    fh[..., :kmax + 1, :kmax + 1] = rng.normal(size=shape + (kmax + 1, kmax + 1)) + 1j * rng.normal(size=shape + (kmax + 1, kmax + 1))
    fh[..., -kmax:, :kmax + 1] = rng.normal(size=shape + (kmax, kmax + 1)) + 1j * rng.normal(size=shape + (kmax, kmax + 1))
    return np.fft.irfft2(fh, s=(n, n))


def test_derivatives_of_trigonometric_fields():
    n = 32
    X, Y = _grid(n)
    k, l = 2 * np.pi * 3 / L, 2 * np.pi * 5 / L
    f = np.sin(k * X) * np.cos(l * Y)
    np.testing.assert_allclose(ff.ddx(f, L), k * np.cos(k * X) * np.cos(l * Y), atol=1e-12 * k)
    np.testing.assert_allclose(ff.ddy(f, L), -l * np.sin(k * X) * np.sin(l * Y), atol=1e-12 * l)
    np.testing.assert_allclose(ff.laplacian(f, L), -(k**2 + l**2) * f, atol=1e-12 * (k**2 + l**2))


@pytest.fixture(scope="module")
def pyqg_state():
    import pyqg

    m = pyqg.QGModel(nx=32, dt=3600.0, log_level=0, tmax=3600.0 * 100)
    m.run()
    n = m.nx
    qh = np.fft.rfft2(m.q)
    qh[..., n // 2, :] = 0
    qh[..., :, n // 2] = 0
    qh[..., 0, 0] = 0  # pyqg does not invert the mean; drop it so q == PV(psi) exactly
    m.q = np.fft.irfft2(qh, s=(n, n))
    m._invert()  # pyqg's own inversion: fills m.ph, m.u, m.v from m.q
    return m


def test_matches_pyqg_inversion_and_velocity(pyqg_state):
    m = pyqg_state
    psi = ff.invert_pv(m.q, ff.Stratification.from_matrix(m.S), m.L)
    psi_pyqg = m.ifft(m.ph)
    scale = np.abs(psi_pyqg).max()
    np.testing.assert_allclose(psi, psi_pyqg, atol=1e-12 * scale)
    uv = ff.velocity_from_streamfunction(psi, m.L)  # [lev, 2, y, x]
    uscale = np.abs(m.u).max()
    np.testing.assert_allclose(uv[:, 0], m.u, atol=1e-11 * uscale)
    np.testing.assert_allclose(uv[:, 1], m.v, atol=1e-11 * uscale)
    np.testing.assert_allclose(ff.pv_from_streamfunction(psi, ff.Stratification.from_matrix(m.S), m.L), m.q, atol=1e-11 * np.abs(m.q).max())
    # The velocity is non-divergent and its curl is the relative vorticity lap(psi).
    assert np.abs(ff.divergence(uv, m.L)).max() < 1e-12 * np.abs(ff.curl(uv, m.L)).max()
    np.testing.assert_allclose(ff.curl(uv, m.L), ff.laplacian(psi, m.L), atol=1e-11 * np.abs(ff.laplacian(psi, m.L)).max())


def test_stretching_coefficients_match_pyqg(pyqg_state):
    assert ff.stretching_coefficients(pyqg_state.rd, pyqg_state.delta) == pytest.approx((pyqg_state.F1, pyqg_state.F2), rel=1e-15)


def _fluxes(rng, batch=(3,), n=16):
    return _smooth_random(batch + (2, 3), n, rng), 1e3 * _smooth_random(batch + (2, 2), n, rng)


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(0)
    tau, Fb = _fluxes(rng)
    F1, F2 = ff.stretching_coefficients(15e3, 0.25)
    ref = ff.pv_forcing_from_fluxes(tau, Fb, ff.Stratification.two_layer(F1, F2), L)
    assert ref.shape == (3, 2, 16, 16)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        out = ff.pv_forcing_from_fluxes(torch.tensor(tau, dtype=dtype), torch.tensor(Fb, dtype=dtype), ff.Stratification.two_layer(F1, F2), L)
        assert out.dtype == dtype and out.shape == ref.shape
        np.testing.assert_allclose(out.numpy(), ref, atol=tol * np.abs(ref).max())
        du = ff.momentum_tendency(torch.tensor(tau, dtype=dtype), L)
        np.testing.assert_allclose(du.numpy(), ff.momentum_tendency(tau, L), atol=tol * np.abs(du.numpy()).max())


def test_torch_gradients_flow():
    rng = np.random.default_rng(1)
    tau, Fb = (torch.tensor(a, requires_grad=True) for a in _fluxes(rng, batch=()))
    ff.pv_forcing_from_fluxes(tau, Fb, ff.Stratification.two_layer(1e-9, 2e-10), L).pow(2).sum().backward()
    assert torch.isfinite(tau.grad).all() and tau.grad.abs().max() > 0 and Fb.grad.abs().max() > 0


def test_domain_integrals_vanish():
    rng = np.random.default_rng(2)
    tau, Fb = _fluxes(rng)
    for out in (ff.momentum_tendency(tau, L), ff.buoyancy_tendency(Fb, L),
                ff.pv_forcing_from_fluxes(tau, Fb, ff.Stratification.two_layer(3e-9, 1e-9), L)):
        assert np.abs(out.mean(axis=(-2, -1))).max() < 1e-14 * np.abs(out).max()


def test_flux_form_of_the_forcing():
    """S from tau alone is -curl(div tau); from Fb alone it is +F1 div F in layer 1 and -F2 div F in layer 2."""
    rng = np.random.default_rng(3)
    tau, Fb = _fluxes(rng, batch=())
    S_tau = ff.pv_forcing_from_fluxes(tau, 0 * Fb, ff.Stratification.two_layer(1.0, 1.0), L)
    np.testing.assert_allclose(S_tau, ff.curl(ff.momentum_tendency(tau, L), L), atol=1e-12 * np.abs(S_tau).max())
    S_F = ff.pv_forcing_from_fluxes(0 * tau, Fb, ff.Stratification.two_layer(2.0, 3.0), L)
    bt = ff.buoyancy_tendency(Fb, L)
    np.testing.assert_allclose(S_F[0], -2.0 * bt[0], atol=1e-12 * np.abs(S_F).max())
    np.testing.assert_allclose(S_F[1], 3.0 * bt[1], atol=1e-12 * np.abs(S_F).max())


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="tau must have shape"):
        ff.pv_forcing_from_fluxes(np.zeros((2, 2, 8, 8)), np.zeros((2, 2, 8, 8)), ff.Stratification.two_layer(1.0, 1.0), L)
    with pytest.raises(ValueError, match="square"):
        ff.ddx(np.zeros((8, 16)), L)
