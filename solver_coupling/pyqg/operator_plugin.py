"""A saved operator closure (``roteq train-operator``) as a pyqg ``QParameterization``.

The closure's PV tendency is ``dq_i = sum_j A_ij q_j``, each ``A_ij`` a radial kernel, i.e. a real
Fourier multiplier ``M_ij(|k|)`` on pyqg's own spectral PV ``m.qh`` (s^-1). The plugin builds the
multipliers once for the model's grid (from the same profiles the torch twin trains, so both solvers
apply the same operator), and each step costs one complex multiply-add and the inverse transform
pyqg's interface wants (pyqg transforms the returned ``dq`` back itself). Usage::

    import pyqg
    from solver_coupling.pyqg.operator_plugin import OperatorParameterization
    m = pyqg.QGModel(nx=64, parameterization=OperatorParameterization("eddy-operator"))

An operator family (``roteq combine-operators``, e.g. ``trained_models/operators-64``) loads the same
way: its multipliers are its anchors' blended for the solver's settings
(:mod:`solver_coupling.torchqg.operator_family`), built once per model.

Like :class:`~solver_coupling.pyqg.plugin.RotEqParameterization`, it refuses a solver whose grid or
physical regime differs from the one it was trained in (a family: outside the box its anchors span;
``ModelMismatchError`` naming the setting), unless ``allow_out_of_regime=True`` (then it warns).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyqg
import torch

from solver_coupling.pyqg.config import solver_config_of, regime_keys
from solver_coupling.pyqg.family import regime_mismatches
from solver_coupling.pyqg.plugin import ModelMismatchError, ModelFileChangedError, OutOfRegimeWarning
from solver_coupling.torchqg.operator_closure import OperatorClosure
from solver_coupling.torchqg.operator_family import is_operator_family, load_operator_family
from solver_coupling.torchqg.operator_store import load_operator_closure
from roteq_param.integrity import sha256_file
from roteq_param.models import model_dir

__all__ = ["OperatorParameterization"]


class OperatorParameterization(pyqg.QParameterization):
    """A trained operator closure (a name under ``trained_models/`` or a folder) in pyqg's hook.

    Returns ``dq`` in s^-2, shape ``(nz, ny, nx)``, which pyqg adds to dq/dt.
    """

    def __init__(self, model: str | Any = "eddy-operator", *, allow_out_of_regime: bool = False) -> None:
        self.model = model
        if is_operator_family(model):
            self.family, self.card = load_operator_family(model)
            self.closure, self.weights_sha256 = self.family.anchors[0], self.family.weights_sha256
        else:
            self.family = None
            self.closure, self.card, self.weights_sha256 = load_operator_closure(model)
        self.allow_out_of_regime = bool(allow_out_of_regime)
        # (model, multipliers) per model id: one plugin object may serve every member of an ensemble; the
        # model is held so that its id cannot be reused by another model while the entry exists
        self._bound: dict[int, tuple[pyqg.QGModel, np.ndarray]] = {}

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    @property
    def training_config(self) -> dict:
        """The solver settings the closure accepts (a family: ``[lo, hi]`` where its anchors differ)."""
        if self.family is not None:
            return dict(self.card["regime"])
        return dict(self.card.get("training", {}).get("solver", {}))

    def verify_model_file(self) -> None:
        """Raise :class:`ModelFileChangedError` if ``operator.pt`` (a family: any anchor's) changed since it
        was loaded."""
        names = self.family.anchor_names if self.family is not None else [self.model]
        now = "+".join(sha256_file(model_dir(n) / "operator.pt") for n in names)
        if now != self.weights_sha256:
            raise ModelFileChangedError(f"the weights of {', '.join(map(str, names))} changed on disk since they were "
                                        "loaded (sha256 differs); restart with the intended weights")

    def closure_for(self, m: pyqg.QGModel) -> OperatorClosure:
        """The closure this solver gets (a family: its anchors blended for the solver's settings)."""
        return self.closure if self.family is None else self.family.closure_for(solver_config_of(m))

    def check_solver(self, m: pyqg.QGModel) -> None:
        """Refuse a grid the kernels were not built for, and (unless allowed) another physical regime."""
        c = self.closure
        if not isinstance(m, pyqg.QGModel):
            raise ModelMismatchError(f"the operator closure runs in pyqg's two-layer QGModel, got {type(m).__name__}")
        if (m.nx, m.ny, m.nz) != (c.nx, c.nx, c.nz) or abs(m.L - c.L) > 1e-9 * c.L or m.W != m.L:
            raise ModelMismatchError(f"grid: the operator closure was trained for nx = ny = {c.nx}, L = W = {c.L:g} m, "
                                     f"nz = {c.nz}; the solver has nx={m.nx}, ny={m.ny}, L={m.L:g}, W={m.W:g}, "
                                     f"nz={m.nz}. Train one on data of this grid (`roteq train-operator`)")
        actual = solver_config_of(m)
        off = regime_mismatches(self.training_config, actual, regime_keys(actual))
        if off:
            msg = ("the solver runs outside the operator closure's training configuration (" + "; ".join(off) + ")")
            if not self.allow_out_of_regime:
                raise ModelMismatchError(msg + ". Train one on data from this configuration (`roteq train-operator`), "
                                         "or pass allow_out_of_regime=True to run anyway")
            warnings.warn(msg, OutOfRegimeWarning, stacklevel=3)

    def multipliers(self, m: pyqg.QGModel) -> np.ndarray:
        """``[nz, nz, nl, nk]`` multipliers on pyqg's ``qh`` layout (s^-1), built and checked once per model."""
        bound = self._bound.get(id(m))
        if bound is not None:
            return bound[1]
        self.check_solver(m)
        with torch.no_grad():
            mult = np.ascontiguousarray(self.closure_for(m).multiplier(torch.float64).numpy())
        if mult.shape[-2:] != m.qh.shape[-2:]:
            raise ModelMismatchError(f"pyqg's spectral layout {m.qh.shape[-2:]} is not the closure's {mult.shape[-2:]}")
        self._bound[id(m)] = (m, mult)
        return mult

    def __call__(self, m: pyqg.QGModel) -> np.ndarray:
        mult = self.multipliers(m)
        dqh = np.einsum("ijkl,jkl->ikl", mult, m.qh, optimize=False)
        return m.ifft(dqh)

    def __repr__(self) -> str:
        return f"OperatorParameterization({self.card.get('name', str(self.model))!r})"
