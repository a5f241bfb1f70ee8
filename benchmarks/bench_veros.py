"""Cost of the closure inside Veros, in one process: its share of a bare Veros step (docs/veros.md).

    PYTHONHASHSEED=0 OMP_NUM_THREADS=1 python benchmarks/bench_veros.py [--nx 32 --ny 32 --repeats 7]

Measured, interleaved in blocks so that machine load hits every item alike (median over blocks):

* ``step``: one bare Veros step of the channel (``ChannelSetup`` without closure);
* ``closure``: everything the closure does per step (``VerosClosure.tendencies``: read and convert
  the state, the C-grid kernels, the network, write back);
* ``kernels``: the staggered numba kernels alone (``CGridAdapter.to_centres`` and
  ``fluxes_to_tendencies`` on the same arrays);
* ``network``: the network alone (``NetworkClosure`` on the collocated fields).

The targets (issue 38): kernels <= 5 % and the whole closure <= 50 % of a coarse Veros step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _per_call(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nx", type=int, default=32)
    ap.add_argument("--ny", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved blocks")
    ap.add_argument("--calls", type=int, default=20, help="calls per item per block")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from veros import logs
    logs.setup_logging(loglevel="warning")
    from solver_coupling.veros import ChannelSetup, VerosClosure

    grid = dict(nx=args.nx, ny=args.ny, dt=1800.0)
    bare = ChannelSetup(None, **grid)
    bare.setup()
    closure = VerosClosure()
    coupled = ChannelSetup(closure, **grid)
    coupled.setup()
    for _ in range(3):  # warm up numba, the traced network and Veros's first steps
        bare.step(bare.state)
        coupled.step(coupled.state)
    cg = closure.read_state(coupled.state)
    adapter = closure.adapter
    uc, vc, bc = adapter.to_centres(cg.u, cg.v, cg.b)
    tau, fb = closure.network(uc, vc, bc)

    def kernels():
        adapter.to_centres(cg.u, cg.v, cg.b)
        adapter.fluxes_to_tendencies(tau, fb)

    items = {
        "step": lambda: bare.step(bare.state),
        "closure": lambda: closure.tendencies(coupled.state),
        "kernels": kernels,
        "network": lambda: closure.network(uc, vc, bc),
    }
    times = {k: [] for k in items}
    for _ in range(args.repeats):
        for name, fn in items.items():
            times[name].append(_per_call(fn, args.calls))
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"channel {args.nx} x {args.ny} x {coupled.n_levels} levels, network grid {args.ny + 1} x {args.nx}, "
          f"median of {args.repeats} interleaved blocks of {args.calls} calls")
    for name in items:
        share = "" if name == "step" else f"   {100 * med[name] / med['step']:5.1f} % of a bare step"
        print(f"  {name:8s} {1e3 * med[name]:8.3f} ms{share}")


if __name__ == "__main__":
    main()
