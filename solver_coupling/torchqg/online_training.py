"""Training a flux network through the torch twin (a-posteriori training).

The network runs inside :class:`~solver_coupling.torchqg.TorchQGModel` (``FluxNetClosure`` with
``differentiable=True``); the twin starts from coarse-grained truth PV at the start of a trajectory
window and is unrolled for ``n`` steps; the loss compares every step with the coarse-grained truth
stored in the dataset (``q_traj``, written by ``roteq generate --window-steps``)::

    loss = mean over steps, members and layers of  sum_k |q_twin - q_truth|^2 / sum_k |q_truth|^2

over the wavenumbers k that pyqg's filter leaves alone (``|k| dx <= 0.65 pi``; ``scales="all"``: every
wavenumber, i.e. the grid-space error by Parseval), per layer so both layers count. Why the mask
(measured on the eddy windows, twin error / truth power after 1 step, by isotropic wavenumber
index of 32): 6.5e-4 in the filtered band 21-32 against 5e-7 in 16-21 and below 1e-7 under 16.
The filter takes the coarse-grained truth's near-cut-off content apart every step; no closure
should learn to undo that, and on the whole spectrum every shipped network raised the loss by 2 %
over no network, while on the resolved band it lowers the error where it acts (16-21: -15 %).

Gradients flow through the solver and the network to the weights of the escnn network, which stays
exactly equivariant (it is the same ``FluxNet``). A curriculum grows the unroll length stage by stage
(Frezat et al. 2022). ``checkpoint_every`` keeps long unrolls in memory (``torch.utils.checkpoint``
blocks).

This module is the online counterpart of :mod:`roteq_param.train` and belongs to the coupling side:
it needs the twin, hence pyqg's equations.

Measured (README "Training through the solver"): with the whole-spectrum loss (``scales="all"``),
unrolls of 4-16 steps and Adam at lr 1e-4, the fine-tuned model's long runs ran away in energy; with
the resolved loss the same recipe gave ``eddy-c4-dilated-apost`` (held-out loss -1 to -2 % per stage,
online similarity 0.58 -> 0.86). The held-out loss moves little either way: check any fine-tuned
model online.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roteq_param import fluxform, models
from roteq_param.atomic import exclusive_output
from roteq_param.integrity import CorruptFileError, open_netcdf

__all__ = ["TrajectoryWindows", "load_windows", "unroll_misfit", "window_loss", "window_terms", "shell_power", "OnlineOptions",
           "train_online"]

# pyqg settings of the coarse solver that the twin takes (the dataset's "solver" attribute holds them)
_TWIN_KEYS = ("nx", "L", "W", "rd", "delta", "H1", "U1", "U2", "beta", "rek")


@dataclass
class TrajectoryWindows:
    """Coarse truth trajectories: ``q`` ``[R, W, S + 1, 2, n, n]`` in s^-1 (run, window, step), and the
    coarse solver they belong to (``twin_kwargs``: pyqg parameter names, SI units; ``dt`` in s)."""

    q: torch.Tensor
    twin_kwargs: dict[str, Any]
    path: str = ""
    sha256: str = ""
    command: str = ""  # the `roteq generate` command that made the dataset (its attribute), for model cards

    @property
    def steps(self) -> int:
        return self.q.shape[2] - 1


def load_windows(path: str | os.PathLike) -> TrajectoryWindows:
    """Read ``q_traj`` and the coarse solver settings from a dataset written by ``roteq generate``."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset {path} does not exist (make one with `roteq generate --window-steps N`)")
    with open_netcdf(path, "training dataset", "re-run the `roteq generate` command that made it") as ds:
        if "q_traj" not in ds:
            raise ValueError(f"dataset {path} has no trajectory windows (q_traj); generate it with --window-steps")
        if "solver" not in ds.attrs:
            raise ValueError(f"dataset {path} does not record its coarse solver (attribute 'solver')")
        solver = json.loads(ds.attrs["solver"])
        varied = sorted(k for k in _TWIN_KEYS if isinstance(solver.get(k), list))
        if varied:
            raise ValueError(f"dataset {path} is a family (its runs vary {', '.join(varied)}); training through the "
                             "twin unrolls one configuration: generate windows of one")
        config = json.loads(ds.attrs.get("config", "{}")).get("params", {})
        kwargs = {k: solver[k] for k in _TWIN_KEYS if k in solver}
        kwargs["dt"] = float(ds["wstep"].attrs.get("dt_s", config.get("dt", 3600.0)))
        if "filterfac" in config:
            kwargs["filterfac"] = float(config["filterfac"])
        q = torch.from_numpy(np.ascontiguousarray(ds["q_traj"].values, dtype=np.float32))
    return TrajectoryWindows(q, kwargs, path, ds.encoding["sha256"], str(ds.attrs.get("command", "")))


SCALES = ("resolved", "all")


def shell_power(zh: torch.Tensor, weight: torch.Tensor, shells: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Power of the rfft2 coefficients ``zh`` ``[..., ny, nk]`` summed over each isotropic shell
    ``1 .. n_shells`` (``weight``: half-plane weights times a mask; ``shells``:
    :func:`roteq_param.fluxform.shell_index`).
    Returns ``[..., n_shells]`` in the units of ``|zh|^2``."""
    p = (zh.real.pow(2) + zh.imag.pow(2)) * weight
    flat = p.flatten(-2)
    # shell 0 (the mean) and every shell past n_shells go to bins that are dropped
    out = flat.new_zeros(*flat.shape[:-1], n_shells + 2).index_add(-1, shells.flatten().clamp(max=n_shells + 1), flat)
    return out[..., 1:n_shells + 1]


def window_loss(net: models.FluxNet, windows: TrajectoryWindows, runs: torch.Tensor, starts: torch.Tensor,
                n: int, *, checkpoint_every: int | None = None, scales: str = "resolved",
                spectral_weight: float = 0.0, call_interval: int = 1) -> torch.Tensor:
    """Normalised trajectory loss of ``net`` in the twin over ``n`` steps from the given windows.

    ``runs`` and ``starts`` index the windows (one twin member each); the twin and the network run in
    the network's dtype on its device. ``scales``: ``"resolved"`` (the wavenumbers the filter leaves
    alone, default) or ``"all"`` (see the module docstring).

    ``spectral_weight`` > 0 adds that multiple of a phase-blind term: the mean squared log-ratio of the
    twin's PV power to the truth's in each isotropic shell of the compared wavenumbers (every step,
    member and layer). Why: the pointwise error of a chaotic trajectory rewards damping what the
    closure cannot place exactly (the double penalty), and 32-step unrolls trained on it alone made
    the closure too dissipative at the grid scale (README, "three tries on the worst score"); the
    shell powers are what the long-run spectra and distributions are scored on, and they do not
    care where an eddy sits. Measured online (README, "Training through the solver, re-run and
    varied"): models fine-tuned with it at w = 1-100 had too large a PV standard deviation in their long runs
    and scored below the default; a window that starts on the truth cannot tell where the closure's
    own climate settles.
    """
    if not spectral_weight >= 0:
        raise ValueError(f"spectral_weight must be >= 0, got {spectral_weight!r}")
    traj_loss, spectral_loss = window_terms(net, windows, runs, starts, n, checkpoint_every=checkpoint_every,
                                            scales=scales, spectral=spectral_weight > 0,
                                            call_interval=call_interval)
    return traj_loss if spectral_weight == 0 else traj_loss + spectral_weight * spectral_loss


def unroll_misfit(parameterization: Any, windows: TrajectoryWindows, runs: torch.Tensor, starts: torch.Tensor,
                  n: int, *, dtype: torch.dtype, device: Any = None, checkpoint_every: int | None = None,
                  scales: str = "resolved", call_interval: int = 1,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unroll the twin with ``parameterization`` for ``n`` steps from the truth at each window start.

    Returns ``(traj, ref, weight, traj_loss)``: the twin's trajectory ``[n, B, nz, y, x]``, the truth's
    half-plane spectra ``rfft2`` at the same steps, the half-plane weights of the compared wavenumbers
    (``scales``: those the filter leaves alone, or all), and the trajectory loss, the mean over steps,
    members and layers of ``sum_k |q_twin - q_truth|^2 / sum_k |q_truth|^2`` (dimensionless). Every
    closure trained through the twin (the flux network, the operator closure) is scored by it.
    ``call_interval``: the twin evaluates the parameterization every k steps and holds it in between,
    as the pyqg plugin does at that setting, so a closure can be trained for the cadence it will run at.
    """
    if scales not in SCALES:
        raise ValueError(f"scales must be one of {SCALES}, got {scales!r}")
    from solver_coupling.torchqg import TorchQGModel

    if not 1 <= n <= windows.steps:
        raise ValueError(f"unroll length {n} must be between 1 and the windows' {windows.steps} steps")
    truth = windows.q[runs, starts, : n + 1].to(device=device, dtype=dtype)  # [B, n+1, nz, y, x]
    twin = TorchQGModel(len(runs), device=device, dtype=dtype, parameterization=parameterization,
                        call_interval=call_interval, **windows.twin_kwargs)
    twin.q = truth[:, 0]
    traj = twin.unroll(n, save_every=1, checkpoint_every=checkpoint_every)  # [n, B, nz, y, x]
    target = truth[:, 1:].transpose(0, 1)
    err, ref = torch.fft.rfft2(traj - target), torch.fft.rfft2(target)
    # rfft2 keeps one of each +-k pair of columns: count the others twice (Parseval)
    weight = torch.from_numpy(fluxform.half_plane_weights(*err.shape[-2:])).to(dtype=dtype, device=device)
    if scales == "resolved":
        weight = weight * twin.unfiltered.to(dtype)
    power = lambda z: (z.real.pow(2) + z.imag.pow(2)).mul(weight).sum(dim=(-2, -1))  # noqa: E731
    return traj, ref, weight, (power(err) / power(ref).clamp_min(1e-300)).mean()


def window_terms(net: models.FluxNet, windows: TrajectoryWindows, runs: torch.Tensor, starts: torch.Tensor,
                 n: int, *, checkpoint_every: int | None = None, scales: str = "resolved",
                 spectral: bool = True, call_interval: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The two terms of :func:`window_loss` from one unroll: the trajectory loss and, with ``spectral``,
    the shell-power term (else None). Both are dimensionless."""
    from solver_coupling.torchqg.closures import FluxNetClosure

    dtype, device = net.in_scale.dtype, net.in_scale.device
    traj, ref, weight, traj_loss = unroll_misfit(FluxNetClosure(net, dtype=dtype, differentiable=True), windows,
                                                 runs, starts, n, dtype=dtype, device=device,
                                                 checkpoint_every=checkpoint_every, scales=scales,
                                                 call_interval=call_interval)
    if not spectral:
        return traj_loss, None
    shells_np = fluxform.shell_index(traj.shape[-1], 1.0)  # on a square grid the index does not depend on L
    # only shells wholly inside the compared band: one that the filter's edge cuts keeps a few of its
    # modes, whose power is too noisy for a log-ratio
    dropped = weight.cpu().numpy() == 0
    n_shells = int(shells_np[dropped].min()) - 1 if dropped.any() else int(shells_np.max())
    shells = torch.from_numpy(shells_np).to(device)
    tiny = torch.finfo(dtype).tiny
    log_twin = shell_power(torch.fft.rfft2(traj), weight, shells, n_shells).clamp_min(tiny).log()
    log_truth = shell_power(ref, weight, shells, n_shells).clamp_min(tiny).log()
    return traj_loss, (log_twin - log_truth).pow(2).mean()


@dataclass
class OnlineOptions:
    """A fine-tuning run through the twin. ``init`` is the model to start from (name or directory),
    ``unroll`` the curriculum (one stage per length), ``iterations`` per stage, ``batch`` windows per
    iteration; the last ``val_runs`` runs are held out and scored at the end of every stage;
    ``scales`` is :func:`window_loss`'s.

    ``offline_weight`` > 0 adds that multiple of the offline loss of ``roteq train`` (flux + S, on
    ``offline_batch`` random snapshots of the training runs of the same dataset) to every iteration:
    a regulariser that keeps the network near what it fits offline while the trajectory loss, which
    constrains the closure only weakly over a few hours, moves it.

    ``spectral_weight`` > 0 adds :func:`window_loss`'s shell-power term with that weight. The held-out
    figures of every stage record both terms apart (``val_loss`` is the trajectory loss alone, so runs
    with and without the term compare)."""

    data: str
    init: str
    out: str
    name: str | None = None
    unroll: tuple[int, ...] = (4, 8, 16)
    iterations: int = 50
    batch: int = 4
    lr: float = 1e-4
    val_runs: int = 1
    seed: int = 0
    checkpoint_every: int | None = 8
    threads: int | None = 1
    progress: bool | None = None
    offline_weight: float = 0.0
    offline_batch: int = 16
    scales: str = "resolved"
    call_interval: int = 1
    spectral_weight: float = 0.0


def _snapshots_or_none(path: str):
    """The dataset's snapshots for offline scores, or None if it holds only trajectory windows."""
    from roteq_param.train import load_dataset

    try:
        return load_dataset(path)
    except CorruptFileError:
        raise
    except (ValueError, KeyError):
        return None


class _OfflineTerm:
    """The offline loss on random snapshots of the training runs (``OnlineOptions.offline_weight``)."""

    def __init__(self, opts: OnlineOptions, n_runs: int):
        from roteq_param.train import load_dataset, s_scales

        self.data = load_dataset(opts.data)
        if self.data.n_runs != n_runs:
            raise ValueError(f"{opts.data}: {self.data.n_runs} runs of snapshots but {n_runs} of windows")
        self.x, self.y, self.s = self.data.samples(list(range(n_runs - opts.val_runs)))
        self.s_scale = s_scales(self.s)
        self.batch = opts.offline_batch

    def loss(self, net: models.FluxNet, gen: torch.Generator) -> torch.Tensor:
        from roteq_param.train import offline_losses

        idx = torch.randint(self.x.shape[0], (self.batch,), generator=gen)
        dtype = net.in_scale.dtype
        f, s = offline_losses(net, self.data, self.x[idx].to(dtype), self.y[idx].to(dtype), self.s[idx].to(dtype),
                              self.s_scale.to(dtype))
        return f + s


def train_online(opts: OnlineOptions) -> dict[str, Any]:
    """Fine-tune ``opts.init`` through the twin; saves the model with its card and returns a summary.

    ``opts.out`` is held for the whole run (:func:`~roteq_param.atomic.exclusive_output`): a second
    process started on the same folder is refused at once with ``OutputLocked`` instead of training
    beside the first and overwriting its model at the end.
    """
    with exclusive_output(opts.out):
        return _train_online(opts)


def _train_online(opts: OnlineOptions) -> dict[str, Any]:
    from tqdm.auto import tqdm

    if opts.threads:
        torch.set_num_threads(opts.threads)
    windows = load_windows(opts.data)
    R, W = windows.q.shape[:2]
    if not 1 <= opts.val_runs < R:
        raise ValueError(f"val_runs must be between 1 and {R - 1} (the dataset has {R} runs)")
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    init_dir = models.model_dir(opts.init)
    net = models.load_model(init_dir).train()
    card = models.load_card(init_dir)
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr)
    train_runs, val_runs = R - opts.val_runs, torch.arange(R - opts.val_runs, R)
    val_idx = (val_runs.repeat_interleave(W), torch.arange(W).repeat(len(val_runs)))
    offline = _OfflineTerm(opts, R) if opts.offline_weight > 0 else None
    if not opts.spectral_weight >= 0:
        raise ValueError(f"spectral_weight must be >= 0, got {opts.spectral_weight!r}")
    spectral = opts.spectral_weight > 0

    def held_out(n: int) -> tuple[float, float | None]:
        with torch.no_grad():
            traj, spec = window_terms(net, windows, *val_idx, n, scales=opts.scales, spectral=spectral,
                                      call_interval=opts.call_interval)
        return float(traj), None if spec is None else float(spec)

    history = []
    for n in opts.unroll:
        before, spec_before = held_out(n)
        bar = tqdm(range(opts.iterations), desc=f"unroll {n}", disable=None if opts.progress is None else not opts.progress)
        for _ in bar:
            runs = torch.randint(train_runs, (opts.batch,), generator=gen)
            starts = torch.randint(W, (opts.batch,), generator=gen)
            loss = window_loss(net, windows, runs, starts, n, checkpoint_every=opts.checkpoint_every,
                               scales=opts.scales, spectral_weight=opts.spectral_weight,
                               call_interval=opts.call_interval)
            if offline is not None:
                loss = loss + opts.offline_weight * offline.loss(net, gen)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
        val, spec = held_out(n)
        history.append({"unroll": n, "val_loss_before": before, "val_loss": val,
                        "last_train_loss": float(loss.detach())})
        if spectral:
            history[-1].update(val_spectral_before=spec_before, val_spectral=spec)
    net.eval()
    training = {**card.get("training", {}),
                "online": {"init": str(init_dir), "init_sha256": card.get("model_sha256", ""), "dataset": opts.data,
                           "dataset_sha256": windows.sha256, "unroll": list(opts.unroll),
                           "iterations": opts.iterations, "batch": opts.batch, "lr": opts.lr, "seed": opts.seed,
                           "offline_weight": opts.offline_weight, "offline_batch": opts.offline_batch,
                           "scales": opts.scales, "spectral_weight": opts.spectral_weight,
                           "call_interval": opts.call_interval,
                           "val_runs": val_runs.tolist(), "history": history}}
    target = opts.name if opts.name else Path(opts.out) / "model"
    # the offline metrics of the starting model do not describe this one: its own held-out R^2 on the
    # snapshots of the held-out runs (when the dataset has them) and the online losses are recorded
    metrics: dict[str, Any] = {"online": history}
    offline_data = offline.data if offline is not None else _snapshots_or_none(opts.data)
    if offline_data is not None:
        from roteq_param.train import r2_scores

        with torch.no_grad():
            metrics["val"] = r2_scores(net, offline_data, val_runs.tolist())
        metrics["val_runs"] = val_runs.tolist()
    model_path = models.save_model(net, target, training=training, metrics=metrics)
    return {"model_dir": str(model_path), "history": history,
            "val_loss_first_stage": history[0]["val_loss"] if history else math.nan}
