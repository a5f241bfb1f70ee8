"""Fit an operator closure to the truth's subgrid transfer spectra: linear least squares, no solver runs.

A linear isotropic closure ``dq_i = sum_j M_ij(|k|) q_j`` (:class:`OperatorClosure`) acts on the
resolved flow only through what it does to each layer's energy and enstrophy at each scale. Its
transfer spectra on a set of coarse truth states,

* energy:    ``T^E_i(k) = -(H_i / H) sum_shell Re(conj(psi_i) dq_i)``,
* enstrophy: ``T^Z_i(k) =  (H_i / H) sum_shell Re(conj(q_i) dq_i)``,

are linear in ``M`` and so in the closure's weights, and the truth's subgrid forcing ``S`` (the
dataset's ``S_direct``) has the same spectra. :func:`fit_transfer` chooses the weights whose spectra
match the truth's, layer by layer and shell by shell, in one least-squares solve. This is the
"net eddy viscosity" idea of statistical closures (Frederiksen & Kepert 2006, J. Atmos. Sci. 63;
Kitsios, Frederiksen & Zidikheri 2013, Ocean Model. 69) with the cross-layer terms kept, so that both
budgets can be matched at once.

Why not only the twin (:func:`~solver_coupling.torchqg.operator_closure.train_operator_closure`):
trained on windows of hours, the closure learned to *drain* energy at the largest scales
(shells 2-5), where the truth's subgrid forcing *injects* it (backscatter), and scored 0.73 online
against backscatter's 0.80 (docs/results.md). The transfer spectra are the long-time statistics the
online scores judge, averaged over every snapshot of the data.

Each of the ``2 nz`` target spectra is scaled by its own RMS over the fitted shells, so the lower
layer (about 100x less energetic) and enstrophy (different units) count as much as the upper layer's
energy. Units: transfers in the density units of :func:`roteq_param.diagnostics.isotropic_spectrum`
(m^2 s^-3 and s^-3 per rad/m), never needed outside the ratios reported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from roteq_param.diagnostics import isotropic_spectrum
from roteq_param.integrity import open_netcdf
from solver_coupling.torchqg.model import TorchQGModel
from solver_coupling.torchqg.operator_closure import OperatorClosure

__all__ = ["TransferStatistics", "TransferData", "load_transfer_data", "transfer_statistics", "closure_transfer",
           "transfer_mismatch", "fit_transfer"]

_QUANTITIES = ("energy", "enstrophy")


@dataclass(frozen=True)
class TransferStatistics:
    """Second moments of coarse truth states, all a closure's transfer spectra need.

    ``psi_q[i, j]`` and ``q_q[i, j]``: mean over snapshots of ``Re(conj(psi_i) q_j)`` and
    ``Re(conj(q_i) q_j)`` per spectral mode (``[nz, nz, ny, nx // 2 + 1]``, rfft2 layout, m^2 s^-2 and
    s^-2 times the FFT's N^2); ``target``: the truth's transfer spectra ``[2, nz, shells]`` (energy,
    enstrophy) from the subgrid forcing; ``weights``: ``H_i / H``; ``k_r``: shell centres (rad/m).
    """

    L: float
    psi_q: np.ndarray
    q_q: np.ndarray
    target: np.ndarray
    weights: np.ndarray
    k_r: np.ndarray
    snapshots: int


def transfer_statistics(q: np.ndarray, S: np.ndarray, model_kwargs: dict) -> TransferStatistics:
    """Second moments and the truth's transfer spectra of coarse states ``q`` with subgrid forcing ``S``.

    Parameters
    ----------
    q, S:
        ``[snapshots, nz, ny, nx]``: PV (s^-1) and its subgrid forcing (s^-2, added to dq/dt), as a
        ``roteq generate`` dataset's ``q`` and ``S_direct`` with ``run`` and ``time`` flattened.
    model_kwargs:
        pyqg QGModel arguments of the coarse grid (:func:`~solver_coupling.pyqg.diagnostics.model_kwargs_from_attrs`):
        the inversion ``psi = a q`` and the layer thicknesses come from the torch twin built with them.
    """
    q, S = np.asarray(q, dtype=float), np.asarray(S, dtype=float)
    if q.ndim != 4 or q.shape != S.shape:
        raise ValueError(f"q and S must both be [snapshots, nz, ny, nx]; got {q.shape} and {S.shape}")
    if not (np.isfinite(q).all() and np.isfinite(S).all()):
        raise ValueError("q or S holds non-finite values: check the dataset (`roteq verify`)")
    twin = TorchQGModel(1, **{k: v for k, v in model_kwargs.items() if k != "log_level"})
    if (twin.nz, twin.ny, twin.nx) != q.shape[1:]:
        raise ValueError(f"the states are {q.shape[1:]} (nz, ny, nx) but the model configuration is "
                         f"({twin.nz}, {twin.ny}, {twin.nx})")
    c = twin.constants()
    a = c["a_real"][0].numpy()  # (nz, nz, nl, nk)
    weights = (c["Hi"][0] / c["H"][0]).numpy()
    qh, Sh = np.fft.rfft2(q), np.fft.rfft2(S)
    ph = np.einsum("ijlk,tjlk->tilk", a, qh)
    n = len(q)
    psi_q = np.einsum("tilk,tjlk->ijlk", np.conj(ph), qh).real / n
    q_q = np.einsum("tilk,tjlk->ijlk", np.conj(qh), qh).real / n
    k_r, tE = isotropic_spectrum(-(np.conj(ph) * Sh).real.mean(0), twin.L)
    _, tZ = isotropic_spectrum((np.conj(qh) * Sh).real.mean(0), twin.L)
    target = np.stack([tE, tZ]) * weights[None, :, None]
    return TransferStatistics(twin.L, psi_q, q_q, target, weights, k_r, n)


def closure_transfer(closure: OperatorClosure, stats: TransferStatistics) -> np.ndarray:
    """Transfer spectra ``[2, nz, shells]`` (energy, enstrophy) of ``closure`` on the states behind ``stats``."""
    m = _real_multiplier(closure)  # M[i, j, l, k], s^-1
    _, tE = isotropic_spectrum(-np.einsum("ijlk,ijlk->ilk", m, stats.psi_q), stats.L)
    _, tZ = isotropic_spectrum(np.einsum("ijlk,ijlk->ilk", m, stats.q_q), stats.L)
    return np.stack([tE, tZ]) * stats.weights[None, :, None]


def _real_multiplier(closure: OperatorClosure) -> np.ndarray:
    """The closure's multiplier as a real array: radial kernels are even, so its imaginary part is round-off."""
    with torch.no_grad():
        return closure.multiplier(torch.float64).numpy().real


def _fitted_shells(stats: TransferStatistics) -> np.ndarray:
    return stats.k_r > 0


def transfer_mismatch(closure: OperatorClosure | None, stats: TransferStatistics) -> dict[str, float]:
    """Relative mismatch ``||T_closure - T_truth|| / ||T_truth||`` per budget and layer over the fitted
    shells (1 for no closure, ``closure=None``)."""
    keep = _fitted_shells(stats)
    got = np.zeros_like(stats.target) if closure is None else closure_transfer(closure, stats)
    out = {}
    for b, name in enumerate(_QUANTITIES):
        for i in range(stats.target.shape[1]):
            t = stats.target[b, i, keep]
            out[f"{name}{i + 1}"] = float(np.linalg.norm(got[b, i, keep] - t) / np.linalg.norm(t))
    return out


LAYER_CHOICES = ("coupled", "separate", "upper")
"""What a transfer fit fits: every operator, each layer's own only, or the upper layer's own only."""


def fit_transfer(closure: OperatorClosure, stats: TransferStatistics, *, ridge: float = 1e-9,
                 budgets: tuple[str, ...] = _QUANTITIES, layers: str = "coupled") -> dict[str, float]:
    """Set ``closure``'s weights to those whose transfer spectra best match ``stats.target``.

    The multiplier is linear in the weights, so each weight's unit multiplier is built once and the
    scaled residual is minimised by one regularised normal-equation solve (``ridge`` relative to the
    mean diagonal of the normal matrix; it only keeps the solve well posed). ``budgets``: which spectra
    are matched (``"energy"``, ``"enstrophy"``). ``layers="separate"`` keeps the cross-layer operators at
    zero, so each layer's PV forces only itself. (Online on the jet, the coupled fit's lower-layer KE
    distribution ended 7.5x farther from the truth's than no closure's; the per-layer fits did not run
    away: docs/results.md.) ``layers="upper"`` fits the upper layer's own operator to the upper layer's
    spectra and leaves every other operator zero: the lower layer is forced by nothing (on the jet every
    closure measured worsened the lower layer's PV distribution most). Returns the fit's
    :func:`transfer_mismatch` on ``stats``, over every budget.
    """
    if closure.nz != stats.target.shape[1] or abs(closure.L - stats.L) > 1e-9 * stats.L:
        raise ValueError(f"the closure (nz={closure.nz}, L={closure.L:g} m) does not match the statistics "
                         f"(nz={stats.target.shape[1]}, L={stats.L:g} m)")
    if not budgets or set(budgets) - set(_QUANTITIES):
        raise ValueError(f"budgets must be among {_QUANTITIES}; got {tuple(budgets)}")
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {LAYER_CHOICES}; got {layers!r}")
    # ops[i * nz + j] maps layer j's PV to layer i's tendency; uncoupled, only i == j is fitted, the rest zeroed
    fitted = [layers == "coupled" or (k // closure.nz == k % closure.nz and (layers == "separate" or k == 0))
              for k in range(len(closure.ops))]
    matched = list(range(closure.nz)) if layers != "upper" else [0]  # the layers whose spectra are matched
    with torch.no_grad():
        for op, fit in zip(closure.ops, fitted):
            if not fit:
                for p in op.parameters():
                    p.zero_()
    params = [p for op, fit in zip(closure.ops, fitted) if fit for p in op.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    n = sum(sizes)

    def set_weights(vector: np.ndarray) -> None:
        with torch.no_grad():
            for p, chunk in zip(params, np.split(vector, np.cumsum(sizes)[:-1])):
                p.copy_(torch.as_tensor(chunk, dtype=p.dtype).reshape(p.shape))

    columns = []
    for index in range(n):
        set_weights(np.eye(n)[index])
        columns.append(closure_transfer(closure, stats))
    keep = _fitted_shells(stats)
    rows = [_QUANTITIES.index(b) for b in budgets]
    design = np.stack(columns, -1)[rows][:, matched][:, :, keep]  # [budgets, layers, shells, n]
    target = stats.target[rows][:, matched][:, :, keep]
    scale = np.sqrt(np.mean(target**2, axis=-1, keepdims=True))
    A = (design / scale[..., None]).reshape(-1, n)
    b = (target / scale).ravel()
    normal = A.T @ A
    normal[np.diag_indices(n)] += ridge * np.trace(normal) / n
    set_weights(np.linalg.solve(normal, A.T @ b))
    return transfer_mismatch(closure, stats)


@dataclass(frozen=True)
class TransferData:
    """A dataset's training and held-out statistics, and what a card records of it."""

    train: TransferStatistics
    held_out: TransferStatistics
    model_kwargs: dict[str, Any]
    holdout_runs: list[int]
    sha256: str
    command: str


def load_transfer_data(path: str | os.PathLike, holdout: int = 1) -> TransferData:
    """Statistics of a ``roteq generate`` dataset (``q``, ``S_direct``), its last ``holdout`` runs held out."""
    from solver_coupling.pyqg.diagnostics import model_kwargs_from_attrs

    with open_netcdf(path, "training dataset", "re-run the `roteq generate` command that made it") as ds:
        missing = [v for v in ("q", "S_direct") if v not in ds]
        if missing:
            raise ValueError(f"dataset {path} has no {', '.join(missing)}: fit operator closures to coarse-grained "
                             "truth written by `roteq generate` (or `roteq coarsen`)")
        runs = ds.sizes.get("run", 1)
        if not 1 <= holdout < runs:
            raise ValueError(f"--holdout must be between 1 and {runs - 1}: dataset {path} holds {runs} runs")
        kwargs = model_kwargs_from_attrs(ds)
        q = ds["q"].transpose("run", "time", "lev", "y", "x").values
        S = ds["S_direct"].transpose("run", "time", "lev", "y", "x").values
        digest, command = ds.encoding["sha256"], str(ds.attrs.get("command", ""))
    flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
    cut = runs - holdout
    return TransferData(transfer_statistics(flat(q[:cut]), flat(S[:cut]), kwargs),
                        transfer_statistics(flat(q[cut:]), flat(S[cut:]), kwargs), kwargs,
                        list(range(cut, runs)), digest, command)
