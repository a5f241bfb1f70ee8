"""Veros blow-up probe (wrapper of run_days.py, docs/veros.md): STRAT: a stably stratified lower layer in the channel."""
# STRAT=x: the lower layer's levels stably stratified, x K per level (k = 0 the bottom), in the relaxation target and the initial state
import os, sys, runpy, numpy as np
from solver_coupling.veros import channel as CH
x = float(os.environ.get("STRAT", "0"))
orig = CH.ChannelSetup.target_temperature
def target(self, yt):
    T = orig(self, yt)
    n_upper = int(round(self.p["H1"] / self.p["dz"]))
    nl = T.shape[1] - n_upper
    T[:, :nl] += x * np.arange(nl)[None, :]
    return T
CH.ChannelSetup.target_temperature = target
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
