"""Named pyqg two-layer configurations (docs/design.md §4).

A configuration is a complete set of ``pyqg.QGModel`` keyword arguments for the
high-resolution run plus the coarse grid size. Every pyqg parameter can be
overridden by name; an unknown name is a :class:`ValueError` that names it and
lists the valid ones. ``ntd`` (FFTW/OpenMP threads) is always 1: threads made a
step slower at every size on this machine; runs are parallelised instead.

Units: beta m^-1 s^-1, rd / L / W / H1 m, U1 / U2 m s^-1, rek s^-1, dt / tmax s.
A model year is 360 days (:data:`YEAR`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roteq_param import fluxform

__all__ = ["YEAR", "CONFIGS", "PyqgConfig", "get_config", "parse_assignment", "valid_parameters",
           "SOLVER_KWARGS", "SOLVER_STRUCTURAL", "solver_config_of", "regime_keys"]

YEAR = 360 * 86400.0
"""Seconds in a model year (360 days)."""

# Parameters the data pipeline fixes itself, with the reason shown to a user who tries to set them.
_RESERVED = {
    "ntd": "it is fixed at 1: OpenMP threads make every step slower here (docs/design.md §4); runs are parallelised instead",
    "nz": "the layer count comes with the configuration (eddy and jet: QGModel, two layers; layered3: "
          "LayeredModel, three)",
    "tmax": "the run length is set by --years",
    "q_parameterization": "high-resolution reference runs are unparameterized",
    "uv_parameterization": "high-resolution reference runs are unparameterized",
    "parameterization": "high-resolution reference runs are unparameterized",
}

# pyqg QGModel defaults, except dt = 3600 s (docs/design.md §4) and a silent logger.
_EDDY = {
    "beta": 1.5e-11,
    "rd": 15000.0,
    "delta": 0.25,
    "H1": 500.0,
    "U1": 0.025,
    "U2": 0.0,
    "rek": 5.787e-7,
    "L": 1e6,
    "dt": 3600.0,
    "nx": 256,
    "filterfac": 23.6,
    "log_level": 0,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "eddy": dict(_EDDY),
    # The "jet" regime of Ross et al. (2023): weaker drag, thinner upper layer, smaller beta.
    "jet": {**_EDDY, "rek": 7e-8, "delta": 0.1, "beta": 1e-11},
    # A three-layer pyqg.LayeredModel (docs/design.md §4): eddy's beta, drag, domain and time step;
    # a thin surface layer over a deep ocean with eddy's upper-layer shear split over two interfaces.
    # High-res 128^2 (coarsen to 32^2 for eddy's ratio of 4): at 256^2 with dt = 3600 s a run went
    # non-finite after one year (measured, seed 20), at 128^2 it ran 4.6 years stably.
    "layered3": {"nz": 3, "H": [500.0, 1000.0, 2500.0], "rho": [1025.0, 1025.6, 1026.5],
                 "U": [0.025, 0.005, 0.0], "V": [0.0, 0.0, 0.0], "beta": 1.5e-11, "rek": 5.787e-7,
                 "L": 1e6, "dt": 3600.0, "nx": 128, "filterfac": 23.6, "log_level": 0},
}
"""High-resolution parameters of each named configuration (coarse nx is 64 for all)."""

DEFAULT_COARSE_NX = 64

# The solver settings a trained model is tied to, named once. The grid and the layers must match
# exactly; the physical parameters define the training regime.
SOLVER_KWARGS = ("L", "W", "rd", "delta", "H1", "U1", "U2", "beta", "rek")
"""Physical QGModel keywords (SI units) that must agree for runs or models to be comparable."""
SOLVER_STRUCTURAL = ("nz", "nx", "ny")


def solver_config_of(m) -> dict[str, float]:
    """The settings of a live pyqg model that a trained model is tied to (SI units).

    Any layered pyqg model: the grid, ``beta``, ``rek``, per layer ``H<i>``, ``U<i>``, ``V<i>``
    (i from 1) and per interface ``G<j>up``, ``G<j>low`` (its stretching couplings,
    :class:`~roteq_param.fluxform.Stratification`). A two-layer QGModel also gives ``rd`` and ``delta``,
    the names the first shipped models' cards use.
    """
    import pyqg

    out = {"nz": int(m.nz), "nx": int(m.nx), "ny": int(m.ny), "L": float(m.L), "W": float(m.W),
           "beta": float(m.beta), "rek": float(m.rek)}
    if isinstance(m, pyqg.QGModel):
        out.update(rd=float(m.rd), delta=float(m.delta))
    for i in range(m.nz):
        out.update({f"H{i + 1}": float(m.Hi[i]), f"U{i + 1}": float(m.Ubg[i]), f"V{i + 1}": float(m.Vbg[i])})
    strat = fluxform.Stratification.from_matrix(m.S)
    for j, (up, low) in enumerate(zip(strat.upper, strat.lower), start=1):
        out.update({f"G{j}up": up, f"G{j}low": low})
    return out


def regime_keys(config: dict) -> list[str]:
    """The physical settings of a :func:`solver_config_of` dict that define a training regime."""
    return [k for k in config if k not in SOLVER_STRUCTURAL]


def _pyqg_signature(layered: bool = False) -> dict[str, Any]:
    """All keyword parameters with their defaults of QGModel, or of LayeredModel (their own and Model's)."""
    import pyqg

    params: dict[str, Any] = {}
    for cls in (pyqg.Model, pyqg.LayeredModel if layered else pyqg.QGModel):
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"):
                params[p.name] = p.default
    return params


def valid_parameters(layered: bool | None = None) -> list[str]:
    """Names that ``--set NAME=VALUE`` accepts: pyqg QGModel parameters (``layered=False``), LayeredModel
    parameters (``True``) or either (``None``), minus reserved ones."""
    kinds = (False, True) if layered is None else (layered,)
    return sorted({n for kind in kinds for n in _pyqg_signature(kind) if n not in _RESERVED})


def _check_name(name: str, layered: bool | None = None) -> None:
    if name in _RESERVED:
        raise ValueError(f"pyqg parameter {name!r} cannot be set: {_RESERVED[name]}")
    valid = valid_parameters(layered)
    if name not in valid:
        model = " for a LayeredModel" if layered else ""
        raise ValueError(f"unknown pyqg parameter {name!r}{model}; valid parameters: {', '.join(valid)}")


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``NAME=VALUE`` (as given to ``--set``) into a checked (name, value) pair.

    VALUE is read as JSON (``1.5e-11``, ``256``, ``true``, ``null``), falling back to a plain string.
    """
    if "=" not in text:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    name, raw = (s.strip() for s in text.split("=", 1))
    _check_name(name)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


@dataclass(frozen=True)
class PyqgConfig:
    """A high-resolution pyqg configuration and the coarse grid it is reduced to.

    ``params`` holds every QGModel keyword this configuration sets (the rest take
    pyqg's defaults); ``nx`` in it is the high-resolution size. A configuration that sets ``nz``
    is a ``pyqg.LayeredModel`` with per-layer lists ``H``, ``rho``, ``U``, ``V``.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    coarse_nx: int = DEFAULT_COARSE_NX

    def __post_init__(self) -> None:
        for n in self.params:
            if n != "nz" or not self.layered:
                _check_name(n, self.layered)
        p = self.params
        nx = p["nx"]
        if not isinstance(nx, int) or nx < 4 or nx % 2:
            raise ValueError(f"nx must be an even integer >= 4; got {nx!r}")
        if p.get("ny") not in (None, nx) or p.get("W") not in (None, p["L"]):
            raise ValueError("the domain must be square: leave ny and W unset or equal to nx and L")
        if not isinstance(self.coarse_nx, int) or self.coarse_nx < 4 or self.coarse_nx % 2:
            raise ValueError(f"the coarse nx must be an even integer >= 4; got {self.coarse_nx!r}")
        if self.coarse_nx > nx:
            raise ValueError(f"the coarse nx={self.coarse_nx} must not exceed the high-resolution nx={nx}")
        if self.layered:
            self._check_layers()
            return
        for key in tuple(k for k in SOLVER_KWARGS if k != "W") + ("dt", "filterfac"):
            value = p[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"pyqg parameter {key!r} must be a finite number; got {value!r}")
        for key in ("rd", "delta", "H1", "L", "dt"):
            if p[key] <= 0:
                raise ValueError(f"pyqg parameter {key!r} must be positive; got {p[key]!r}")

    def _check_layers(self) -> None:
        p = self.params
        nz = p["nz"]
        if isinstance(nz, bool) or not isinstance(nz, int) or nz < 2:
            raise ValueError(f"nz must be an integer >= 2; got {nz!r}")
        for key in ("H", "rho", "U", "V"):
            value = p.get(key)
            if not isinstance(value, (list, tuple)) or len(value) != nz or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in value):
                raise ValueError(f"pyqg parameter {key!r} must be a list of {nz} finite numbers (one per layer, "
                                 f"upper first); got {value!r}")
        for key in ("beta", "rek", "L", "dt", "filterfac"):
            value = p[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"pyqg parameter {key!r} must be a finite number; got {value!r}")
        if min(p["H"]) <= 0 or p["L"] <= 0 or p["dt"] <= 0:
            raise ValueError(f"layer depths H, L and dt must be positive; got H={p['H']}, L={p['L']}, dt={p['dt']}")
        if any(b <= a for a, b in zip(p["rho"], p["rho"][1:])):
            raise ValueError(f"the densities rho must increase downwards (stable stratification); got {p['rho']}")

    @property
    def layered(self) -> bool:
        """A ``pyqg.LayeredModel`` configuration (it sets ``nz``), not a two-layer ``QGModel``."""
        return "nz" in self.params

    @property
    def nz(self) -> int:
        return int(self.params["nz"]) if self.layered else 2

    # ---------------------------------------------------------------- derived quantities
    @property
    def nx(self) -> int:
        return int(self.params["nx"])

    @property
    def L(self) -> float:
        """Domain side in m."""
        return float(self.params["L"])

    @property
    def dt(self) -> float:
        """Time step in s."""
        return float(self.params["dt"])

    @property
    def F1(self) -> float:
        """pyqg's upper-layer stretching coefficient rd^-2 / (1 + delta), m^-2 (QGModel only)."""
        if self.layered:
            raise AttributeError(f"configuration {self.name!r} is a LayeredModel: use .stratification, not F1/F2")
        return self.params["rd"] ** -2 / (1.0 + self.params["delta"])

    @property
    def F2(self) -> float:
        """pyqg's lower-layer stretching coefficient delta F1, m^-2."""
        return self.params["delta"] * self.F1

    @property
    def stratification(self) -> fluxform.Stratification:
        """The layers' coupling, m^-2: (F1, F2) for QGModel, pyqg's own stretching matrix for LayeredModel."""
        if self.layered:
            return fluxform.Stratification.from_matrix(self.make_model(nx=4, log_level=0).S)
        return fluxform.Stratification.two_layer(self.F1, self.F2)

    @property
    def beta_vec(self) -> np.ndarray:
        """Constant vector (0, beta): the planetary vorticity gradient points along y, m^-1 s^-1."""
        return np.array([0.0, float(self.params["beta"])])

    @property
    def U_vec(self) -> np.ndarray:
        """Background velocity per layer (lev, comp x/y), m s^-1: [[U1, 0], [U2, 0]] for QGModel,
        [[U_i, V_i]] for LayeredModel."""
        if self.layered:
            return np.array([[float(u), float(v)] for u, v in zip(self.params["U"], self.params["V"])])
        return np.array([[float(self.params["U1"]), 0.0], [float(self.params["U2"]), 0.0]])

    # ---------------------------------------------------------------- construction
    def with_overrides(self, overrides: dict[str, Any] | None = None, coarse_nx: int | None = None) -> "PyqgConfig":
        """A copy with some parameters replaced (each name checked)."""
        params = dict(self.params)
        for name, value in (overrides or {}).items():
            _check_name(name, self.layered)
            params[name] = value
        return PyqgConfig(self.name, params, self.coarse_nx if coarse_nx is None else coarse_nx)

    def model_kwargs(self, nx: int | None = None, **extra: Any) -> dict[str, Any]:
        """QGModel keyword arguments, at the high resolution or at ``nx`` (e.g. the coarse grid)."""
        kwargs = {**self.params, **extra, "ntd": 1}
        if nx is not None:
            kwargs["nx"] = nx
            kwargs.pop("ny", None)
        return kwargs

    def make_model(self, nx: int | None = None, **extra: Any):
        """A ``pyqg.QGModel`` (or ``LayeredModel``) for this configuration (high-res, or at ``nx``), ntd = 1."""
        import pyqg

        return (pyqg.LayeredModel if self.layered else pyqg.QGModel)(**self.model_kwargs(nx, **extra))

    def coarse_solver_config(self) -> dict[str, float]:
        """:func:`solver_config_of` the coarse model this configuration is reduced to (what a model
        trained on its data is tied to; recorded in datasets and model cards)."""
        return solver_config_of(self.make_model(nx=self.coarse_nx, log_level=0))

    def to_json(self) -> str:
        """Full configuration as JSON (name, every set pyqg parameter, coarse nx)."""
        return json.dumps({"name": self.name, "params": self.params, "coarse_nx": self.coarse_nx}, sort_keys=True)


def get_config(name: str = "eddy", overrides: dict[str, Any] | None = None, coarse_nx: int | None = None) -> PyqgConfig:
    """The named configuration with ``overrides`` (pyqg parameter name -> value) applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r}; expected one of: {', '.join(CONFIGS)}")
    return PyqgConfig(name, dict(CONFIGS[name])).with_overrides(overrides, coarse_nx)
