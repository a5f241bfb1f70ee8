"""Where a parameterized 64^2 step spends its time, and what was tried to cut it (not a test).

One process, one torch thread, best of 5 blocks; every figure is also given as a ratio to a bare
pyqg 64^2 step measured in the same process. Parts of the hook (shipped model unless named):

* ``state in``: pyqg's ph -> torch, u, v, b by one batched inverse FFT, packing for the network;
* ``network``: the traced exported net; the same layers run as the export ran them before (NCHW, a
  circular pad per layer), as a whole and one by one (kernel, dilation, channels and multiply-adds per
  grid point named);
* ``forcing out``: fluxes -> S by the fused spectral operator, back to numpy;
* and the whole hook call.

Variants of the network tried: channels-last memory format, ``torch.compile`` (inductor), and the
first layer as a spectral product (FFT convolution, which could share the hook's FFT).

Run: ``.venv/bin/python benchmarks/bench_inference.py [MODEL]``
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from roteq_param import fields, models
from roteq_param.fluxform import Stratification
from roteq_param.forcing import PVForcing
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.state import constants


def best_ms(f, n=100) -> float:
    for _ in range(5):
        f()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e3


def main(name: str = "eddy-c4") -> None:
    torch.set_num_threads(1)
    q = np.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "eddy64_state.npz")["q"]
    m = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(log_level=0, tmax=1e12, tavestart=1e12)
    m.q = q
    m._invert()
    net = models.load_model(name)
    predictor = models.Predictor(net)
    forcing = PVForcing(predictor, strat=Stratification.two_layer(m.F1, m.F2), L=m.L, n=64)
    hook = RotEqParameterization(net)
    beta, U = constants(m)
    rows = {}
    rows["bare pyqg 64^2 step"] = best_ms(m._step_forward)
    rows["hook, whole call"] = best_ms(lambda: hook(m))
    grid = torch.fft.irfft2(torch.as_tensor(m.ph).to(torch.complex64), s=(64, 64))
    state = fields.qg_inputs(torch.randn(2, 64, 64), torch.randn(2, 64, 64), torch.randn(64, 64),
                             torch.as_tensor(beta, dtype=torch.float32), torch.as_tensor(U, dtype=torch.float32))
    g, c = predictor.pack(state, (), 64, 64)
    y = predictor.stacked(g, c)
    rows["network (traced export)"] = best_ms(lambda: predictor.stacked(g, c))
    ex = net.export()
    if ex.multiscale:
        raise SystemExit(f"{name} is a U-Net; this profile chains a plain stack's layers")
    # the layers one by one as the export ran them before 2026-12-03: NCHW, each with its own circular pad
    # (the export now pads the input once by the stack's halo and runs unpadded channels-last layers)
    convs = [(ex.w_first, torch.addmm(ex.b_first, c, ex.w_const.T)[0])] + list(zip(ex.weights, ex.biases))
    layers = []
    for i, (w, b) in enumerate(convs):
        w, p, d = w.contiguous(), ex.pads[i], ex.dilations[i]
        layers.append(lambda t, w=w, b=b, p=p, d=d: F.conv2d(F.pad(t, (p,) * 4, mode="circular") if p else t, w, b,
                                                             dilation=d))

    def per_layer_nchw(t):
        for i, layer in enumerate(layers):
            t = layer(t) if i == len(layers) - 1 else torch.relu_(layer(t))
        return t

    with torch.no_grad():
        rows["variant: per-layer pad, NCHW (the export before)"] = best_ms(lambda: per_layer_nchw(g))
        h = g
        for i, ((w, _), layer) in enumerate(zip(convs, layers)):
            k, c_out, c_in = w.shape[-1], w.shape[0], w.shape[1]
            rows[f"  layer {i + 1}: {k}x{k} conv, dilation {ex.dilations[i]}, {c_in}->{c_out} "
                 f"({k * k * c_in * c_out} MAC/pt)"] = best_ms(lambda t=h, f=layer: f(t))
            h = torch.relu(layer(h))
    rows["state in (ph -> u, v, b -> packed)"] = best_ms(lambda: predictor.pack(
        fields.qg_inputs(grid[0:2], grid[0:2], grid[0], torch.as_tensor(beta), torch.as_tensor(U)), (), 64, 64)) \
        + best_ms(lambda: torch.fft.irfft2(torch.as_tensor(np.stack([m.ph[0]] * 5)).to(torch.complex64), s=(64, 64)))
    P = torch.as_tensor(m.ph).to(torch.complex64)[None]  # the closure terms' streamfunction, as the hook has it
    rows["forcing out (fluxes -> S -> numpy)"] = best_ms(lambda: forcing._to_forcing(y, (), P).double().numpy())
    # variants of the first layer
    pad, dil = ex.pads[0], ex.dilations[0]
    w_cl = ex.w_first.contiguous(memory_format=torch.channels_last)
    rows["variant: first layer, channels-last"] = best_ms(
        lambda: F.conv2d(F.pad(g, (pad,) * 4, mode="circular").contiguous(memory_format=torch.channels_last), w_cl,
                         dilation=dil))
    k = dil * (ex.w_first.shape[-1] - 1) + 1  # the dilated kernel's extent
    wp = torch.zeros(ex.w_first.shape[0], ex.w_first.shape[1], 64, 64)
    wp[..., :k:dil, :k:dil] = ex.w_first
    w_hat = torch.fft.rfft2(torch.roll(wp, (-(k // 2), -(k // 2)), (-2, -1))).conj()  # cross-correlation
    rows["variant: first layer as FFT product"] = best_ms(
        lambda: torch.fft.irfft2(torch.einsum("bchw,ochw->bohw", torch.fft.rfft2(g), w_hat), s=(64, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = torch.compile(ex.forward_split, dynamic=False)
        with torch.no_grad():
            spacing = ex.grid_spacing(m.dx)
            compiled(g, c, spacing)
            rows["variant: torch.compile (inductor), whole net"] = best_ms(lambda: compiled(g, c, spacing))
    # the floor: a parameterized step whose network costs (almost) nothing, and the smallest swept net
    for label, cfg in (("floor: parameterized step, 1x1 net", dict(channels=(4,), kernel_sizes=(1,))),
                       ("floor: parameterized step, 16,16 / 3,1 net", dict(channels=(16, 16), kernel_sizes=(3, 1)))):
        small = models.build_model(**cfg)
        small.set_normalization({"vel_1": 1e-2, "vel_2": 1e-3, "b": 1e2, "beta": 1.5e-11, "U_1": 0.025, "U_2": 1.0},
                                {f.name: 1e-12 for f in small.schema.outputs})  # negligible forcing: a stable run
        stepped = get_config("eddy", {"nx": 64}, coarse_nx=64).make_model(
            log_level=0, tmax=1e12, tavestart=1e12, parameterization=RotEqParameterization(small.eval()))
        stepped.q = q
        rows[label] = best_ms(stepped._step_forward)
    bare = rows["bare pyqg 64^2 step"]
    for label, ms in rows.items():
        print(f"{label:>46}: {ms:7.3f} ms  ({ms / bare:5.2f} x bare step)")


if __name__ == "__main__":
    main(*sys.argv[1:])
