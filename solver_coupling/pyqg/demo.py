"""``roteq demo``: the shipped model online in pyqg, from nothing, in a few minutes on one CPU.

1. Checks the rotation conventions against pyqg's own spectral operators
   (every element of D4, on a spun-up state).
2. Runs a coarse 64^2 "eddy" ensemble with the shipped parameterization and an
   unparameterized ensemble from the same seeded initial conditions
   (:func:`solver_coupling.pyqg.rollout.rollout`).
3. Scores both against the coarse-grained high-resolution truth that ships with
   the model (``trained_models/<model>/reference.nc``, written by
   ``roteq evaluate --save-reference``), prints stability and skill, and writes
   the plots.

A demo run is short, so its scores carry more sampling noise than the 10-year
evaluation in the README; they show the machinery and the direction of the
effect, not the headline numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path


from roteq_param import models
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.evaluate import EvaluateConfig, Reference, evaluate, write_results
from solver_coupling.pyqg.rollout import RolloutRequest, rollout
from solver_coupling.pyqg.selfcheck import symmetry_selfcheck

__all__ = ["run_demo"]


def run_demo(model: str, *, years: float, members: int, score_years: float, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    reference_path = models.model_dir(model) / "reference.nc"
    reference = Reference.load(str(reference_path))

    config = get_config("eddy", {"nx": 64}, coarse_nx=64)
    m = config.make_model(log_level=0, tmax=200 * 3600.0)
    m.run()
    worst = symmetry_selfcheck(m, "D4")
    print("1. symmetry conventions vs pyqg's spectral operators, worst over D4 (round-off ~1e-15):")
    for name, err in worst.items():
        print(f"     {name:10s} {err:.1e}")
    if max(worst.values()) > 1e-12:
        print("error: a symmetry identity is violated", file=sys.stderr)
        return 1

    print(f"2. online rollouts: {members} members x {years:g} years at 64x64, with and without {model!r}")
    common = dict(config=config, members=members, years=years, snapshot_days=5.0, seed=0,
                  checkpoint_years=years, diag_start_years=max(0.0, years - score_years))
    param = rollout(RolloutRequest(model=model, **common), out / "parameterized", overwrite=True)
    base = rollout(RolloutRequest(model=None, **common), out / "unparameterized", overwrite=True)

    print(f"3. skill over the last {score_years:g} years against the shipped high-res reference")
    table, figures, _ = evaluate(reference, base, {model: param}, EvaluateConfig(last_years=score_years))
    print(table.format())
    write_results(out, table, figures, dpi=100)
    stable = int(members - param["failed"].sum())
    summary = table.summary(model)
    print(f"\nsummary: {stable}/{members} parameterized members stable for {years:g} years; "
          f"similarity mean {summary['mean']:.2f}, min {summary['min']:.2f} "
          f"(1 = high-res statistics, 0 = no better than no parameterization)")
    print(f"plots and tables in {out}/")
    return 0 if stable == members else 1
