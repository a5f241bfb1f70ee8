"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): PYQGF: pyqg's exponential filter as a PV tendency."""
# PYQGF=1: pyqg's exponential filter as a PV tendency in the balanced injection: the PV of Veros's layer flow
# (corner vorticity -/+ F b) loses, every Veros step, the fraction 1 - filtr^(dt/3600) of each sine-Fourier mode,
# filtr = exp(-23.6 (wvx - 0.65 pi)^4) for wvx = |(k dx, l dy)| > 0.65 pi (pyqg, dt = 3600 s in training)
import os, sys, runpy, numpy as np
from solver_coupling.veros import closure as C
from solver_coupling.cgrid import balanced as B
fac = float(os.environ.get("PYQGF", "1"))
orig = C.VerosClosure.tendencies
def tend(self, state):
    self._cg = self.read_state(state)
    if self.balance is not None and not hasattr(self, "_pf"):
        bal, ny, nx = self.balance, self.ny, self.nx
        ly = np.pi * np.arange(2 * ny) / ny            # l dy of the 2ny-periodic odd extension (sine modes m: pi m / ny)
        ly = np.minimum(ly, 2 * np.pi - ly)
        kx = np.abs(2 * np.pi * np.fft.fftfreq(nx))
        wvx = np.sqrt(ly[:, None] ** 2 + kx[None, :] ** 2)
        r = np.where(wvx > 0.65 * np.pi, 23.6 * (wvx - 0.65 * np.pi) ** 4, 0.0) / 3600.0 * fac
        dt = float(state.settings.dt_mom)
        self._pf = (1.0 - np.exp(-r * dt)) / dt       # per-step fraction, as a rate (stable for any r)
        origS = bal.pv_forcing
        cl = self
        def pv(du, dv, db):
            S = origS(du, dv, db)
            cg = cl._cg
            zeta = bal.curl(cg.u, cg.v)
            bz = bal.centres_to_corners(cg.b[None])[0]
            q = zeta + np.array([-bal.F[0], bal.F[1]])[:, None, None] * bz
            ext = np.zeros((2, 2 * ny, nx)); ext[:, 1:ny] = q[:, 1:ny]; ext[:, ny + 1:] = -q[:, ny - 1:0:-1]
            Sf = -np.fft.ifft2(cl._pf * np.fft.fft2(ext)).real[:, : ny + 1]
            Sf[:, 0] = Sf[:, ny] = 0.0
            return S + Sf
        bal.pv_forcing = pv
    return orig(self, state)
C.VerosClosure.tendencies = tend
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
