"""Coarse-graining operators, dealiased products, subgrid fluxes: identity, pyqg filter, equivariance."""

import numpy as np
import pytest

from roteq_param import coarsen, fluxform
from roteq_param.symmetry import Group, act

N_FINE, N_COARSE = 64, 16


@pytest.fixture(scope="module")
def model():
    """A briefly integrated 64^2 pyqg model (its q is the high-resolution state)."""
    import pyqg

    m = pyqg.QGModel(nx=N_FINE, dt=3600.0, log_level=0, tmax=3600.0 * 300)
    rng = np.random.default_rng(0)
    q = np.zeros((2, N_FINE, N_FINE))
    q[0] = 1e-6 * rng.standard_normal((N_FINE, N_FINE))  # broadband, so small scales carry subgrid fluxes
    q[1] = -0.5e-6 * rng.standard_normal((N_FINE, N_FINE))
    m.q = q
    m.run()
    return m


def _coarse(m, name, n_coarse=N_COARSE, q=None):
    op = coarsen.make_operator(name, N_FINE, n_coarse, m.L)
    return coarsen.coarse_grain(m.q if q is None else q, fluxform.Stratification.from_matrix(m.S), m.L, op)


# 24 does not divide 64: truncation takes any smaller grid (256 -> 48 and 96 in the resolution study)
@pytest.mark.parametrize("n_coarse", [N_COARSE, 24])
@pytest.mark.parametrize("name", ["spectral", "gaussian"])
def test_flux_form_identity_spectral_operators(model, name, n_coarse):
    out = _coarse(model, name, n_coarse=n_coarse)
    res = coarsen.commutation_residual(out)
    print(f"{name} {N_FINE}->{n_coarse}: relative |S_direct - S_flux| per layer = {res}")
    assert res.shape == (2,) and np.all(res <= 1e-10)
    assert np.abs(out["tau"]).max() > 0 and np.abs(out["Fb"]).max() > 0


def test_flux_form_identity_gcm_filters_before_block_averaging(model):
    # n_coarse == n_fine: gcm-filters alone (a Fourier multiplier on the periodic grid), no block averaging.
    res = coarsen.commutation_residual(_coarse(model, "gcm", n_coarse=N_FINE))
    print(f"gcm-filters, no block averaging: {res}")
    assert np.all(res <= 1e-10)


def test_block_averaging_residual_is_finite_and_bounded(model):
    res = coarsen.commutation_residual(_coarse(model, "gcm"))
    print(f"gcm-filters + block averaging {N_FINE}->{N_COARSE}: commutation residual {res}")
    assert np.all(np.isfinite(res)) and np.all(res < 2.0)


def test_spectral_operator_reproduces_coarse_pyqg_filter():
    import pyqg

    coarse_model = pyqg.QGModel(nx=N_COARSE, dt=3600.0, log_level=0)
    op = coarsen.make_operator("spectral", N_FINE, N_COARSE, coarse_model.L)
    filtr = np.asarray(coarse_model.filtr)
    keep = np.ones_like(filtr, bool)
    keep[N_COARSE // 2, :] = keep[:, N_COARSE // 2] = False  # Nyquist modes are dropped, not filtered
    np.testing.assert_array_equal(op.transfer()[keep], filtr[keep])


def test_gaussian_transfer_and_default_width():
    op = coarsen.make_operator("gaussian", N_FINE, N_COARSE, 1e6)
    assert op.width == 2 * 1e6 / N_COARSE
    k, l = fluxform.wavenumbers(N_COARSE, 1e6)
    np.testing.assert_allclose(op.transfer(), np.exp(-(k**2 + l**2) * op.width**2 / 24))


def test_dealiased_product_is_exact():
    n, L = 16, 1e6
    x = (np.arange(n) + 0.5) * L / n
    X, Y = np.meshgrid(x, x)
    kx = 2 * np.pi / L
    a = np.cos(7 * kx * X + 5 * kx * Y)
    b = np.sin(6 * kx * X - 3 * kx * Y)
    # a*b = (sin(13x+2y) - sin(x+8y))/2: the first term is above the 16-point grid's Nyquist (drop it), and a
    # plain grid product aliases it onto (-3, 2).
    exact = -0.5 * np.sin(1 * kx * X + 8 * kx * Y)
    exact_h = coarsen.to_spectrum(exact)
    got = coarsen.dealiased_product(coarsen.to_spectrum(a), coarsen.to_spectrum(b))
    np.testing.assert_allclose(got, exact_h, atol=1e-15)
    assert np.abs(coarsen.to_spectrum(a * b) - exact_h).max() > 0.1


def test_resize_round_trip():
    rng = np.random.default_rng(0)
    fh = coarsen.to_spectrum(rng.standard_normal((2, 16, 16)))
    np.testing.assert_array_equal(coarsen.resize_spectrum(coarsen.resize_spectrum(fh, 24), 16), fh)


def test_bad_operator_arguments():
    with pytest.raises(ValueError, match="block averaging needs the high-resolution nx=64 to be a multiple"):
        coarsen.make_operator("gcm", 64, 24, 1e6)
    with pytest.raises(ValueError, match="coarse nx=128 must not exceed the high-resolution nx=64"):
        coarsen.make_operator("spectral", 64, 128, 1e6)
    assert coarsen.make_operator("spectral", 64, 24, 1e6).ratio == 64 / 24
    assert coarsen.make_operator("spectral", 64, 16, 1e6).ratio == 4
    with pytest.raises(ValueError, match="unknown coarse-graining operator 'box'"):
        coarsen.make_operator("box", 64, 16, 1e6)


def _pack(out):
    """The outputs grouped by field kind: u and v as one vector field [lev, 2, y, x]."""
    return {
        "uv": np.stack([out["u"], out["v"]], axis=-3),
        "b": out["b"], "q": out["q"], "tau": out["tau"], "Fb": out["Fb"],
        "S_direct": out["S_direct"], "S_flux": out["S_flux"],
    }


# Under a reflection, psi (hence q, eta = b, S) changes sign with velocity a true vector (f0 is fixed), so
# they are pseudoscalars and the eta flux Fb is a pseudovector; under rotations these are plain scalars/vectors.
_KINDS = {"uv": "vector", "b": "pseudoscalar", "q": "pseudoscalar", "tau": "tensor", "Fb": "vector",
          "S_direct": "pseudoscalar", "S_flux": "pseudoscalar"}


@pytest.mark.parametrize("name, n_coarse", [("spectral", N_COARSE), ("gaussian", N_COARSE), ("gcm", N_COARSE),
                                             ("spectral", 24)])
def test_pipeline_is_equivariant(model, name, n_coarse):
    import pyqg

    ref = _pack(_coarse(model, name, n_coarse=n_coarse))
    rotated_model = pyqg.QGModel(nx=N_FINE, dt=3600.0, log_level=0)
    for g in Group.parse("D4").exact_elements():
        if g.k == 0 and not g.flip:
            continue
        rotated_model.q = act(g, model.q, "pseudoscalar")  # q enters only as a field: beta and U are not used
        got = _pack(_coarse(model, name, n_coarse=n_coarse, q=rotated_model.q))
        for key, kind in _KINDS.items():
            expect = act(g, ref[key], kind)
            if key == "Fb":
                expect = g.det * expect
            scale = np.abs(ref[key]).max()
            np.testing.assert_allclose(got[key], expect, atol=1e-10 * scale, err_msg=f"{name} {g} {key}")


@pytest.mark.parametrize("n_coarse", [N_COARSE, 24])
def test_coarse_samples_sit_at_coarse_cell_centres(n_coarse):
    """A resolved mode passes the spectral operator unchanged and is sampled at (I + 1/2) dx_c."""
    L = 1e6
    xf = (np.arange(N_FINE) + 0.5) * L / N_FINE
    xc = (np.arange(n_coarse) + 0.5) * L / n_coarse
    k = 2 * np.pi / L  # modes (2, 3): below the coarse filter's cut-off, so G = 1
    f = np.cos(2 * k * xf)[None, :] * np.cos(3 * k * xf)[:, None]
    op = coarsen.make_operator("spectral", N_FINE, n_coarse, L)
    got = coarsen.from_spectrum(op.apply(coarsen.to_spectrum(f)), n_coarse)
    np.testing.assert_allclose(got, np.cos(2 * k * xc)[None, :] * np.cos(3 * k * xc)[:, None], atol=1e-14)
