"""A family of pyqg configurations: ranges of physical parameters that the runs of one dataset draw
from, and the regime a model trained on them covers (docs/design.md §4).

``roteq generate --vary beta=1e-11:2e-11 --vary rek=...`` gives each run its own parameters, drawn
from ``numpy.random.default_rng([seed, run, FAMILY_STREAM])``: log-uniform in ``[lo, hi]`` when
``0 < lo``, uniform otherwise, so a killed ensemble resumes with the same draws. The dataset's
``solver`` attribute then holds ``[lo, hi]`` instead of a number for every setting that moves with
the draws: the varied parameters themselves and what pyqg derives from them (``rd`` and ``delta``
move the stretching couplings ``G1up``, ``G1low``). The model card copies it, and the plugin's
regime check accepts a solver whose settings lie inside the ranges, up to an element of the model's
group (:func:`regime_mismatches`).

Only two-layer QGModel parameters that define the regime vary: the background state and the
physics of a LayeredModel family would need per-layer lists.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["FAMILY_PARAMETERS", "Family", "parse_range", "regime_mismatches", "is_range"]

FAMILY_PARAMETERS = ("beta", "rek", "rd", "delta", "U1", "U2")
"""QGModel parameters a family may vary (SI units): those that define the regime, not the grid."""

FAMILY_STREAM = 7
"""Third entry of the random stream of a run's draws; (seed, run) alone seeds its initial PV."""

_REL_TOL = 1e-6  # what the regime check has always allowed between a card's numbers and a solver's


def parse_range(text: str) -> tuple[str, tuple[float, float]]:
    """Parse ``NAME=LO:HI`` (as given to ``--vary``) into a checked (name, (lo, hi)) pair."""
    if "=" not in text or ":" not in text.split("=", 1)[1]:
        raise ValueError(f"expected NAME=LO:HI (e.g. beta=1e-11:2e-11), got {text!r}")
    name, raw = (s.strip() for s in text.split("=", 1))
    _check_name(name)
    try:
        lo, hi = (float(s) for s in raw.split(":"))
    except ValueError:
        raise ValueError(f"--vary {name}: expected two numbers LO:HI, got {raw!r}") from None
    _check_bounds(name, lo, hi)
    return name, (lo, hi)


def _check_name(name: str) -> None:
    if name not in FAMILY_PARAMETERS:
        raise ValueError(f"--vary {name}: a family varies one of {', '.join(FAMILY_PARAMETERS)} (QGModel "
                         "parameters that define the regime)")


def _check_bounds(name: str, lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"--vary {name}: need finite LO < HI, got {lo:g}:{hi:g}")
    if (name in ("rd", "delta") and lo <= 0) or (name == "rek" and lo < 0):
        raise ValueError(f"--vary {name}: the range must be {'non-negative' if name == 'rek' else 'positive'}, "
                         f"got {lo:g}:{hi:g}")


@dataclass(frozen=True)
class Family:
    """Ranges ``{name: (lo, hi)}`` of :data:`FAMILY_PARAMETERS` (SI units) that runs draw from."""

    ranges: tuple[tuple[str, float, float], ...]

    @classmethod
    def of(cls, ranges: Mapping[str, tuple[float, float]]) -> "Family":
        for name, (lo, hi) in ranges.items():  # the same checks as on the command line
            _check_name(name)
            _check_bounds(name, float(lo), float(hi))
        return cls(tuple((k, float(lo), float(hi)) for k, (lo, hi) in sorted(ranges.items())))

    def draw(self, seed: int, run: int) -> dict[str, float]:
        """The parameters of run ``run``: log-uniform in ``[lo, hi]`` when ``lo > 0``, else uniform."""
        rng = np.random.default_rng([seed, run, FAMILY_STREAM])
        out = {}
        for name, lo, hi in self.ranges:
            u = float(rng.random())
            out[name] = float(math.exp(math.log(lo) + u * math.log(hi / lo))) if lo > 0 else lo + u * (hi - lo)
        return out

    def corners(self) -> list[dict[str, float]]:
        """Every corner of the box of ranges (2^k parameter sets)."""
        names = [r[0] for r in self.ranges]
        return [dict(zip(names, c)) for c in itertools.product(*[(lo, hi) for _, lo, hi in self.ranges])]

    def solver_ranges(self, solver_config_at) -> dict[str, Any]:
        """The coarse solver settings the family covers: a number for each setting no draw moves,
        ``[lo, hi]`` for the rest. ``solver_config_at(overrides)`` gives the coarse solver settings
        with some parameters replaced; derived settings take their extremes at the box's corners
        (pyqg's F1 = rd^-2 / (1 + delta) and F2 = delta F1 are monotonic in rd and in delta)."""
        at_corners = [solver_config_at(c) for c in self.corners()]
        out: dict[str, Any] = {}
        for key, value in at_corners[0].items():
            values = [c[key] for c in at_corners]
            if all(_close(v, value) for v in values):
                out[key] = value
            else:
                out[key] = [min(values), max(values)]
        for name, lo, hi in self.ranges:  # the requested bounds, as given
            out[name] = [lo, hi]
        return out

    def to_json(self) -> str:
        return json.dumps({name: [lo, hi] for name, lo, hi in self.ranges}, sort_keys=True)


def is_range(value: Any) -> bool:
    """Whether a card's setting is a ``[lo, hi]`` range (a family) rather than one number."""
    return isinstance(value, (list, tuple)) and len(value) == 2


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=_REL_TOL, abs_tol=1e-30)


def _inside(declared: Any, value: float) -> bool:
    if is_range(declared):
        lo, hi = (float(v) for v in declared)
        pad = _REL_TOL * max(abs(lo), abs(hi))
        return lo - pad <= value <= hi + pad
    return _close(declared, value)


def _show(declared: Any) -> str:
    return f"trained range [{declared[0]:g}, {declared[1]:g}]" if is_range(declared) else f"trained {declared:g}"


def regime_mismatches(declared: Mapping[str, Any], actual: Mapping[str, float], keys) -> list[str]:
    """One ``"name: trained ..., solver ..."`` line per setting in ``keys`` that a card declares and
    the solver's value misses (a number to within 1e-6 relative, or a ``[lo, hi]`` range)."""
    return [f"{k}: {_show(declared[k])}, solver {actual[k]:g}" for k in keys
            if k in declared and not _inside(declared[k], float(actual[k]))]
