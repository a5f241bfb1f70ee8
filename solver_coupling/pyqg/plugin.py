"""The pyqg timestep-hook plugin: a trained flux network as a ``pyqg.QParameterization``.

At every call pyqg hands over the model ``m`` after advection and before the
AB3 step. The plugin

1. reads the coarse state from ``m.ph`` (docs/design.md §3): the perturbation
   velocity ``(u, v) = (-d psi/dy, d psi/dx)`` per layer [m/s], the interface
   variable ``b = psi_1 - psi_2`` [m^2/s], plus the constant vectors
   ``beta = (0, beta)`` [1/(m s)] and ``U_i = (U_i, 0)`` [m/s];
2. evaluates the exported network (float32 by default, on the chosen device)
   to get the momentum flux ``tau_i`` [m^2/s^2] and buoyancy flux ``F_i``
   [m^3/s^2] per layer;
3. returns the PV forcing in flux form (:func:`roteq_param.fluxform.pv_forcing_from_fluxes`)
   ``S_1 = -curl(div tau_1) + F1 div F_1``, ``S_2 = -curl(div tau_2) - F2 div F_2``
   in s^-2, shape (nz, ny, nx), which pyqg adds to dq/dt.

Because S is a curl of a divergence plus a divergence, its domain integral and
the implied momentum and buoyancy tendencies integrate to zero exactly.

Usage::

    import pyqg
    from solver_coupling.pyqg.plugin import RotEqParameterization
    P = RotEqParameterization()                     # the shipped closure for the solver it is plugged into
    m = pyqg.QGModel(nx=64, parameterization=P)     # also works with 0.5 * P + other
    m.run()
    RotEqParameterization("eddy-c4")                # or a name under trained_models/, or a folder

With no model (``"auto"``) the plugin chooses at the first step, from the solver it is plugged into, the
first shipped closure in ``trained_models/defaults.json`` that accepts it
(:func:`solver_coupling.pyqg.selection.choose_closure`): the eddy network, the operator family between
eddy and jet, the 48^2 and 96^2 operator closures. A solver none of them accepts is refused, naming each
one's reason.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyqg
import torch

from roteq_param import fields, fluxform, models
from roteq_param.arrays import torch_device, torch_float_dtype
from roteq_param.fields import SchemaError
from roteq_param.symmetry import Element, Group
from roteq_param.forcing import PVForcing
from solver_coupling.pyqg.config import SOLVER_STRUCTURAL, regime_keys, solver_config_of
from solver_coupling.pyqg.family import regime_mismatches
from solver_coupling.pyqg.state import constants, stratification

__all__ = [
    "AUTO",
    "RotEqParameterization",
    "default_call_interval",
    "ModelMismatchError",
    "ModelFileChangedError",
    "OutOfRegimeWarning",
    "ExtrapolationWarning",
    "solver_config_of",
    "Ensemble",
]


class ModelMismatchError(ValueError):
    """The trained model does not fit the solver it was plugged into (the message names the field)."""


class ModelFileChangedError(RuntimeError):
    """The model's weights file changed on disk after it was loaded."""


class OutOfRegimeWarning(UserWarning):
    """The solver runs outside the configuration the model was trained on."""


class ExtrapolationWarning(UserWarning):
    """The solver lies inside a family model's trained ranges but outside what its training runs held:
    the network extrapolates there (on the first family models, measured online: README)."""


AUTO = "auto"
"""The model argument that lets the plugin choose the shipped closure for the solver it is plugged into."""


@dataclass
class _Loaded:
    model: models.FluxNet
    card: dict
    weights_path: Any
    weights_sha256: str


def _load(model: str | Any) -> _Loaded:
    if isinstance(model, models.FluxNet):
        return _Loaded(model.eval(), {"training": {}}, None, "")
    directory = models.model_dir(model)
    net = models.load_model(directory)
    card = models.load_card(directory)
    path = directory / "model.pt"
    return _Loaded(net, card, path, models.sha256_file(path))


OUT_OF_REGIME_MEASURED = ("outside its regime a model can be worse than no closure at all: the default eddy-trained "
                          "model, run on jet with allow_out_of_regime=True, scored mean similarity -1.02 (README, "
                          "jet transfer; 0 = no better than no closure).")
"""What the regime refusal says was measured when the check was overridden."""


def default_call_interval(card: dict) -> int:
    """The cadence a model runs at unless told otherwise: its card's ``inference.call_interval`` (set where
    holding the forcing was measured to keep the online skill), else the cadence it was trained for
    through the solver (``training.online.call_interval``), else 1 (every step)."""
    declared = card.get("inference", {}).get("call_interval")
    if declared is None:
        declared = card.get("training", {}).get("online", {}).get("call_interval", 1)
    return int(declared)


class RotEqParameterization(pyqg.QParameterization):
    """A trained rotation-equivariant flux network as a pyqg PV parameterization.

    Parameters
    ----------
    model:
        ``"auto"`` (default): the shipped closure for the solver, chosen at the first step
        (:mod:`solver_coupling.pyqg.selection`; :attr:`chosen` names it, and it may be an operator
        closure, which then computes the forcing). Else the name of a model under ``trained_models/``, a
        model directory, or a :class:`roteq_param.models.FluxNet` (then no solver configuration is checked).
    device:
        ``"cpu"`` or ``"cuda"``; the network and the flux-to-forcing transform run there.
    call_interval:
        Evaluate the network every ``call_interval`` steps and reuse the forcing in
        between (1 = every step). Default: the model's own, from its card
        (:func:`default_call_interval`).
    dtype:
        Inference precision inside the float64 solver (default float32).
    allow_out_of_regime:
        Allow physical parameters (L, rd, delta, beta, U1, U2, H1, H2, rek) that differ
        from the model's training configuration; a :class:`OutOfRegimeWarning` says so.
        Grid and number of layers must always match.

    A configuration equal to the training one up to an exact element g of the network's group
    (beta and U turned or mirrored by g, e.g. beta -> -beta with U -> -U for a 180-degree turn) is
    accepted without the flag: it is the same physics in another frame. ``matched_elements`` then
    names every such g, in the group's order (empty when the configuration is the training one), and
    ``matched_element`` the first. pyqg's beta points along y and its U along x, so one set of pyqg
    settings can be reached by several elements: eddy turned through 180 degrees is also eddy
    mirrored in x, which a D4 model matches both ways.

    A model trained on a family accepts any solver inside the family's ranges; where a setting lies
    beyond the span of the model's own training runs (a card's ``solver_span``), it runs with an
    :class:`ExtrapolationWarning` that names the setting.
    """

    def __init__(self, model: str | Any = AUTO, *, device: str = "cpu", call_interval: int | None = None,
                 dtype: torch.dtype = torch.float32, allow_out_of_regime: bool = False):
        if call_interval is not None and (int(call_interval) != call_interval or call_interval < 1):
            raise ValueError(f"call_interval must be a positive integer, got {call_interval!r}")
        # checked before the model is loaded: a bad device or precision is refused here, not at the first step
        self.device = str(torch_device(device))
        self.dtype = torch_float_dtype(dtype, models.Predictor.DTYPES)
        self._auto = isinstance(model, str) and model == AUTO
        if self._auto and allow_out_of_regime:
            raise ValueError("allow_out_of_regime overrides one model's regime check: name the model to run "
                             "outside its regime (the automatic choice only picks closures that accept the solver)")
        self._requested_interval = call_interval
        self.chosen: str | None = None  # the shipped closure the automatic choice picked (None before the first step)
        self._chosen_for: dict | None = None  # the solver settings it was chosen for
        self._operator: Any = None  # an operator closure the automatic choice picked: it computes the forcing
        self._loaded: _Loaded | None = None
        self.call_interval = 1
        if not self._auto:
            self._use(_load(model))
        self.allow_out_of_regime = allow_out_of_regime
        self._forcing: PVForcing | None = None
        self.matched_elements: tuple[Element, ...] = ()
        self._bound_to: int | None = None
        self._cached: np.ndarray | None = None
        self._constants: tuple[np.ndarray, np.ndarray] | None = None
        self._calls = 0

    def _use(self, loaded: _Loaded) -> None:
        self._loaded = loaded
        self.call_interval = int(default_call_interval(loaded.card) if self._requested_interval is None
                                 else self._requested_interval)

    def _choose(self, m: pyqg.QGModel) -> None:
        """The automatic choice for solver ``m``: load the first shipped closure that accepts it."""
        # imported here: the selection tries this class and the operator plugin, both of which import this module
        from solver_coupling.pyqg.selection import choose_closure

        settings = solver_config_of(m)
        if settings == self._chosen_for:  # every member of an ensemble: one choice
            return
        choice = choose_closure(m, device=self.device, dtype=self.dtype, call_interval=self._requested_interval)
        self._chosen_for, self.chosen, chosen = settings, choice.name, choice.parameterization
        if isinstance(chosen, RotEqParameterization):
            self._operator = None
            self._use(chosen._loaded)
        else:
            self._operator, self._loaded, self.call_interval = chosen, None, 1

    def _require_network(self, what: str) -> _Loaded:
        if self._loaded is None:
            raise RuntimeError(f"{what}: " + ("the automatic choice has not seen a solver yet (it chooses at the first "
                                              "step; call bind(m) first)" if self.chosen is None else
                                              f"the solver's closure is the operator closure {self.chosen!r}, "
                                              "not a network"))
        return self._loaded

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    @property
    def operator(self) -> Any:
        """The operator closure plugin the automatic choice picked (None: a network computes the forcing)."""
        return self._operator

    @property
    def network(self) -> models.FluxNet:
        """The loaded flux network (for other engines, e.g. the torch twin's in-graph closure)."""
        return self._require_network("network").model

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file as loaded ("" for an in-memory model)."""
        if self._operator is not None:
            return self._operator.weights_sha256
        return self._require_network("weights_sha256").weights_sha256

    @property
    def training_config(self) -> dict:
        """The solver configuration the model card declares (empty if none)."""
        if self._operator is not None:
            return self._operator.training_config
        return dict(self._require_network("training_config").card.get("training", {}).get("solver", {}))

    def verify_model_file(self) -> None:
        """Raise :class:`ModelFileChangedError` if the weights on disk differ from those loaded."""
        if self._operator is not None:
            self._operator.verify_model_file()
            return
        if self._loaded is None:
            return
        path = self._loaded.weights_path
        if path is None:
            return
        if not path.is_file():
            raise ModelFileChangedError(f"model weights {path} were removed after loading")
        now = models.sha256_file(path)
        if now != self._loaded.weights_sha256:
            raise ModelFileChangedError(
                f"model weights {path} changed on disk after loading (sha256 {self._loaded.weights_sha256[:12]}... "
                f"-> {now[:12]}...); reload the parameterization to use the new weights")

    def check_solver(self, m: pyqg.QGModel) -> None:
        """Check the model against the solver before the first step (raises :class:`ModelMismatchError`);
        the automatic choice chooses here."""
        if self._auto:
            self._choose(m)
            if self._operator is not None:
                self._operator.check_solver(m)
                return
        if not isinstance(m, (pyqg.QGModel, pyqg.LayeredModel)):
            raise ModelMismatchError(f"RotEqParameterization supports pyqg's layered models (QGModel, LayeredModel), "
                                     f"got {type(m).__name__}")
        layers = fields.qg_nlayers(self._loaded.model.schema)
        if m.nz != layers:
            raise ModelMismatchError(f"nz: the model predicts fluxes for {layers} layers, the solver has {m.nz}; "
                                     f"train a {m.nz}-layer model on {m.nz}-layer data for it")
        try:
            stratification(m)
        except ValueError as e:
            raise ModelMismatchError(f"stratification: {e}") from None
        if m.nx != m.ny or m.L != m.W:
            raise ModelMismatchError(f"grid: the plugin needs a square doubly periodic domain, got nx={m.nx}, ny={m.ny}, "
                                     f"L={m.L}, W={m.W}")
        self.verify_model_file()
        declared = self.training_config
        actual = solver_config_of(m)
        # a similarity-scaled network takes the grid spacing as an input, so only the layer count binds it
        structural = ("nz",) if self._loaded.model.config.similarity else SOLVER_STRUCTURAL
        for key in structural:
            if key in declared and int(declared[key]) != actual[key]:
                hint = ("; a model trained with `roteq train --similarity` runs on other grids"
                        if key in ("nx", "ny") else "")
                raise ModelMismatchError(f"{key}: the model was trained for {key}={declared[key]}, the solver has "
                                         f"{key}={actual[key]}{hint}")
        off = regime_mismatches(declared, actual, regime_keys(actual))
        frames = self._group_elements_between(declared, actual) if off else ()
        self.matched_elements = tuple(g for g, _ in frames)
        if off and not self.matched_elements:
            msg = ("the solver runs outside the model's training configuration (" + "; ".join(off) + "), and no "
                   f"element of the model's group {self._symmetry_group()} maps one onto the other")
            if not self.allow_out_of_regime:
                raise ModelMismatchError(msg + "; " + OUT_OF_REGIME_MEASURED + " Train a model on data from this "
                                         "configuration (docs/retraining.md), or pass allow_out_of_regime=True "
                                         "(`roteq rollout --allow-out-of-regime`) to run anyway")
            warnings.warn(msg + "; " + OUT_OF_REGIME_MEASURED, OutOfRegimeWarning, stacklevel=3)
            return
        # in the training frame (the solver's vectors taken back by the first matched element)
        beyond = regime_mismatches(self._loaded.card.get("training", {}).get("solver_span") or {},
                                   {**actual, **(frames[0][1] if frames else {})}, regime_keys(actual))
        if beyond:
            warnings.warn("the solver lies inside the model's trained ranges but outside the span of its training "
                          "runs (" + "; ".join(line.replace("trained range", "training runs") for line in beyond)
                          + "): the network extrapolates there", ExtrapolationWarning, stacklevel=3)

    def _symmetry_group(self) -> Group:
        """The group the network is exactly equivariant under (trivial for the plain-CNN baseline)."""
        net = self._loaded.model
        return net.group if net.config.arch == "escnn" else Group.parse("C1")

    @property
    def matched_element(self) -> Element | None:
        """The first group element that maps the training configuration onto the solver's (None: the same)."""
        return self.matched_elements[0] if self.matched_elements else None

    def _group_elements_between(self, declared: dict, actual: dict) -> tuple[tuple[Element, dict], ...]:
        """Every exact group element g that turns a training configuration into the solver's, with the
        solver's beta and U taken back by g^-1 (``{"beta": ..., "U1": ..., "V1": ...}``).

        An equivariant network sees beta and U as constant (pseudo)vectors, so a whole configuration
        turned or mirrored by g (beta -> g.beta, U_i -> g.U_i, every scalar setting equal) is the same
        physics in another frame: the network's output is exactly the turned output. The solver's
        vectors are taken back by g^-1 and must then be a trained configuration: beta along y, as
        pyqg has it, and every setting equal to the card's number or inside its range (a family).
        """
        nz = int(actual["nz"])
        vectors = {"beta"} | {f"{c}{i}" for c in "UV" for i in range(1, nz + 1)}
        scalars = [k for k in regime_keys(actual) if k not in vectors]
        if regime_mismatches(declared, actual, scalars) or \
                not all(k in declared for k in ("beta", *(f"U{i}" for i in range(1, nz + 1)))):
            return ()
        declared = {**{f"V{i}": 0.0 for i in range(1, nz + 1)}, **declared}  # the first cards had no V (= 0)
        solver = fields.qg_constants(np.array([0.0, float(actual["beta"])]),
                                     np.array([[float(actual[f"U{i}"]), float(actual[f"V{i}"])]
                                               for i in range(1, nz + 1)]))
        schema = self._loaded.model.schema

        def snap(v: np.ndarray) -> np.ndarray:  # components at round-off of the vector's size are 0
            return np.where(np.abs(v) > 1e-9 * np.abs(v).max(initial=0.0), v, 0.0)

        def taken_back(g: Element) -> dict:
            # qg_constants' order: beta, then the background velocity of each layer
            beta, *U = (snap(np.asarray(v, dtype=np.float64)) for v in schema.transform(g.inverse(), solver).values())
            return {"beta": beta[1] if beta[0] == 0.0 else math.nan,
                    **{f"{c}{i + 1}": U[i][a] for i in range(nz) for a, c in enumerate("UV")}}

        frames = [(g, taken_back(g)) for g in self._symmetry_group().exact_elements()]
        return tuple((g, seen) for g, seen in frames if not regime_mismatches(declared, seen, list(seen)))

    def bind(self, m: pyqg.QGModel) -> PVForcing | None:
        """Check ``m`` and build the forcing operator for it (done on the first call); None when the
        automatic choice picked an operator closure, which computes the forcing itself."""
        if self._bound_to != id(m):
            self.check_solver(m)
            if self._operator is not None:
                self._bound_to, self._forcing = id(m), None
                return None
            predictor = models.Predictor(self._loaded.model, device=self.device, dtype=self.dtype)
            self._forcing = PVForcing(predictor, strat=stratification(m), L=float(m.L), n=int(m.nx),
                                      drag=float(m.rek))
            # pyqg builds its operators from beta and U at construction, so they stay fixed for the run
            self._constants = constants(m)
            self._bound_to = id(m)
            self._cached = None
            self._calls = 0
        return self._forcing

    def __call__(self, m: pyqg.QGModel) -> np.ndarray:
        forcing = self.bind(m)
        if forcing is None:
            return self._operator(m)
        if self._cached is None or self._calls % self.call_interval == 0:
            try:
                self._cached = forcing.from_spectral(m.ph, *self._constants)
            except SchemaError as e:
                raise FloatingPointError(f"pyqg state at t = {m.t:g} s is not valid network input: {e}") from e
        self._calls += 1
        return self._cached

    def __repr__(self) -> str:
        if self._auto and self.chosen is None:
            return f"RotEqParameterization('auto', device={self.device!r}: chooses at the first step)"
        if self._operator is not None:
            return f"RotEqParameterization('auto' -> {self._operator!r})"
        frame = (f", solver frame = {' = '.join(map(str, self.matched_elements))} of the training one"
                 if self.matched_elements else "")
        name = self._loaded.card.get("name", "in-memory model")
        return (f"RotEqParameterization({('auto -> ' if self._auto else '') + name!r}, device={self.device!r}, "
                f"call_interval={self.call_interval}{frame})")


class _Precomputed(pyqg.QParameterization):
    """Hands pyqg a forcing computed outside the step (by :class:`Ensemble`), plus, if given, a
    pyqg q-parameterization of the member's own (``extra``, e.g. a built-in closure added to it)."""

    def __init__(self, extra: pyqg.QParameterization | None = None):
        self.dq: np.ndarray | None = None
        self.extra = extra

    @property
    def parameterization_type(self) -> str:
        return "q_parameterization"

    def __call__(self, m):
        return self.dq if self.extra is None else self.dq + self.extra(m)


class Ensemble:
    """M pyqg members stepped in lockstep with one batched network call per step.

    Each member gets the same forcing as :class:`RotEqParameterization` would give
    it alone (the state is read after the same inversion pyqg performs), but the
    network sees all members as one batch: that is what keeps a GPU busy.

    Parameters
    ----------
    members:
        pyqg QGModels built with ``parameterization=Ensemble.slot()`` (see :meth:`build`).
    param:
        The :class:`RotEqParameterization` whose network and settings are used.
    """

    def __init__(self, members: Sequence[pyqg.QGModel], param: RotEqParameterization):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        slots = [m.q_parameterization for m in members]
        if not all(isinstance(s, _Precomputed) for s in slots):
            raise ValueError("ensemble members must be built with Ensemble.build (their parameterization slot "
                             "is filled by the ensemble)")
        self.members = list(members)
        self.param = param
        self.forcing = param.bind(members[0])  # None: the automatic choice picked an operator closure
        for m in members[1:]:
            param.check_solver(m)
        self._slots = slots
        self._steps = 0

    @staticmethod
    def build(param: RotEqParameterization, n_members: int, *, add: Any = None, solver: type = pyqg.QGModel,
              **qg_kwargs: Any) -> "Ensemble":
        """Create ``n_members`` pyqg models (``solver``: QGModel or LayeredModel) with ``qg_kwargs`` wired
        to one batched network.

        ``add``: a callable returning a new pyqg parameterization (one per member, e.g. a built-in
        closure) whose forcing each member adds to the network's: a q-parameterization is summed
        with it, a uv-parameterization goes into pyqg's own uv slot.
        """
        members = []
        for _ in range(n_members):
            extra = add() if add is not None else None
            if extra is not None and getattr(extra, "parameterization_type", None) == "uv_parameterization":
                members.append(solver(q_parameterization=_Precomputed(), uv_parameterization=extra, **qg_kwargs))
            else:
                members.append(solver(q_parameterization=_Precomputed(extra), **qg_kwargs))
        return Ensemble(members, param)

    def step(self, active: Sequence[bool] | None = None) -> None:
        """Advance every (active) member by one time step."""
        idx = [i for i in range(len(self.members)) if active is None or active[i]]
        if not idx:
            return
        if self.forcing is None:  # an operator closure: one spectral multiply per member, nothing to batch
            for i in idx:
                self.members[i]._invert()  # the same inversion _step_forward starts with: qh is current
                self._slots[i].dq = self.param.operator(self.members[i])
        elif self._steps % self.param.call_interval == 0:
            for i in idx:
                self.members[i]._invert()  # the same inversion _step_forward starts with: ph is current
            m0 = self.members[idx[0]]
            ph = np.stack([self.members[i].ph for i in idx])
            # A member that went non-finite must not poison the batch: it keeps a NaN forcing and
            # is left for the caller's stability monitor to stop.
            finite = np.isfinite(ph).all(axis=(1, 2, 3))
            S = np.full((len(idx), *m0.q.shape), np.nan)
            if finite.any():
                S[finite] = self.forcing.from_spectral(ph[finite], *self.param._constants)  # fixed at bind
            for n, i in enumerate(idx):
                self._slots[i].dq = S[n]
        for i in idx:
            self.members[i]._step_forward()
        self._steps += 1
