"""Offline training of the flux network on a coarse-grained pyqg dataset (``roteq train``).

Data
----
The netCDF dataset written by ``roteq generate`` (``solver_coupling/pyqg_data.py``): coarse
``u, v`` (run, time, lev, y, x) in m/s, ``b`` (run, time, y, x) in m^2/s, constant vectors
``beta_vec`` (run, comp) in 1/(m s) and ``U_vec`` (run, lev, comp) in m/s; targets ``tau``
(run, time, lev, tcomp, y, x) in m^2/s^2, ``Fb`` (run, time, lev, comp, y, x) in m^3/s^2 and
the PV forcing ``S_flux`` / ``S_direct`` (run, time, lev, y, x) in s^-2. pyqg's stretching
coefficients ``F1, F2`` (m^-2) and the domain side ``L`` (m) come from the attributes (or
from the ``config`` JSON attribute: ``F1 = rd^-2 / (1 + delta)``, ``F2 = delta F1``).

Runs are independent trajectories, so the train/validation split is by run: validation
scores are on runs the network never saw.

Normalisation
-------------
One scale per field, in the field's units: the RMS of the field's norm over the training runs
(``|v|`` for a vector, the Frobenius norm ``sqrt(xx^2 + 2 xy^2 + yy^2)`` for a tensor, ``|b|``
for a scalar). Norms are invariant under rotations and reflections, and nothing is
subtracted, so the normalisation commutes with the group. A field that is zero in all the
training data (e.g. ``U_2``) gets scale 1 in its units.

Loss
----
``loss = mean_f MSE(pred_f, true_f) / s_f^2 + s_weight * mean_l MSE(S_l(pred), S_l^true) / s_{S,l}^2``
with the PV forcing ``S`` implied by the predicted fluxes (DESIGN §3, computed spectrally by
:func:`roteq_param.fluxform.pv_forcing_from_fluxes`): the solver feels the divergence of the
fluxes, not the fluxes themselves, so the loss constrains both.

Reproducibility: ``--seed`` fixes the initialisation and the batch order. escnn builds its
kernel bases in an order that depends on Python's string hashing, so a run is reproducible
across processes only with ``PYTHONHASHSEED`` fixed (e.g. ``PYTHONHASHSEED=0 roteq train ...``);
the bases are saved with the weights, so loading and resuming are exact either way.

Defaults (measured on one real 256^2 -> 64^2 eddy run, validated on another, 100 epochs):
lr 1e-2 reached S R^2 0.42 against 0.31 with 3e-3; s_weight 1 trades flux R^2 (~0) for S
R^2 (0.03 with s_weight 0.1), and S is what the solver feels.

Schedule: Adam with a closed-form cosine learning rate from ``lr`` to ``lr * min_lr_factor``
over ``epochs`` (closed form, so a resumed run sets exactly the same rate), early stopping
after ``patience`` epochs without a better validation loss, the best state kept. A checkpoint
(atomic) is written after every epoch; ``--resume`` continues bit-for-bit.

Metrics
-------
R^2 = 1 - sum (pred - true)^2 / sum (true - mean)^2 per layer for every flux component and
for S, on held-out runs (:func:`r2_scores`), and the same on the held-out data rotated by each
exact element of the model's group through :mod:`roteq_param.symmetry`
(:func:`evaluate`: the rotation-robustness table).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from roteq_param import fluxform, symmetry
from roteq_param.fields import Schema, qg_schema
from roteq_param.atomic import atomic_write_bytes
from roteq_param.models import (FluxNet, ModelConfig, build_model, save_model, sha256_file,
                     time_inference)
from roteq_param.symmetry import Element, Group, Kind

__all__ = ["QGData", "load_dataset", "field_scales", "pv_forcing", "TrainOptions", "train", "r2_scores",
           "evaluate", "add_train_parser"]

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
_CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_flux", "train_S", "val_loss", "val_flux", "val_S",
                "val_r2_flux_mean", "val_r2_S_mean", "seconds"]


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

@dataclass
class QGData:
    """A coarse dataset in memory, stacked for the schema (float32 torch tensors).

    ``x``: ``[R, T, C_in, n, n]`` stacked inputs; ``y``: ``[R, T, C_out, n, n]`` stacked fluxes;
    ``S``: ``[R, T, 2, n, n]`` PV forcing target (s^-2); ``F1, F2`` in m^-2, ``L`` in m.
    """

    x: torch.Tensor
    y: torch.Tensor
    S: torch.Tensor
    schema: Schema
    F1: float
    F2: float
    L: float
    path: str = ""
    sha256: str = ""
    attrs: dict = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        return self.x.shape[0]

    def samples(self, runs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, S) of the given runs, flattened over (run, time)."""
        idx = torch.as_tensor(list(runs), dtype=torch.long)
        return tuple(t[idx].reshape(-1, *t.shape[2:]) for t in (self.x, self.y, self.S))


def _config_json(attrs: dict[str, Any]) -> dict[str, Any]:
    """The dataset's ``config`` JSON attribute, flattened: ``roteq generate`` nests the pyqg
    parameters under ``params`` next to ``coarse_nx``. Empty if absent or unreadable."""
    try:
        raw = json.loads(attrs.get("config", "{}"))
    except (TypeError, json.JSONDecodeError):
        return {}
    return {**raw, **raw.get("params", {})} if isinstance(raw, dict) else {}


def _physical_constants(ds) -> tuple[float, float, float]:
    """(F1, F2, L) from the dataset attributes, read defensively."""
    attrs = dict(ds.attrs)
    cfg = _config_json(attrs)
    get = lambda k: attrs.get(k, cfg.get(k))  # noqa: E731 - attrs first, then the config JSON
    L = get("L")
    if L is None:
        raise ValueError("dataset has no domain size: expected attribute 'L' or 'L' in the 'config' JSON attribute")
    F1, F2 = get("F1"), get("F2")
    if F1 is None or F2 is None:
        rd = get("rd")
        delta = get("delta")
        if delta is None and get("H1") is not None and get("H2") is not None:
            delta = float(get("H1")) / float(get("H2"))
        if rd is None or delta is None:
            raise ValueError("dataset has no stretching coefficients: expected attributes F1/F2, or rd and delta "
                             "(or H1/H2) in the 'config' JSON attribute")
        F1, F2 = fluxform.stretching_coefficients(float(rd), float(delta))
    return float(F1), float(F2), float(L)


def load_dataset(path: str | os.PathLike, schema: Schema | None = None, s_target: str = "S_flux") -> QGData:
    """Read a coarse pyqg dataset into memory, stacked for ``schema`` (default ``qg_schema(2)``)."""
    import xarray as xr

    schema = schema or qg_schema(2)
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"training dataset {path} does not exist (make one with `roteq generate`)")
    with xr.open_dataset(path) as ds:
        needed = ["u", "v", "b", "beta_vec", "U_vec", "tau", "Fb", s_target]
        missing = [v for v in needed if v not in ds]
        if missing:
            raise ValueError(f"dataset {path} lacks variable(s) {missing}; expected the `roteq generate` format")
        nlev = ds.sizes["lev"]
        names = {f.name for f in schema.inputs + schema.outputs}
        expected = qg_schema(nlev)
        if names != {f.name for f in expected.inputs + expected.outputs}:
            raise ValueError(f"training needs the {nlev}-layer QG schema fields; the model schema has {sorted(names)}")
        F1, F2, L = _physical_constants(ds)

        def arr(name, **sel):
            return torch.from_numpy(np.ascontiguousarray(ds[name].isel(**sel).values, dtype=np.float32))

        R, T = ds.sizes["run"], ds.sizes["time"]
        named = {"b": arr("b"), "beta": arr("beta_vec")[:, None, :].expand(R, T, 2)}
        for i in range(1, nlev + 1):
            named[f"vel_{i}"] = torch.stack([arr("u", lev=i - 1), arr("v", lev=i - 1)], dim=2)
            named[f"U_{i}"] = arr("U_vec", lev=i - 1)[:, None, :].expand(R, T, 2)
            named[f"tau_{i}"] = arr("tau", lev=i - 1)
            named[f"Fb_{i}"] = arr("Fb", lev=i - 1)
        for name, dims in (("tau", ("run", "time", "lev", "tcomp", "y", "x")),
                           ("Fb", ("run", "time", "lev", "comp", "y", "x"))):
            if tuple(ds[name].dims) != dims:
                raise ValueError(f"dataset variable {name!r} has dims {ds[name].dims}, expected {dims}")
        x = schema.stack({f.name: named[f.name] for f in schema.inputs}, "inputs")
        y = schema.stack({f.name: named[f.name] for f in schema.outputs}, "outputs")
        S = arr(s_target)
        attrs = dict(ds.attrs)
    if R < 2:
        raise ValueError(f"dataset {path} has {R} run(s); training needs at least 2 (train/validation split by run)")
    return QGData(x.contiguous(), y.contiguous(), S.contiguous(), schema, F1, F2, L, path, sha256_file(path), attrs)


def field_scales(schema: Schema, which: str, stacked: torch.Tensor) -> dict[str, float]:
    """One scale per field: RMS over samples and grid of the field's rotation-invariant norm.

    ``stacked`` is ``[..., C, y, x]``. Vector: ``sqrt(mean(x^2 + y^2))``; tensor (xx, xy, yy):
    ``sqrt(mean(xx^2 + 2 xy^2 + yy^2))`` (Frobenius); scalar: ``sqrt(mean(b^2))``. Zero fields
    get 1.
    """
    out = {}
    for f in schema.fields(which):
        part = stacked[..., schema.channel_slices(which)[f.name], :, :].double()
        w = torch.ones(part.shape[-3], dtype=torch.float64)
        if f.kind is Kind.TENSOR:
            w[1] = 2.0  # the off-diagonal component appears twice in the full tensor
        sq = (part**2 * w[:, None, None]).sum(dim=-3)
        s = float(sq.mean().sqrt())
        out[f.name] = s if s > 0 and math.isfinite(s) else 1.0
    return out


def pv_forcing(schema: Schema, y: torch.Tensor, F1: float, F2: float, L: float) -> torch.Tensor:
    """PV forcing ``[B, 2, n, n]`` (s^-2) implied by stacked fluxes ``y`` ``[B, C_out, n, n]`` (DESIGN §3)."""
    named = schema.unstack(y, "outputs")
    tau = torch.stack([named["tau_1"], named["tau_2"]], dim=-4)
    Fb = torch.stack([named["Fb_1"], named["Fb_2"]], dim=-4)
    return fluxform.pv_forcing_from_fluxes(tau, Fb, F1, F2, L)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

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
        pred = model(x)
        acc_y.add(pred, y)
        acc_s.add(pv_forcing(schema, pred, data.F1, data.F2, data.L), s)
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


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainOptions:
    """Everything that determines a training run (recorded in the checkpoint and the model card)."""

    data: str
    out: str
    name: str | None = None
    arch: str = "escnn"
    group: str = "C4"
    channels: tuple[int, ...] = (16, 16)
    kernel_sizes: tuple[int, ...] = (3, 1)
    out_kernel_size: int = 1
    activation: str = "relu"
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-2
    min_lr_factor: float = 0.01
    weight_decay: float = 0.0
    s_weight: float = 1.0
    s_target: str = "S_flux"
    val_runs: int = 1
    train_runs: tuple[int, ...] | None = None
    augment: bool = False
    patience: int = 30
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None
    threads: int | None = 1
    progress: bool | None = None

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, group=self.group, channels=tuple(self.channels),
                           kernel_sizes=tuple(self.kernel_sizes), out_kernel_size=self.out_kernel_size,
                           activation=self.activation)

    def recipe(self) -> dict[str, Any]:
        """The options that determine the result (not where it goes or how it is displayed)."""
        d = asdict(self)
        for k in ("out", "name", "resume", "stop_after", "threads", "progress"):
            d.pop(k)
        d["channels"], d["kernel_sizes"] = list(self.channels), list(self.kernel_sizes)
        d["train_runs"] = None if self.train_runs is None else list(self.train_runs)
        return d


def _lr_at(opts: TrainOptions, epoch: int) -> float:
    """Cosine schedule from lr (epoch 0) to lr * min_lr_factor (last epoch), closed form."""
    frac = epoch / max(opts.epochs - 1, 1)
    lo = opts.lr * opts.min_lr_factor
    return lo + 0.5 * (opts.lr - lo) * (1.0 + math.cos(math.pi * frac))


def _losses(model: FluxNet, data: QGData, x, y, s, s_scale) -> tuple[torch.Tensor, torch.Tensor]:
    """(flux loss, S loss), both dimensionless (normalised by the per-field / per-layer scales)."""
    pred_n = model.forward_normalized(x)
    flux = ((pred_n - y / model.out_scale[:, None, None]) ** 2).mean()
    s_pred = pv_forcing(data.schema, pred_n * model.out_scale[:, None, None], data.F1, data.F2, data.L)
    s_loss = (((s_pred - s) / s_scale[:, None, None]) ** 2).mean()
    return flux, s_loss


def _val_losses(model, data, runs, s_scale, batch_size) -> tuple[float, float]:
    x_all, y_all, s_all = data.samples(runs)
    tot_f = tot_s = 0.0
    with torch.no_grad():
        for i in range(0, x_all.shape[0], batch_size):
            f, s = _losses(model, data, x_all[i:i + batch_size], y_all[i:i + batch_size],
                           s_all[i:i + batch_size], s_scale)
            n = min(batch_size, x_all.shape[0] - i)
            tot_f += float(f) * n
            tot_s += float(s) * n
    return tot_f / x_all.shape[0], tot_s / x_all.shape[0]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def train(opts: TrainOptions) -> dict[str, Any]:
    """Train (or resume training) a flux network; returns a summary with the metrics.

    Writes ``<out>/checkpoint.pt`` and ``<out>/metrics.csv`` every epoch; at the end loads the
    best state, scores it on the validation runs (also rotated) and saves the model to
    ``trained_models/<name>`` (or the directory ``name``; ``<out>/model`` if no name).
    """
    from tqdm.auto import tqdm

    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, csv_path = out / CHECKPOINT, out / METRICS_CSV

    data = load_dataset(opts.data, s_target=opts.s_target)
    if not 1 <= opts.val_runs < data.n_runs:
        raise ValueError(f"--val-runs must be between 1 and {data.n_runs - 1} (the dataset has {data.n_runs} runs)")
    val_runs = list(range(data.n_runs - opts.val_runs, data.n_runs))
    train_runs = list(range(data.n_runs - opts.val_runs))
    if opts.train_runs is not None:
        bad = sorted(set(opts.train_runs) - set(train_runs))
        if bad:
            raise ValueError(f"--train-runs {bad} are not training runs: the dataset has runs 0-{data.n_runs - 1} "
                             f"and the last {opts.val_runs} ({val_runs}) are held out for validation")
        train_runs = sorted(set(opts.train_runs))
    x_tr, y_tr, s_tr = data.samples(train_runs)

    if os.environ.get("PYTHONHASHSEED") is None:
        # escnn orders the pieces of a kernel basis by iterating over sets of representation names,
        # so the basis (hence the initial function and the whole run) depends on Python's string
        # hashing. Resume is exact regardless: the bases are part of the checkpoint.
        warnings.warn("PYTHONHASHSEED is not set: the same --seed reproduces a run only within this "
                      "process; set PYTHONHASHSEED=0 for runs reproducible across processes", stacklevel=2)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    model = build_model(opts.model_config())
    model.set_normalization(field_scales(data.schema, "inputs", x_tr), field_scales(data.schema, "outputs", y_tr))
    s_scale = s_tr.double().pow(2).mean(dim=(0, 2, 3)).sqrt().clamp_min(1e-300).float()  # per layer, s^-2
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    gen = torch.Generator().manual_seed(opts.seed)
    start_epoch, best_val, best_epoch, rows = 0, math.inf, -1, []
    best_state = model.canonical_state_dict()

    if opts.resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {ckpt_path}")
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or foreign file
            raise ValueError(f"--resume: cannot read checkpoint {ckpt_path} ({type(e).__name__}: {e})") from e
        # epochs and patience may change between sessions, and the dataset is identified by its
        # sha256 rather than its path; everything else must match
        fixed = lambda r: {k: v for k, v in r.items() if k not in ("epochs", "patience", "data")}  # noqa: E731
        if fixed(ck["recipe"]) != fixed(opts.recipe()):
            diff = {k: (ck["recipe"].get(k), v) for k, v in fixed(opts.recipe()).items() if ck["recipe"].get(k) != v}
            raise ValueError(f"--resume: the options differ from the checkpoint's (checkpoint, now): {diff}")
        if ck["dataset_sha256"] != data.sha256:
            raise ValueError(f"--resume: the dataset {opts.data} is not the one the checkpoint was trained on")
        model.load_canonical_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        start_epoch, best_val, best_epoch = ck["epoch"] + 1, ck["best_val"], ck["best_epoch"]
        best_state, rows = ck["best_state"], ck["rows"]

    group = Group.parse(opts.group)
    elements = group.exact_elements()
    n_train = x_tr.shape[0]
    t_start = time.perf_counter()
    epoch = start_epoch - 1
    stopped_early = start_epoch - 1 - best_epoch >= opts.patience and best_epoch >= 0
    last = opts.epochs if opts.stop_after is None else min(opts.epochs, start_epoch + opts.stop_after)
    bar = tqdm(range(start_epoch, last), initial=start_epoch, total=opts.epochs, unit="epoch",
               desc="train", disable=None if opts.progress is None else not opts.progress)
    for epoch in bar:
        if stopped_early:
            break
        t0 = time.perf_counter()
        lr = _lr_at(opts, epoch)
        for pg in optim.param_groups:
            pg["lr"] = lr
        model.train()
        perm = torch.randperm(n_train, generator=gen)
        sum_f = sum_s = 0.0
        for i in range(0, n_train, opts.batch_size):
            idx = perm[i:i + opts.batch_size]
            x, y, s = x_tr[idx], y_tr[idx], s_tr[idx]
            if opts.augment:
                g = elements[int(torch.randint(len(elements), (1,), generator=gen))]
                x = data.schema.transform_stacked(g, x, "inputs")
                y = data.schema.transform_stacked(g, y, "outputs")
                s = symmetry.act(g, s, Kind.PSEUDOSCALAR)
            f_loss, s_loss = _losses(model, data, x, y, s, s_scale)
            loss = f_loss + opts.s_weight * s_loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sum_f += float(f_loss.detach()) * len(idx)
            sum_s += float(s_loss.detach()) * len(idx)
        model.eval()
        val_f, val_s = _val_losses(model, data, val_runs, s_scale, 64)
        val_loss = val_f + opts.s_weight * val_s
        r2 = r2_scores(model, data, val_runs)
        if val_loss < best_val:
            best_val, best_epoch, best_state = val_loss, epoch, model.canonical_state_dict()
        rows.append({"epoch": epoch, "lr": lr, "train_loss": (sum_f + opts.s_weight * sum_s) / n_train,
                     "train_flux": sum_f / n_train, "train_S": sum_s / n_train, "val_loss": val_loss,
                     "val_flux": val_f, "val_S": val_s, "val_r2_flux_mean": r2["flux_mean"],
                     "val_r2_S_mean": r2["S_mean"], "seconds": time.perf_counter() - t0})
        _write_csv(csv_path, rows)
        _save_checkpoint(ckpt_path, {
            "recipe": opts.recipe(), "dataset_sha256": data.sha256, "epoch": epoch, "model": model.canonical_state_dict(),
            "optimizer": optim.state_dict(), "generator": gen.get_state(), "best_val": best_val,
            "best_epoch": best_epoch, "best_state": best_state, "rows": rows})
        bar.set_postfix(train=f"{rows[-1]['train_loss']:.3g}", val=f"{val_loss:.3g}", r2=f"{r2['flux_mean']:.3f}")
        stopped_early = epoch - best_epoch >= opts.patience
    bar.close()

    finished = stopped_early or epoch + 1 >= opts.epochs
    summary = {"epochs_run": len(rows), "best_epoch": best_epoch, "best_val_loss": best_val,
               "stopped_early": stopped_early, "finished": finished, "checkpoint": str(ckpt_path),
               "metrics_csv": str(csv_path), "train_seconds": time.perf_counter() - t_start}
    if not finished:
        return summary  # --stop-after: more epochs to go; resume later

    model.load_canonical_state_dict(best_state)
    model.eval()
    rotated = evaluate(model, data, val_runs, group)
    metrics = {"val": rotated[str(group.identity)],
               "rotated_mean_r2": {g: {"flux_mean": v["flux_mean"], "S_mean": v["S_mean"]}
                                   for g, v in rotated.items()},
               "best_epoch": best_epoch, "best_val_loss": best_val}
    # one thread: two measured far slower on a busy 2-core machine (see benchmarks/bench_models.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        costs = {"ms_per_call_64x64_1thread": round(time_inference(model.export(), repeats=100), 4),
                 "note": "exported net only, batch 1, float32; ratio to a bare pyqg step: `roteq bench`"}
    finally:
        torch.set_num_threads(threads)
    training = {"dataset": os.path.abspath(opts.data), "dataset_sha256": data.sha256,
                "dataset_attrs": {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in data.attrs.items()},
                "train_runs": train_runs, "val_runs": val_runs, "n_train_samples": n_train,
                "options": opts.recipe(), "epochs_run": len(rows),
                "python_hash_seed": os.environ.get("PYTHONHASHSEED"), "s_scale_per_layer_s-2": s_scale.tolist(),
                "solver": _solver_config(data.attrs),
                "command": " ".join(["roteq", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("roteq", "cli.py") else ""}
    target = opts.name if opts.name else out / "model"
    summary["model_dir"] = str(save_model(model, target, training=training, metrics=metrics, inference_cost=costs))
    summary["metrics"] = metrics
    return summary


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _solver_config(attrs: dict[str, Any]) -> dict[str, Any]:
    """The coarse solver settings the model is tied to (read by the pyqg plugin's pre-flight check).

    From the ``config`` attribute of a ``roteq generate`` dataset: the coarse grid and the
    physical parameters (SI units). Empty when the dataset does not record them.
    """
    params = _config_json(attrs)
    n = params.get("coarse_nx", params.get("nx"))
    if n is None:
        return {}
    out: dict[str, Any] = {"nz": 2, "nx": int(n), "ny": int(n)}
    L = params.get("L")
    if L is not None:
        out["L"] = out["W"] = float(L)
    for key in ("rd", "delta", "beta", "U1", "U2", "H1", "rek"):
        if key in params:
            out[key] = float(params[key])
    if "H1" in params and "delta" in params:
        out["H2"] = float(params["H1"]) / float(params["delta"])
    return out


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    opts = TrainOptions(
        data=args.data, out=args.out, name=args.name, arch=args.arch, group=args.group, channels=args.channels,
        kernel_sizes=args.kernel_sizes, out_kernel_size=args.out_kernel_size, activation=args.activation,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, min_lr_factor=args.min_lr_factor,
        weight_decay=args.weight_decay, s_weight=args.s_weight, s_target=args.s_target, val_runs=args.val_runs,
        train_runs=args.train_runs,
        augment=args.augment, patience=args.patience, seed=args.seed, resume=args.resume,
        stop_after=args.stop_after, threads=args.threads, progress=False if args.no_progress else None)
    try:
        opts.model_config()
        summary = train(opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"roteq train: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an argparse subparsers object (sets ``func``)."""
    d = TrainOptions(data="", out="")
    p = subparsers.add_parser(
        "train", help="train the equivariant flux network on a coarse dataset",
        description="Train a flux network on a dataset from `roteq generate`; writes a checkpoint and "
                    "metrics.csv to --out every epoch and saves the best model with its card to "
                    "trained_models/<--name> (or <--out>/model).")
    p.add_argument("--data", required=True, help="netCDF dataset written by `roteq generate`")
    p.add_argument("--out", required=True, help="run directory for checkpoint.pt and metrics.csv")
    p.add_argument("--name", default=None,
                   help="save the trained model as trained_models/<NAME> (a path with a / is used as is)")
    p.add_argument("--arch", choices=["escnn", "cnn"], default=d.arch, help="equivariant net or plain CNN baseline")
    p.add_argument("--group", default=d.group, help="symmetry group C1..C8 / D1..D8 (default %(default)s)")
    p.add_argument("--channels", type=_int_list, default=d.channels,
                   help="hidden channels per layer, comma-separated (multiples of |G| for escnn; default 16,16)")
    p.add_argument("--kernel-sizes", type=_int_list, default=d.kernel_sizes,
                   help="odd kernel size per hidden layer (default 3,1)")
    p.add_argument("--out-kernel-size", type=int, default=d.out_kernel_size)
    p.add_argument("--activation", choices=["relu", "elu"], default=d.activation)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (cosine decay)")
    p.add_argument("--min-lr-factor", type=float, default=d.min_lr_factor, help="final lr / initial lr")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--s-weight", type=float, default=d.s_weight, help="weight of the PV-forcing loss")
    p.add_argument("--s-target", choices=["S_flux", "S_direct"], default=d.s_target,
                   help="PV forcing target (equal for spectral operators)")
    p.add_argument("--val-runs", type=int, default=d.val_runs, help="number of (last) runs held out for validation")
    p.add_argument("--train-runs", type=_int_list, default=None,
                   help="train on these runs only (comma-separated; default: every run not held out)")
    p.add_argument("--augment", action="store_true", help="random exact rotations of each batch (for the CNN)")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in this invocation (continue later with --resume)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch threads (default 1: on a busy 2-core machine 2 threads measured ~20x slower per batch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)
    return p
