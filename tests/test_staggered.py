"""Tests of the C-grid <-> centre kernels (solver_coupling.cgrid.staggered).

Coordinates follow the module's convention: centres at ((i+1/2) dx, (j+1/2) dy),
u-points at (i dx, (j+1/2) dy), v-points at ((i+1/2) dx, j dy), corners at (i dx, j dy).
"""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from roteq_param.symmetry import Element, Group, Kind, act
from solver_coupling.cgrid import staggered as S

L = 2.0 * np.pi * 1000.0  # domain length in metres


def coords(n, kind):
    """(x, y) arrays of shape (n, n) for points of ``kind`` on an n x n grid of the square [0, L)^2."""
    d = L / n
    ix = np.arange(n) + (0.0 if kind in ("u", "corner") else 0.5)
    jy = np.arange(n) + (0.0 if kind in ("v", "corner") else 0.5)
    y, x = np.meshgrid(jy * d, ix * d, indexing="ij")
    return x, y


def f_analytic(x, y):
    return np.sin(x / 1000.0 + 0.3) * np.cos(2 * y / 1000.0 - 0.1) + 0.5 * np.cos(x / 1000.0 + y / 1000.0)


INTERPOLATIONS = [
    # (function, source kind, target kind)
    (S.u_to_centre, "u", "centre"),
    (S.v_to_centre, "v", "centre"),
    (S.centre_to_u, "centre", "u"),
    (S.centre_to_v, "centre", "v"),
    (S.centre_to_corner, "centre", "corner"),
    (S.corner_to_centre, "corner", "centre"),
]


def random_mask(rng, shape, p_land=0.25):
    return rng.random(shape) > p_land


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("func,src,dst", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constants_interpolate_exactly(func, src, dst, dtype):
    a = np.full((2, 3, 6, 7), 1.7, dtype=dtype)
    out = func(a)
    assert out.dtype == dtype and out.shape == a.shape
    assert np.all(out == dtype(1.7))


@pytest.mark.parametrize("func,src,dst", INTERPOLATIONS)
def test_constants_exact_where_all_averaged_points_are_wet(func, src, dst):
    rng = np.random.default_rng(1)
    mask = random_mask(rng, (9, 8))
    m = S.CGridMasks.from_centre(mask, mask.shape)
    wet = {"centre": m.centre, "u": m.u, "v": m.v, "corner": m.corner}
    a = np.full((9, 8), 3.0)
    a[~wet[src]] = np.nan  # land values must never be read
    out = func(a, mask)
    ones = func(wet[src].astype(float))  # unmasked average of wet indicators: 1 where all sources are wet
    full = wet[dst] & (ones == 1.0)
    assert full.any()
    np.testing.assert_array_equal(out[full], 3.0)
    np.testing.assert_array_equal(out[~wet[dst]], 0.0)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("func,src,dst", INTERPOLATIONS)
def test_linear_fields_interpolate_exactly_away_from_the_wrap(func, src, dst):
    # A linear field is not periodic, so only points whose stencil does not wrap are exact.
    n = 12
    xs, ys = coords(n, src)
    xd, yd = coords(n, dst)
    out = func(2.0 + 3e-3 * xs - 5e-3 * ys)
    interior = (slice(1, n - 1), slice(1, n - 1))
    np.testing.assert_allclose(out[interior], (2.0 + 3e-3 * xd - 5e-3 * yd)[interior], rtol=0, atol=1e-12)


def convergence_order(errors, ns):
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0]


@pytest.mark.parametrize("func,src,dst", INTERPOLATIONS)
def test_second_order_convergence_of_interpolations(func, src, dst):
    ns = np.array([16, 32, 64, 128])
    errors = [np.abs(func(f_analytic(*coords(n, src))) - f_analytic(*coords(n, dst))).max() for n in ns]
    order = convergence_order(errors, ns)
    assert 1.9 < order < 2.1, (errors, order)


def test_second_order_convergence_of_divergences_and_curl():
    # Analytic tau_xx = A, tau_xy = B, tau_yy = C, F = (A, C), velocity (A, C): derivatives are known exactly.
    k1, k2 = 1e-3, 2e-3

    def A(x, y):
        return np.sin(k1 * x + 0.3) * np.cos(k2 * y)

    def B(x, y):
        return np.cos(k1 * x - k2 * y)

    def C(x, y):
        return np.sin(k2 * x) * np.sin(k1 * y + 1.0)

    def Ax(x, y):
        return k1 * np.cos(k1 * x + 0.3) * np.cos(k2 * y)

    def Ay(x, y):
        return -k2 * np.sin(k1 * x + 0.3) * np.sin(k2 * y)

    def Bx(x, y):
        return -k1 * np.sin(k1 * x - k2 * y)

    def By(x, y):
        return k2 * np.sin(k1 * x - k2 * y)

    def Cx(x, y):
        return k2 * np.cos(k2 * x) * np.sin(k1 * y + 1.0)

    def Cy(x, y):
        return k1 * np.sin(k2 * x) * np.cos(k1 * y + 1.0)

    ns = np.array([16, 32, 64, 128])
    err = {"du": [], "dv": [], "db": [], "curl": []}
    for n in ns:
        d = L / n
        c, u, v, z = (coords(n, k) for k in ("centre", "u", "v", "corner"))
        du, dv = S.tensor_divergence(A(*c), B(*z), C(*c), d, d)
        err["du"].append(np.abs(du + Ax(*u) + By(*u)).max())
        err["dv"].append(np.abs(dv + Bx(*v) + Cy(*v)).max())
        db = S.flux_divergence(A(*u), C(*v), d, d)
        err["db"].append(np.abs(db + Ax(*c) + Cy(*c)).max())
        curl = S.vorticity(A(*u), C(*v), d, d)
        err["curl"].append(np.abs(curl - (Cx(*z) - Ay(*z))).max())
    for name, e in err.items():
        order = convergence_order(e, ns)
        assert 1.9 < order < 2.1, (name, e, order)


# ----------------------------------------------------------------------------- adjointness and conservation

PAIRS = [(S.u_to_centre, S.centre_to_u), (S.v_to_centre, S.centre_to_v), (S.corner_to_centre, S.centre_to_corner)]

grid_shapes = st.tuples(st.integers(2, 11), st.integers(2, 11))


@settings(max_examples=30, deadline=None)
@given(shape=grid_shapes, seed=st.integers(0, 2**32 - 1), use_mask=st.booleans())
def test_pairs_are_adjoint(shape, seed, use_mask):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, shape) if use_mask else None
    for to_centre, from_centre in PAIRS:
        a = rng.standard_normal((2, *shape))
        c = rng.standard_normal((2, *shape))
        lhs = np.sum(to_centre(a, mask) * c)
        rhs = np.sum(a * from_centre(c, mask))
        assert abs(lhs - rhs) <= 1e-13 * (np.abs(a).sum() + np.abs(c).sum()), (to_centre.__name__, lhs, rhs)


@settings(max_examples=30, deadline=None)
@given(shape=grid_shapes, seed=st.integers(0, 2**32 - 1), use_mask=st.booleans())
def test_divergence_sums_vanish_over_wet_points(shape, seed, use_mask):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, shape) if use_mask else None
    txx, txy, tyy, fx, fy = rng.standard_normal((5, 3, *shape))
    if mask is not None:
        txx[:, ~mask] = np.nan  # land values must not leak
    du, dv = S.tensor_divergence(txx, txy, tyy, 1.0e3, 2.0e3, mask)
    db = S.flux_divergence(fx, fy, 1.0e3, 2.0e3, mask)
    scale = 1e-3 * np.abs(txy).sum()  # the size of one flux term times the number of points
    for t in (du, dv, db):
        assert np.isfinite(t).all()
        np.testing.assert_allclose(t.sum(axis=(-2, -1)), 0.0, atol=1e-13 * scale)


@pytest.mark.parametrize("use_mask", [False, True])
def test_fused_kernel_equals_composition_of_public_kernels(use_mask):
    rng = np.random.default_rng(3)
    nz, ny, nx = 2, 10, 12
    mask = random_mask(rng, (ny, nx)) if use_mask else None
    m = S.CGridMasks.from_centre(mask, (ny, nx))
    tau = rng.standard_normal((nz, 3, ny, nx))
    fb = rng.standard_normal((nz, 2, ny, nx))
    du, dv, db = (np.empty((nz, ny, nx)) for _ in range(3))
    S.centred_fluxes_to_tendencies_kernel(tau, fb, m.centre, m.u, m.v, m.corner, 1 / 3.0, 1 / 5.0, du, dv, db)
    du_ref, dv_ref = S.tensor_divergence(tau[:, 0], S.centre_to_corner(tau[:, 1], mask), tau[:, 2], 3.0, 5.0, mask)
    db_ref = S.flux_divergence(S.centre_to_u(fb[:, 0], mask), S.centre_to_v(fb[:, 1], mask), 3.0, 5.0, mask)
    np.testing.assert_allclose(du, du_ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(dv, dv_ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(db, db_ref, rtol=0, atol=1e-14)
    u, v = rng.standard_normal((2, nz, ny, nx))
    uc, vc = np.empty_like(u), np.empty_like(v)
    S.cgrid_to_centres_kernel(u, v, m.u, m.v, m.centre, uc, vc)
    np.testing.assert_array_equal(uc, S.u_to_centre(u, mask))
    np.testing.assert_array_equal(vc, S.v_to_centre(v, mask))


# ----------------------------------------------------------------------------- rotations


def analytic_velocity(x, y):
    return np.sin(x / 1000.0 + 0.2) * np.cos(y / 1000.0), np.cos(2 * x / 1000.0 - y / 1000.0 + 0.4)


@pytest.mark.parametrize("g", Group(4, reflections=True).elements(), ids=str)
def test_rotate_cgrid_state_matches_rotated_analytic_field(g):
    # (u', v')(p) = R (u, v)(R^-1 p), with R about the domain centre, sampled on the u- and v-points.
    n = 8
    R = g.matrix
    Rinv = np.linalg.inv(R)
    centre = np.array([L / 2, L / 2])

    def rotated(x, y):
        p = np.stack([x, y]) - centre[:, None, None]
        src = np.einsum("ab,bij->aij", Rinv, p) + centre[:, None, None]
        uv = np.stack(analytic_velocity(src[0], src[1]))
        return np.einsum("ab,bij->aij", R, uv)

    u = analytic_velocity(*coords(n, "u"))[0]
    v = analytic_velocity(*coords(n, "v"))[1]
    b = f_analytic(*coords(n, "centre"))
    u_r, v_r, b_r = S.rotate_cgrid_state(g, u, v, b)
    np.testing.assert_allclose(u_r, rotated(*coords(n, "u"))[0], atol=1e-12)
    np.testing.assert_allclose(v_r, rotated(*coords(n, "v"))[1], atol=1e-12)
    xc, yc = coords(n, "centre")
    p = np.einsum("ab,bij->aij", Rinv, np.stack([xc, yc]) - centre[:, None, None]) + centre[:, None, None]
    np.testing.assert_allclose(b_r, f_analytic(p[0], p[1]), atol=1e-12)


def test_rotate_cgrid_state_is_a_group_action():
    rng = np.random.default_rng(5)
    u, v, b = rng.standard_normal((3, 2, 6, 6))
    group = Group(4, reflections=True)
    for g in group.elements():
        for h in group.elements():
            gh = S.rotate_cgrid_state(g * h, u, v, b)
            g_h = S.rotate_cgrid_state(g, *S.rotate_cgrid_state(h, u, v, b))
            for a, c in zip(gh, g_h):
                np.testing.assert_array_equal(a, c)
    # Four quarter turns given as an int are the identity.
    state = (u, v, b)
    for _ in range(4):
        state = S.rotate_cgrid_state(1, *state)
    for a, c in zip(state, (u, v, b)):
        np.testing.assert_array_equal(a, c)


def test_rotation_commutes_with_tensor_divergence():
    # The divergence of a rotated flux field is the rotated tendency; u- and v-points swap roles.
    rng = np.random.default_rng(6)
    n = 10
    mask = random_mask(rng, (n, n))
    tau = rng.standard_normal((2, 3, n, n))
    g = Element(4, 1)
    tau_r = act(g, tau, Kind.TENSOR)
    mask_r = act(g, mask, Kind.SCALAR)
    du, dv = S.tensor_divergence(tau[:, 0], S.centre_to_corner(tau[:, 1], mask), tau[:, 2], 7.0, 7.0, mask)
    du_r, dv_r = S.tensor_divergence(tau_r[:, 0], S.centre_to_corner(tau_r[:, 1], mask_r), tau_r[:, 2], 7.0, 7.0,
                                     mask_r)
    expect_u, expect_v, _ = S.rotate_cgrid_state(g, du, dv)
    np.testing.assert_allclose(du_r, expect_u, atol=1e-13)
    np.testing.assert_allclose(dv_r, expect_v, atol=1e-13)


# ----------------------------------------------------------------------------- xgcm


def xgcm_grid(n):
    import xgcm

    d = L / n
    ds = xr.Dataset(coords={
        "xc": ("xc", (np.arange(n) + 0.5) * d), "xg": ("xg", np.arange(n) * d),
        "yc": ("yc", (np.arange(n) + 0.5) * d), "yg": ("yg", np.arange(n) * d),
    })
    grid = xgcm.Grid(ds, coords={"X": {"center": "xc", "left": "xg"}, "Y": {"center": "yc", "left": "yg"}},
                     padding="periodic", autoparse_metadata=False)
    return grid, ds


def test_agreement_with_xgcm_interp_and_diff():
    n = 12
    d = L / n
    grid, ds = xgcm_grid(n)
    rng = np.random.default_rng(7)
    a = rng.standard_normal((n, n))
    dims = {"centre": ("yc", "xc"), "u": ("yc", "xg"), "v": ("yg", "xc"), "corner": ("yg", "xg")}
    axes = {("u", "centre"): "X", ("centre", "u"): "X", ("v", "centre"): "Y", ("centre", "v"): "Y",
            ("centre", "corner"): ["X", "Y"], ("corner", "centre"): ["X", "Y"]}
    for func, src, dst in INTERPOLATIONS:
        da = xr.DataArray(a, dims=dims[src], coords={k: ds[k] for k in dims[src]})
        ref = grid.interp(da, axes[(src, dst)]).transpose(*dims[dst])
        np.testing.assert_allclose(func(a), ref.values, rtol=0, atol=1e-14, err_msg=func.__name__)
    fx = xr.DataArray(a, dims=dims["u"], coords={k: ds[k] for k in dims["u"]})
    fy = xr.DataArray(a.T.copy(), dims=dims["v"], coords={k: ds[k] for k in dims["v"]})
    ref = -(grid.diff(fx, "X") / d + grid.diff(fy, "Y") / d).transpose(*dims["centre"])
    np.testing.assert_allclose(S.flux_divergence(a, a.T.copy(), d, d), ref.values, rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    a = np.zeros((4, 5))
    with pytest.raises(ValueError, match="mask must be a centre mask of shape"):
        S.u_to_centre(a, mask=np.ones((5, 4), bool))
    with pytest.raises(ValueError, match="booleans"):
        S.u_to_centre(a, mask=np.full((4, 5), 2))
    with pytest.raises(ValueError, match="txy must have the same shape as txx"):
        S.tensor_divergence(a, np.zeros((4, 6)), a, 1.0, 1.0)
    with pytest.raises(ValueError, match="dx must be a positive"):
        S.flux_divergence(a, a, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"u must be an array \[..., ny, nx\] on u-points"):
        S.u_to_centre(np.zeros(5))
    with pytest.raises(ValueError, match="at least 2 cells"):
        S.v_to_centre(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="does not map the C-grid"):
        S.rotate_cgrid_state(Element(8, 1), a[:4, :4], a[:4, :4])


@settings(max_examples=20, deadline=None)
@given(a=arrays(np.float64, (3, 4, 5), elements=st.floats(-1e3, 1e3)), seed=st.integers(0, 2**32 - 1))
def test_land_values_never_leak(a, seed):
    # Whatever sits on land (here NaN or huge), wet outputs equal those of a state with zeros on land.
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, (4, 5))
    m = S.CGridMasks.from_centre(mask, mask.shape)
    for func, src, _ in INTERPOLATIONS:
        wet = {"centre": m.centre, "u": m.u, "v": m.v, "corner": m.corner}[src]
        dirty = np.where(wet, a, np.nan)
        clean = np.where(wet, a, 0.0)
        np.testing.assert_array_equal(func(dirty, mask), func(clean, mask))
