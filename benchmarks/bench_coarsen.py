"""Cost of coarse-graining + subgrid fluxes relative to the high-res solver time between snapshots.

Default configuration ("eddy", 256^2 -> 64^2, one snapshot every 1000 h): times pyqg steps at 256^2
(ntd = 1) and ``coarsen.coarse_grain`` for each operator, and prints the fraction
``t(coarse_grain) / t(steps between snapshots)`` (target <= 10%) and the size of the default dataset.

    .venv/bin/python benchmarks/bench_coarsen.py [--steps 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from roteq_param import coarsen
from solver_coupling.pyqg.config import YEAR, get_config
from solver_coupling.pyqg.data import Request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed solver steps (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="coarse-graining repetitions (best of)")
    args = parser.parse_args()

    cfg = get_config("eddy")
    request = Request(cfg, runs=1)
    total, spinup, snap = request.steps()
    m = cfg.make_model(tmax=1e12)
    m.q = np.stack([1e-6 * np.random.default_rng(0).standard_normal((cfg.nx, cfg.nx)), np.zeros((cfg.nx, cfg.nx))])
    m.tmax = m.t + 20 * cfg.dt
    m.run()  # warm-up (FFTW plans, caches)
    m.tmax = m.t + (args.steps - 0.5) * cfg.dt
    t0 = time.perf_counter()
    m.run()
    step = (time.perf_counter() - t0) / args.steps
    between = step * snap
    print(f"pyqg step at {cfg.nx}^2 (ntd=1): {1e3 * step:.2f} ms; {snap} steps between snapshots: {between:.2f} s")

    for name in coarsen.OPERATORS:
        op = coarsen.make_operator(name, cfg.nx, cfg.coarse_nx, cfg.L)
        coarsen.coarse_grain(m.q, cfg.stratification, cfg.L, op)  # warm-up
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = coarsen.coarse_grain(m.q, cfg.stratification, cfg.L, op)
            best = min(best, time.perf_counter() - t0)
        res = coarsen.commutation_residual(out)
        print(f"{name:9s}: coarse_grain {1e3 * best:7.1f} ms = {100 * best / between:.2f}% of the solver time "
              f"between snapshots; |S_direct - S_flux| / |S_direct| = {res[0]:.1e}, {res[1]:.1e}")

    n_snap = len(request.snapshot_steps())
    per_snapshot = 4 * cfg.coarse_nx**2 * (4 + 1 + 2 + 6 + 4 + 2 + 2)  # float32 u v b q tau Fb S_direct S_flux
    print(f"default run: {total} steps ({total * cfg.dt / YEAR:g} y), {n_snap} snapshots, "
          f"{n_snap * per_snapshot / 2**20:.1f} MiB per run on disk, about {total * step / 60:.1f} min per run "
          "on one core")


if __name__ == "__main__":
    main()
