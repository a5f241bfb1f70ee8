"""Offline skill: R^2 per flux component and layer and for the PV forcing, on held-out runs, and
the same on held-out data rotated by every exact element of the model's group.

R^2 = 1 - sum (pred - true)^2 / sum (true - mean)^2, accumulated in float64.
"""

from __future__ import annotations

from typing import Sequence

import torch

from roteq_param import symmetry
from roteq_param.fields import Schema
from roteq_param.symmetry import Element, Group, Kind
from roteq_param.train.data import QGData, pv_forcing

__all__ = ["r2_scores", "evaluate"]


def _component_names(schema: Schema) -> list[str]:
    names = []
    for f in schema.outputs:
        comps = {3: ("xx", "xy", "yy"), 2: ("x", "y"), 1: ("",)}[f.n_components]
        names += [f"{f.name}_{c}" if c else f.name for c in comps]
    return names


class _R2Accumulator:
    """Streaming sums for R^2 = 1 - SSE / sum (true - mean)^2, per channel (float64)."""

    def __init__(self, n: int):
        self.sse = torch.zeros(n, dtype=torch.float64)
        self.st = torch.zeros(n, dtype=torch.float64)
        self.st2 = torch.zeros(n, dtype=torch.float64)
        self.count = 0

    def add(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        p, t = pred.double().transpose(0, 1).flatten(1), true.double().transpose(0, 1).flatten(1)
        self.sse += ((p - t) ** 2).sum(1)
        self.st += t.sum(1)
        self.st2 += (t**2).sum(1)
        self.count += t.shape[1]

    def r2(self) -> torch.Tensor:
        var = self.st2 - self.st**2 / max(self.count, 1)
        return 1.0 - self.sse / var.clamp_min(1e-300)


@torch.no_grad()
def r2_scores(model: torch.nn.Module, data: QGData, runs: Sequence[int], element: Element | None = None,
              batch_size: int = 32) -> dict[str, float]:
    """R^2 per flux component and layer (``tau_1_xx``, ..., ``Fb_2_y``) and for ``S_1``, ``S_2``.

    With ``element``, inputs, fluxes and S of the held-out runs are first transformed by it
    (S is a pseudoscalar: it flips sign under reflections). Also returns the means
    ``flux_mean`` and ``S_mean``.
    """
    schema = data.schema
    x_all, y_all, s_all = data.samples(runs)
    w_all = data.flux_weights(runs)
    names = _component_names(schema)
    acc_y, acc_s = _R2Accumulator(len(names)), _R2Accumulator(s_all.shape[1])
    was_training = model.training
    model.eval()
    for i in range(0, x_all.shape[0], batch_size):
        x, y, s = x_all[i:i + batch_size], y_all[i:i + batch_size], s_all[i:i + batch_size]
        if element is not None:
            x = schema.transform_stacked(element, x, "inputs")
            y = schema.transform_stacked(element, y, "outputs")
            s = symmetry.act(element, s, Kind.PSEUDOSCALAR)
        pred = model(x, data.L / x.shape[-1])
        acc_y.add(pred, y)
        acc_s.add(pv_forcing(schema, pred, data.strat, data.L, None if w_all is None else w_all[i:i + batch_size]),
                  s)
    model.train(was_training)
    r2y, r2s = acc_y.r2(), acc_s.r2()
    out = {n: float(v) for n, v in zip(names, r2y)}
    out.update({f"S_{l + 1}": float(v) for l, v in enumerate(r2s)})
    out["flux_mean"] = float(r2y.mean())
    out["S_mean"] = float(r2s.mean())
    return out


def evaluate(model: torch.nn.Module, data: QGData, runs: Sequence[int],
             group: Group | str | None = None) -> dict[str, dict[str, float]]:
    """R^2 on held-out ``runs`` for each exact element of ``group`` (default: the model's group).

    Keys are ``str(g)``: ``rot0`` is the untransformed data, ``rot90``, ``rot180``, ``rot270``
    (and ``...*flip`` for D_N) the data rotated through :mod:`roteq_param.symmetry`. An
    equivariant model scores the same on all of them (up to the per-component relabelling);
    a plain CNN trained on one orientation does not.
    """
    if group is None:
        group = getattr(getattr(model, "config", None), "group", "C4")
    return {str(g): r2_scores(model, data, runs, None if g == Group.parse(group).identity else g)
            for g in Group.parse(group).exact_elements()}

