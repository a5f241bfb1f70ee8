"""
The closure in a pyqg script
============================

The shipped closure plugged into an ordinary pyqg ``QGModel`` loop: two 64² runs of 90 days, one with
``RotEqParameterization()`` and one without, each started from a state spun up for five years in its own
configuration (the states ship with the model, so the runs are in equilibrium from the first step).
Their kinetic-energy spectra are compared with the coarse-grained high-resolution truth that ships with
the model, as ratios on the resolved scales, where a closure's effect can be seen.

90 days of one member are a short sample, so the ratios wiggle; ``roteq rollout`` and
``roteq evaluate`` do the same over ensembles and years (see *Rollouts and evaluation*).
"""

import matplotlib.pyplot as plt
import numpy as np
import pyqg
import torch

from roteq_param import diagnostics as dg
from roteq_param import models
from solver_coupling.pyqg.diagnostics import time_mean_spectra
from solver_coupling.pyqg.evaluate import Reference
from solver_coupling.pyqg.demo import demo_states_path
from solver_coupling.pyqg.plugin import RotEqParameterization
from solver_coupling.pyqg.rollout import read_states

torch.set_num_threads(1)  # pyqg steps on one core; more torch threads only wait on each other
DAY = 86400.0
folder = models.model_dir(models.DEFAULT_MODEL)


def run(q0: np.ndarray, parameterization, days: float = 90.0) -> np.ndarray:
    """Run 64² pyqg for ``days`` from ``q0`` and return daily PV snapshots (time, lev, y, x)."""
    m = pyqg.QGModel(nx=64, dt=3600.0, tmax=days * DAY, twrite=10**9, log_level=0,
                     parameterization=parameterization)
    m.q = q0
    return np.array([m.q.copy() for _ in m.run_with_snapshots(tsnapstart=0.0, tsnapint=DAY)])


# the first stored state (lev, y, x) in s-1, spun up with the closure, or without one
q_closure = run(read_states(demo_states_path(models.DEFAULT_MODEL, closure=True))[0], RotEqParameterization())
q_none = run(read_states(demo_states_path(models.DEFAULT_MODEL, closure=False))[0], None)

# %%
# Kinetic-energy spectra as the truth reference defines them (shell-binned, layer-mean KE), on the
# wavenumbers the scores use: below 2/3 of the coarse grid's Nyquist wavenumber.
reference = Reference.load(str(folder / "reference.nc"))
truth = reference.diagnostics.ds
k_r = truth["k_r"].values
k_max = (2 / 3) * np.pi * 64 / 1e6
resolved = (k_r > 0) & (k_r <= k_max)


def ke_spectrum(q: np.ndarray) -> np.ndarray:
    density = time_mean_spectra(q, reference.model_kwargs)["KEspec"]
    return dg.isotropic_spectrum(0.5 * density, 1e6)[1]  # halved: layer-mean (u² + v²)/2


runs = {"with the closure": ke_spectrum(q_closure), "no closure": ke_spectrum(q_none)}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
for lev, ax in enumerate(axes):
    for (label, spectrum), style in zip(runs.items(), ({"color": "tab:red"}, {"color": "0.4", "ls": "--"})):
        ax.plot(k_r[resolved], spectrum[lev, resolved] / truth["spec_KEspec"].values[lev, resolved],
                label=label, **style)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("isotropic wavenumber $k_r$ (rad m$^{-1}$)")
    ax.set_title(f"KE spectrum / truth, layer {lev + 1}")
axes[0].set_ylabel("ratio to the truth (1 = high-res statistics)")
axes[0].legend()
for label, spectrum in runs.items():
    err = np.sqrt(np.mean(np.log(spectrum[:, resolved] / truth["spec_KEspec"].values[:, resolved]) ** 2))
    print(f"{label:17s}: rms log-ratio to the truth's KE spectrum {err:.3f}")
