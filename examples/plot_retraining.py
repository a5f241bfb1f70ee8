"""
Retraining on a tiny run of your own
====================================

The retraining path in miniature, as a user would walk it with their own solver
(*Retraining from your own pyqg output* has the full-size version):

1. run pyqg at high resolution and save snapshots with ``SnapshotWriter``, which records what pyqg's
   own output leaves out (here the upper-layer depth ``H1 = 750 m``, not pyqg's default);
2. coarse-grain them into training data with ``roteq coarsen``;
3. train a small equivariant network with ``roteq train``, holding out the last run;
4. load it into the plugin and run it in the same configuration.

A few days of two 64² runs coarsened to 16² are far too little to learn a useful closure: this
shows the machinery in under a minute, not skill.
"""

import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyqg
import torch

from solver_coupling.cli import main as roteq
from solver_coupling.pyqg import SnapshotWriter
from solver_coupling.pyqg.plugin import RotEqParameterization

torch.set_num_threads(1)
DAY = 86400.0
work = Path(tempfile.mkdtemp(prefix="roteq-retrain-"))


def high_res_run(seed: int, path: Path) -> None:
    """A 64² two-layer run from seeded noise with H1 = 750 m; a snapshot every 2 days from day 40."""
    m = pyqg.QGModel(nx=64, dt=3600.0, H1=750.0, tmax=60 * DAY, log_level=0, ntd=1)
    rng = np.random.default_rng(seed)
    m.set_q(np.stack([1e-6 * rng.standard_normal((64, 64)), np.zeros((64, 64))]))
    writer = SnapshotWriter(m)
    for _ in m.run_with_snapshots(tsnapstart=40 * DAY, tsnapint=2 * DAY):
        writer.add(m)
    writer.write(path)


runs = [work / f"run{seed}.nc" for seed in (0, 1)]
for seed, path in enumerate(runs):
    high_res_run(seed, path)

# %%
# Coarse-grain (spectral truncation and the coarse model's filter) and train.
roteq(["coarsen", *map(str, runs), "--coarse-nx", "16", "--out-file", str(work / "coarse.nc")])
roteq(["train", "--data", str(work / "coarse.nc"), "--holdout", "1", "--channels", "8,8", "--kernel-sizes", "3,1",
       "--epochs", "8", "--batch-size", "4", "--out", str(work / "train"), "--name", str(work / "model"),
       "--no-progress"])

# %%
# The new model runs in pyqg in the configuration its data came from (16², H1 = 750 m): the plugin's
# regime check accepts it without any flag, and would refuse it, naming H1, at pyqg's default depth.
m = pyqg.QGModel(nx=16, dt=3600.0, H1=750.0, tmax=10 * DAY, log_level=0, ntd=1,
                 parameterization=RotEqParameterization(str(work / "model")))
m.set_q(np.stack([1e-6 * np.random.default_rng(2).standard_normal((16, 16)), np.zeros((16, 16))]))
m.run()
print(f"10 days at 16x16 with the retrained model: PV finite {bool(np.isfinite(m.q).all())}")

metrics = pd.read_csv(work / "train" / "metrics.csv")
summary = json.loads((work / "train" / "summary.json").read_text())
fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
for column in [c for c in metrics.columns if "loss" in c]:
    ax.semilogy(metrics["epoch"], metrics[column], "o-", label=column)
ax.set_xlabel("epoch")
ax.set_ylabel("normalised loss")
ax.set_title(f"held-out R² of S: {summary['metrics']['val']['S_mean']:.2f} (tiny data)")
ax.legend()

# %%
# Everything above was written to a temporary folder; a real retraining keeps it.
import shutil  # noqa: E402

shutil.rmtree(work)
