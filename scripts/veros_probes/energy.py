"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): Veros's own KE and PE and the closure's work every EVERY closure calls."""
# every 12 h: Veros's own KE (all levels, full u, v), PE = sum g rho z / rho0 (relative to start), closure work on all levels
import sys, runpy, numpy as np
from solver_coupling.veros import closure as CL
orig = CL.VerosClosure.tendencies
state0 = {}
n = [0]
def hook(self, state):
    out = orig(self, state)
    vs = state.variables
    n[0] += 1
    if n[0] % int(__import__("os").environ.get("EVERY", "24")) != 1:
        return out
    tau = vs.tau
    mU, mV, mT = (np.asarray(m)[2:-2, 2:-2] for m in (vs.maskU, vs.maskV, vs.maskT))
    u = np.asarray(vs.u[2:-2, 2:-2, :, tau]) * mU; v = np.asarray(vs.v[2:-2, 2:-2, :, tau]) * mV
    dz = np.asarray(vs.dzt); zt = np.asarray(vs.zt)
    KE = 0.5 * ((u**2 + v**2) * dz).sum() / (dz.sum() * u.shape[0] * u.shape[1])
    from veros.core.density import linear_eq
    rho = linear_eq.linear_eq_of_state_rho(35.0, np.asarray(vs.temp[2:-2, 2:-2, :, tau])) * mT
    PE = 9.81 / 1024 * (rho * zt * dz).sum() / (dz.sum() * u.shape[0] * u.shape[1])
    W = ((u * np.asarray(out.u_source)[2:-2, 2:-2] + v * np.asarray(out.v_source)[2:-2, 2:-2]) * dz).sum() / (dz.sum() * u.shape[0] * u.shape[1])
    Q = 9.81 / 1024 * (-linear_eq.betaT * 1024 * np.asarray(out.temp_source)[2:-2, 2:-2] * mT * zt * dz).sum() / (dz.sum() * u.shape[0] * u.shape[1])
    w = np.abs(np.asarray(vs.w[2:-2, 2:-2, :, tau])).max()
    state0.setdefault("PE", PE)
    print(f"  t {float(vs.time)/86400:5.2f} d: KE {KE:.3e}  PE-PE0 {PE - state0['PE']:+.3e}  per day: work of u_source {W*86400:+.2e}, PE from temp_source {Q*86400:+.2e}; max|w| {w:.2e}", flush=True)
    return out
CL.VerosClosure.tendencies = hook
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
