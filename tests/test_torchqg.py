"""The torch twin of pyqg's QGModel against real pyqg: trajectories, closures, diagnostics,
interop, gradients, member isolation and the worked inverse problem.

Every reference number comes from pyqg 0.7.2 itself, stepped in this process with
``ntd=1``. States are spun up from a white-noise upper-layer PV of 1e-5 s^-1, which
is nonlinear (eddying) within ~1000 one-hour steps, so round-off differences
between FFTW (pyqg) and torch's FFT are amplified as they would be in real use.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pyqg
import pytest
import torch

from solver_coupling.torchqg import TorchQGModel, pyqg_parameter_names
from solver_coupling.torchqg import closures as tclosures
from solver_coupling.torchqg.diagnostics import DIAGNOSTICS, SpectralDiagnostics

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"eddy": {}, "jet": {"rek": 7e-8, "delta": 0.1, "beta": 1e-11}}
DT = 3600.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel_err(a, b) -> float:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    b = np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def spun_up_pyqg(config="eddy", nx=64, steps=1500, seed=0, **extra):
    np.random.seed(seed)  # pyqg's constructor draws (and we overwrite) its own initial PV
    m = pyqg.QGModel(nx=nx, dt=DT, ntd=1, log_level=0, **CONFIGS[config], **extra)
    rng = np.random.default_rng(seed)
    m.q = np.stack([1e-5 * rng.standard_normal((nx, nx)), np.zeros((nx, nx))])
    for _ in range(steps):
        m._step_forward()
    return m


@pytest.fixture(scope="module")
def eddy64():
    """A spun-up 64^2 eddy pyqg model; tests take copies (``clone``), never step it."""
    return spun_up_pyqg("eddy")


def clone(m, **pyqg_kwargs):
    """An independent pyqg model in the same state (test_roundtrip_is_bitwise checks this is exact)."""
    return TorchQGModel.from_pyqg(m).to_pyqg(0, **pyqg_kwargs)


# ---------------------------------------------------------------- trajectory fidelity
@pytest.mark.parametrize("config", ["eddy", "jet"])
def test_fidelity_64_1000_steps(config):
    m = spun_up_pyqg(config)
    twin = TorchQGModel.from_pyqg(m)
    twin.step(1000)
    for _ in range(1000):
        m._step_forward()
    err = rel_err(twin.q[0], m.q)
    assert err <= 1e-10, f"{config} 64^2: max|dq|/max|q| = {err:.2e} after 1000 steps"
    assert (twin.t, twin.tc, twin.ablevel) == (m.t, m.tc, m.ablevel)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["eddy", "jet"])
def test_fidelity_256(config):
    # a short version of the 1000-step figure in README.md (benchmarks/bench_torchqg.py fidelity)
    m = spun_up_pyqg(config, nx=256, steps=300)
    twin = TorchQGModel.from_pyqg(m)
    twin.step(300)
    for _ in range(300):
        m._step_forward()
    err = rel_err(twin.q[0], m.q)
    assert err <= 1e-10, f"{config} 256^2: {err:.2e} after 300 steps"


def test_same_initial_condition_and_start_up_as_pyqg():
    # from pyqg's own random initial PV, through the Euler and AB2 start-up steps
    np.random.seed(3)
    m = pyqg.QGModel(nx=32, dt=DT, ntd=1, log_level=0)
    np.random.seed(3)
    twin = TorchQGModel(nx=32, dt=DT)
    assert np.array_equal(twin.q[0].numpy(), m.q)
    for n in (1, 2, 50):
        twin.step(n - twin.tc)
        while m.tc < n:
            m._step_forward()
        assert twin.ablevel == m.ablevel
        assert rel_err(twin.q[0], m.q) <= 1e-13


def test_float32_tracks_pyqg(eddy64):
    m = clone(eddy64)
    twin = TorchQGModel.from_pyqg(m, dtype=torch.float32)
    assert twin.qh.dtype == torch.complex64
    twin.step(100)
    for _ in range(100):
        m._step_forward()
    assert rel_err(twin.q[0], m.q) <= 1e-5


# ---------------------------------------------------------------- members
def test_batched_members_equal_single_ones(eddy64):
    base = TorchQGModel.from_pyqg(eddy64)
    rng = np.random.default_rng(1)
    q0 = base.q.repeat(3, 1, 1, 1) * torch.tensor(1.0 + 0.1 * rng.standard_normal((3, 2, 64, 64)))
    batch = TorchQGModel(members=3, nx=64, dt=DT)
    batch.q = q0
    batch.step(100)
    for i in range(3):
        single = TorchQGModel(members=1, nx=64, dt=DT)
        single.q = q0[i:i + 1]
        single.step(100)
        # bitwise on the CPUs tried; allow FFT batching to differ at round-off elsewhere
        assert rel_err(batch.q[i], single.q[0].numpy()) <= 1e-13


def test_per_member_parameters_equal_single_runs(eddy64):
    reks = torch.tensor([5.787e-7, 2e-7], dtype=torch.float64)
    betas = torch.tensor([1.5e-11, 1.0e-11], dtype=torch.float64)
    batch = TorchQGModel.from_pyqg(eddy64, members=2)
    batch.rek, batch.beta = reks, betas
    batch.step(50)
    for i in range(2):
        m = clone(eddy64, rek=float(reks[i]), beta=float(betas[i]))
        for _ in range(50):
            m._step_forward()
        assert rel_err(batch.q[i], m.q) <= 1e-12
        assert batch.to_pyqg(i).rek == float(reks[i])


def test_nan_member_leaves_others_bitwise_unchanged(eddy64):
    def run(poison):
        twin = TorchQGModel.from_pyqg(eddy64, members=3, parameterization=tclosures.BackscatterBiharmonic())
        twin.tavestart, twin.taveint = 0.0, DT
        diag = SpectralDiagnostics(twin, ["KEspec", "EKEdiss", "APEgen"])
        q = twin.q.clone()
        if poison:
            q[1, 0, 10, 20] = float("nan")
        twin.q = q  # both runs through the setter, so both take qh = torch fft(q)
        twin.step(30)
        return twin, diag

    ref, ref_diag = run(False)
    bad, bad_diag = run(True)
    assert bad.finite_members().tolist() == [True, False, True]
    assert ref.finite_members().all()
    for i in (0, 2):
        assert torch.equal(bad.q[i], ref.q[i])
        for name in ref_diag.names:
            assert torch.equal(bad_diag.get(name)[i], ref_diag.get(name)[i])


# ---------------------------------------------------------------- pyqg interop
def test_roundtrip_is_bitwise(eddy64):
    m = clone(eddy64)
    assert (m.t, m.tc, m.ablevel) == (eddy64.t, eddy64.tc, eddy64.ablevel) and m.ablevel == 2
    for name in ("q", "qh", "dqhdt_p", "dqhdt_pp"):
        assert np.array_equal(getattr(m, name), getattr(eddy64, name)), name
    ref = clone(eddy64)
    for _ in range(100):
        m._step_forward()
        ref._step_forward()
    assert np.array_equal(m.q, ref.q)


def test_to_pyqg_continues_the_twin(eddy64):
    twin = TorchQGModel.from_pyqg(eddy64, members=2)
    twin.q = twin.q * torch.tensor([1.0, 0.9], dtype=torch.float64)[:, None, None, None]
    twin.step(200)
    m = twin.to_pyqg(1)
    assert (m.t, m.tc, m.ablevel) == (twin.t, twin.tc, twin.ablevel)
    twin.step(200)
    for _ in range(200):
        m._step_forward()
    assert rel_err(twin.q[1], m.q) <= 1e-12


def test_to_pyqg_mid_start_up():
    # after one step the AB level is 1: pyqg must continue with AB2, then AB3, like the twin
    np.random.seed(5)
    twin = TorchQGModel(nx=32, dt=DT)
    twin.step(1)
    m = twin.to_pyqg(0)
    assert m.ablevel == 1
    twin.step(20)
    for _ in range(20):
        m._step_forward()
    assert rel_err(twin.q[0], m.q) <= 1e-13


def test_from_several_pyqg_models():
    ms = [spun_up_pyqg("eddy", nx=32, steps=20, seed=s) for s in (0, 1)]
    twin = TorchQGModel.from_pyqg(ms)
    assert twin.members == 2
    twin.step(20)
    for i, m in enumerate(ms):
        for _ in range(20):
            m._step_forward()
        assert rel_err(twin.q[i], m.q) <= 1e-13


# ---------------------------------------------------------------- closures
@pytest.mark.parametrize("name, make_pyqg, make_torch, out", [
    ("backscatter", lambda: pyqg.parameterizations.BackscatterBiharmonic(0.08, 0.99),
     lambda: tclosures.BackscatterBiharmonic(0.08, 0.99), ("dqh",)),
    ("smagorinsky", lambda: pyqg.parameterizations.Smagorinsky(0.15),
     lambda: tclosures.Smagorinsky(0.15), ("duh", "dvh")),
])
def test_closure_against_pyqg(eddy64, name, make_pyqg, make_torch, out):
    m = clone(eddy64, parameterization=make_pyqg())
    twin = TorchQGModel.from_pyqg(m, parameterization=make_torch())
    twin.step(500)
    for _ in range(500):
        m._step_forward()
    assert rel_err(twin.q[0], m.q) <= 1e-10, name
    for field in out:  # the last forcing each evaluated, in spectral space
        assert rel_err(getattr(twin, field)[0], getattr(m, field)) <= 1e-10, (name, field)


def test_call_interval_reuses_the_forcing(eddy64):
    class Counting:
        def __init__(self):
            self.inner, self.calls = tclosures.BackscatterBiharmonic(), []

        def __call__(self, model):
            self.calls.append(model.tc)
            return self.inner(model)

    class ManualReuse:  # what call_interval=3 must do, written out in the closure itself
        def __init__(self):
            self.inner, self.last = tclosures.BackscatterBiharmonic(), None

        def __call__(self, model):
            if model.tc % 3 == 0:
                self.last = self.inner(model)
            return self.last

    counting = Counting()
    every3 = TorchQGModel.from_pyqg(eddy64, parameterization=counting, call_interval=3)
    manual = TorchQGModel.from_pyqg(eddy64, parameterization=ManualReuse())
    start = eddy64.tc
    assert start % 3 == 0
    every3.step(10)
    manual.step(10)
    assert counting.calls == [start, start + 3, start + 6, start + 9]
    assert torch.equal(every3.q, manual.q)


# ---------------------------------------------------------------- diagnostics
def test_diagnostics_against_pyqg(eddy64):
    # taveint = dt: sample every step; a closure makes the paramspec_* terms non-zero
    m = clone(eddy64, parameterization=pyqg.parameterizations.BackscatterBiharmonic(),
              tavestart=eddy64.t, taveint=DT)
    twin = TorchQGModel.from_pyqg(m, members=2, parameterization=tclosures.BackscatterBiharmonic())
    diag = SpectralDiagnostics(twin)
    twin.step(300)
    for _ in range(300):
        m._step_forward()
    assert diag.count == m.diagnostics["KEspec"]["count"] == 300
    assert set(DIAGNOSTICS) <= set(m.diagnostics)
    for name in DIAGNOSTICS:
        ref = m.get_diagnostic(name)
        mine = diag.get(name)
        assert tuple(mine.shape) == (2,) + np.shape(ref), name
        assert np.abs(ref).max() > 0, name
        for i in range(2):
            assert rel_err(mine[i], ref) <= 1e-11, (name, rel_err(mine[i], ref))


# ---------------------------------------------------------------- gradients
Q0 = 1e-5  # s^-1: PV scale; gradcheck works on O(1) numbers, so inputs and outputs are scaled by it


def _q_start(nx=16, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal((1, 2, nx, nx)))


def test_gradcheck_wrt_q():
    # 3 steps from a fresh clock: the Euler, AB2 and AB3 updates are all differentiated
    def f(x):
        twin = TorchQGModel(nx=16, dt=DT, parameterization=tclosures.BackscatterBiharmonic())
        twin.q = x * Q0
        return twin.unroll(3) / Q0

    assert torch.autograd.gradcheck(f, (_q_start().requires_grad_(),))


def test_gradcheck_wrt_parameters():
    q = _q_start() * Q0

    def f(rek_s, beta_s, rd_s):  # parameters in units of pyqg's defaults
        twin = TorchQGModel(nx=16, dt=DT, rek=5.787e-7 * rek_s, beta=1.5e-11 * beta_s, rd=15000.0 * rd_s)
        twin.q = q
        return twin.unroll(3) / Q0

    ones = [torch.tensor(1.0, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(f, ones)


class ConvClosure(torch.nn.Module):
    """A tiny network as a PV closure: dq = conv(q / Q0) * Q0 / T, periodic padding."""

    def __init__(self, T=86400.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", dtype=torch.float64)
        self.T = T

    def forward(self, model):
        return self.conv(model.q / Q0) * (Q0 / self.T)


def test_gradcheck_wrt_network_weights():
    torch.manual_seed(0)
    net = ConvClosure()
    q = _q_start() * Q0

    def f(weight, bias):
        def closure(model):
            return torch.func.functional_call(net, {"conv.weight": weight, "conv.bias": bias}, (model,))

        twin = TorchQGModel(nx=16, dt=DT, parameterization=closure)
        twin.q = q
        return twin.unroll(3) / Q0

    w = net.conv.weight.detach().clone().requires_grad_()
    b = net.conv.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (w, b))
    # and with the module itself: its parameters are leaves that receive .grad
    twin = TorchQGModel(nx=16, dt=DT, parameterization=net)
    twin.q = q
    twin.unroll(3).pow(2).sum().backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


def test_checkpointed_unroll_gives_the_same_gradients():
    q = _q_start(nx=32) * Q0

    def run(checkpoint_every):
        rek = torch.tensor(5.787e-7, dtype=torch.float64, requires_grad=True)
        x = q.clone().requires_grad_()
        twin = TorchQGModel(members=1, nx=32, dt=DT, rek=rek, call_interval=2,
                            parameterization=tclosures.BackscatterBiharmonic())
        twin.tavestart, twin.taveint = 0.0, DT
        diag = SpectralDiagnostics(twin, ["KEspec"])
        twin.q = x
        traj = twin.unroll(20, checkpoint_every=checkpoint_every, save_every=5)
        loss = (traj / Q0).pow(2).mean()
        loss.backward()
        return loss.item(), rek.grad.item(), x.grad.clone(), twin, diag

    ref = run(None)
    for k in (3, 7):
        out = run(k)
        assert out[0] == pytest.approx(ref[0], rel=1e-13)
        assert out[1] == pytest.approx(ref[1], rel=1e-10)
        assert rel_err(out[2], ref[2].numpy()) <= 1e-10
        twin, diag = out[3], out[4]
        assert (twin.tc, twin.t, twin.ablevel) == (ref[3].tc, ref[3].t, ref[3].ablevel)
        # recomputation in backward neither re-ran the hooks nor left stale fields behind
        assert diag.count == ref[4].count == 19
        assert torch.equal(twin.ph, ref[3].ph)


# ---------------------------------------------------------------- construction
def test_unknown_parameter_is_named():
    with pytest.raises(TypeError, match=r"'nxx' \(did you mean 'nx'\?\).*valid names: .*rek"):
        TorchQGModel(nxx=64)


def test_every_pyqg_parameter_is_accepted():
    import inspect
    sig = dict(inspect.signature(pyqg.QGModel.__init__).parameters)
    sig.update(inspect.signature(pyqg.Model.__init__).parameters)
    expected = sorted(n for n, p in sig.items()
                      if n not in ("self", "nz") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    assert pyqg_parameter_names() == expected
    defaults = {n: sig[n].default for n in expected}
    twin = TorchQGModel(**defaults)  # pyqg's own defaults, passed explicitly
    assert twin.nx == 64 and twin.rek == 5.787e-7 and twin.dt == 7200.0


def test_pyqg_numpy_closure_is_rejected():
    with pytest.raises(TypeError, match="NumPy"):
        TorchQGModel(nx=16, parameterization=pyqg.parameterizations.Smagorinsky())
    m = pyqg.QGModel(nx=16, ntd=1, log_level=0, parameterization=pyqg.parameterizations.Smagorinsky())
    with pytest.raises(ValueError, match="torch counterpart"):
        TorchQGModel.from_pyqg(m)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(eddy64):
    cpu = TorchQGModel.from_pyqg(eddy64, members=2)
    gpu = TorchQGModel.from_pyqg(eddy64, members=2, device="cuda")
    cpu.step(200)
    gpu.step(200)
    assert rel_err(gpu.q[1], cpu.q[1].numpy()) <= 1e-12


# ---------------------------------------------------------------- worked inverse problem
def test_inverse_drag_example_recovers_rek():
    spec = importlib.util.spec_from_file_location("torchqg_inverse_drag", REPO / "examples/torchqg_inverse_drag.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.recover_drag(nx=32, spinup=800, steps=20, save_every=4, guess_factor=2.0, verbose=False)
    assert math.isclose(result["initial_rek"], 2 * example.TRUE_REK)
    assert result["relative_error"] < 1e-2, result
