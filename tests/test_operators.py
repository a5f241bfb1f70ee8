"""roteq_param.operators: unit fields, exact D4 equivariance, convergence, Green's function, heat kernel,
gradients, arbitrary-angle equivariance on analytic fields, errors, and the two examples at small size."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from roteq_param import operators as ops
from roteq_param.operators import analytic
from roteq_param.operators.angular import parity, rank
from roteq_param.symmetry import Element, Group, Kind, act, component_matrix, n_components

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
GRIDDED = [Kind.SCALAR, Kind.PSEUDOSCALAR, Kind.VECTOR, Kind.PSEUDOVECTOR, Kind.TENSOR]
# Every pairing with a nonzero radial operator: all but scalar <-> pseudoscalar (23).
PAIRS = [(a, b) for a in GRIDDED for b in GRIDDED if not (rank(a) == rank(b) == 0 and parity(a) != parity(b))]
D4 = Group(4, reflections=True).elements()


def _shape(kind, *grid):
    d = n_components(kind)
    return ((d,) if d > 1 else ()) + grid


def _random_neural(kind_in, kind_out, *, rmax=2.5, boundary="periodic", method="auto", seed=0):
    op = ops.neural(kind_in, kind_out, rmax, 1.0, n_basis=5, boundary=boundary, method=method)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        op.profile.weight.copy_(torch.randn(op.profile.weight.shape, generator=g, dtype=torch.float64))
        op.profile.origin.copy_(torch.randn(op.profile.origin.shape, generator=g, dtype=torch.float64))
    return op


def _load(name, folder="examples"):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The analytic fields and the accuracy tables of the docs page, checked here.
ACC = _load("operators_accuracy", "benchmarks")


# ---- unit fields ------------------------------------------------------------------------------

def _stabiliser_dimension(kind_in, kind_out, reflections):
    """Dimension of the matrices K with rho_out(S) K rho_in(S)^-1 = K for the reflection S fixing e_x."""
    d_out, d_in = n_components(kind_out), n_components(kind_in)
    if not reflections:
        return d_out * d_in
    S = Element(4, 2, 1)  # Rot(180) F: (x, y) -> (x, -y)
    assert np.allclose(S.matrix, np.diag([1.0, -1.0]))
    A = np.kron(component_matrix(S, kind_out), component_matrix(S, kind_in)) - np.eye(d_out * d_in)
    return d_out * d_in - np.linalg.matrix_rank(A)


@pytest.mark.parametrize("kind_in,kind_out", PAIRS, ids=lambda k: k.value)
def test_unit_fields_are_complete_and_independent(kind_in, kind_out):
    """The terms of a pairing span exactly the equivariant kernels allowed at r = e_x: with reflections
    (a kernel is fixed by the reflection through the x axis, up to the kinds' parities), and without
    (the terms of both parities together span every matrix)."""
    ex = np.array([[1.0, 0.0]])
    basis = ops.unit_fields(kind_in, kind_out, ex)[:, 0].reshape(ops.n_terms(kind_in, kind_out), -1)
    assert np.linalg.matrix_rank(basis) == len(basis) == _stabiliser_dimension(kind_in, kind_out, True)
    # Without reflections: add the other parity's terms (flip the output's parity, or the input's when the
    # output is a tensor, which has no pseudo variant); a scalar <-> scalar or tensor <-> tensor pairing has none.
    flip = {Kind.SCALAR: Kind.PSEUDOSCALAR, Kind.PSEUDOSCALAR: Kind.SCALAR, Kind.VECTOR: Kind.PSEUDOVECTOR,
            Kind.PSEUDOVECTOR: Kind.VECTOR}
    if rank(kind_in) == rank(kind_out) == 0:
        assert len(basis) == _stabiliser_dimension(kind_in, kind_out, False)  # one profile, with or without
        return
    if rank(kind_out) != 2:
        other = ops.unit_fields(kind_in, flip[kind_out], ex)
    elif rank(kind_in) != 2:
        other = ops.unit_fields(flip[kind_in], kind_out, ex)
    else:
        return  # tensor -> tensor: the schema has no pseudotensor, so only the parity-keeping half exists
    both = np.concatenate([basis, other[:, 0].reshape(-1, basis.shape[1])])
    assert np.linalg.matrix_rank(both) == len(both) == _stabiliser_dimension(kind_in, kind_out, False)


@pytest.mark.parametrize("kind_in,kind_out", PAIRS, ids=lambda k: k.value)
def test_unit_fields_transform_at_any_angle(kind_in, kind_out):
    """U(R n) = rho_out(R) U(n) rho_in(R)^-1 for every element of D8 (symmetry's own matrices) and 30 degrees."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 2 * np.pi, 20)
    n = np.stack([np.cos(a), np.sin(a)], axis=-1)
    U = ops.unit_fields(kind_in, kind_out, n)
    mats = [(g.matrix, component_matrix(g, kind_in), component_matrix(g, kind_out))
            for g in Group(8, True).elements()]
    R30 = analytic.rotation_matrix(math.pi / 6, flip=True)
    mats.append((R30, analytic.component_matrix_at(R30, kind_in), analytic.component_matrix_at(R30, kind_out)))
    for R, rin, rout in mats:
        turned = ops.unit_fields(kind_in, kind_out, n @ R.T)
        expect = np.einsum("ab,tpbc,cd->tpad", rout, U, np.linalg.inv(rin))
        np.testing.assert_allclose(turned, expect, atol=1e-13)


def test_arbitrary_angle_component_matrices_match_symmetry():
    for g in Group(8, True).elements():
        for kind in GRIDDED:
            R = analytic.rotation_matrix(g.angle, bool(g.flip))
            np.testing.assert_allclose(analytic.component_matrix_at(R, kind), component_matrix(g, kind), atol=1e-15)


def test_unit_fields_at_origin_are_isotropic():
    for kind_in, kind_out in PAIRS:
        U0 = ops.unit_fields(kind_in, kind_out, np.zeros((1, 2)), at_origin=np.array([True]))[:, 0]
        for g in D4:
            rin, rout = component_matrix(g, kind_in), component_matrix(g, kind_out)
            assert np.array_equal(rout @ U0 @ np.linalg.inv(rin), U0) or \
                np.allclose(rout @ U0 @ np.linalg.inv(rin), U0, atol=1e-15)


# ---- exact equivariance on the grid -----------------------------------------------------------

def _builtins(boundary):
    return [
        ops.gradient(1.0, boundary=boundary), ops.gradient(1.0, boundary=boundary, order=4, kind="pseudoscalar"),
        ops.skew_gradient(1.0, boundary=boundary), ops.divergence(1.0, boundary=boundary),
        ops.curl(1.0, boundary=boundary), ops.curl(1.0, boundary=boundary, kind="pseudovector", order=4),
        ops.laplacian(1.0, boundary=boundary), ops.laplacian(1.0, boundary=boundary, kind="tensor", order=4),
        ops.laplacian(1.0, boundary=boundary, kind="pseudovector"),
        ops.symmetric_gradient(1.0, boundary=boundary), ops.tensor_divergence(1.0, boundary=boundary, order=4),
        ops.gaussian_diffusion(0.7, 1.0, 1.0, boundary=boundary),
        ops.gaussian_diffusion(0.7, 1.0, 1.0, boundary=boundary, kind="vector"),
        ops.green_potential(1.0, shape=(10, 10), boundary=boundary),
        ops.green_field(1.0, shape=(10, 10), boundary=boundary),
    ]


def _d4_error(op, n=10, batch=(2,), seed=0):
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal(batch + _shape(op.kind_in, n, n)))
    worst = 0.0
    with torch.no_grad():
        y = op(x)
        for g in D4:
            diff = op(act(g, x, op.kind_in)) - act(g, y, op.kind_out)
            worst = max(worst, float(diff.abs().max() / y.abs().max()))
    return worst


@pytest.mark.parametrize("boundary", ["periodic", "zero"])
def test_builtins_exactly_equivariant_under_d4(boundary):
    for op in _builtins(boundary):
        assert _d4_error(op) <= 1e-12, op


@pytest.mark.parametrize("boundary,method", [("periodic", "direct"), ("periodic", "fft"), ("zero", "direct"),
                                             ("zero", "fft")])
@pytest.mark.parametrize("kind_in,kind_out", PAIRS, ids=lambda k: k.value)
def test_neural_operators_exactly_equivariant_under_d4(kind_in, kind_out, boundary, method):
    op = _random_neural(kind_in, kind_out, boundary=boundary, method=method)
    assert _d4_error(op, n=9) <= 1e-12  # odd size: the domain centre is a grid point, a different case from 10


@pytest.mark.parametrize("kind_in,kind_out", PAIRS, ids=lambda k: k.value)
def test_direct_and_fft_agree(kind_in, kind_out):
    for boundary in ("periodic", "zero"):
        direct = _random_neural(kind_in, kind_out, boundary=boundary, method="direct", seed=5)
        fft = _random_neural(kind_in, kind_out, boundary=boundary, method="fft", seed=5)
        x = torch.as_tensor(np.random.default_rng(1).standard_normal(_shape(kind_in, 11, 13)))
        torch.testing.assert_close(direct(x), fft(x), rtol=0, atol=1e-12)


def test_multiplier_applies_the_periodic_operator_spectrally():
    op = _random_neural("vector", "tensor", rmax=3.1, seed=7)
    v = torch.as_tensor(np.random.default_rng(7).standard_normal((2, 10, 12)))
    spectral = torch.einsum("oiyx,iyx->oyx", op.multiplier(10, 12), torch.fft.rfft2(v))
    torch.testing.assert_close(torch.fft.irfft2(spectral, s=(10, 12)), op(v), rtol=0, atol=1e-12)
    # the Laplacian's multiplier is the 5-point symbol -4 sin^2(k dx / 2) / dx^2 - 4 sin^2(l dy / 2) / dy^2
    dx, dy = 0.3, 0.7
    k = 2 * np.pi * np.fft.rfftfreq(12, dx)
    l = 2 * np.pi * np.fft.fftfreq(10, dy)
    symbol = -4 * np.sin(k[None, :] * dx / 2) ** 2 / dx ** 2 - 4 * np.sin(l[:, None] * dy / 2) ** 2 / dy ** 2
    np.testing.assert_allclose(ops.laplacian(dx, dy).multiplier(10, 12)[0, 0].numpy(), symbol, atol=1e-12)
    with pytest.raises(ValueError, match="periodic"):
        ops.laplacian(1.0, boundary="zero").multiplier(4, 4)


def test_wide_periodic_kernel_sums_its_images():
    """A periodic kernel wider than the domain equals the sum over shifted copies of the field."""
    op = _random_neural("scalar", "vector", rmax=9.5, seed=2)
    n = 6
    f = torch.as_tensor(np.random.default_rng(2).standard_normal((n, n)))
    offsets, kernel = op.stencil()
    expect = torch.zeros(2, n, n, dtype=torch.float64)
    for p, (i, j) in enumerate(offsets):
        expect += kernel[:, 0, p, None, None] * torch.roll(f, shifts=(-int(j), -int(i)), dims=(0, 1))
    torch.testing.assert_close(op(f), expect, rtol=0, atol=1e-12)


def test_zero_boundary_is_a_bounded_domain():
    """Zero padding = the periodic operator on a domain embedded in a larger zero field."""
    op_zero = _random_neural("vector", "tensor", rmax=2.2, boundary="zero")
    op_per = _random_neural("vector", "tensor", rmax=2.2, boundary="periodic")
    v = torch.as_tensor(np.random.default_rng(4).standard_normal((2, 7, 8)))
    big = torch.zeros(2, 13, 14, dtype=torch.float64)
    big[:, 3:10, 3:11] = v
    torch.testing.assert_close(op_zero(v), op_per(big)[:, 3:10, 3:11], rtol=0, atol=1e-13)


# ---- convergence on smooth periodic fields (rectangular grids) ---------------------------------

@pytest.mark.parametrize("order", [2, 4])
def test_differential_operators_converge(order):
    """Max error against exact derivatives on n x n/2 grids (dy = 4 dx): order 2 or 4 (within 0.25)."""
    for name, errors in ACC.convergence((32, 64, 128), order).items():
        rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
        assert np.all(rates >= order - 0.25), (name, errors, rates)


def test_laplacian_is_divergence_of_gradient_to_round_off_on_a_sparse_stencil():
    """div(grad) with order-2 stencils is the order-2 Laplacian on the grid of spacing 2h (an identity)."""
    X, Y, dx, dy = ACC.periodic_grid(32)
    s = torch.as_tensor(ACC.periodic_fields(X, Y)["s"])
    lhs = ops.divergence(dx, dy)(ops.gradient(dx, dy)(s))
    wide = ops.RadialOperator("scalar", "scalar", ops.AxisStencil([[0.0, 0.25]], power=2, centre=[-0.5]), dx=dx, dy=dy)
    torch.testing.assert_close(lhs, wide(s), rtol=0, atol=1e-12)


# ---- integral operators -----------------------------------------------------------------------

def test_gaussian_diffusion_matches_the_spectral_heat_multiplier():
    n, L = 48, 1.0e4
    dx = L / n
    rng = np.random.default_rng(0)
    f = rng.standard_normal((2, n, n))
    k = 2 * np.pi * np.fft.fftfreq(n, dx)
    K2 = k[None, :] ** 2 + k[:, None] ** 2
    for kappa, sigma_cells in ((5.0, 2.5), (3.0, 3.2)):
        time = (sigma_cells * dx) ** 2 / (2 * kappa)  # sigma^2 = 2 kappa t
        ref = np.fft.ifft2(np.fft.fft2(f) * np.exp(-kappa * time * K2)).real
        out = ops.gaussian_diffusion(kappa, time, dx, kind="vector")(torch.as_tensor(f)).numpy()
        # The sampled kernel's spectrum aliases exp(-sigma^2 k^2 / 2) at k = pi/dx: exp(-pi^2 sigma^2 / 2 dx^2).
        alias = math.exp(-(math.pi * sigma_cells) ** 2 / 2)
        assert np.abs(out - ref).max() <= (10 * alias + 1e-13) * np.abs(ref).max()
        # and d/dkappa through the kernel equals the spectral derivative
        kap = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
        (ops.gaussian_diffusion(kap, time, dx)(torch.as_tensor(f[0])) * torch.as_tensor(f[1])).sum().backward()
        dref = (np.fft.ifft2(np.fft.fft2(f[0]) * (-time * K2) * np.exp(-kappa * time * K2)).real * f[1]).sum()
        assert abs(kap.grad.item() - dref) <= 1e-8 * abs(dref)


def test_green_function_inverts_the_laplacian_and_matches_the_analytic_potential():
    """Bounded domain, smooth neutral charge of Gaussians: psi = G * rho against the closed form
    (q / 4 pi)(ln r^2 + E1(r^2 / 2 s^2)), its field, and laplacian(psi) = rho (4th-order stencil)."""
    errs = np.array(list(ACC.green((48, 96, 192)).values())).T
    assert errs[-1, 2] <= 1e-3, errs
    assert np.all(errs[:-1] / errs[1:] >= 3.5), errs  # second order in all three


def test_green_cell_mean_is_exact():
    dx, dy = 3.0, 1.7
    m = 800  # even: no sample at the singular centre
    xs = (np.arange(m) + 0.5) / m * dx - dx / 2
    ys = (np.arange(m) + 0.5) / m * dy - dy / 2
    Xg, Yg = np.meshgrid(xs, ys)
    numeric = np.mean(np.log(np.hypot(Xg, Yg)))
    assert abs(ops.profiles.mean_log_radius_over_cell(dx, dy) - numeric) <= 1e-5


# ---- equivariance under 30 and 45 degrees on analytic fields ----------------------------------

def test_rotation_error_falls_with_resolution():
    for (name, turn), e in ACC.rotation_errors((0.4, 0.2, 0.1)).items():
        # Second order or better, down to round-off (the sampled heat kernel is spectrally accurate).
        assert e[1] <= max(e[0] / 3.0, 1e-13) and e[2] <= max(e[1] / 3.0, 1e-13), (name, turn, e)
        assert e[2] <= 2e-2, (name, turn, e)


def test_rotation_error_is_round_off_at_90_degrees():
    c = np.linspace(-1.5, 1.5, 9)
    X, Y = np.meshgrid(c, c)
    for op in ACC.rotation_operators(0.2).values():
        for flip in (False, True):
            assert analytic.rotation_error(op, ACC.analytic_field(op.kind_in), X, Y, math.pi / 2, flip) <= 1e-12


# ---- gradients --------------------------------------------------------------------------------

@pytest.mark.parametrize("op", _builtins("periodic") + _builtins("zero")[-4:], ids=repr)
def test_gradcheck_builtins_wrt_input(op):
    x = torch.randn(_shape(op.kind_in, 5, 6), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))


@pytest.mark.parametrize("kind_in,kind_out", PAIRS, ids=lambda k: k.value)
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_gradcheck_neural_wrt_input_and_profile(kind_in, kind_out, method):
    op = _random_neural(kind_in, kind_out, rmax=1.6, method=method)
    x = torch.randn(_shape(kind_in, 5, 5), dtype=torch.float64, requires_grad=True)
    w = op.profile.weight.detach().clone().requires_grad_()
    w0 = op.profile.origin.detach().clone().requires_grad_()

    def f(x, w, w0):
        return torch.func.functional_call(op, {"profile.weight": w, "profile.origin": w0}, (x,))

    assert torch.autograd.gradcheck(f, (x, w, w0))


def test_gradcheck_heat_kernel_wrt_diffusivity():
    x = torch.randn(6, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda k: ops.gaussian_diffusion(k, 1.0, 1.0)(x),
                                    (torch.tensor(0.6, dtype=torch.float64, requires_grad=True),))


# ---- bad input --------------------------------------------------------------------------------

def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no nonzero rotation-equivariant radial operator"):
        ops.neural("scalar", "pseudoscalar", 2.0, 1.0)
    with pytest.raises(ValueError, match="no spatial part"):
        ops.neural("constant_vector", "scalar", 2.0, 1.0)
    with pytest.raises(ValueError, match=r"\[\.\.\., 2, y, x\]"):
        ops.divergence(1.0)(torch.zeros(3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs a profile with 2 rows"):
        ops.RadialOperator("vector", "vector", ops.AxisStencil([[0.5]], power=1), dx=1.0)
    with pytest.raises(ValueError, match="method='fft'"):
        ops.neural("scalar", "scalar", 6.0, 1.0, method="direct")(torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        ops.gradient(0.0)
    with pytest.raises(ValueError, match="vector or pseudovector"):
        ops.divergence(1.0, kind="scalar")
    with pytest.raises(TypeError, match="torch tensor"):
        ops.gradient(1.0)(np.zeros((4, 4)))


# ---- the examples at small size -----------------------------------------------------------------

def test_green_function_example_small(capsys):
    result = _load("operators_green_function").main(["--small", "--n-test", "10"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("relative error on unseen charges: potential ")
    assert result["errors"]["potential"] <= 1e-2 and result["errors"]["field"] <= 1e-2


def test_advection_diffusion_example_small(capsys):
    result = _load("operators_advection_diffusion").main(["--small"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("relative error: diffusion ")
    assert result["errors"]["diffusion"] <= 1e-2 and result["errors"]["wind"] <= 1e-2
