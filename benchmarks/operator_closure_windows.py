"""Train the operator closure through the twin on coarse-grained truth windows and score it on held-out ones.

Reads a dataset with trajectory windows (``roteq generate --window-steps N``), fits an
:class:`OperatorClosure` with :func:`train_operator_closure` on all runs but the last, and prints the
held-out trajectory loss (the ``train-online`` loss: resolved-band PV error / truth power, mean over
steps, windows and layers) for no closure, the twin's BackscatterBiharmonic and the trained operator
closure, at every unroll length. It then runs each closure for ``--years`` from the first held-out
window's state and reports whether the run stays finite and its final mean q^2 relative to the
truth's over that run's windows (a stability smoke test, not the online similarity score).

    .venv/bin/python benchmarks/operator_closure_windows.py DATASET [--unroll 4 8 16] [--iterations 40]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from solver_coupling.torchqg import TorchQGModel
from solver_coupling.torchqg.closures import BackscatterBiharmonic
from solver_coupling.torchqg.online_training import load_windows
from solver_coupling.torchqg.operator_closure import OperatorClosure, closure_window_loss, train_operator_closure

HOURS_PER_YEAR = 360 * 24


def held_out_losses(windows, closures: dict, n: int) -> dict[str, float]:
    R, W = windows.q.shape[:2]
    runs, starts = torch.full((W,), R - 1), torch.arange(W)
    with torch.no_grad():
        return {name: float(closure_window_loss(c, windows, runs, starts, n)) for name, c in closures.items()}


def energy_after(windows, closure, years: float) -> tuple[bool, float]:
    """Run the twin with ``closure`` for ``years`` from the held-out run's first window; (finite, mean q^2)."""
    twin = TorchQGModel(1, dtype=torch.float64, parameterization=closure, **windows.twin_kwargs)
    twin.q = windows.q[-1, 0, 0][None].to(torch.float64)
    steps = int(round(years * HOURS_PER_YEAR * 3600.0 / twin.dt))
    with torch.no_grad():
        twin.step(steps)
    finite = bool(torch.isfinite(twin.q).all())
    return finite, float(twin.q.pow(2).mean()) if finite else float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("--unroll", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--iterations", type=int, default=40, help="L-BFGS evaluations per stage")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--radius-cells", type=float, default=3.0)
    p.add_argument("--n-basis", type=int, default=7)
    p.add_argument("--years", type=float, default=1.0, help="length of the stability run (years of 360 days)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    windows = load_windows(a.dataset)
    kw = windows.twin_kwargs
    closure = OperatorClosure(float(kw["L"]), int(kw["nx"]), radius_cells=a.radius_cells, n_basis=a.n_basis)
    history = train_operator_closure(closure, windows, unroll=tuple(a.unroll), iterations=a.iterations,
                                     batch=a.batch, val_runs=1)
    rows = {n: held_out_losses(windows, {"none": None, "backscatter": BackscatterBiharmonic(),
                                         "operator": closure}, n) for n in a.unroll}
    print("held-out trajectory loss (resolved band), last run of", a.dataset)
    print("| unroll | no closure | backscatter | operator closure |\n|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['none']:.4e} | {r['backscatter']:.4e} | {r['operator']:.4e} |")
    stability = {name: energy_after(windows, c, a.years)
                 for name, c in (("none", None), ("backscatter", BackscatterBiharmonic()), ("operator", closure))}
    # The truth's level: mean q^2 over the held-out run's window starts (the year the runs cover).
    truth = float(windows.q[-1, :, 0].to(torch.float64).pow(2).mean())
    for name, (finite, e) in stability.items():
        print(f"{a.years:g}-year run, {name}: finite {finite}, final mean q^2 / the truth's {e / truth:.3f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    result = {"history": history, "held_out": rows, "stability": stability, "closure": closure.config()}
    print(json.dumps(result["history"]))
    return result


if __name__ == "__main__":
    main()
