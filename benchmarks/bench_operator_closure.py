"""Cost of the operator closure in the torch twin, as a multiple of a bare twin step.

One process, one thread, interleaved blocks of steps (best of ``--repeat``) from the stored spun-up
64^2 eddy state: the bare twin, the twin with :class:`OperatorClosure` (random fixed weights, run
without autograd so its multiplier is cached) and with the twin's ``BackscatterBiharmonic``.

    .venv/bin/python benchmarks/bench_operator_closure.py [--steps 100] [--repeat 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg.closures import BackscatterBiharmonic
from solver_coupling.torchqg.operator_closure import OperatorClosure

STATE = Path(__file__).resolve().parents[1] / "tests" / "data" / "eddy64_state.npz"


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--repeat", type=int, default=7, help="interleaved blocks per model (best of)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    q = torch.as_tensor(np.load(STATE)["q"])[None]
    closure = OperatorClosure(1.0e6, q.shape[-1])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for op in closure.ops:
            op.profile.weight.copy_(0.1 * torch.randn(op.profile.weight.shape, generator=g, dtype=torch.float64))
    common = {"nx": q.shape[-1], "dt": 3600.0}
    models = {"bare": TorchQGModel(1, **common),
              "operator closure": TorchQGModel(1, parameterization=closure, **common),
              "backscatter": TorchQGModel(1, parameterization=BackscatterBiharmonic(), **common)}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.q = q.clone()
            m.step(10)  # start-up steps and caches out of the timing
        for _ in range(a.repeat):
            for name, m in models.items():
                t0 = time.perf_counter()
                m.step(a.steps)
                times[name].append((time.perf_counter() - t0) / a.steps)
    best = {k: min(v) for k, v in times.items()}
    for name, t in best.items():
        print(f"{name}: {t * 1e3:.3f} ms/step = {t / best['bare']:.2f} x bare")
    return {k: v / best["bare"] for k, v in best.items()}


if __name__ == "__main__":
    main()
