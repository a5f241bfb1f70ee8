"""A network's stencils at a fixed grid spacing (``ModelConfig.view_spacing``, ``models.view``): the
resampling interpolates band-limited fields exactly on the centre-aligned grid, commutes with every
element of D4 on a physical state, and a view model is the plain network on its own grid, runs on other
grids through the predictor and in pyqg, and is refused where it cannot run."""

import numpy as np
import pytest
import torch

from conftest_models import eddy64_model, physical_normalization, tiny_dataset
from roteq_param import models, symmetry
from roteq_param.models import ModelConfig, view
from roteq_param.symmetry import Group, Kind
from roteq_param.train import TrainOptions, train
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.state import state_from_model

pytestmark = pytest.mark.filterwarnings("ignore:PYTHONHASHSEED is not set")


@pytest.fixture(scope="module")
def eddy():
    return eddy64_model()


@pytest.mark.parametrize("n, m", [(48, 96), (96, 64), (64, 48), (63, 96), (96, 95)])
def test_resampling_evaluates_a_trigonometric_polynomial_on_the_centre_aligned_grid(n, m):
    """f sampled at j L / n (modes below both Nyquist wavenumbers), resampled to m cells: the values of
    f itself at l L / m + L (1/m - 1/n) / 2, the points that share the n-cell grid's rotation centre."""
    L = 1.0e6
    rng = np.random.default_rng(n * m)

    K = (min(n, m) - 1) // 2  # the largest wavenumber below both Nyquist wavenumbers

    def f(y, x):
        out = np.zeros(np.broadcast(y, x).shape)
        for ky in range(-K, K + 1):
            for kx in (0, 3, 1 - K):
                a, phi = rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
                out += a * np.cos(2 * np.pi * (ky * y + kx * x) / L + phi)
        return out

    rng_state = rng.bit_generator.state
    j = np.arange(n) * L / n
    samples = f(j[:, None], j[None, :])
    rng.bit_generator.state = rng_state  # the same polynomial
    y = np.arange(m) * L / m + L * (1 / m - 1 / n) / 2
    expected = f(y[:, None], y[None, :])
    got = view.resample(torch.from_numpy(samples), (m, m)).numpy()
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


@pytest.mark.parametrize("n, m", [(64, 96), (64, 48), (48, 64)])
def test_resampling_commutes_with_every_element_of_d4_on_a_physical_state(eddy, n, m):
    """PV of the spun-up state (truncated to n cells first where n < 64): rotating or reflecting then
    resampling equals resampling then rotating or reflecting, to round-off, for all 8 elements."""
    q = view.resample(torch.from_numpy(eddy.q), (n, n))
    for g in Group.parse("D4").exact_elements():
        a = view.resample(symmetry.act(g, q, Kind.PSEUDOSCALAR), (m, m))
        b = symmetry.act(g, view.resample(q, (m, m)), Kind.PSEUDOSCALAR)
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-13, str(g)


def test_resampling_to_a_finer_grid_and_back_keeps_every_resolved_mode(eddy):
    """64 -> 96 -> 64 is the identity on fields without a Nyquist mode; the Nyquist row and column are
    what the square band drops (its 90-degree rotations would otherwise not be defined)."""
    q = torch.from_numpy(eddy.q)
    band = view.resample(view.resample(q, (62, 62)), (64, 64))  # below 64's Nyquist
    back = view.resample(view.resample(band, (96, 96)), (64, 64))
    assert float((back - band).abs().max() / band.abs().max()) <= 1e-13
    dropped = view.resample(view.resample(q, (96, 96)), (64, 64)) - q
    spectrum = torch.fft.fft2(dropped).abs()
    spectrum[..., 32, :] = spectrum[..., :, 32] = 0  # only the Nyquist wavenumbers may differ
    assert float(spectrum.max()) <= 1e-10 * float(torch.fft.fft2(q).abs().max())


def _view_net(state, dx, view_spacing, seed=0, group="C4"):
    torch.manual_seed(seed)
    net = models.build_model(group=group, channels=(8, 8), kernel_sizes=(3, 3), dilations=(1, 2), similarity=True,
                             view_spacing=view_spacing)
    return physical_normalization(net, state, dx)


def test_on_its_own_grid_a_view_model_is_the_plain_network(eddy):
    state, dx = state_from_model(eddy), eddy.L / eddy.nx
    viewed = _view_net(state, dx, view_spacing=dx)
    plain = models.build_model({**viewed.config.to_dict(), "view_spacing": None})
    plain.load_state_dict(viewed.state_dict())
    plain.eval()
    for net in (viewed, plain):
        assert net.export().view_spacing == net.config.view_spacing
    a = models.Predictor(viewed, dtype=torch.float64)(state, dx)
    b = models.Predictor(plain, dtype=torch.float64)(state, dx)
    for k in a:  # the same arithmetic, eager against a frozen trace
        assert np.abs(a[k] - b[k]).max() <= 1e-14 * np.abs(b[k]).max(), k


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_view_model_on_another_grid_is_its_escnn_net_and_equivariant(eddy, dtype):
    """A 64^2 state seen at 1000 km / 96 and at 1000 km / 48: the predictor (exported net between the two
    resamplings, eager) equals the escnn net and commutes with every element of D4."""
    state, dx = state_from_model(eddy), eddy.L / eddy.nx
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}[dtype]
    for cells in (96, 48):
        net = _view_net(state, dx, view_spacing=eddy.L / cells, seed=cells, group="D4")
        predictor = models.Predictor(net, dtype=dtype)
        fluxes = predictor(state, dx)
        x = net.schema.stack({k: torch.as_tensor(v, dtype=torch.float64) for k, v in state.items()})[None]
        with torch.no_grad():
            ref = net.converted(torch.float64)(x, dx)[0]
        got = net.schema.stack({k: torch.as_tensor(v, dtype=torch.float64) for k, v in fluxes.items()}, "outputs")
        # the escnn net's sampled basis differs from its exactly equivariant export by ~1e-4 (design doc §2)
        assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-3
        for g in Group.parse("D4").exact_elements():
            expected = net.schema.transform(g, fluxes)
            moved = predictor(net.schema.transform(g, state), dx)
            for k in expected:
                err = float(np.abs(moved[k] - expected[k]).max() / np.abs(expected[k]).max())
                assert err <= tol, (cells, str(g), k, err)


def test_a_view_spacing_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="view_spacing needs similarity scaling"):
        ModelConfig(view_spacing=1.0e4)
    with pytest.raises(ValueError, match="view_spacing needs similarity scaling.*without multiscale"):
        ModelConfig(similarity=True, multiscale=True, channels=(8, 8), kernel_sizes=(3, 3), view_spacing=1.0e4)
    with pytest.raises(ValueError, match=r"view_spacing must be a finite grid spacing > 0 \[m\]"):
        ModelConfig(similarity=True, view_spacing=-1.0)
    with pytest.raises(ValueError, match="fewer than the 4 its stencils need"):
        view.view_size(64, 1.0e6 / 64, 5.0e5, min_cells=4)


def test_training_a_view_model_then_running_it_in_pyqg_on_other_grids(tmp_path):
    """`roteq train --similarity --view-spacing` end to end on real 16^2 data, the view at 1000 km / 24;
    the saved model keeps its view and runs in pyqg at 12^2, 16^2 and 24^2."""
    data = tiny_dataset(tmp_path / "tiny.nc")
    summary = train(TrainOptions(data=data, out=str(tmp_path / "run"), name=str(tmp_path / "model"),
                                 model=ModelConfig(channels=(8, 8), kernel_sizes=(3, 1), similarity=True,
                                                   view_spacing=1.0e6 / 24),
                                 epochs=2, batch_size=4, progress=False, threads=1))
    assert np.isfinite(summary["metrics"]["val"]["S_mean"])
    net = models.load_model(summary["model_dir"])
    assert net.config.view_spacing == pytest.approx(1.0e6 / 24)
    for n in (12, 16, 24):
        m = get_config("eddy", {"nx": n}, coarse_nx=n).make_model(log_level=0)
        m.q = np.random.default_rng(n).standard_normal((2, n, n)) * 1e-6
        m._invert()
        dq = RotEqParameterization(summary["model_dir"])(m)
        assert dq.shape == (2, n, n) and np.all(np.isfinite(dq)) and np.abs(dq).max() > 0
