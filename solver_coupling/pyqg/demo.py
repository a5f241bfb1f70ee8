"""``roteq demo``: what the shipped model does online in pyqg, in about eight minutes on one core.

1. Checks the rotation conventions against pyqg's own spectral operators (every element of D4,
   on a short run).
2. Runs a coarse 64² "eddy" ensemble with the shipped closure and one without, each from
   states that were spun up in its own configuration for 5 years and ship with the model
   (``trained_models/<model>/demo_states_closure.nc`` and ``demo_states_none.nc``), so the
   whole run is in statistical equilibrium and every snapshot can be scored.
3. Scores both against the coarse-grained high-resolution truth that ships with the model
   (``reference.nc``) and prints the similarity of each diagnostic, its mean and minimum, and
   beside them the figures of the model's 16-member evaluation (its card), with the noise ceiling.
4. Writes the plots to ``--out``: spectra as ratios to the truth on the resolved range, energy
   budget, value distributions, energy time series and snapshots.

The demo's 12 member-years carry sampling noise: its mean moves by about 0.05 from one set of
members to the next (six members x 2 years scored 0.786, four x 3 years 0.741 from the same states),
and sits below the 0.871 that 16 members x 10 years give.

The spun-up states are made by make_demo_states (roteq demo --make-states): by default 3 members
spun up for 5 years from seeded noise, with and without the closure, whose final PV snapshots and
those half a year earlier (float32, s-1) are stored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from roteq_param import models
from roteq_param.atomic import atomic_to_netcdf
from solver_coupling.pyqg.config import get_config
from solver_coupling.pyqg.evaluate import EvaluateConfig, Reference, evaluate, write_results
from solver_coupling.pyqg.rollout import RolloutRequest, rollout
from solver_coupling.pyqg.selfcheck import symmetry_selfcheck

__all__ = ["demo_states_path", "make_demo_states", "run_demo"]

#: the spin-up that made the shipped states: 5 years reach the closure's equilibrium KE (the
#: energy time series of a run from rest levels off after about 1,000 days)
SPINUP_YEARS = 5.0
SPINUP_SEED = 100  # no evaluation or training run uses this seed
STATE_SPACING_DAYS = 180.0  # two states of each spun-up member, this far apart


def demo_states_path(model: str, closure: bool, folder: Path | None = None) -> Path:
    """Where the spun-up states of ``model`` are kept (its folder by default): with its closure, or without."""
    return (folder or models.model_dir(model)) / f"demo_states_{'closure' if closure else 'none'}.nc"


def make_demo_states(model: str, *, members: int = 3, years: float = SPINUP_YEARS, seed: int = SPINUP_SEED,
                     spacing_days: float = STATE_SPACING_DAYS, work: Path = Path("runs/demo_spinup"),
                     folder: Path | None = None, progress: bool | None = None) -> list[Path]:
    """Spin up ``members`` 64² eddy runs for ``years`` (360-day years) with and without ``model``.

    Writes the final PV of each member and its PV ``spacing_days`` before (``2 * members`` states ``q``
    (run, lev, y, x) in s-1, float32 as the rollout stores snapshots) to :func:`demo_states_path` for both sets (in ``folder``, by default the model's own),
    atomically, and returns the two paths.
    ``work`` keeps the rollouts, so a killed spin-up resumes where it stopped.
    """
    snapshot_days = 30.0
    if spacing_days % snapshot_days or not 0 < spacing_days < years * 360:
        raise ValueError(f"spacing_days must be a positive multiple of {snapshot_days:g} days, shorter than the "
                         f"spin-up ({years * 360:g} days); got {spacing_days:g}")
    config = get_config("eddy", {"nx": 64}, coarse_nx=64)
    written = []
    for closure in (True, False):
        out = work / ("closure" if closure else "none")
        req = RolloutRequest(config=config, model=model if closure else None, members=members, years=years,
                             snapshot_days=snapshot_days, seed=seed, diag_start_years=max(0.0, years - 1.0))
        resume = (out / "checkpoint.npz").exists()
        ds = rollout(req, out, resume=resume, overwrite=not resume, progress=progress)
        if bool(ds["failed"].any()):
            raise RuntimeError(f"a spin-up member of {out} was stopped by the monitor: {ds['failure_reason'].values}")
        # each member gives two states half a year apart (eddies decorrelate within weeks), so a
        # demo can start more members than were spun up
        apart = int(round(spacing_days / snapshot_days))
        q = np.concatenate([ds["q"].values[:, -1], ds["q"].values[:, -1 - apart]])
        states = xr.Dataset(
            {"q": (("run", "lev", "y", "x"), q.astype(np.float32),
                   {"units": "s-1", "long_name": "potential vorticity anomaly"})},
            attrs={"title": "roteq-param demo: spun-up coarse states",
                   "made_by": f"roteq demo --make-states --model {model} (solver_coupling.pyqg.demo.make_demo_states)",
                   "spinup": f"{years:g} years of 360 days from seeded noise, seed {seed}, "
                             f"{'with ' + model if closure else 'without a closure'}",
                   "config": config.to_json()})
        path = demo_states_path(model, closure, folder)
        atomic_to_netcdf(states, path)
        written.append(path)
    return written


def _published(card: dict[str, Any]) -> str:
    """The model's multi-member evaluation as its card records it, or a pointer to the Results page."""
    online = card.get("metrics", {}).get("online_evaluation")
    if not online:
        return "this model's card records no multi-member evaluation (see the Results page of the docs)"
    return (f"its evaluation ({online['members']} members x {online['years']:g} years, {online['where']}): "
            f"mean {online['mean']:.3f}, min {online['min']:.3f}; noise ceiling {online['ceiling_mean']:.3f} / "
            f"{online['ceiling_min']:.3f}; pyqg backscatter {online['backscatter_mean']:.3f}")


def run_demo(model: str, *, years: float, members: int, out: Path) -> int:
    """Run the demo (module docstring); returns the exit status (0 when every member stayed stable)."""
    states = {closure: demo_states_path(model, closure) for closure in (True, False)}
    missing = [str(p) for p in states.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no spun-up states {', '.join(missing)}: make them once with "
                                f"`roteq demo --make-states --model {model}` (about 15 minutes on one core)")
    reference = Reference.load(str(models.model_dir(model) / "reference.nc"))
    out.mkdir(parents=True, exist_ok=True)

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

    print(f"2. online: {members} members x {years:g} years at 64x64 from spun-up states, with and without "
          f"{model!r}")
    common = dict(config=config, members=members, years=years, snapshot_days=1.0, checkpoint_years=years,
                  diag_start_years=0.0)
    param = rollout(RolloutRequest(model=model, initial_states=str(states[True]), **common), out / "closure",
                    overwrite=True)
    base = rollout(RolloutRequest(model=None, initial_states=str(states[False]), **common), out / "none",
                   overwrite=True)

    print(f"3. skill over all {years:g} years against the truth reference shipped with the model")
    table, figures, _ = evaluate(reference, base, {model: param}, EvaluateConfig(last_years=years))
    print(table.format())
    write_results(out, table, figures, dpi=100)
    stable = int(members - param["failed"].sum())
    summary = table.summary(model)
    print(f"\nsummary: {stable}/{members} members with the closure stable for {years:g} years; "
          f"similarity mean {summary['mean']:.3f}, min {summary['min']:.3f} "
          f"(1 = high-res statistics, 0 = no better than no closure)")
    print(f"compare: {_published(models.load_card(model))}")
    print(f"plots in {out}/ (spectra.png: the spectra as ratios to the truth on the resolved scales)")
    return 0 if stable == members else 1
