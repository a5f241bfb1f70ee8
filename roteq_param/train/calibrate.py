"""Offline calibration of a model's fixed closure terms against coarse-grained truth.

``energy_backscatter`` (:class:`~roteq_param.models.ModelConfig`) returns a multiple of the energy
the network's forcing drains. The multiple that makes the network's mean energy transfer on truth
states equal the truth's is ``1 - D_truth / D_net`` with ``D = sum_i H_i/H <psi_i S_i>`` averaged over
the samples (:meth:`~roteq_param.forcing.PVForcing.energy_drain`). Measured (README, "Fixed closure
terms"): on truth states the shipped nets drain 3-4.5x the truth's energy, but on their own online
states they mostly inject energy, so this offline value does not carry over online.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from roteq_param.forcing import PVForcing
from roteq_param.models.net import FluxNet
from roteq_param.models.predictor import Predictor
from roteq_param.train.data import load_dataset

__all__ = ["calibrate_energy_backscatter"]


def calibrate_energy_backscatter(model: FluxNet, data: str | os.PathLike, runs: Sequence[int] | None = None,
                                 every: int = 1, batch: int = 32) -> dict:
    """The backscatter multiple that matches the truth's mean energy transfer on ``data``'s ``runs``.

    Returns ``{"fraction", "drain_truth", "drain_network", "samples", "runs", "dataset_sha256"}``
    (drains in m^2 s^-3 summed over the grid, mean over every ``every``-th snapshot). The value,
    ``1 - D_truth / D_net``, is clipped to [0, 1]; a network that drains less energy than the truth
    needs none.
    """
    ds = load_dataset(data, model.schema, min_runs=1)
    runs = list(range(ds.n_runs)) if runs is None else [int(r) for r in runs]
    bad = [r for r in runs if not 0 <= r < ds.n_runs]
    if bad or not runs:
        raise ValueError(f"runs {bad or runs} are not in {data} (it has runs 0-{ds.n_runs - 1})")
    if len({ds.run_strats[r] for r in runs}) > 1:
        raise ValueError(f"runs {runs} of {data} differ in stratification (a family): calibrate on runs of one "
                         f"configuration ({data}@R)")
    x, _, S = ds.samples(runs)
    x, S = x[::every].double(), S[::every].double()
    n = x.shape[-1]
    forcing = PVForcing(Predictor(model, dtype=torch.float64), strat=ds.run_strats[runs[0]], L=ds.L, n=n,
                        closure_terms=False)
    truth, net = [], []
    for i in range(0, x.shape[0], batch):
        state = model.schema.unstack(x[i:i + batch], "inputs")
        truth.append(forcing.energy_drain(state, S[i:i + batch]))
        net.append(forcing.energy_drain(state, forcing(state)))
    d_truth, d_net = float(np.concatenate(truth).mean()), float(np.concatenate(net).mean())
    fraction = float(np.clip(1.0 - d_truth / d_net, 0.0, 1.0)) if d_net > 0 else 0.0
    return {"fraction": fraction, "drain_truth": d_truth, "drain_network": d_net, "samples": int(x.shape[0]),
            "runs": runs, "dataset_sha256": ds.sha256}
