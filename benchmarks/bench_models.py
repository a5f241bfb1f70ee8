"""Inference cost of flux networks vs a bare pyqg 64^2 step (not a test; docs/design.md §6 budget).

Run: ``.venv/bin/python benchmarks/bench_models.py [--repeats 200] [--quick] [--only TEXT]``

For each architecture it times one call on one two-layer 64^2 state (batch 1, float32) with 1
and 2 torch threads, in several plain-torch forms of the same exported weights:

* ``exported``: :class:`roteq_param.models.ExportedFluxNet` (eager; circular pad + conv2d,
  constant vectors folded into a bias, normalisation folded into the weights);
* ``trace+freeze``: ``torch.jit.freeze(torch.jit.trace(exported))``;
* ``opt4inf``: ``torch.jit.optimize_for_inference`` of the trace (mkldnn conversion);
* ``predictor``: the whole :class:`roteq_param.models.Predictor` path a solver hook uses (named
  numpy float64 arrays in, validated, stacked, evaluated, unstacked, numpy out).

The reference is ``pyqg.QGModel(nx=64, ntd=1, log_level=0)._step_forward()`` after warm-up,
timed in the same process just before and after (the table uses the mean of the two). All
times are best-of-5 means, so a shared machine inflates them less.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from roteq_param.fields import qg_schema
from roteq_param.models import Predictor, build_model

ARCHS = [
    ("escnn C4 [8] k3", dict(group="C4", channels=(8,), kernel_sizes=(3,))),
    ("escnn C4 [16] k3", dict(group="C4", channels=(16,), kernel_sizes=(3,))),
    ("escnn C4 [16,16] k3,1 (default)", dict(group="C4", channels=(16, 16), kernel_sizes=(3, 1))),
    ("escnn C8 [16,16] k3,1", dict(group="C8", channels=(16, 16), kernel_sizes=(3, 1))),
    ("escnn D4 [16,16] k3,1", dict(group="D4", channels=(16, 16), kernel_sizes=(3, 1))),
    ("escnn C4 [32,32] k3,1", dict(group="C4", channels=(32, 32), kernel_sizes=(3, 1))),
    ("escnn C4 [32,32,32] k3,3,1", dict(group="C4", channels=(32, 32, 32), kernel_sizes=(3, 3, 1))),
    ("cnn [16,16] k3,1 (baseline)", dict(arch="cnn", channels=(16, 16), kernel_sizes=(3, 1))),
    # the shipped default's layers, and the capacity variants of scripts/arch_pilot.sh
    ("escnn C4 [32]x3 k5,3,3 d1,2,4 (shipped default)",
     dict(group="C4", channels=(32,) * 3, kernel_sizes=(5, 3, 3), dilations=(1, 2, 4))),
    ("escnn C4 [64]x3 k5,3,3 d1,2,4 (wide64)",
     dict(group="C4", channels=(64,) * 3, kernel_sizes=(5, 3, 3), dilations=(1, 2, 4))),
    ("escnn C4 [32]x6 k5,3.. d1,2,4,1,2,4 (deep6)",
     dict(group="C4", channels=(32,) * 6, kernel_sizes=(5,) + (3,) * 5, dilations=(1, 2, 4) * 2)),
    ("escnn C4 [32]x9 k5,3.. d1,2,4,.. (deep9)",
     dict(group="C4", channels=(32,) * 9, kernel_sizes=(5,) + (3,) * 8, dilations=(1, 2, 4) * 3)),
]
QUICK = {"escnn C4 [16,16] k3,1 (default)", "cnn [16,16] k3,1 (baseline)"}


def best_time(f, repeats: int) -> float:
    """Best-of-5 mean seconds per call after 20 warm-up calls."""
    for _ in range(20):
        f()
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(repeats):
            f()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return best


def bare_step(repeats: int) -> float:
    import pyqg

    m = pyqg.QGModel(nx=64, ntd=1, log_level=0)
    for _ in range(100):
        m._step_forward()
    return best_time(m._step_forward, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="only the default and the baseline")
    ap.add_argument("--only", default="", help="only architectures whose label contains this text")
    args = ap.parse_args()

    schema = qg_schema(2)
    rng = np.random.default_rng(0)
    arrays = {f.name: rng.standard_normal((f.n_components,) if not f.gridded else
                                          ((f.n_components,) if f.n_components > 1 else ()) + (64, 64))
              for f in schema.inputs}
    x = schema.stack({k: torch.as_tensor(v, dtype=torch.float32) for k, v in arrays.items()})[None]

    torch.set_num_threads(1)
    bare_before = bare_step(args.repeats)
    rows = []
    for label, cfg in ARCHS:
        if (args.quick and label not in QUICK) or args.only not in label:
            continue
        torch.manual_seed(0)
        model = build_model(**cfg).eval()
        exported = model.export()
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(exported, x))
            opt = torch.jit.optimize_for_inference(torch.jit.trace(exported, x))
            ref = exported(x)
            assert float((traced(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
        predictor = Predictor(exported)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # two threads on a busy 2-core machine can take ~10 ms a call (OpenMP barriers wait for a
            # descheduled thread): fewer repeats keep the benchmark short
            n = args.repeats if threads == 1 else max(10, args.repeats // 10)
            with torch.no_grad():
                t = {"exported": best_time(lambda: exported(x), n),
                     "trace+freeze": best_time(lambda: traced(x), n),
                     "opt4inf": best_time(lambda: opt(x), n),
                     "predictor": best_time(lambda: predictor(arrays), n)}
            rows.append((label, model.n_parameters(), threads, t))
            print(f"{label}, {threads} thread(s): " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.items()),
                  flush=True)
    torch.set_num_threads(1)
    bare_after = bare_step(args.repeats)
    bare = 0.5 * (bare_before + bare_after)

    print(f"\nbare pyqg 64^2 step (ntd=1): {bare * 1e3:.3f} ms (before {bare_before * 1e3:.3f}, after "
          f"{bare_after * 1e3:.3f})\n")
    cols = ["exported", "trace+freeze", "opt4inf", "predictor"]
    print("| architecture | params | threads | " + " | ".join(f"{c} ms (x bare)" for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for label, n, threads, t in rows:
        cells = " | ".join(f"{t[c] * 1e3:.3f} ({t[c] / bare:.2f}x)" for c in cols)
        print(f"| {label} | {n} | {threads} | {cells} |")


if __name__ == "__main__":
    main()
