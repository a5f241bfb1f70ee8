"""Group laws and field actions of roteq_param.symmetry, for numpy and torch alike."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from roteq_param import symmetry
from roteq_param.symmetry import Element, GridRotationError, Group, Kind

GROUPS = [Group(n, r) for n in (1, 2, 4, 8) for r in (False, True)]
GRIDDED = [Kind.SCALAR, Kind.PSEUDOSCALAR, Kind.VECTOR, Kind.PSEUDOVECTOR, Kind.TENSOR]


def elements_of(group):
    return st.sampled_from(group.elements())


@st.composite
def field_and_kind(draw, exact_only=True):
    kind = draw(st.sampled_from(list(Kind)))
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    n = draw(st.integers(2, 7))
    if kind.is_constant:
        shape = (*batch, symmetry.n_components(kind))
    else:
        comps = symmetry.n_components(kind)
        shape = (*batch, *((comps,) if comps > 1 else ()), n, n)
    x = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10, allow_nan=False)))
    return kind, x


def _coords(n):
    c = (n - 1) / 2.0
    j, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return i - c, j - c  # (x, y) relative to the domain centre, y growing with j


# ---- group laws -------------------------------------------------------------------------------

@pytest.mark.parametrize("group", GROUPS, ids=str)
def test_group_laws_on_matrices(group):
    els = group.elements()
    assert len(els) == group.order == len(set(els))
    e = group.identity
    for a in els:
        assert a * e == a == e * a
        assert a * a.inverse() == e == a.inverse() * a
        assert a ** group.N == e or a.flip  # rotations: g^N = e
        assert a ** (2 * group.N) == e
        assert np.allclose((a * a.inverse()).matrix, np.eye(2))
        for b in els:
            assert a * b in group
            # composition is a homomorphism into O(2)
            assert np.allclose((a * b).matrix, a.matrix @ b.matrix, atol=1e-15)
            for c in els:
                assert (a * b) * c == a * (b * c)
    gen = group.generators()[0]
    assert [gen**k for k in range(group.N)] == [Element(group.N, k) for k in range(group.N)]


def test_group_parsing_and_errors():
    assert Group.parse("c4") == Group(4) and Group.parse("D8") == Group(8, True)
    with pytest.raises(ValueError, match="unknown group"):
        Group.parse("SO2")
    with pytest.raises(ValueError, match="not supported"):
        Group(3)
    with pytest.raises(ValueError, match="not supported"):
        Element(6, 1)
    with pytest.raises(ValueError, match="compose"):
        Element(4, 1) * Element(8, 1)


def test_quarter_turn_matrices_are_exact_integers():
    for g in Group(8, True).exact_elements():
        assert np.array_equal(g.matrix, np.round(g.matrix))
    assert Element(4, 1).matrix.tolist() == [[0.0, -1.0], [1.0, 0.0]]  # counter-clockwise
    assert Element(4, 0, 1).matrix.tolist() == [[-1.0, 0.0], [0.0, 1.0]]  # (x, y) -> (-x, y)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), group=st.sampled_from(GROUPS))
def test_action_is_a_group_action_numpy_and_torch(data, group):
    kind, x = data.draw(field_and_kind())
    exact = group.exact_elements()
    a = data.draw(st.sampled_from(exact))
    b = data.draw(st.sampled_from(exact))
    lhs = symmetry.act(a * b, x, kind)
    rhs = symmetry.act(a, symmetry.act(b, x, kind), kind)
    np.testing.assert_allclose(lhs, rhs, atol=1e-12)
    np.testing.assert_array_equal(symmetry.act(group.identity, x, kind), x)
    np.testing.assert_allclose(symmetry.act(a.inverse(), symmetry.act(a, x, kind), kind), x, atol=1e-12)
    np.testing.assert_allclose(symmetry.act(a ** group.N, x, kind) if not a.flip else x, x, atol=1e-12)
    # torch gives the same numbers, keeps dtype, shape and type
    xt = torch.as_tensor(x, dtype=torch.float32)
    out_t = symmetry.act(a, xt, kind)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == xt.shape
    np.testing.assert_allclose(out_t.numpy(), symmetry.act(a, x, kind), rtol=1e-6, atol=1e-5)


# ---- the action matches its definition pointwise -----------------------------------------------

def _analytic(x, y):
    return np.sin(0.7 * x) + 0.3 * y**2 + 0.1 * x * y**3 + 0.05 * x**2 * y


@pytest.mark.parametrize("g", Group(4, True).elements(), ids=str)
@pytest.mark.parametrize("n", [5, 6])
def test_scalar_action_is_f_of_R_inverse_x(g, n):
    x, y = _coords(n)
    Rinv = np.linalg.inv(g.matrix)
    xs, ys = Rinv[0, 0] * x + Rinv[0, 1] * y, Rinv[1, 0] * x + Rinv[1, 1] * y
    np.testing.assert_allclose(symmetry.act(g, _analytic(x, y), Kind.SCALAR), _analytic(xs, ys), atol=1e-13)
    np.testing.assert_allclose(symmetry.act(g, _analytic(x, y), Kind.PSEUDOSCALAR), g.det * _analytic(xs, ys),
                               atol=1e-13)


def test_constant_pseudovector_flips_under_reflections_only():
    c = np.array([0.0, 1.5e-11])  # beta points along y
    for g in Group(4, True).elements():
        np.testing.assert_array_equal(symmetry.act(g, c, Kind.CONSTANT_PSEUDOVECTOR),
                                      g.det * symmetry.act(g, c, Kind.CONSTANT_VECTOR))
    # the mirror (x, y) -> (-x, y) keeps a y-pointing vector but flips the pseudovector
    assert symmetry.act(Element(4, 0, 1), c, Kind.CONSTANT_PSEUDOVECTOR)[1] == -1.5e-11


def test_a_constant_scalar_is_invariant_under_every_element():
    c = np.array([[5.787e-7], [7e-8]])  # e.g. a drag rate of two samples, s^-1
    for g in Group(8, True).elements():
        np.testing.assert_array_equal(symmetry.act(g, c, Kind.CONSTANT_SCALAR), c)
    with pytest.raises(ValueError, match=r"\[\.\.\., 1\] \(one value\)"):
        symmetry.act(Element(4, 1), np.array([1.0, 2.0]), Kind.CONSTANT_SCALAR)


def test_documented_90_degree_actions():
    g = Element(4, 1)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2, 4, 4))
    out = symmetry.act(g, v, Kind.VECTOR)
    rot = symmetry.act(g, v[0], Kind.SCALAR), symmetry.act(g, v[1], Kind.SCALAR)
    np.testing.assert_array_equal(out, np.stack([-rot[1], rot[0]]))  # (u, v) -> (-v, u)
    t = rng.normal(size=(3, 4, 4))
    out = symmetry.act(g, t, Kind.TENSOR)
    rt = [symmetry.act(g, c, Kind.SCALAR) for c in t]
    np.testing.assert_array_equal(out, np.stack([rt[2], -rt[1], rt[0]]))  # (xx, xy, yy) -> (yy, -xy, xx)
    np.testing.assert_array_equal(symmetry.act(g, np.array([1.0, 0.0]), Kind.CONSTANT_VECTOR), [0.0, 1.0])


@pytest.mark.parametrize("g", Group(8, True).exact_elements(), ids=str)
def test_tensor_action_is_R_T_Rt(g):
    rng = np.random.default_rng(1)
    t = rng.normal(size=(3, 1, 1))
    T = np.array([[t[0, 0, 0], t[1, 0, 0]], [t[1, 0, 0], t[2, 0, 0]]])
    expected = g.matrix @ T @ g.matrix.T
    out = symmetry.act(g, t, Kind.TENSOR)[:, 0, 0]
    np.testing.assert_allclose(out, [expected[0, 0], expected[0, 1], expected[1, 1]], atol=1e-15)


def test_rotate_vector_then_form_tensor_equals_rotate_tensor():
    rng = np.random.default_rng(2)
    vel = rng.normal(size=(3, 2, 6, 6))
    tensor = np.stack([vel[:, 0] ** 2, vel[:, 0] * vel[:, 1], vel[:, 1] ** 2], axis=1)
    for g in Group(8, True).exact_elements():
        vg = symmetry.act(g, vel, Kind.VECTOR)
        formed = np.stack([vg[:, 0] ** 2, vg[:, 0] * vg[:, 1], vg[:, 1] ** 2], axis=1)
        np.testing.assert_allclose(formed, symmetry.act(g, tensor, Kind.TENSOR), atol=1e-13)


# ---- consistency with spectral calculus on pyqg's grid -----------------------------------------

def _spectral_grad(f, L):
    n = f.shape[-1]
    k = 2 * np.pi * np.fft.fftfreq(n, d=L / n)
    fh = np.fft.fft2(f)
    ddx = np.real(np.fft.ifft2(1j * k[None, :] * fh))
    ddy = np.real(np.fft.ifft2(1j * k[:, None] * fh))
    return ddx, ddy


@pytest.mark.parametrize("g", Group(4, True).elements(), ids=str)
def test_streamfunction_then_velocity_commutes_with_the_action(g):
    """psi rotates as a (pseudo)scalar; u = -d_y psi, v = d_x psi rotates as a vector."""
    n, L = 32, 1e6
    rng = np.random.default_rng(3)
    # band-limited periodic streamfunction on pyqg's cell-centred grid
    spec = np.zeros((n, n), complex)
    spec[:6, :6] = rng.normal(size=(6, 6)) + 1j * rng.normal(size=(6, 6))
    psi = np.real(np.fft.ifft2(spec)) * 1e4

    def velocity(p):
        ddx, ddy = _spectral_grad(p, L)
        return np.stack([-ddy, ddx])

    from_psi = velocity(symmetry.act(g, psi, Kind.PSEUDOSCALAR))
    rotated = symmetry.act(g, velocity(psi), Kind.VECTOR)
    np.testing.assert_allclose(from_psi, rotated, atol=1e-12 * np.abs(rotated).max())
    if g.flip:  # a true scalar psi would give the mirror image of the flow with the wrong sense
        wrong = velocity(symmetry.act(g, psi, Kind.SCALAR))
        assert np.abs(wrong - rotated).max() > 0.5 * np.abs(rotated).max()


def test_reflection_flips_vorticity_sign():
    n, L = 16, 1.0
    x, y = _coords(n)
    vel = np.stack([np.sin(2 * np.pi * y / n), np.zeros_like(x)])  # shear flow, vorticity = -du/dy
    flip = Element(4, 0, 1)

    def vorticity(v):
        dvdx, _ = _spectral_grad(v[1], L)
        _, dudy = _spectral_grad(v[0], L)
        return dvdx - dudy

    zeta = vorticity(vel)
    zeta_after = vorticity(symmetry.act(flip, vel, Kind.VECTOR))
    np.testing.assert_allclose(zeta_after, symmetry.act(flip, zeta, Kind.PSEUDOSCALAR), atol=1e-12)
    np.testing.assert_allclose(zeta_after, -symmetry.act(flip, zeta, Kind.SCALAR), atol=1e-12)
    assert np.abs(zeta).max() > 1.0


def test_pyqg_selfcheck_at_round_off():
    pyqg = pytest.importorskip("pyqg")
    from solver_coupling.pyqg.selfcheck import symmetry_selfcheck

    m = pyqg.QGModel(nx=32, dt=3600.0, tmax=3600.0 * 300, ntd=1, log_level=0)
    m.run()
    worst = symmetry_selfcheck(m, "D4")
    assert max(worst.values()) < 1e-13, worst


# ---- non-grid rotations and bad input ----------------------------------------------------------

def test_non_grid_rotation_needs_explicit_interpolation():
    g = Element(8, 1)  # 45 degrees
    f = np.random.default_rng(4).normal(size=(8, 8))
    with pytest.raises(GridRotationError, match="45 degrees.*interpolate=True"):
        symmetry.act(g, f, Kind.SCALAR)
    # constant vectors have no grid: exact at any angle
    c = symmetry.act(g, np.array([1.0, 0.0]), Kind.CONSTANT_VECTOR)
    np.testing.assert_allclose(c, [math.sqrt(0.5), math.sqrt(0.5)])


def test_interpolated_rotation_approximates_smooth_fields():
    n = 64
    x, y = _coords(n)
    r2 = x**2 + y**2
    f = np.exp(-r2 / 200.0) * (1 + 0.1 * x / 8)  # smooth and anisotropic
    g = Element(8, 1)
    out = symmetry.act(g, f, Kind.SCALAR, interpolate=True)
    Rinv = np.linalg.inv(g.matrix)
    xs, ys = Rinv[0, 0] * x + Rinv[0, 1] * y, Rinv[1, 0] * x + Rinv[1, 1] * y
    expected = np.exp(-(xs**2 + ys**2) / 200.0) * (1 + 0.1 * xs / 8)
    # a rotated periodic square is not the same square: compare inside the inscribed disc only
    inside = r2 < (n / 2 - 2) ** 2
    assert np.abs(out - expected)[inside].max() < 1e-3 < np.abs(out - f)[inside].max()
    # interpolate=True on an exact element still takes the exact path
    assert np.array_equal(symmetry.act(Element(8, 2), f, Kind.SCALAR, interpolate=True),
                          symmetry.act(Element(8, 2), f, Kind.SCALAR))


@pytest.mark.parametrize("kind,shape,match", [
    (Kind.VECTOR, (3, 4, 4), r"\[\.\.\., 2, y, x\]"),
    (Kind.TENSOR, (2, 4, 4), r"\(xx, xy, yy\)"),
    (Kind.CONSTANT_VECTOR, (3,), r"\[\.\.\., 2\]"),
    (Kind.SCALAR, (4,), "at least 2 dims"),
])
def test_wrong_trailing_shape_is_a_clear_error(kind, shape, match):
    with pytest.raises(ValueError, match=match):
        symmetry.act(Element(4, 1), np.zeros(shape), kind)


def test_unknown_kind_and_non_square_grid():
    with pytest.raises(ValueError, match="unknown field kind 'spinor'"):
        symmetry.act(Element(4, 1), np.zeros((4, 4)), "spinor")
    with pytest.raises(GridRotationError, match="square grid"):
        symmetry.act(Element(4, 1), np.zeros((4, 6)), Kind.SCALAR)
    # 180 degrees and reflections are fine on rectangles
    assert symmetry.act(Element(4, 2), np.zeros((4, 6)), Kind.SCALAR).shape == (4, 6)
    with pytest.raises(TypeError, match="symmetry.Element"):
        symmetry.act((4, 1), np.zeros((4, 4)), Kind.SCALAR)
