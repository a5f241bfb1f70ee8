"""Offline energy budget of closures on coarse-grained truth states (not a test).

For every ``EVERY``-th snapshot of one run of a dataset written by ``roteq generate``, the rate at
which a forcing drains total energy, ``D = sum_i H_i/H <psi_i S_i>`` (positive: it removes energy;
:meth:`roteq_param.forcing.PVForcing.energy_drain`), for

* the truth's subgrid forcing ``S_flux``;
* each shipped network's forcing alone (no closure terms) and its offline S R^2 with and without the
  calibrated energy backscatter of ``--energy-backscatter auto``;
* pyqg's ``BackscatterBiharmonic(sqrt(0.007), 1.2)`` (Ross et al.'s tuning);
* pyqg's own exponential filter, as the rate ``(filtr - 1) q^ / dt`` it applies to the same states.

Run: ``.venv/bin/python benchmarks/energy_budget_offline.py data/eddy_truth8_seed1.nc [RUN] [EVERY]``
"""

import sys

import numpy as np
import pyqg
import torch
import xarray as xr

from roteq_param import fields, models
from roteq_param.fluxform import Stratification
from roteq_param.forcing import PVForcing
from roteq_param.models import ModelConfig
from roteq_param.models.net import FluxNet
from roteq_param.train.calibrate import calibrate_energy_backscatter


def r2(pred: np.ndarray, true: np.ndarray) -> list[float]:
    return [float(1 - ((pred[:, i] - true[:, i]) ** 2).sum() / ((true[:, i] - true[:, i].mean()) ** 2).sum())
            for i in range(2)]


def main(path: str, run: int = 0, every: int = 4) -> None:
    torch.set_num_threads(1)
    with xr.open_dataset(path) as whole:  # read and closed: calibration opens the file again
        ds = whole.isel(run=run, time=slice(0, None, every)).load()
    F1, F2 = float(ds.attrs["F1"]), float(ds.attrs["F2"])
    u, v, b, q, S = (ds[k].values.astype(np.float64) for k in ("u", "v", "b", "q", "S_flux"))
    T = u.shape[0]
    beta = np.broadcast_to(ds["beta_vec"].values.astype(np.float64), (T, 2))
    U = np.broadcast_to(ds["U_vec"].values.astype(np.float64), (T, 2, 2))
    state = fields.qg_inputs(u, v, b, beta, U)
    m = pyqg.QGModel(nx=u.shape[-1], log_level=0)  # eddy defaults: the dataset's coarse model
    probe = PVForcing(models.Predictor(models.DEFAULT_MODEL, dtype=torch.float64), strat=Stratification.two_layer(F1, F2), L=m.L, n=m.nx)
    d_truth = float(probe.energy_drain(state, S).mean())
    print(f"{path} run {run}, {T} snapshots; energy drain D (positive: removes energy), relative to the truth's")
    print(f"  truth S_flux                       D = {d_truth:+.3e}   1.00")
    for name in sorted(p.name for p in models.TRAINED_MODELS_DIR.iterdir() if (p / "model.pt").is_file()):
        net = models.load_model(name)
        alone = PVForcing(models.Predictor(net, dtype=torch.float64), strat=Stratification.two_layer(F1, F2), L=m.L, n=m.nx,
                          closure_terms=False)
        S_net = alone(state)
        d = float(alone.energy_drain(state, S_net).mean())
        fraction = calibrate_energy_backscatter(net, path, [run], every=every)["fraction"]
        calibrated = FluxNet(ModelConfig.from_dict({**net.config.to_dict(), "energy_backscatter": fraction}))
        calibrated.load_canonical_state_dict(net.canonical_state_dict())
        S_cal = PVForcing(models.Predictor(calibrated.eval(), dtype=torch.float64), strat=Stratification.two_layer(F1, F2), L=m.L,
                          n=m.nx)(state)
        print(f"  {name + ' (network alone)':34} D = {d:+.3e}  {d / d_truth:+6.2f}   S R^2 "
              f"{np.round(r2(S_net, S), 3)}; with energy_backscatter {fraction:.3f}: {np.round(r2(S_cal, S), 3)}")
    backscatter = pyqg.parameterizations.BackscatterBiharmonic(np.sqrt(0.007), 1.2)
    drains = {"pyqg backscatter (Ross et al.)": [], "pyqg's exponential filter": []}
    for t in range(T):
        m.q = q[t]
        m._invert()
        one = {k: a[t] for k, a in state.items()}
        drains["pyqg backscatter (Ross et al.)"].append(probe.energy_drain(one, backscatter(m)))
        filtered = m.ifft((np.asarray(m.filtr) - 1.0) * m.qh) / m.dt
        drains["pyqg's exponential filter"].append(probe.energy_drain(one, filtered))
    for label, values in drains.items():
        d = float(np.mean(values))
        print(f"  {label:34} D = {d:+.3e}  {d / d_truth:+6.2f}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
