"""Probe of the coupled blow-up (docs/veros.md, "Measured run"): run the 32 x 32 channel with a closure for DAYS
and print the daily maximum speed per Veros level (k = 0 the bottom), or the day and reason it stopped.

    python scripts/veros_probes/run_days.py DAYS MODEL [c.NAME=VALUE ...] [CHANNEL_PARAM=VALUE ...]

``c.NAME=VALUE`` are VerosClosure options (c.injection=balanced, c.inputs=geostrophic, c.grid_damping=1e-4,
c.terms=momentum); the rest are ChannelSetup parameters (dt=900, A_hbi=1e10, r_bot=...). MODEL 'none' runs the bare
channel. The other scripts of this folder wrap it (``python scripts/veros_probes/WRAPPER.py
scripts/veros_probes/run_days.py DAYS MODEL ...``), each changing one thing, named in its docstring.
"""
import sys, time, numpy as np
from veros import logs
from solver_coupling.veros.channel import ChannelSetup
from solver_coupling.veros.closure import VerosClosure
logs.setup_logging(loglevel="warning")
days = float(sys.argv[1]); model = sys.argv[2]; params = dict(nx=32, ny=32, dt=1800.0)
for a in sys.argv[3:]:
    k, v = a.split("="); params[k] = (v.split(",") if k == "c.terms" else v) if k.startswith("c.") else float(v)
ckw = {k[2:]: params.pop(k) for k in list(params) if k.startswith("c.")}
cl = None if model == "none" else VerosClosure(model, **ckw)
sim = ChannelSetup(cl, years=days/360, **params); sim.setup()
vs = sim.state.variables; s = sim.state.settings
n = int(round(days*86400/s.dt_tracer)); per_day = int(round(86400/s.dt_tracer)); t0=time.time()
try:
    for i in range(n):
        sim.step(sim.state)
        if (i+1) % per_day == 0:
            u = np.asarray(vs.u[2:-2,2:-2,:,vs.tau]); v = np.asarray(vs.v[2:-2,2:-2,:,vs.tau])
            print(f"day {(i+1)/per_day:.0f} max|u| by level {np.abs(u).max(axis=(0,1)).round(3)} max|v| {np.abs(v).max():.3f}", flush=True)
    print("FINISHED", days, time.time()-t0)
except Exception as e:
    print("STOPPED", float(vs.time)/86400, type(e).__name__, str(e)[:200])
