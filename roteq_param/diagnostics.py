"""Rollout-stability and skill diagnostics (docs/design.md §5), solver-agnostic.

Nothing here knows a solver: the pyqg side (``solver_coupling.pyqg.diagnostics``)
turns snapshots into fields and 2-D spectral densities and hands them to
:class:`Diagnostics`; this module bins, pools, compares, scores and plots.

Definitions
-----------
Spectral density
    On the ``rfft2`` half plane of a ``[..., y, x]`` field on an ``nx`` x ``ny``
    periodic grid (``nx`` even), ``e(l, k) = Re(f_hat conj(g_hat)) / (nx ny)^2``
    with ``f_hat = numpy.fft.rfft2(f)``, the normalisation pyqg uses. The domain
    mean of ``f g`` is the *full-plane* sum of ``e``, that is the half-plane sum
    with weight 1 on the self-conjugate columns (k = 0 and the Nyquist column)
    and 2 elsewhere (:func:`roteq_param.fluxform.half_plane_weights`).
Isotropic spectrum
    ``E(k_r)`` with ``sum(E) * dk_r`` equal to the full-plane sum of ``e`` over
    the modes binned (Parseval; exact with ``truncate=False``). The default
    ``"shell"`` binning puts the mode (k, l) into shell ``n = rint(|K| / dk_r)``
    with ``dk_r = max(2 pi / L, 2 pi / W)``; shell edges ``(n +- 1/2) dk_r`` never
    pass through a lattice point of a square domain, so the result does not
    depend on the last bit of ``|K|``. ``binning="pyqg"`` and ``average=True``
    reproduce ``pyqg.diagnostic_tools.calc_ispec`` (bins of width
    ``sqrt(dk^2 + dl^2)`` from 0, and its annulus-average estimator).
    Units: those of ``e`` times m (``e`` per rad/m).
Wasserstein-1
    ``W1(a, b) = integral_0^1 |Q_a(p) - Q_b(p)| dp`` between the empirical
    quantile functions of two equally weighted samples, computed exactly on the
    union of their quantile breakpoints.
Similarity
    For each diagnostic ``d``: ``s_d = 1 - D_d(run, truth) / D_d(baseline, truth)``
    where ``D`` is W1 for a value distribution and the RMSE over
    ``0 < k_r < k_max`` for an isotropic spectrum. 1 is the truth's statistics, 0 no
    better than the unparameterized baseline, negative worse. Summaries are the
    mean and minimum over diagnostics.
Stability
    A run is stable when every snapshot is finite and its domain-mean kinetic
    energy never exceeds a bound; otherwise its blow-up time is the first
    snapshot time at which either fails.

Plots are built on :class:`matplotlib.figure.Figure` directly (Agg canvas, no
pyplot state), so importing this module never changes a user's backend.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from roteq_param import fluxform

__all__ = [
    "QUANTITIES",
    "SPECTRA",
    "spectral_density",
    "isotropic_spectrum",
    "wasserstein1",
    "quantile_summary",
    "rmse",
    "similarity_scores",
    "SimilarityTable",
    "Diagnostics",
    "stability_summary",
    "plot_spectra",
    "plot_energy_budget",
    "plot_distributions",
    "plot_energy_timeseries",
    "plot_snapshots",
]

QUANTITIES: dict[str, dict[str, str]] = {
    "q": {"units": "s-1", "long_name": "potential vorticity anomaly"},
    "u": {"units": "m s-1", "long_name": "zonal velocity anomaly"},
    "v": {"units": "m s-1", "long_name": "meridional velocity anomaly"},
    "KE": {"units": "m2 s-2", "long_name": "kinetic energy (u^2 + v^2) / 2"},
    "enstrophy": {"units": "s-2", "long_name": "relative enstrophy zeta^2 / 2, zeta = laplacian(psi)"},
}
"""Pooled per-layer value distributions: name -> CF units and long name."""

SPECTRA: dict[str, dict[str, Any]] = {
    "KEspec": {"units": "m3 s-2", "layered": True,
               "long_name": "kinetic energy spectrum (integrates to layer-mean (u^2 + v^2) / 2)"},
    "Ensspec": {"units": "m s-2", "layered": True,
                "long_name": "potential enstrophy spectrum (integrates to layer-mean q^2 / 2)"},
    "KEflux": {"units": "m3 s-3", "layered": False,
               "long_name": "spectral flux of kinetic energy (height-weighted layer sum)"},
    "APEflux": {"units": "m3 s-3", "layered": False, "long_name": "spectral flux of available potential energy"},
    "APEgenspec": {"units": "m3 s-3", "layered": False,
                   "long_name": "available potential energy generation by the background shear"},
    "KEfrictionspec": {"units": "m3 s-3", "layered": False,
                       "long_name": "kinetic energy dissipation by bottom drag"},
}
"""Isotropic time-mean spectra: name -> CF units (of E(k_r), per rad/m), whether per layer, long name."""


# --------------------------------------------------------------------------- spectra
def _grid_of(density: np.ndarray) -> tuple[int, int]:
    ny, nk = density.shape[-2:]
    if nk < 2:
        raise ValueError(f"expected an rfft2 half plane (..., ny, nx//2 + 1) with even nx; got shape {density.shape}")
    return 2 * (nk - 1), ny


def spectral_density(f: np.ndarray, g: np.ndarray | None = None) -> np.ndarray:
    """Cross-spectral density ``Re(f_hat conj(g_hat)) / (nx ny)^2`` on the rfft2 half plane.

    ``f``, ``g``: real fields ``[..., y, x]`` (even nx); ``g`` defaults to ``f``.
    Units: [f][g]; its full-plane sum is the domain mean of ``f g``.
    """
    f = np.asarray(f, dtype=float)
    fh = np.fft.rfft2(f)
    gh = fh if g is None else np.fft.rfft2(np.asarray(g, dtype=float))
    return (fh * gh.conj()).real / (f.shape[-1] * f.shape[-2]) ** 2


def isotropic_spectrum(density: np.ndarray, L: float, W: float | None = None, *, binning: str = "shell",
                       average: bool = False, truncate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic spectrum ``(k_r, E)`` of a half-plane spectral density ``density[..., l, k]``.

    Parameters
    ----------
    density : array (..., ny, nx//2 + 1)
        Spectral density in pyqg's normalisation (module docstring), e.g.
        :func:`spectral_density` or a pyqg ``(l, k)`` diagnostic.
    L, W : float
        Domain size in x and y, m (W defaults to L).
    binning : "shell" or "pyqg"
        "shell": bins of width ``dk_r = max(dk, dl)`` centred on ``n dk_r``, n = 0, 1, ...
        "pyqg": bins of width ``sqrt(dk^2 + dl^2)`` with left edges ``i dk_r`` from 0,
        the last one closed, reported at their centres (as ``calc_ispec``).
    average : bool
        False: ``E = (full-plane sum of the density in the bin) / dk_r``, so
        ``E.sum() * dk_r`` is exactly the domain mean over the binned modes.
        True: pyqg's annulus-average estimator ``E = mean_bin(w e) pi k_c / (dk dl)``
        (w from :func:`fluxform.half_plane_weights`, k_c the bin centre), smoother at low k
        but not exactly Parseval.
    truncate : bool
        True: bins up to the inner circle ``min(max |k|, max |l|)``; False: up to
        the corner, so every mode is binned.

    Returns
    -------
    k_r : (nbins,) bin centres, rad/m
    E : (..., nbins) in [density] m
    """
    if binning not in ("shell", "pyqg"):
        raise ValueError(f"binning must be 'shell' or 'pyqg'; got {binning!r}")
    density = np.asarray(density, dtype=float)
    nx, ny = _grid_of(density)
    W = L if W is None else W
    k, l = (a.ravel() for a in fluxform.wavenumbers(nx, L, ny=ny, W=W))
    dk, dl = 2 * np.pi / L, 2 * np.pi / W
    wv = np.sqrt(k[np.newaxis, :] ** 2 + l[:, np.newaxis] ** 2)
    kmax = min(np.abs(k).max(), np.abs(l).max()) if truncate else math.hypot(np.abs(k).max(), np.abs(l).max())

    if binning == "shell":
        width = max(dk, dl)
        nbins = int(np.floor(kmax / width + 0.5)) + 1
        idx = fluxform.shell_index(nx, L, ny=ny, W=W)
        centres = width * np.arange(nbins)
    else:
        width = math.hypot(dk, dl)
        left = np.arange(0.0, kmax, width)  # same floating edges as calc_ispec
        nbins = left.size
        idx = np.searchsorted(left, wv, side="right") - 1
        idx[(idx == nbins - 1) & (wv > left[-1] + width)] = nbins  # last bin is closed on the right
        centres = left + width / 2
    inside = (idx >= 0) & (idx < nbins)

    weights = fluxform.half_plane_weights(ny, nx // 2 + 1)
    assign = np.zeros((ny * (nx // 2 + 1), nbins))
    flat = np.flatnonzero(inside)
    assign[flat, idx.ravel()[flat]] = weights.ravel()[flat]
    binned = density.reshape(density.shape[:-2] + (-1,)) @ assign  # full-plane sums per bin
    if average:
        count = np.bincount(idx.ravel()[flat], minlength=nbins).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            spectrum = binned / count * np.pi * centres / (dk * dl)
    else:
        spectrum = binned / width
    return centres, spectrum


# --------------------------------------------------------------------------- distances
def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Wasserstein-1 distance between two equally weighted samples (any shapes; pooled).

    ``integral_0^1 |Q_a(p) - Q_b(p)| dp`` with ``Q`` the empirical quantile
    functions (sorted samples). Both are piecewise constant with breakpoints at
    ``i/n`` and ``j/m``, so the integral is a finite sum over the union of those
    breakpoints (equal rationals ``i/n = j/m`` round to the same float, so the
    union has no spurious slivers). Units: those of the samples.
    """
    a = np.sort(np.asarray(a, dtype=float).ravel())
    b = np.sort(np.asarray(b, dtype=float).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("Wasserstein-1 needs two non-empty samples")
    if not (np.isfinite(a[[0, -1]]).all() and np.isfinite(b[[0, -1]]).all()):
        raise ValueError("Wasserstein-1 needs finite samples (NaN or inf found)")
    n, m = a.size, b.size
    if n == m:
        return float(np.abs(a - b).mean())
    p = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    p0 = np.concatenate(([0.0], p[:-1]))
    mid = 0.5 * (p0 + p)
    ia = np.minimum((mid * n).astype(np.int64), n - 1)
    ib = np.minimum((mid * m).astype(np.int64), m - 1)
    return float(np.sum((p - p0) * np.abs(a[ia] - b[ib])))


def quantile_summary(values: np.ndarray, n_quantiles: int | None) -> np.ndarray:
    """Sorted pooled sample, or its empirical quantile function at ``(i + 1/2) / n_quantiles``.

    With ``n_quantiles=None`` (or at least the sample size) the full sorted
    sample is returned and W1 between summaries is exact. Otherwise the
    summary is ``n_quantiles`` order statistics (``inverted_cdf``), and W1
    between two summaries is the midpoint rule for the W1 integral.
    """
    values = np.sort(np.asarray(values, dtype=float).ravel())
    if n_quantiles is None or values.size <= n_quantiles:
        return values
    if n_quantiles < 1:
        raise ValueError(f"n_quantiles must be >= 1 or None; got {n_quantiles}")
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    # inverted CDF on the sorted sample: the smallest value whose empirical CDF reaches the level
    # (numpy's quantile(method="inverted_cdf") partitions again, ~100x slower on sorted data)
    index = np.clip(np.ceil(levels * values.size).astype(np.int64) - 1, 0, values.size - 1)
    return values[index]


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference of two equally shaped arrays (units of the arrays)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"RMSE of arrays with different shapes {a.shape} and {b.shape}")
    return float(np.sqrt(np.mean((a - b) ** 2)))


# --------------------------------------------------------------------------- similarity
def similarity_scores(distance: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """``1 - D(run, truth) / D(baseline, truth)`` for every diagnostic of ``distance``.

    A diagnostic where the baseline already equals the truth (``D = 0``) has no
    scale to score against and gets NaN.
    """
    scores = {}
    for name, d in distance.items():
        d0 = baseline[name]
        scores[name] = float(1.0 - d / d0) if d0 > 0 else math.nan
    return scores


def _summary(scores: Mapping[str, float]) -> dict[str, float]:
    finite = [s for s in scores.values() if np.isfinite(s)]
    return {"mean": float(np.mean(finite)) if finite else math.nan,
            "min": float(np.min(finite)) if finite else math.nan}


@dataclass
class SimilarityTable:
    """Distances to the truth and similarity scores of a set of runs.

    ``distances[run][diagnostic]`` is ``D(run, truth)`` in the diagnostic's own
    units (W1: units of the quantity; spectra: units of ``E(k_r)``). ``baseline``
    names the unparameterized run set (it scores 0 by construction); ``ceiling``,
    if given, names an independent high-resolution set whose score is the
    sampling-noise ceiling (docs/design.md §5). ``stability[run]`` holds
    :func:`stability_summary` results as plain dicts.
    """

    distances: dict[str, dict[str, float]]
    baseline: str
    ceiling: str | None = None
    stability: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.baseline not in self.distances:
            raise ValueError(f"baseline {self.baseline!r} has no distances")
        if self.ceiling is not None and self.ceiling not in self.distances:
            raise ValueError(f"ceiling {self.ceiling!r} has no distances")
        names = list(self.distances[self.baseline])
        for run, d in self.distances.items():
            if list(d) != names:
                raise ValueError(f"run {run!r} has diagnostics {list(d)}, expected {names}")

    @property
    def diagnostics(self) -> list[str]:
        return list(self.distances[self.baseline])

    @property
    def runs(self) -> list[str]:
        """Scored runs: every set except the baseline and the ceiling."""
        return [r for r in self.distances if r not in (self.baseline, self.ceiling)]

    def similarity(self, run: str) -> dict[str, float]:
        return similarity_scores(self.distances[run], self.distances[self.baseline])

    def summary(self, run: str) -> dict[str, float]:
        """Mean and minimum similarity over the diagnostics with a defined score."""
        return _summary(self.similarity(run))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: per run distance, similarity, mean, min, stability (NaN -> null)."""
        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, (float, np.floating)):
                return float(x) if np.isfinite(x) else None
            if isinstance(x, np.integer):
                return int(x)
            if isinstance(x, np.bool_):
                return bool(x)
            return x

        out: dict[str, Any] = {"diagnostics": self.diagnostics, "baseline": self.baseline,
                               "ceiling": self.ceiling, "runs": {}}
        for run in self.distances:
            entry: dict[str, Any] = {"distance": self.distances[run]}
            if run != self.baseline:
                entry["similarity"] = self.similarity(run)
                entry.update(self.summary(run))
            if run in self.stability:
                entry["stability"] = self.stability[run]
            out["runs"][run] = entry
        return clean(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        """Plain-text table: one row per diagnostic; per run its distance D and similarity s.

        The ceiling's similarity is printed in its own column beside every score.
        """
        cols = [self.baseline] + self.runs + ([self.ceiling] if self.ceiling else [])
        sims = {r: self.similarity(r) for r in cols if r != self.baseline}
        head = f"{'diagnostic':<16}" + "".join(
            f"{r[:12] + ' D':>14}" + ("" if r == self.baseline else f"{'s':>8}") for r in cols)
        lines = [head, "-" * len(head)]

        def row(label, dist, sim):
            cells = f"{label:<16}"
            for r in cols:
                cells += f"{dist(r):>14}" + ("" if r == self.baseline else f"{sim(r):>8}")
            return cells

        for d in self.diagnostics:
            lines.append(row(d, lambda r: f"{self.distances[r][d]:.4g}", lambda r: f"{sims[r][d]:.3f}"))
        lines.append("-" * len(head))
        for stat in ("mean", "min"):
            lines.append(row(stat, lambda r: "", lambda r: f"{self.summary(r)[stat]:.3f}"))
        if self.ceiling:
            c = self.summary(self.ceiling)
            lines.append(f"noise ceiling ({self.ceiling}): mean {c['mean']:.3f}, min {c['min']:.3f}"
                         " -- the score of independent truth runs: the best a perfect parameterization can expect")
        for r in cols:
            if r in self.stability:
                s = self.stability[r]
                lines.append(f"stability {r}: {s['n_stable']}/{s['n_runs']} runs stable"
                             + (f"; blow-up times (days): {s['blowup_days']}" if s["n_stable"] < s["n_runs"] else ""))
        return "\n".join(lines)


# --------------------------------------------------------------------------- container
class Diagnostics:
    """Value distributions, time-mean isotropic spectra and a PV snapshot of one run set.

    ``ds`` is an :class:`xarray.Dataset` with

    =====================  ==================  ===============================================
    variable               dims                meaning
    =====================  ==================  ===============================================
    ``dist_<quantity>``    lev, p_<quantity>   pooled sorted sample / quantile summary per layer
    ``spec_<name>``        [lev,] k_r          time-mean isotropic spectrum (:data:`SPECTRA`)
    ``snapshot_q``         y, x                one pooled upper-layer PV snapshot, s-1
    =====================  ==================  ===============================================

    ``k_r`` in rad/m; attributes ``name``, ``L``, ``W`` (m), ``nx``, ``ny``,
    ``n_snapshots`` (pooled snapshots), ``binning``.
    """

    def __init__(self, ds: xr.Dataset):
        missing = [f"dist_{q}" for q in QUANTITIES if f"dist_{q}" not in ds] + \
                  [f"spec_{s}" for s in SPECTRA if f"spec_{s}" not in ds]
        if missing:
            raise ValueError(f"not a diagnostics dataset: missing {', '.join(missing)}")
        self.ds = ds

    @property
    def name(self) -> str:
        return str(self.ds.attrs["name"])

    @classmethod
    def from_samples(cls, name: str, *, samples: Mapping[str, Sequence[np.ndarray]],
                     spectra2d: Mapping[str, np.ndarray], L: float, W: float | None = None,
                     snapshot_q: np.ndarray, n_snapshots: int, n_quantiles: int | None = 10_000, binning: str = "shell") -> "Diagnostics":
        """Build from pooled samples and time-mean spectral densities.

        Parameters
        ----------
        samples
            quantity -> per layer an array of pooled values (units in :data:`QUANTITIES`)
        spectra2d
            spectrum name -> time-mean half-plane density, (lev, ny, nk) for layered
            spectra and (ny, nk) otherwise, in pyqg's normalisation times the factor
            that makes it integrate to the quantity named in :data:`SPECTRA`
        snapshot_q
            (y, x) upper-layer PV, s-1
        """
        W = L if W is None else W
        data: dict[str, Any] = {}
        for q, attrs in QUANTITIES.items():
            per_layer = [quantile_summary(v, n_quantiles) for v in samples[q]]
            size = max(len(p) for p in per_layer)
            if any(len(p) != size for p in per_layer):
                raise ValueError(f"{q}: layers have different sample sizes")
            data[f"dist_{q}"] = xr.DataArray(np.stack(per_layer), dims=("lev", f"p_{q}"), attrs=attrs)
        kr = None
        for s, meta in SPECTRA.items():
            dens = np.asarray(spectra2d[s])
            if dens.ndim != (3 if meta["layered"] else 2):
                raise ValueError(f"spectrum {s}: expected {'(lev, l, k)' if meta['layered'] else '(l, k)'}, "
                                 f"got shape {dens.shape}")
            kr, spec = isotropic_spectrum(dens, L, W, binning=binning)
            dims = ("lev", "k_r") if meta["layered"] else ("k_r",)
            data[f"spec_{s}"] = xr.DataArray(spec, dims=dims,
                                             attrs={"units": meta["units"], "long_name": meta["long_name"]})
        data["snapshot_q"] = xr.DataArray(np.asarray(snapshot_q, dtype=float), dims=("y", "x"),
                                          attrs={"units": "s-1", "long_name": "upper-layer PV anomaly"})
        nlev = data["dist_q"].sizes["lev"]
        ny, nx = data["snapshot_q"].shape
        ds = xr.Dataset(data, coords={
            "lev": np.arange(1, nlev + 1),
            "k_r": ("k_r", kr, {"units": "rad m-1", "long_name": "isotropic wavenumber"}),
        }, attrs={"name": name, "L": float(L), "W": float(W), "nx": int(nx), "ny": int(ny),
                  "n_snapshots": int(n_snapshots), "binning": binning})
        return cls(ds)

    def labels(self) -> list[str]:
        """Diagnostic labels in table order: ``q1, q2, u1, ..., KEspec1, ..., KEfrictionspec``."""
        lev = self.ds["lev"].values
        out = [f"{q}{z}" for q in QUANTITIES for z in lev]
        for s, meta in SPECTRA.items():
            out += [f"{s}{z}" for z in lev] if meta["layered"] else [s]
        return out

    def distances(self, truth: "Diagnostics", k_max: float) -> dict[str, float]:
        """``D(self, truth)`` per diagnostic: W1 of distributions, RMSE of spectra on ``0 < k_r < k_max``.

        ``k_max`` in rad/m (docs/design.md §5: 2/3 of the coarse Nyquist wavenumber).
        """
        a, b = self.ds, truth.ds
        if a["k_r"].size != b["k_r"].size or not np.allclose(a["k_r"], b["k_r"], rtol=1e-12, atol=0):
            raise ValueError(f"{self.name} and {truth.name} have different wavenumber bins (grid or domain differ)")
        keep = (a["k_r"].values > 0) & (a["k_r"].values < k_max)
        if not keep.any():
            raise ValueError(f"no isotropic wavenumber in (0, {k_max:g}) rad/m")
        out: dict[str, float] = {}
        for q in QUANTITIES:
            for i, z in enumerate(a["lev"].values):
                out[f"{q}{z}"] = wasserstein1(a[f"dist_{q}"].values[i], b[f"dist_{q}"].values[i])
        for s, meta in SPECTRA.items():
            sa, sb = a[f"spec_{s}"].values, b[f"spec_{s}"].values
            if meta["layered"]:
                for i, z in enumerate(a["lev"].values):
                    out[f"{s}{z}"] = rmse(sa[i, keep], sb[i, keep])
            else:
                out[s] = rmse(sa[keep], sb[keep])
        return out


# --------------------------------------------------------------------------- stability
def stability_summary(energy: np.ndarray, time: np.ndarray, energy_bound: float,
                      finite: np.ndarray | None = None) -> dict[str, Any]:
    """Which runs stay finite with bounded energy, and when the others blow up.

    Parameters
    ----------
    energy
        (run, time) domain-mean kinetic energy, m2 s-2
    time
        (time,) snapshot times, s
    energy_bound
        a run fails at the first snapshot whose energy exceeds this, m2 s-2
    finite
        (run, time) bool, whether every field value of the snapshot is finite
        (default: whether the energy is)

    Returns
    -------
    dict: ``n_runs``, ``n_stable``, ``fraction_stable``, ``stable`` (per run),
    ``blowup_time`` (per run, s; NaN for stable runs), ``blowup_days`` (the same in days),
    ``energy_bound``.
    """
    energy = np.atleast_2d(np.asarray(energy, dtype=float))
    time = np.asarray(time, dtype=float)
    if energy.shape[-1] != time.size:
        raise ValueError(f"energy has {energy.shape[-1]} times, time has {time.size}")
    ok = np.isfinite(energy) & (energy <= energy_bound)
    if finite is not None:
        ok &= np.atleast_2d(np.asarray(finite, dtype=bool))
    stable = ok.all(axis=-1)
    first_bad = np.argmin(ok, axis=-1)  # first False; meaningless (0) for stable runs, masked below
    blowup = np.where(stable, np.nan, time[first_bad])
    return {
        "n_runs": int(stable.size),
        "n_stable": int(stable.sum()),
        "fraction_stable": float(stable.mean()),
        "stable": [bool(s) for s in stable],
        "blowup_time": [float(t) for t in blowup],
        "blowup_days": [None if np.isnan(t) else round(float(t) / 86400.0, 3) for t in blowup],
        "energy_bound": float(energy_bound),
    }


# --------------------------------------------------------------------------- plots
_STYLE = {"truth": dict(color="k", lw=2.0), "baseline": dict(color="tab:gray", ls="--")}


def _style(name: str) -> dict[str, Any]:
    return _STYLE.get(name, {})


def _km_axis(ax, k_max: float | None) -> None:
    ax.set_xlabel("isotropic wavenumber $k_r$ (rad m$^{-1}$)")
    if k_max is not None:
        ax.axvline(k_max, color="0.6", lw=0.8, ls=":")


def plot_spectra(sets: Mapping[str, Diagnostics], k_max: float | None = None) -> Figure:
    """KE spectra per layer and each set's KE and enstrophy spectra as ratios to the truth's.

    Drawn on the resolved range ``0 < k_r <= k_max`` (rad/m; all wavenumbers when ``None``), where
    the similarity scores are computed: beyond it the coarse model's filter removes what any closure
    does. The ratios are on a linear axis, so a closure's effect on the resolved scales is visible
    (1 = the truth's spectrum). Needs a set named ``"truth"`` for the ratio rows.
    """
    first = next(iter(sets.values())).ds
    levs = first["lev"].values
    kr = first["k_r"].values
    keep = (kr > 0) & (kr <= (k_max if k_max is not None else np.inf))
    fig = Figure(figsize=(4.2 * len(levs), 9), layout="constrained")
    axes = fig.subplots(3, len(levs), squeeze=False)
    truth = sets.get("truth")
    for col, z in enumerate(levs):
        ax = axes[0, col]
        for name, d in sets.items():
            ax.loglog(kr[keep], d.ds["spec_KEspec"].values[col, keep], label=name, **_style(name))
        ax.set_title(f"{SPECTRA['KEspec']['long_name'].split(' (')[0]}, layer {z}")
        ax.set_ylabel(f"$E(k_r)$ ({SPECTRA['KEspec']['units']})")
        _km_axis(ax, None)
        for row, spec in ((1, "KEspec"), (2, "Ensspec")):
            ax = axes[row, col]
            if truth is not None:
                reference = truth.ds[f"spec_{spec}"].values[col, keep]
                for name, d in sets.items():
                    ax.plot(kr[keep], d.ds[f"spec_{spec}"].values[col, keep] / reference, label=name,
                            **_style(name))
            ax.set_xscale("log")
            ax.set_title(f"{SPECTRA[spec]['long_name'].split(' (')[0]} / truth, layer {z}", fontsize=9)
            ax.set_ylabel("ratio to the truth")
            _km_axis(ax, None)
    axes[0, 0].legend(fontsize=8)
    return fig


def plot_energy_budget(sets: Mapping[str, Diagnostics], k_max: float | None = None) -> Figure:
    """Energy-budget spectra: KE flux, APE flux, APE generation, bottom-drag dissipation (m3 s-3)."""
    names = ("KEflux", "APEflux", "APEgenspec", "KEfrictionspec")
    fig = Figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, s in zip(axes, names):
        for name, d in sets.items():
            kr = d.ds["k_r"].values
            ax.semilogx(kr[1:], d.ds[f"spec_{s}"].values[1:], label=name, **_style(name))
        ax.axhline(0, color="0.8", lw=0.6)
        ax.set_title(SPECTRA[s]["long_name"], fontsize=9)
        ax.set_ylabel(f"({SPECTRA[s]['units']})")
        _km_axis(ax, k_max)
    axes[0].legend(fontsize=8)
    return fig


def plot_distributions(sets: Mapping[str, Diagnostics], bins: int = 60) -> Figure:
    """Value distributions (density, log scale) per layer of q, u, v, KE and enstrophy.

    The histograms are of the stored quantile summaries (equal weight each), on
    bins common to all sets for each panel.
    """
    first = next(iter(sets.values())).ds
    levs = first["lev"].values
    fig = Figure(figsize=(3.2 * len(QUANTITIES), 3.0 * len(levs)), layout="constrained")
    axes = fig.subplots(len(levs), len(QUANTITIES), squeeze=False)
    for col, (q, attrs) in enumerate(QUANTITIES.items()):
        for row, z in enumerate(levs):
            values = {name: d.ds[f"dist_{q}"].values[row] for name, d in sets.items()}
            lo = min(v[0] for v in values.values())
            hi = max(v[-1] for v in values.values())
            edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
            ax = axes[row, col]
            for name, v in values.items():
                dens, _ = np.histogram(v, bins=edges, density=True)
                ax.step(0.5 * (edges[1:] + edges[:-1]), dens, where="mid", label=name, **_style(name))
            ax.set_yscale("log")
            ax.set_xlabel(f"{q} ({attrs['units']})")
            ax.set_ylabel(f"density, layer {z}")
    axes[0, 0].legend(fontsize=8)
    return fig


def plot_energy_timeseries(series: Mapping[str, tuple[np.ndarray, np.ndarray]],
                           energy_bound: float | None = None) -> Figure:
    """Domain-mean kinetic energy (m2 s-2) of every run against time (days); dashed: the stability bound.

    series : set name -> (time (time,) in s, energy (run, time) in m2 s-2)
    """
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, (time, energy)) in enumerate(series.items()):
        style = {"color": f"C{i}", **_style(name)}
        for r, e in enumerate(np.atleast_2d(energy)):
            ax.plot(np.asarray(time) / 86400.0, e, label=name if r == 0 else None, alpha=0.8, **style)
    if energy_bound is not None:
        ax.axhline(energy_bound, color="r", ls="--", lw=0.8, label="stability bound")
    ax.set_yscale("log")
    ax.set_xlabel("time (days)")
    ax.set_ylabel("domain-mean KE (m$^2$ s$^{-2}$)")
    ax.legend(fontsize=8)
    return fig


def plot_snapshots(sets: Mapping[str, Diagnostics]) -> Figure:
    """Upper-layer PV (s-1) side by side, one panel per set, on a common symmetric colour scale."""
    fig = Figure(figsize=(3.6 * len(sets) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    vmax = max(float(np.nanmax(np.abs(d.ds["snapshot_q"].values))) for d in sets.values()) or 1.0
    image = None
    for ax, (name, d) in zip(axes, sets.items()):
        L_km, W_km = d.ds.attrs["L"] / 1e3, d.ds.attrs["W"] / 1e3
        image = ax.imshow(d.ds["snapshot_q"].values, origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                          extent=(0, L_km, 0, W_km))
        ax.set_title(name)
        ax.set_xlabel("x (km)")
    axes[0].set_ylabel("y (km)")
    fig.colorbar(image, ax=list(axes), label="upper-layer q (s$^{-1}$)")
    return fig
