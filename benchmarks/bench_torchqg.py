"""Figures of the torch twin of pyqg (solver_coupling/torchqg/README.md): fidelity and speed.

* ``fidelity``: from a nonlinear pyqg state (white-noise upper PV of 1e-5 s^-1, then
  ``--spinup`` steps of dt = 1 h), the twin and pyqg each take ``--steps`` steps; prints
  ``max|q_twin - q_pyqg| / max|q_pyqg|`` for eddy and jet, float64 (and float32 at the
  first size).
* ``diagnostics``: worst relative difference over all of pyqg's diagnostics that the
  twin computes (every step sampled, BackscatterBiharmonic on both sides).
* ``speed``: steps per second of the twin (members 1 and 16, float64 and float32, no
  autograd) and of ``pyqg.QGModel(ntd=1)._step_forward()``, one torch thread, in this one
  process; each figure is the best of ``--repeats`` timings, which filters out noise
  from other jobs on a shared machine.
* ``memory``: resident memory held after the forward pass of a differentiable
  ``unroll`` (w.r.t. ``rek``) with and without ``checkpoint_every``. Run it with
  ``MALLOC_MMAP_THRESHOLD_=65536`` so glibc returns freed blocks to the OS and the
  resident size tracks live tensors.

* ``closure``: the shipped closure in float64 on both sides (pyqg + plugin against the twin with
  ``FluxNetClosure``) from the stored spun-up 64^2 eddy state.

Run: PYTHONHASHSEED=0 .venv/bin/python benchmarks/bench_torchqg.py fidelity --nx 64 256
     .venv/bin/python benchmarks/bench_torchqg.py closure
     .venv/bin/python benchmarks/bench_torchqg.py diagnostics
     .venv/bin/python benchmarks/bench_torchqg.py speed
     MALLOC_MMAP_THRESHOLD_=65536 .venv/bin/python benchmarks/bench_torchqg.py memory
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import pyqg
import torch

from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg import closures
from solver_coupling.torchqg.diagnostics import DIAGNOSTICS, SpectralDiagnostics

CONFIGS = {"eddy": {}, "jet": {"rek": 7e-8, "delta": 0.1, "beta": 1e-11}}
DT = 3600.0


def spun_up(config: str, nx: int, spinup: int, seed: int = 0, **extra) -> pyqg.QGModel:
    np.random.seed(seed)
    m = pyqg.QGModel(nx=nx, dt=DT, ntd=1, log_level=0, **CONFIGS[config], **extra)
    rng = np.random.default_rng(seed)
    m.q = np.stack([1e-5 * rng.standard_normal((nx, nx)), np.zeros((nx, nx))])
    for _ in range(spinup):
        m._step_forward()
    return m


def rel_err(twin_q: torch.Tensor, ref: np.ndarray) -> float:
    return float(np.abs(twin_q.detach().cpu().double().numpy() - ref).max() / np.abs(ref).max())


def fidelity(a) -> None:
    for nx in a.nx:
        for config in CONFIGS:
            dtypes = (torch.float64, torch.float32) if nx == a.nx[0] else (torch.float64,)
            for dtype in dtypes:
                m = spun_up(config, nx, a.spinup)
                twin = TorchQGModel.from_pyqg(m, dtype=dtype)
                t0 = time.perf_counter()
                twin.step(a.steps)
                t1 = time.perf_counter()
                for _ in range(a.steps):
                    m._step_forward()
                t2 = time.perf_counter()
                print(f"{config:4s} {nx:4d}^2 {str(dtype):14s} {a.steps} steps: max|dq|/max|q| = "
                      f"{rel_err(twin.q[0], m.q):.2e}   (twin {t1 - t0:.1f} s, pyqg {t2 - t1:.1f} s)", flush=True)


def diagnostics(a) -> None:
    m = spun_up("eddy", 64, a.spinup, parameterization=pyqg.parameterizations.BackscatterBiharmonic())
    m = TorchQGModel.from_pyqg(m, parameterization=closures.BackscatterBiharmonic()).to_pyqg(
        0, parameterization=pyqg.parameterizations.BackscatterBiharmonic(), tavestart=m.t, taveint=DT)
    twin = TorchQGModel.from_pyqg(m, parameterization=closures.BackscatterBiharmonic())
    diag = SpectralDiagnostics(twin)
    twin.step(a.steps)
    for _ in range(a.steps):
        m._step_forward()
    errs = {name: rel_err(diag.get(name)[0], m.get_diagnostic(name)) for name in DIAGNOSTICS}
    for name, e in errs.items():
        print(f"{name:18s} {e:.2e}")
    worst = max(errs, key=errs.get)
    print(f"{len(errs)} diagnostics, {diag.count} samples over {a.steps} steps: worst {worst} {errs[worst]:.2e}")


def _best_rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best


def speed(a) -> None:
    m = spun_up("eddy", 64, 200)

    def pyqg_steps(n):
        for _ in range(n):
            m._step_forward()

    rate = _best_rate(pyqg_steps, a.n, a.repeats)
    print(f"pyqg 64^2 ntd=1 bare _step_forward: {rate:8.0f} steps/s")
    for dtype in (torch.float64, torch.float32):
        for members in (1, 16):
            twin = TorchQGModel.from_pyqg(m, members=members, dtype=dtype)
            with torch.no_grad():
                twin.step(10)
                r = _best_rate(twin.step, a.n if members == 1 else max(a.n // 8, 10), a.repeats)
            print(f"twin 64^2 {str(dtype):14s} members={members:2d}: {r:8.0f} steps/s = "
                  f"{r * members:8.0f} member-steps/s ({r * members / rate:.2f}x pyqg)")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory(a) -> None:
    for ckpt in (None, a.checkpoint_every):
        np.random.seed(0)
        twin = TorchQGModel(members=a.members, nx=64, dt=DT)
        rek = torch.tensor(5.787e-7, dtype=torch.float64, requires_grad=True)
        twin.rek = rek
        before = _rss_mib()
        t0 = time.perf_counter()
        q = twin.unroll(a.steps, checkpoint_every=ckpt)
        held = _rss_mib() - before
        q.pow(2).sum().backward()
        print(f"64^2 members={a.members} {a.steps} steps, checkpoint_every={ckpt}: {held:7.0f} MiB held after "
              f"forward; forward+backward {time.perf_counter() - t0:.1f} s")
        del q, twin, rek
        gc.collect()


def closure(a) -> None:
    """The shipped closure in float64 on both sides: pyqg + plugin against twin + FluxNetClosure."""
    from pathlib import Path

    from solver_coupling.pyqg.plugin import RotEqParameterization
    from solver_coupling.torchqg.closures import FluxNetClosure

    q = np.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "eddy64_state.npz")["q"]
    m = pyqg.QGModel(nx=64, dt=DT, ntd=1, log_level=0, tmax=DT * a.steps,
                     parameterization=RotEqParameterization(a.model, dtype=torch.float64))
    m.q = q
    twin = TorchQGModel.from_pyqg(m, dtype=torch.float64, parameterization=FluxNetClosure(a.model, dtype=torch.float64))
    m.run()
    twin.step(a.steps)
    print(f"{a.model}, {a.steps} steps from the stored 64^2 eddy state, float64: "
          f"max|q_twin - q_pyqg| / max|q_pyqg| = {rel_err(twin.q[0], m.q):.2e}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fidelity")
    f.add_argument("--nx", type=int, nargs="+", default=[64])
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--spinup", type=int, default=1500)
    d = sub.add_parser("diagnostics")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--spinup", type=int, default=1500)
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, default=500)
    s.add_argument("--repeats", type=int, default=5)
    c = sub.add_parser("closure")
    c.add_argument("--model", default="eddy-c4")
    c.add_argument("--steps", type=int, default=1000)
    mem = sub.add_parser("memory")
    mem.add_argument("--steps", type=int, default=300)
    mem.add_argument("--members", type=int, default=8)
    mem.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    {"fidelity": fidelity, "diagnostics": diagnostics, "speed": speed, "memory": memory,
     "closure": closure}[a.cmd](a)


if __name__ == "__main__":
    main()
