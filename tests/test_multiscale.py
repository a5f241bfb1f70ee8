"""The multiscale (U-Net) network: its grid operators against independent formulas and under every
exact element, the network's exact equivariance and export, its receptive field, and its errors."""

import numpy as np
import pytest
import torch

from conftest_models import random_inputs
from roteq_param import symmetry
from roteq_param.models import ModelConfig, build_model
from roteq_param.models.multiscale import pool, receptive_field, up
from roteq_param.symmetry import Group, Kind
from roteq_param.fluxform import Stratification


def _bilinear_reference(c: np.ndarray) -> np.ndarray:
    """Periodic cell-centred bilinear doubling written from its definition: fine cell centre
    ``(i + 1/2) / 2`` in coarse units, interpolated between the two nearest coarse centres per axis."""
    n, m = c.shape
    out = np.empty((2 * n, 2 * m))
    for I in range(2 * n):
        for J in range(2 * m):
            y, x = (I + 0.5) / 2 - 0.5, (J + 0.5) / 2 - 0.5  # in coarse index units
            i0, j0 = int(np.floor(y)), int(np.floor(x))
            wy, wx = y - i0, x - j0
            out[I, J] = sum(w * c[(i0 + a) % n, (j0 + b) % m]
                            for a, b, w in [(0, 0, (1 - wy) * (1 - wx)), (1, 0, wy * (1 - wx)),
                                            (0, 1, (1 - wy) * wx), (1, 1, wy * wx)])
    return out


def test_grid_operators_match_their_definitions():
    c = np.random.default_rng(0).normal(size=(6, 10))
    got = up(torch.from_numpy(c)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, _bilinear_reference(c), rtol=0, atol=1e-14)
    f = np.random.default_rng(1).normal(size=(8, 12))
    np.testing.assert_allclose(pool(torch.from_numpy(f))[...].numpy(), f.reshape(4, 2, 6, 2).mean(axis=(1, 3)),
                               rtol=0, atol=1e-15)
    # a linear function of position (periodic except at the seam) is reproduced away from the seam
    lin = np.add.outer(np.arange(8.0), 2 * np.arange(8.0))
    fine = up(torch.from_numpy(lin)[None, None])[0, 0].numpy()
    expected = np.add.outer((np.arange(16) + 0.5) / 2 - 0.5, 2 * ((np.arange(16) + 0.5) / 2 - 0.5))
    np.testing.assert_allclose(fine[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-13)


@pytest.mark.parametrize("op", [pool, up])
def test_grid_operators_commute_with_every_exact_element(op):
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for g in Group.parse("D4").exact_elements():
        moved = op(symmetry.act(g, x, Kind.SCALAR))
        err = float((moved - symmetry.act(g, op(x), Kind.SCALAR)).abs().max())
        assert err <= 1e-15, (op.__name__, str(g), err)


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_multiscale_net_is_exactly_equivariant_and_exports_its_function(group):
    order = Group.parse(group).order
    net = build_model(group=group, channels=(order, 2 * order, 4 * order), kernel_sizes=(3, 3, 3),
                      multiscale=True).eval()
    x = random_inputs(net.schema, batch=2, n=32).double()
    exported = net.export(torch.float64)
    with torch.no_grad():
        y = exported(x)
        assert float((net(x.float()).double() - y).abs().max() / y.abs().max()) < 1e-5
        for g in Group.parse(group).exact_elements():
            moved = exported(net.schema.transform_stacked(g, x))
            err = float((moved - net.schema.transform_stacked(g, y, "outputs")).abs().max() / y.abs().max())
            assert err <= 1e-12, (str(g), err)


def test_plain_cnn_multiscale_is_not_equivariant():
    """The CNN baseline shares the topology but not the symmetry (so the test above can fail)."""
    net = build_model(arch="cnn", channels=(8, 16), kernel_sizes=(3, 3), multiscale=True).eval()
    x = random_inputs(net.schema, batch=1, n=16).double()
    exported = net.export(torch.float64)
    with torch.no_grad():
        y = exported(x)
        g = Group.parse("C4").exact_elements()[1]
        moved = exported(net.schema.transform_stacked(g, x))
        assert float((moved - net.schema.transform_stacked(g, y, "outputs")).abs().max() / y.abs().max()) > 1e-3


@pytest.mark.parametrize("kernels,out_k", [((3, 3), 1), ((3, 3, 3), 1), ((5, 3, 3), 3), ((3, 1, 3), 1)])
def test_receptive_field_is_the_support_of_the_gradient(kernels, out_k):
    """The stated receptive field equals the widest support of d output / d input over positions."""
    torch.manual_seed(0)
    net = build_model(arch="cnn", channels=(4,) * len(kernels), kernel_sizes=kernels, out_kernel_size=out_k,
                      multiscale=True, activation="elu").double()
    n = 128
    x = random_inputs(net.schema, batch=1, n=n).double().requires_grad_(True)
    y = net(x)
    width = 0
    for j in range(n // 2, n // 2 + 2 ** len(kernels)):
        (grad,) = torch.autograd.grad(y[0, :, n // 2, j].sum(), x, retain_graph=True)
        cols = np.nonzero(grad[0].abs().sum(dim=(0, 1)).numpy() > 0)[0]
        width = max(width, int(cols.max() - cols.min() + 1))
    assert width == net.config.receptive_field == receptive_field(kernels, out_k)


def test_multiscale_errors_are_clear():
    with pytest.raises(ValueError, match="at least two levels"):
        ModelConfig(channels=(8,), kernel_sizes=(3,), multiscale=True)
    with pytest.raises(ValueError, match="dilations of 1"):
        ModelConfig(channels=(8, 8), kernel_sizes=(3, 3), dilations=(1, 2), multiscale=True)
    net = build_model(channels=(4, 4, 4), kernel_sizes=(3, 3, 3), multiscale=True).eval()
    with pytest.raises(ValueError, match="divisible by 4; got 18 x 18"):
        net.export()(random_inputs(net.schema, batch=1, n=18))


def test_grid_errors_reach_every_route(tmp_path):
    """The Predictor (a traced graph, which cannot say why a shape fails) and the forcing operator
    refuse a grid the levels cannot halve, naming it."""
    from roteq_param.forcing import PVForcing
    from roteq_param.models import Predictor
    from conftest_models import named_inputs

    net = build_model(channels=(4, 4, 4), kernel_sizes=(3, 3, 3), multiscale=True).eval()
    with pytest.raises(ValueError, match="divisible by 4; got 18 x 18"):
        Predictor(net)(named_inputs(net.schema, n=18))
    with pytest.raises(ValueError, match="divisible by 4; got 18 x 18"):
        PVForcing(Predictor(net), strat=Stratification.two_layer(1e-9, 1e-9), L=1e6, n=18)
    assert Predictor(net)(named_inputs(net.schema, n=20))["tau_1"].shape == (3, 20, 20)
