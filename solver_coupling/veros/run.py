"""Run the beta-plane channel with or without the closure and record its statistics (docs/veros.md).

``python -m solver_coupling.veros.run --years 5 --closure none --out runs/veros/none.json`` runs;
``python -m solver_coupling.veros.run --summarize runs/veros/*.json --from-day 720`` prints a table.

Every ``--sample-days`` the run records, per network layer (level group, top first): the eddy
kinetic energy (deviations from the zonal mean) [m^2 s^-2], the wet-mean zonal velocity U [m s^-1],
and the buoyancy structure as the interface variable's meridional contrast
``b_north - b_south`` [m^2 s^-1] of the zonal-mean state (``b = (p_1 - p_2) / f0``, docs/veros.md)
and the top-minus-bottom temperature [K]. If the run stops (a non-finite state or closure output),
the record says when and why. The JSON is written atomically after every sample, so a long run can
be watched while it goes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from roteq_param.atomic import atomic_write_bytes
from solver_coupling.veros.channel import CHANNEL_DEFAULTS, ChannelSetup
from solver_coupling.veros.closure import VerosClosure
from solver_coupling.veros.convention import LevelGroups, hydrostatic_pressure

__all__ = ["sample", "main"]


def sample(sim: ChannelSetup, groups: LevelGroups, f0: float) -> dict:
    """The channel's statistics now (see the module docstring)."""
    vs = sim.state.variables
    tau = vs.tau
    mU, mV, mT = (np.asarray(m)[2:-2, 2:-2].astype(bool) for m in (vs.maskU, vs.maskV, vs.maskT))
    u = np.where(mU, np.asarray(vs.u[..., tau])[2:-2, 2:-2], 0.0)
    v = np.where(mV, np.asarray(vs.v[..., tau])[2:-2, 2:-2], 0.0)
    T = np.asarray(vs.temp[..., tau])[2:-2, 2:-2]
    ul, vl = groups.layer_mean(u), groups.layer_mean(v)  # (2, x, y)
    eke = 0.5 * (((ul - ul.mean(axis=1, keepdims=True)) ** 2).mean(axis=(1, 2))
                 + ((vl - vl.mean(axis=1, keepdims=True)) ** 2).mean(axis=(1, 2)))
    # zonal-mean b from the zonal-mean layer pressures, as the closure reads it
    from veros.core.density import linear_eq
    settings = sim.state.settings
    Tm = np.where(mT, T, np.nan)
    zonal_T = np.nanmean(Tm, axis=0)  # (y, z)
    rho = linear_eq.linear_eq_of_state_rho(linear_eq.S0, zonal_T)
    p = hydrostatic_pressure(rho, np.asarray(vs.dzw), float(settings.grav), float(settings.rho_0))
    pl = groups.layer_mean(p[None])[:, 0]  # (2, y)
    b = (pl[0] - pl[1]) / f0
    return {
        "day": float(vs.time) / 86400.0,
        "eke": eke.tolist(),
        "U": ul.mean(axis=(1, 2)).tolist(),
        "b_contrast": float(b[-1] - b[0]),
        "dT_top_bottom": float(np.nanmean(Tm[..., -1]) - np.nanmean(Tm[..., 0])),
        "max_speed": float(max(np.abs(u).max(), np.abs(v).max())),
    }


def summarize(paths, from_day: float, to_day: float = np.inf) -> str:
    """A markdown table of the runs' statistics averaged over the samples from ``from_day`` to ``to_day``."""
    rows = ["| run | status | days averaged | EKE1, EKE2 [m2 s-2] | U1, U2 [m s-1] | b contrast [m2 s-1] "
            "| T top - bottom [K] | max speed [m s-1] |", "|" + " --- |" * 8]
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        s = [x for x in r["samples"] if from_day <= x["day"] <= to_day]
        name = r["closure"] + ("" if r.get("terms", "momentum,buoyancy") == "momentum,buoyancy" else f" ({r['terms']})")
        name += "".join(f", {r[k]}" for k, default in (("injection", "fluxes"), ("inputs", "veros"))
                        if r.get(k, default) != default)
        if r.get("injection") == "balanced" and r.get("grid_damping") is not None:
            name += f", grid damping {r['grid_damping']:g}/s"
        if not s:
            rows.append(f"| {name} | {r['status'][:60]} | none | | | | | |")
            continue
        mean = {k: np.mean([x[k] for x in s], axis=0) for k in ("eke", "U", "b_contrast", "dT_top_bottom")}
        rows.append(f"| {name} | {r['status'][:60]} | {s[0]['day']:.0f}-{s[-1]['day']:.0f} "
                    f"| {mean['eke'][0]:.2e}, {mean['eke'][1]:.2e} | {mean['U'][0]:.4f}, {mean['U'][1]:.4f} "
                    f"| {mean['b_contrast']:.0f} | {mean['dT_top_bottom']:.3f} | {max(x['max_speed'] for x in s):.3f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m solver_coupling.veros.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--closure", default="eddy-c4-dilated-apost2",
                    help="a trained model name or directory, or 'none' for the bare channel")
    ap.add_argument("--terms", default="momentum,buoyancy",
                    help="the closure's tendencies Veros gets: momentum,buoyancy (default), momentum or buoyancy")
    ap.add_argument("--injection", default="fluxes", choices=VerosClosure.INJECTIONS,
                    help="how the closure's tendencies reach Veros: fluxes (as they are) or balanced (QG-balanced, "
                         "docs/veros.md)")
    ap.add_argument("--inputs", default="veros", choices=VerosClosure.INPUTS,
                    help="the network's velocities: veros (Veros's layer means) or geostrophic "
                         "(depth mean + thermal wind of b)")
    ap.add_argument("--grid-damping", type=float, default=None,
                    help="with --injection balanced: the vorticity damping rate at the grid scale [1/s] added to S "
                         "(default: the model's own grid_damping)")
    ap.add_argument("--years", type=float, default=5.0, help="run length in 360-day years")
    ap.add_argument("--sample-days", type=float, default=30.0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help=f"a channel parameter (known: {', '.join(sorted(CHANNEL_DEFAULTS))})")
    ap.add_argument("--out", help="JSON record to write")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print a table of finished records instead of running")
    ap.add_argument("--from-day", type=float, default=720.0, help="with --summarize: average from this model day")
    ap.add_argument("--to-day", type=float, default=np.inf, help="with --summarize: ... to this model day")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize, args.from_day, args.to_day))
        return 0
    if not args.out:
        ap.error("--out is required to run")
    params = {}
    for item in args.set:
        name, _, value = item.partition("=")
        params[name] = float(value)
    from veros import logs
    logs.setup_logging(loglevel="warning")
    closure = None if args.closure == "none" else VerosClosure(args.closure, terms=args.terms.split(","),
                                                               injection=args.injection, inputs=args.inputs,
                                                               grid_damping=args.grid_damping)
    sim = ChannelSetup(closure, years=args.years, **params)
    sim.setup()
    vs, s = sim.state.variables, sim.state.settings
    groups = LevelGroups.split(np.asarray(vs.dzt), (sim.p["H1"],))
    cor = np.asarray(vs.coriolis_t)[2:-2, 2:-2]
    f0 = float(cor.mean())
    record = {"closure": args.closure, "terms": args.terms, "injection": args.injection, "inputs": args.inputs,
              "grid_damping": None if closure is None else closure.grid_damping,
              "years": args.years, "params": sim.p, "samples": [], "status": "running"}
    n_steps = int(round(s.runlen / s.dt_tracer))
    every = max(1, int(round(args.sample_days * 86400.0 / s.dt_tracer)))
    t0 = time.perf_counter()

    def write():
        record["wall_s"] = time.perf_counter() - t0
        atomic_write_bytes(args.out, json.dumps(record, indent=1).encode())

    try:
        for n in range(n_steps):
            sim.step(sim.state)
            if (n + 1) % every == 0:
                record["samples"].append(sample(sim, groups, f0))
                write()
        record["status"] = "finished"
    except Exception as err:  # the record must say why a run stopped, whatever stopped it
        record["status"] = f"stopped at day {float(vs.time) / 86400.0:.2f}: {type(err).__name__}: {err}"
    write()
    print(record["status"])
    return 0 if record["status"] == "finished" else 1


if __name__ == "__main__":
    raise SystemExit(main())
