"""An operator family: operator closures fitted in several configurations of one grid, blended for the
configurations between them (the shipped ``trained_models/operators-64``).

Each anchor is an operator closure (``roteq train-operator``) fitted to one configuration's transfer spectra.
The family accepts a solver whose physical settings lie in the box the anchors span (every setting the
anchors share equal, every setting they differ in between their extremes) and applies

    M(config) = sum_a w_a(config) M_a,     w_a = d_a^-2 / sum_b d_b^-2,

with ``d_a`` the distance from the solver's settings to anchor a's, each setting taken in log and divided
by the box's log-width in it (Shepard's inverse-distance weighting). At an anchor the weight is 1, so the
family reproduces every fitted closure exactly; between anchors it is a weighted sum of isotropic
multipliers, hence isotropic, as cheap as one closure and mean-PV conserving. The anchors share their
kernel basis (grid, radius, hat functions, rate), so the blend is the closure with blended weights: the
torch twin and the pyqg plugin apply the same operator.

A folder holds ``card.json`` (``kind = "operator-family"``, the anchors as names under
``trained_models/`` or folders, the box) and ``CARD.md``, with sha256 manifests, written atomically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from roteq_param.atomic import atomic_write_files
from roteq_param.integrity import CorruptFileError, verify_file
from roteq_param.models import model_dir
from solver_coupling.pyqg.family import is_range
from solver_coupling.torchqg.operator_closure import OperatorClosure
from solver_coupling.torchqg.operator_store import is_operator_model, load_operator_closure

__all__ = ["FAMILY_KIND", "OperatorFamily", "is_operator", "is_operator_family", "save_operator_family", "load_operator_family"]

FAMILY_KIND = "operator-family"
_REMEDY = "re-run the `roteq combine-operators` command that made it (or restore the folder from git)"
# settings pyqg derives from others (the layers' couplings, H2): they move with rd and delta, so they
# bound the box but do not count again in the distance
_DERIVED = ("G1up", "G1low", "H2")


def is_operator_family(name_or_path: str | os.PathLike | None) -> bool:
    """Whether ``name_or_path`` (a name under ``trained_models/`` or a folder) is an operator family."""
    if name_or_path is None or not isinstance(name_or_path, (str, os.PathLike)):
        return False
    card = model_dir(name_or_path) / "card.json"
    if not card.is_file() or (card.parent / "operator.pt").is_file() or (card.parent / "model.pt").is_file():
        return False
    try:
        return json.loads(card.read_text()).get("kind") == FAMILY_KIND
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def is_operator(name_or_path: str | os.PathLike | None) -> bool:
    """Whether ``name_or_path`` is an operator closure or an operator family (both run in
    :class:`~solver_coupling.pyqg.operator_plugin.OperatorParameterization`)."""
    return is_operator_model(name_or_path) or is_operator_family(name_or_path)


@dataclass
class OperatorFamily:
    """Anchor closures (one grid, one kernel basis) and their training configurations (SI units)."""

    name: str
    anchors: list[OperatorClosure]
    configs: list[dict[str, float]]
    anchor_names: list[str]
    weights_sha256: str  # of the anchors' weights, joined: what changes if any anchor changes

    def __post_init__(self) -> None:
        if len(self.anchors) < 2:
            raise ValueError(f"an operator family needs at least two anchor closures, got {len(self.anchors)}")
        basis = {json.dumps(a.config(), sort_keys=True) for a in self.anchors}
        if len(basis) != 1:
            raise ValueError("the anchors of an operator family must share grid and kernel basis (L, nx, nz, "
                             f"radius_cells, n_basis, rate); got {sorted(basis)}")
        keys = set(self.configs[0])
        for name, cfg in zip(self.anchor_names[1:], self.configs[1:]):
            if set(cfg) != keys:
                raise ValueError(f"anchor {name} records other solver settings than {self.anchor_names[0]}: "
                                 f"{sorted(set(cfg) ^ keys)}")

    @property
    def regime(self) -> dict[str, Any]:
        """The solver settings the family accepts: a number where the anchors agree, else ``[lo, hi]``."""
        out: dict[str, Any] = {}
        for key in self.configs[0]:
            values = [float(c[key]) for c in self.configs]
            same = all(math.isclose(v, values[0], rel_tol=1e-6, abs_tol=1e-30) for v in values)
            out[key] = values[0] if same else [min(values), max(values)]
        return out

    def weights(self, config: Mapping[str, float]) -> list[float]:
        """Each anchor's weight at the solver settings ``config`` (inside :attr:`regime`), summing to 1."""
        varying = [k for k, v in self.regime.items() if is_range(v) and k not in _DERIVED]
        dist = []
        for cfg in self.configs:
            d2 = 0.0
            for k in varying:
                lo, hi = self.regime[k]
                # log where the setting keeps its sign over the box (rates, beta, delta), else linear
                f = (lambda x: math.log(x)) if lo > 0 else (lambda x: x)
                width = f(hi) - f(lo)
                d2 += ((f(float(config[k])) - f(float(cfg[k]))) / width) ** 2
            dist.append(d2)
        exact = [i for i, d in enumerate(dist) if d < 1e-20]
        if exact:
            return [1.0 if i == exact[0] else 0.0 for i in range(len(dist))]
        inv = [1.0 / d for d in dist]
        return [w / sum(inv) for w in inv]

    def closure_for(self, config: Mapping[str, float]) -> OperatorClosure:
        """The blended closure at the solver settings ``config``: the anchors' weights, weighted."""
        w = self.weights(config)
        out = OperatorClosure(**self.anchors[0].config())
        blended = {k: sum(wa * a.state_dict()[k] for wa, a in zip(w, self.anchors))
                   for k in self.anchors[0].state_dict()}
        out.load_state_dict(blended)
        return out.eval()


def _card_markdown(card: Mapping[str, Any]) -> str:
    lines = [f"# {card['name']}", "",
             "An operator family for pyqg's two-layer QGModel: operator closures fitted in several configurations "
             "of one grid (the anchors), blended between them by inverse-distance weights in log parameters "
             "(`solver_coupling/torchqg/operator_family.py`). At an anchor it is that anchor's closure.", "",
             "Anchors: " + ", ".join(f"`{a}`" for a in card["anchors"]), "",
             "Accepted solver settings (a number: as every anchor; `[lo, hi]`: between the anchors):", ""]
    lines += [f"* {k} = {v if is_range(v) else f'{v:g}'}" for k, v in card["regime"].items()]
    for key, text in card.get("metrics", {}).items():
        lines += ["", f"**{key}**: {text}"]
    return "\n".join(lines) + "\n"


def save_operator_family(anchors: Sequence[str | os.PathLike], name_or_path: str | os.PathLike, *,
                         command: str = "") -> Path:
    """Write a family folder over the saved closures ``anchors`` (names under ``trained_models/`` or folders,
    kept as given, so a shipped family names shipped anchors); checks that they form a family first."""
    family = _build(model_dir(name_or_path).name, [str(a) for a in anchors])
    folder = model_dir(name_or_path)
    folder.mkdir(parents=True, exist_ok=True)
    card = {"kind": FAMILY_KIND, "name": folder.name, "anchors": family.anchor_names,
            "regime": family.regime, "closure": family.anchors[0].config(), "command": command}
    atomic_write_files({folder / "card.json": json.dumps(card, indent=2, default=float).encode(),
                        folder / "CARD.md": _card_markdown(card).encode()}, checksum=True)
    return folder


def _build(name: str, anchor_names: list[str]) -> OperatorFamily:
    loaded = [load_operator_closure(a) for a in anchor_names]
    return OperatorFamily(name=name, anchors=[c for c, _, _ in loaded],
                          configs=[dict(card["training"]["solver"]) for _, card, _ in loaded],
                          anchor_names=anchor_names, weights_sha256="+".join(d for _, _, d in loaded))


def load_operator_family(name_or_path: str | os.PathLike) -> tuple[OperatorFamily, dict[str, Any]]:
    """``(family, card)`` of a saved family, its card and every anchor verified first."""
    folder = model_dir(name_or_path)
    verify_file(folder / "card.json", "operator family card", _REMEDY)
    card = json.loads((folder / "card.json").read_text())
    if card.get("kind") != FAMILY_KIND:
        raise CorruptFileError(f"{folder / 'card.json'} is not an operator family's card (kind {card.get('kind')!r})")
    return _build(card["name"], list(card["anchors"])), card
