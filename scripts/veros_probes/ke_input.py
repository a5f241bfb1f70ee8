"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): the closure's KE and QG APE input against the layer KE."""
# wraps vbal.py: every 12 closure calls prints the closure's KE input rate per layer (wet mean u.du + v.dv)
# against the layer KE, and the row (0 = south wall) of the largest |du|, |u|
import sys, runpy, numpy as np
from solver_coupling.veros import closure as C
orig = C.VerosClosure.tendencies
n = [0]
def patched(self, state):
    out = orig(self, state)
    n[0] += 1
    if n[0] % 24 == 0:
        cg = self.read_state(state)
        from solver_coupling.veros.convention import faces_to_left
        du, dv = faces_to_left(np.moveaxis(self.groups.layer_mean(np.asarray(out.u_source)), 0, -1),
                               np.moveaxis(self.groups.layer_mean(np.asarray(out.v_source)), 0, -1), self.nx, self.ny)
        P = (cg.u * du + cg.v * dv).mean(axis=(1, 2)); K = 0.5 * (cg.u**2 + cg.v**2).mean(axis=(1, 2))
        H = self.groups.thickness; w = H / H.sum()
        F1 = self.balance.F[0]  # needs injection=balanced
        from solver_coupling.veros.convention import centres_to_veros
        dT = self.groups.layer_mean(np.asarray(out.temp_source))  # (2, x, y)
        dbl = np.zeros((2, self.ny + 1, self.nx)); dbl[:, :self.ny] = np.moveaxis(dT[:, 2:-2, 2:-2], 1, 2) / self.temp_per_b
        db = dbl[0]  # balanced: the same on both layers
        m = self.mask
        KEin = (w * P).sum(); KE = (w * K).sum()
        APE = 0.5 * w[0] * F1 * (cg.b[m]**2).mean()
        eAPEin = w[0] * F1 * (cg.b[m] * db[m]).mean()
        bg = -(cg.U[0] - cg.U[1]) * self.y_anomaly
        mAPEin = w[0] * F1 * (bg[m] * db[m]).mean()
        print(f"  E: KE {KE:.2e} eddy APE {APE:.2e}  per day: closure KE in {KEin*86400:.2e}, eddy APE in {eAPEin*86400:.2e}, mean APE in {mAPEin*86400:.2e}; U1-U2 {cg.U[0]-cg.U[1]:.4f}", flush=True)
        ju = [int(np.unravel_index(np.abs(cg.u[i]).argmax(), cg.u[i].shape)[0]) for i in range(2)]
        jd = [int(np.unravel_index(np.abs(du[i]).argmax(), du[i].shape)[0]) for i in range(2)]
        print(f"  call {n[0]}: KE {K.round(5)} closure dKE/dt*1day/KE {(P*86400/K).round(3)} row max|u| {ju} row max|du| {jd}", flush=True)
    return out
C.VerosClosure.tendencies = patched
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
