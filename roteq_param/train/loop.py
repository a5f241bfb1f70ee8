"""Offline training of the flux network (``roteq train``): options, the epoch loop, checkpoints.

Loss
----
``loss = mean_f MSE(pred_f, true_f) / s_f^2 + s_weight * mean_l MSE(S_l(pred), S_l^true) / s_{S,l}^2``
with the PV forcing ``S`` implied by the predicted fluxes (computed spectrally by
:func:`roteq_param.fluxform.pv_forcing_from_fluxes`): the solver feels the divergence of the
fluxes, not the fluxes themselves, so the loss constrains both.

Runs are independent trajectories, so the train/validation split is by run: validation scores
are on runs the network never saw.

Reproducibility: ``seed`` fixes the initialisation and the batch order. escnn builds its kernel
bases in an order that depends on Python's string hashing, so a run is reproducible across
processes only with ``PYTHONHASHSEED`` fixed (e.g. ``PYTHONHASHSEED=0 roteq train ...``); the
bases are saved with the weights, so loading and resuming are exact either way.

Defaults (measured on one real 256^2 -> 64^2 eddy run, validated on another, 100 epochs): lr 1e-2
reached S R^2 0.42 against 0.31 with 3e-3; s_weight 1 trades flux R^2 (~0) for S R^2 (0.03 with
s_weight 0.1), and S is what the solver feels.

Schedule: Adam with a closed-form cosine learning rate from ``lr`` to ``lr * min_lr_factor`` over
``epochs`` (closed form, so a resumed run sets exactly the same rate), early stopping after
``patience`` epochs without a better validation loss, the best state kept. A checkpoint (atomic)
is written after every epoch; ``resume`` continues bit-for-bit.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roteq_param import symmetry
from roteq_param.atomic import atomic_write_bytes, exclusive_output
from roteq_param.integrity import verify_file
from roteq_param.models import FluxNet, ModelConfig, build_model, save_model, time_inference
from roteq_param.symmetry import Group, Kind
from roteq_param.train.data import QGData, field_scales, load_dataset, pv_forcing
from roteq_param.train.metrics import evaluate, r2_scores

__all__ = ["TrainOptions", "train", "offline_losses", "s_scales", "CHECKPOINT", "METRICS_CSV"]

CHECKPOINT = "checkpoint.pt"
METRICS_CSV = "metrics.csv"
TIMING_CSV = "timing.csv"
# metrics.csv holds only what the seed determines, so a resumed run's file equals an unbroken
# run's byte for byte; the wall-clock seconds per epoch go to timing.csv
_CSV_COLUMNS = ["epoch", "lr", "train_loss", "train_flux", "train_S", "val_loss", "val_flux", "val_S",
                "val_r2_flux_mean", "val_r2_S_mean"]
_TIMING_COLUMNS = ["epoch", "seconds"]


@dataclass
class TrainOptions:
    """Everything that determines a training run (recorded in the checkpoint and the model card).

    ``model`` is the architecture; ``data`` a dataset path; ``out`` the run directory (checkpoint,
    metrics); ``name`` where the model goes (``trained_models/<name>``, or a path). ``command`` is
    the command line that started the run, recorded in the card.

    ``more_data``: further datasets trained on together with ``data`` (e.g. the same flow on other
    grids, for a similarity-scaled model), each split by run like ``data`` (its last ``val_runs``
    held out; ``train_runs`` applies to ``data`` only). Batches never mix datasets; each dataset's S
    loss is normalised by its own S scale; the normalisation and the similarity reference come from
    ``data``, and the validation loss is the mean over the datasets.

    ``snapshot_every``: train and validate on every k-th snapshot of each run (of every dataset).

    ``regime_inputs``: the network also sees each run's stretching couplings and bottom drag
    (:func:`~roteq_param.fields.qg_schema` with ``regime=True``), so that one trained across a family
    of configurations can tell its members apart.
    """

    data: str
    out: str
    name: str | None = None
    more_data: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 200
    batch_size: int = 16
    lr: float = 1e-2
    min_lr_factor: float = 0.01
    weight_decay: float = 0.0
    s_weight: float = 1.0
    s_target: str = "S_flux"
    val_runs: int = 1
    train_runs: tuple[int, ...] | None = None
    snapshot_every: int = 1
    regime_inputs: bool = False
    augment: bool = False
    patience: int = 30
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    stop_after: int | None = None
    threads: int | None = 1
    progress: bool | None = None
    command: str = ""

    def recipe(self) -> dict[str, Any]:
        """The options that determine the result (not where it goes or how it is displayed)."""
        d = asdict(self)
        for k in ("out", "name", "resume", "overwrite", "stop_after", "threads", "progress", "command"):
            d.pop(k)
        d["model"] = {k: v for k, v in self.model.to_dict().items() if k != "schema"}  # the card records the schema
        d["train_runs"] = None if self.train_runs is None else list(self.train_runs)
        d["more_data"] = list(self.more_data)
        if not d["more_data"]:
            del d["more_data"]  # single-dataset recipes keep the form older checkpoints recorded
        if d["snapshot_every"] == 1:
            del d["snapshot_every"]  # likewise for recipes that train on every snapshot
        if not d["regime_inputs"]:
            del d["regime_inputs"]  # and for those without regime inputs
        return d


# ---------------------------------------------------------------------------------------------
# pieces of one run
# ---------------------------------------------------------------------------------------------

def _lr_at(opts: TrainOptions, epoch: int) -> float:
    """Cosine schedule from lr (epoch 0) to lr * min_lr_factor (last epoch), closed form."""
    frac = epoch / max(opts.epochs - 1, 1)
    lo = opts.lr * opts.min_lr_factor
    return lo + 0.5 * (opts.lr - lo) * (1.0 + math.cos(math.pi * frac))


def offline_losses(model: FluxNet, data: QGData, x, y, s, s_scale, w=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(flux loss, S loss), both dimensionless (normalised by the per-field / per-layer scales).

    ``s_scale`` is the RMS of the training runs' S per layer [s^-2] (:func:`s_scales`); ``w`` the
    samples' :meth:`~roteq_param.train.data.QGData.flux_weights` (a family's runs differ in coupling)."""
    pred_n, units = model.forward_with_units(x, data.L / x.shape[-1])
    flux = ((pred_n - y / units) ** 2).mean()
    s_pred = pv_forcing(data.schema, pred_n * units, data.strat, data.L, w)
    s_loss = (((s_pred - s) / s_scale[:, None, None]) ** 2).mean()
    return flux, s_loss


def _set_normalization(model: FluxNet, data: QGData, x: torch.Tensor, y: torch.Tensor) -> None:
    """Per-field scales from the training samples; with similarity scaling, first the reference (the
    training grid's spacing and mean velocity-gradient scale) and then the scales of the
    dimensionless fields, so that the normalised inputs are O(1) on any grid."""
    if model.config.similarity:
        dx = data.L / x.shape[-1]
        model.fit_similarity_reference(x, dx)
        f_in, f_out = model.similarity_factors(x, dx)
        x, y = x / f_in[..., None, None], y / f_out[..., None, None]
    model.set_normalization(field_scales(data.schema, "inputs", x), field_scales(data.schema, "outputs", y))


def s_scales(s: torch.Tensor) -> torch.Tensor:
    """RMS of S ``[N, 2, y, x]`` per layer [s^-2]: what the S loss is normalised by."""
    return s.double().pow(2).mean(dim=(0, 2, 3)).sqrt().clamp_min(1e-300).float()


def _val_losses(model, data, runs, s_scale, batch_size) -> tuple[float, float]:
    x_all, y_all, s_all = data.samples(runs)
    w_all = data.flux_weights(runs)
    tot_f = tot_s = 0.0
    with torch.no_grad():
        for i in range(0, x_all.shape[0], batch_size):
            f, s = offline_losses(model, data, x_all[i:i + batch_size], y_all[i:i + batch_size],
                                  s_all[i:i + batch_size], s_scale,
                                  None if w_all is None else w_all[i:i + batch_size])
            n = min(batch_size, x_all.shape[0] - i)
            tot_f += float(f) * n
            tot_s += float(s) * n
    return tot_f / x_all.shape[0], tot_s / x_all.shape[0]


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue(), checksum=True)


def _split_runs(n_runs: int, n_val: int, only: tuple[int, ...] | None = None) -> tuple[list[int], list[int]]:
    """(training runs, validation runs): the last ``n_val`` are held out; ``only`` picks training runs."""
    if not 1 <= n_val < n_runs:
        raise ValueError(f"--holdout (runs held out) must be between 1 and {n_runs - 1} (the dataset has {n_runs} runs)")
    val_runs = list(range(n_runs - n_val, n_runs))
    train_runs = list(range(n_runs - n_val))
    if only is not None:
        bad = sorted(set(only) - set(train_runs))
        if bad:
            raise ValueError(f"--train-runs {bad} are not training runs: the dataset has runs 0-{n_runs - 1} "
                             f"and the last {n_val} ({val_runs}) are held out for validation")
        train_runs = sorted(set(only))
    return train_runs, val_runs


@dataclass
class _Part:
    """One dataset of a training run: its split, training samples and S scale."""

    data: QGData
    train_runs: list[int]
    val_runs: list[int]
    train_set: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    s_scale: torch.Tensor
    train_weights: torch.Tensor | None = None  # QGData.flux_weights of the training samples


def _load_parts(opts: TrainOptions) -> list[_Part]:
    parts = []
    for i, path in enumerate((opts.data, *opts.more_data)):
        data = load_dataset(path, s_target=opts.s_target, snapshot_every=opts.snapshot_every,
                            regime=opts.regime_inputs)
        if parts and data.schema.to_dict() != parts[0].data.schema.to_dict():
            raise ValueError(f"--more-data {path} holds other fields than {opts.data}")
        try:  # --train-runs picks runs of --data only
            train_runs, val_runs = _split_runs(data.n_runs, opts.val_runs, opts.train_runs if i == 0 else None)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        train_set = data.samples(train_runs)
        parts.append(_Part(data, train_runs, val_runs, train_set, s_scales(train_set[2]),
                           data.flux_weights(train_runs)))
    return parts


@dataclass
class _Progress:
    """What a checkpoint restores: where the loop is and the best state so far."""

    start_epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    best_state: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)


def _restore(opts: TrainOptions, ckpt_path: Path, parts: list[_Part], model: FluxNet, optim, gen) -> _Progress:
    """Load ``ckpt_path`` into the model, optimiser and generator after checking it fits ``opts``."""
    verify_file(ckpt_path, "--resume: training checkpoint", "delete it (and its .sha256) to start over")
    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file
        # (torch's own text can advise weights_only=False: it is neither shown nor chained)
        raise ValueError(f"--resume: cannot read checkpoint {ckpt_path} ({type(e).__name__}); the file is "
                         "truncated or corrupt: delete it to start over") from None
    # epochs and patience may change between sessions, and the dataset is identified by its
    # sha256 rather than its path; everything else must match
    fixed = lambda r: {k: v for k, v in r.items() if k not in ("epochs", "patience", "data")}  # noqa: E731
    if fixed(ck["recipe"]) != fixed(opts.recipe()):
        diff = {k: (ck["recipe"].get(k), v) for k, v in fixed(opts.recipe()).items() if ck["recipe"].get(k) != v}
        raise ValueError(f"--resume: the options differ from the checkpoint's (checkpoint, now): {diff}")
    if ck["dataset_sha256"] != parts[0].data.sha256 or ck.get("more_data_sha256", []) != [
            p.data.sha256 for p in parts[1:]]:
        raise ValueError(f"--resume: the dataset {opts.data} (or one of --more-data) is not the one the checkpoint "
                         "was trained on")
    model.load_canonical_state_dict(ck["model"])
    optim.load_state_dict(ck["optimizer"])
    gen.set_state(ck["generator"])
    return _Progress(ck["epoch"] + 1, ck["best_val"], ck["best_epoch"], ck["best_state"], ck["rows"])


def _train_epoch(opts: TrainOptions, model: FluxNet, optim, gen, parts: list[_Part], elements) -> tuple[float, float]:
    """One pass over the training samples in a seeded random order; returns summed (flux, S) losses."""
    model.train()
    batches = []  # (part, sample indices): batches never mix datasets (their grids may differ)
    for part in parts:
        perm = torch.randperm(part.train_set[0].shape[0], generator=gen)
        batches += [(part, perm[i:i + opts.batch_size]) for i in range(0, len(perm), opts.batch_size)]
    if len(parts) > 1:  # one dataset keeps exactly the order (and random stream) it always had
        batches = [batches[int(j)] for j in torch.randperm(len(batches), generator=gen)]
    sum_f = sum_s = 0.0
    for part, idx in batches:
        data, (x_tr, y_tr, s_tr), s_scale = part.data, part.train_set, part.s_scale
        x, y, s = x_tr[idx], y_tr[idx], s_tr[idx]
        # (a group element mixes the components of one field, which share a weight)
        w = None if part.train_weights is None else part.train_weights[idx]
        if opts.augment:
            g = elements[int(torch.randint(len(elements), (1,), generator=gen))]
            x = data.schema.transform_stacked(g, x, "inputs")
            y = data.schema.transform_stacked(g, y, "outputs")
            s = symmetry.act(g, s, Kind.PSEUDOSCALAR)
        f_loss, s_loss = offline_losses(model, data, x, y, s, s_scale, w)
        loss = f_loss + opts.s_weight * s_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sum_f += float(f_loss.detach()) * len(idx)
        sum_s += float(s_loss.detach()) * len(idx)
    return sum_f, sum_s


def _write_tables(out: Path, rows: list[dict[str, Any]]) -> None:
    _write_csv(out / METRICS_CSV, rows, _CSV_COLUMNS)
    _write_csv(out / TIMING_CSV, rows, _TIMING_COLUMNS)


def _solver_span(parts: list[_Part]) -> dict[str, list[float]]:
    """``[min, max]`` over the training runs of each solver setting that differs between them, read from
    the ``run_solver`` attribute (each run's settings; a family's datasets have it). A family's draws
    cover less than its box, and a network that reads a setting extrapolates beyond what its runs held,
    so the card records both and the couplings say when a solver lies outside the span."""
    runs = [json.loads(p.data.attrs["run_solver"])[r] for p in parts if "run_solver" in p.data.attrs
            for r in p.train_runs]
    numbers = [k for k in (runs[0] if runs else {}) if all(isinstance(c.get(k), (int, float)) for c in runs)]
    span = {k: [min(c[k] for c in runs), max(c[k] for c in runs)] for k in numbers}
    return {k: v for k, v in span.items() if v[0] != v[1]}


def _finish(opts: TrainOptions, model: FluxNet, parts: list[_Part], prog: _Progress,
            n_train: int) -> tuple[dict[str, Any], Path]:
    """Score the best state on the held-out runs (also rotated) and save the model with its card."""
    group = Group.parse(opts.model.group)
    model.load_canonical_state_dict(prog.best_state)
    model.eval()
    data, train_runs, val_runs, s_scale = parts[0].data, parts[0].train_runs, parts[0].val_runs, parts[0].s_scale
    rotated = evaluate(model, data, val_runs, group)
    metrics = {"val": rotated[str(group.identity)],
               "rotated_mean_r2": {g: {"flux_mean": v["flux_mean"], "S_mean": v["S_mean"]}
                                   for g, v in rotated.items()},
               "best_epoch": prog.best_epoch, "best_val_loss": prog.best_val}
    if len(parts) > 1:
        metrics["val_more_data"] = {p.data.path: r2_scores(model, p.data, p.val_runs)
                                    for p in parts[1:]}
    # one thread: two measured far slower on a busy 2-core machine (see benchmarks/bench_models.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        costs = {"ms_per_call_64x64_1thread": round(time_inference(model.export(), repeats=100), 4),
                 "note": "exported net only, batch 1, float32; ratio to a bare solver step: `roteq bench`"}
    finally:
        torch.set_num_threads(threads)
    # The dataset's "solver" attribute is the coarse solver configuration its writer recorded; it is
    # copied as it is (the core does not interpret solver settings) for the couplings' checks.
    solver = json.loads(data.attrs["solver"]) if "solver" in data.attrs else {}
    # the dataset as given, the command that made it (where it records one) and its sha256: a card is
    # read on other machines, where this one's paths mean nothing (the card writer makes them relative)
    training = {"dataset": opts.data, "dataset_sha256": data.sha256,
                **({"dataset_command": data.attrs["command"]} if "command" in data.attrs else {}),
                "dataset_attrs": {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in data.attrs.items()},
                "train_runs": train_runs, "val_runs": val_runs, "n_train_samples": n_train,
                "options": opts.recipe(), "epochs_run": len(prog.rows),
                "python_hash_seed": os.environ.get("PYTHONHASHSEED"), "s_scale_per_layer_s-2": s_scale.tolist(),
                "solver": solver, "command": opts.command}
    span = _solver_span(parts)
    if span:
        training["solver_span"] = span
    if len(parts) > 1:
        training["more_data"] = [{"dataset": p.data.path, "dataset_sha256": p.data.sha256,
                                  "train_runs": p.train_runs, "val_runs": p.val_runs,
                                  "grid": int(p.data.x.shape[-1]), "s_scale_per_layer_s-2": p.s_scale.tolist()}
                                 for p in parts[1:]]
    target = opts.name if opts.name else Path(opts.out) / "model"
    return metrics, save_model(model, target, training=training, metrics=metrics, inference_cost=costs)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------

def train(opts: TrainOptions) -> dict[str, Any]:
    """Train (or resume training) a flux network; returns a summary with the metrics.

    Writes ``<out>/checkpoint.pt`` and ``<out>/metrics.csv`` every epoch; at the end loads the
    best state, scores it on the validation runs (also rotated) and saves the model to
    ``trained_models/<name>`` (or the directory ``name``; ``<out>/model`` if no name).
    """
    from tqdm.auto import tqdm

    if opts.threads:
        torch.set_num_threads(opts.threads)
    with exclusive_output(opts.out):  # one writer per run directory: a second process is refused
        return _train(opts, tqdm)


def _train(opts: TrainOptions, tqdm) -> dict[str, Any]:
    out = Path(opts.out)
    ckpt_path, csv_path = out / CHECKPOINT, out / METRICS_CSV

    parts = _load_parts(opts)
    data = parts[0].data
    x_tr, y_tr, _ = parts[0].train_set

    if os.environ.get("PYTHONHASHSEED") is None:
        # escnn orders the pieces of a kernel basis by iterating over sets of representation names,
        # so the basis (hence the initial function and the whole run) depends on Python's string
        # hashing. Resume is exact regardless: the bases are part of the checkpoint.
        warnings.warn("PYTHONHASHSEED is not set: the same --seed reproduces a run only within this "
                      "process; set PYTHONHASHSEED=0 for runs reproducible across processes", stacklevel=2)
    torch.manual_seed(opts.seed)
    np.random.seed(opts.seed)
    model = build_model(opts.model, schema=data.schema.to_dict())  # the data's layers fix the fields
    _set_normalization(model, data, x_tr, y_tr)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    gen = torch.Generator().manual_seed(opts.seed)
    if ckpt_path.is_file() and not (opts.resume or opts.overwrite):
        raise FileExistsError(f"{out} already holds a training run ({CHECKPOINT}); pass --resume to continue it "
                              "or --overwrite to start over")
    if opts.resume and not ckpt_path.is_file():
        # killed before its first checkpoint: nothing to continue, and starting over is the same run
        warnings.warn(f"--resume: no checkpoint in {out} yet; starting from epoch 0", stacklevel=2)
    prog = (_restore(opts, ckpt_path, parts, model, optim, gen) if opts.resume and ckpt_path.is_file()
            else _Progress(best_state=model.canonical_state_dict()))

    if prog.rows:
        _write_tables(out, prog.rows)  # a kill after the last checkpoint may have left them behind
    elements = Group.parse(opts.model.group).exact_elements()
    n_train = sum(p.train_set[0].shape[0] for p in parts)
    t_start = time.perf_counter()
    epoch = prog.start_epoch - 1
    stopped_early = prog.best_epoch >= 0 and prog.start_epoch - 1 - prog.best_epoch >= opts.patience
    last = opts.epochs if opts.stop_after is None else min(opts.epochs, prog.start_epoch + opts.stop_after)
    bar = tqdm(range(prog.start_epoch, last), initial=prog.start_epoch, total=opts.epochs, unit="epoch",
               desc="train", disable=None if opts.progress is None else not opts.progress)
    for epoch in bar:
        if stopped_early:
            break
        t0 = time.perf_counter()
        lr = _lr_at(opts, epoch)
        for pg in optim.param_groups:
            pg["lr"] = lr
        sum_f, sum_s = _train_epoch(opts, model, optim, gen, parts, elements)
        model.eval()
        val = [_val_losses(model, p.data, p.val_runs, p.s_scale, 64) for p in parts]
        val_f, val_s = (sum(v[i] for v in val) / len(val) for i in (0, 1))
        val_loss = val_f + opts.s_weight * val_s
        r2 = r2_scores(model, data, parts[0].val_runs)
        if val_loss < prog.best_val:
            prog.best_val, prog.best_epoch, prog.best_state = val_loss, epoch, model.canonical_state_dict()
        prog.rows.append({"epoch": epoch, "lr": lr, "train_loss": (sum_f + opts.s_weight * sum_s) / n_train,
                          "train_flux": sum_f / n_train, "train_S": sum_s / n_train, "val_loss": val_loss,
                          "val_flux": val_f, "val_S": val_s, "val_r2_flux_mean": r2["flux_mean"],
                          "val_r2_S_mean": r2["S_mean"], "seconds": time.perf_counter() - t0})
        # the checkpoint first: the tables are rewritten from its rows, so a kill (or a full disk)
        # between the writes leaves them one epoch behind at worst, and a resume restores them
        _save_checkpoint(ckpt_path, {
            "recipe": opts.recipe(), "dataset_sha256": data.sha256, "epoch": epoch,
            **({"more_data_sha256": [p.data.sha256 for p in parts[1:]]} if len(parts) > 1 else {}),
            "model": model.canonical_state_dict(), "optimizer": optim.state_dict(), "generator": gen.get_state(),
            "best_val": prog.best_val, "best_epoch": prog.best_epoch, "best_state": prog.best_state,
            "rows": prog.rows})
        _write_tables(out, prog.rows)
        bar.set_postfix(train=f"{prog.rows[-1]['train_loss']:.3g}", val=f"{val_loss:.3g}", r2=f"{r2['flux_mean']:.3f}")
        stopped_early = epoch - prog.best_epoch >= opts.patience
    bar.close()

    finished = stopped_early or epoch + 1 >= opts.epochs
    summary = {"epochs_run": len(prog.rows), "best_epoch": prog.best_epoch, "best_val_loss": prog.best_val,
               "stopped_early": stopped_early, "finished": finished, "checkpoint": str(ckpt_path),
               "metrics_csv": str(csv_path), "train_seconds": time.perf_counter() - t_start}
    if not finished:
        return summary  # --stop-after: more epochs to go; resume later
    metrics, model_path = _finish(opts, model, parts, prog, n_train)
    summary["model_dir"] = str(model_path)
    summary["metrics"] = metrics
    return summary
