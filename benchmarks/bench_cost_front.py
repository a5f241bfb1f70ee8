"""The cost column of the cost front (docs/results.md, "The cost front"): seconds per step of every
closure in the skill table, as ratios to a bare 64^2 step, measured interleaved in one process.

Closures are given as ``LABEL=MODEL[:K]`` (as in ``scripts/cost_front.sh``): MODEL a flux network
(at call interval K), an operator closure (``roteq train-operator``), ``backscatter`` or
``smagorinsky``. Each model steps its own spun-up eddy 64^2 pyqg model; blocks of ``--steps`` steps
of every case alternate ``--repeats`` times and the median block is kept, so a load that comes and
goes hits every case alike. ``--threads T`` gives torch T threads and pyqg's FFTW T threads (``ntd``),
to compare a closure with T threads against pyqg with T threads.

    python benchmarks/bench_cost_front.py backscatter=backscatter default=eddy-c4-dilated-apost2 \\
        default-k8=eddy-c4-dilated-apost2:8 operator=eddy-operator --repeats 7
"""

from __future__ import annotations

import argparse
import json

import torch

from solver_coupling.pyqg.baselines import BASELINES, pyqg_baseline
from solver_coupling.pyqg.bench import interleaved, spun_up
from solver_coupling.pyqg.operator_plugin import OperatorParameterization
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.torchqg.operator_family import is_operator


def closure_for(spec: str):
    """The pyqg parameterization of ``MODEL[:K]``."""
    model, _, k = spec.partition(":")
    if model in BASELINES:
        return pyqg_baseline(model)
    if is_operator(model):
        return OperatorParameterization(model)
    return RotEqParameterization(model, call_interval=int(k or 1))


def measure(closures: dict[str, str], *, steps: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    models = {"bare 64²": spun_up(64, steps=100, threads=threads),
              "bare 256²": spun_up(256, steps=10, threads=threads)}
    models.update({label: spun_up(64, closure_for(spec), steps=100, threads=threads)
                   for label, spec in closures.items()})
    t = interleaved({name: m._step_forward for name, m in models.items()}, steps, repeats)
    return {"threads": threads, "steps": steps, "repeats": repeats, "closures": closures, "seconds_per_step": t,
            "ratio_to_bare_64": {k: v / t["bare 64²"] for k, v in t.items()},
            "bare_256_over_step": {k: t["bare 256²"] / v for k, v in t.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("closures", nargs="+", metavar="LABEL=MODEL[:K]")
    ap.add_argument("--steps", type=int, default=100, help="steps per block")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved blocks per case (the median is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads and pyqg FFTW threads")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    closures = dict(item.split("=", 1) for item in a.closures)
    r = measure(closures, steps=a.steps, repeats=a.repeats, threads=a.threads)
    print(f"| step ({a.threads} thread{'s' if a.threads > 1 else ''}) | ms | × bare 64² | bare 256² ÷ this |")
    print("|---|---|---|---|")
    for k, v in r["seconds_per_step"].items():
        print(f"| {k} | {1e3 * v:.3f} | {r['ratio_to_bare_64'][k]:.2f} | {r['bare_256_over_step'][k]:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return r


if __name__ == "__main__":
    main()
