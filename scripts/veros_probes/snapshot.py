"""Veros blow-up probe: run DAYS with the balanced closure (grid damping GD, default 0) and save the layer state,
the raw and balanced tendencies and S to OUT.npz: python scripts/veros_probes/snapshot.py DAYS OUT [INJECTION [GD]]."""
# run DAYS with the balanced closure and save layer-mean u, v, b and the closure's du, S at the end
import sys, numpy as np
from veros import logs
logs.setup_logging(loglevel="warning")
from solver_coupling.veros.channel import ChannelSetup
from solver_coupling.veros.closure import VerosClosure
days = float(sys.argv[1]); out = sys.argv[2]; inj = sys.argv[3] if len(sys.argv) > 3 else "balanced"
gd = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
cl = VerosClosure("eddy-c4-dilated-apost2", injection=inj, grid_damping=gd)
sim = ChannelSetup(cl, years=1, nx=32, ny=32, dt=1800.0); sim.setup()
for i in range(int(days * 48)):
    sim.step(sim.state)
cg = cl.read_state(sim.state)
raw = cl.adapter(cg.u, cg.v, cg.b)
d = dict(u=cg.u, v=cg.v, b=cg.b, U=cg.U, du=raw.du, dv=raw.dv, db=raw.db)
if cl.balance is not None:
    d["S"] = cl.balance.pv_forcing(raw.du, raw.dv, raw.db)
    bu, bv, bb, dpsi = cl.balance(raw.du, raw.dv, raw.db); d.update(bu=bu, bv=bv, bb=bb, dpsi=dpsi)
T = np.asarray(sim.state.variables.temp[2:-2, 2:-2, :, sim.state.variables.tau]); d["T"] = T
np.savez(out, **d)
