"""Operator closures as model folders: save, verify and load (the shipped ``trained_models/eddy-operator``).

A folder holds

* ``operator.pt``: ``{"config": OperatorClosure.config(), "state_dict": ...}`` (weights dimensionless,
  multiples of ``config["rate"]`` in s^-1);
* ``card.json``: ``kind = "operator-closure"``, the closure's config, the solver configuration it was
  trained in (``training.solver``, pyqg's parameters in SI units) and how it was trained and scored;
* ``CARD.md``: the same for people;

each with its sha256 manifest, written together (:func:`~roteq_param.atomic.atomic_write_files`), so a
damaged or half-written folder is refused by name, never read as weights. It is the flux networks'
format (``model.pt`` + card) with another weights file, so :func:`is_operator_model` tells the two apart
by which file is there.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from roteq_param.atomic import atomic_write_files
from roteq_param.integrity import CorruptFileError, verify_file
from roteq_param.models import model_dir
from solver_coupling.torchqg.operator_closure import OperatorClosure

__all__ = ["KIND", "WEIGHTS", "is_operator_model", "save_operator_closure", "load_operator_closure"]

KIND = "operator-closure"
WEIGHTS = "operator.pt"
_REMEDY = "re-run the `roteq train-operator` command that made it (or restore the folder from git)"


def is_operator_model(name_or_path: str | os.PathLike | None) -> bool:
    """Whether ``name_or_path`` (a name under ``trained_models/`` or a folder) is an operator closure."""
    if name_or_path is None or not isinstance(name_or_path, (str, os.PathLike)):
        return False
    return (model_dir(name_or_path) / WEIGHTS).is_file()


def _card_markdown(card: Mapping[str, Any]) -> str:
    c, t = card["config"], card.get("training", {})
    solver = t.get("solver", {})
    lines = [f"# {card.get('name', 'operator closure')}", "",
             "A learned isotropic operator closure for pyqg's two-layer QGModel: the PV tendency of layer i is "
             "`dq_i = sum_j A_ij q_j`, each `A_ij` a radial kernel (a Fourier multiplier of |k| only), so it is "
             "rotation-invariant at every angle by construction and conserves each layer's mean PV.", "",
             f"* grid: {c['nx']}² over L = {c['L'] / 1e3:g} km, {c['nz']} layers; kernel radius "
             f"{c['radius_cells']:g} cells, {c['n_basis']} hat functions per profile, rate scale {c['rate']:g} s⁻¹",
             ("* fitted to the truth's subgrid energy and enstrophy transfer spectra (`roteq train-operator --method "
              "transfer`) of coarse-grained truth: " if t.get("method") == "transfer" else
              "* trained through the torch twin (`roteq train-operator --method twin`) on coarse-grained truth windows: ")
             + f"`{t.get('dataset', '?')}` (made by `{t.get('dataset_command', '?')}`), held-out runs {t.get('holdout_runs', '?')}",
             "* training solver configuration: " + ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                                                            for k, v in sorted(solver.items()))]
    held = t.get("held_out_loss")
    if held:
        lines += ["", "Held-out trajectory loss (resolved band, `train-online`'s loss):", "",
                  "| unroll (steps) | no closure | operator closure |", "|---|---|---|"]
        lines += [f"| {n} | {r['none']:.4e} | {r['operator']:.4e} |" for n, r in held.items()]
    transfer = t.get("held_out_transfer_mismatch")
    if transfer:
        lines += ["", "Held-out transfer-spectrum mismatch `||T - T_truth|| / ||T_truth||` (1 = no closure):", "",
                  "| budget, layer | no closure | operator closure |", "|---|---|---|"]
        lines += [f"| {n} | {r['none']:.3f} | {r['operator']:.3f} |" for n, r in transfer.items()]
    for key, text in card.get("metrics", {}).items():
        lines += ["", f"**{key}**: {text}"]
    return "\n".join(lines) + "\n"


def save_operator_closure(closure: OperatorClosure, name_or_path: str | os.PathLike, *, solver: Mapping[str, Any],
                          training: Mapping[str, Any] | None = None, name: str | None = None) -> Path:
    """Write the closure's folder (weights, card, CARD.md, manifests) atomically; returns the folder.

    ``solver``: the pyqg configuration the closure was trained in (``solver_config_of`` keys, SI units);
    the pyqg plugin refuses another one unless told otherwise.
    """
    folder = model_dir(name_or_path)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"config": closure.config(), "state_dict": closure.state_dict()}, buf)
    card = {"kind": KIND, "name": name or folder.name, "config": closure.config(),
            "training": {"solver": dict(solver), **dict(training or {})}}
    atomic_write_files({folder / WEIGHTS: buf.getvalue(),
                        folder / "card.json": json.dumps(card, indent=2, default=float).encode(),
                        folder / "CARD.md": _card_markdown(card).encode()}, checksum=True)
    return folder


def load_operator_closure(name_or_path: str | os.PathLike) -> tuple[OperatorClosure, dict[str, Any], str]:
    """``(closure, card, weights sha256)`` of a saved operator closure, both files verified first.

    Raises :class:`FileNotFoundError` for a folder without ``operator.pt`` and
    :class:`~roteq_param.integrity.CorruptFileError` for a damaged one.
    """
    folder = model_dir(name_or_path)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} holds no operator closure (no {WEIGHTS}); train one with "
                                "`roteq train-operator`, or give a flux network to RotEqParameterization")
    digest = verify_file(weights, "operator closure weights", _REMEDY)
    verify_file(folder / "card.json", "operator closure card", _REMEDY)
    card = json.loads((folder / "card.json").read_text())
    if card.get("kind") != KIND:
        raise CorruptFileError(f"{folder / 'card.json'} is not an operator closure's card (kind {card.get('kind')!r})")
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    closure = OperatorClosure(**saved["config"])
    closure.load_state_dict(saved["state_dict"])
    return closure.eval(), card, digest
