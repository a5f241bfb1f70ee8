"""Your own pyqg runs as files for retraining: writing them from a running model, reading them back.

``roteq coarsen`` turns high-resolution pyqg output into training data. It needs the PV ``q``
(``time, lev, y, x``, s^-1) and every solver setting that the trained model's regime is tied to
(``solver_config_of``: ``L, W, rd, delta, H1, H2, U1, U2, V1, V2, beta, rek`` and the grid).
pyqg's own ``m.to_dataset()`` stores most of them as ``pyqg:*`` attributes, but

* it also holds complex spectral variables (``qh``, ``ph``, ...), which netCDF cannot store:
  ``ds.drop_vars([v for v in ds.variables if np.iscomplexobj(ds[v])])`` before ``to_netcdf``;
* it does not store the upper-layer depth ``H1`` (with ``delta`` it gives ``H2 = H1 / delta``).
  H1 does not change q or the fluxes, but it is part of the regime the plugin checks, so a model
  trained on data whose H1 was guessed would be refused by the very solver that made the data.

:class:`SnapshotWriter` (and :func:`save_run` for one snapshot) writes files that hold all of it, in
``to_dataset``'s layout with the missing settings as ``roteq:*`` attributes. :func:`read_runs`
reads either kind, one run per file or the pieces of one run, with snapshots in any number; a
setting the files lack must be given (``roteq coarsen --set H1=750``): there is no silent default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from roteq_param.atomic import atomic_to_netcdf

__all__ = ["SnapshotWriter", "save_run", "read_runs", "PyqgRuns", "UNSTORED_SETTINGS", "RAW_FORMAT"]

RAW_FORMAT = "roteq-pyqg-snapshots/1"
"""The ``roteq:format`` attribute of files written here."""

UNSTORED_SETTINGS = {"H1": "the upper-layer depth [m] (pyqg's QGModel default is 500)"}
"""Two-layer QGModel settings of the regime that ``m.to_dataset()`` does not store, with what they are."""

# pyqg:* attribute -> QGModel keyword (SI units); Ubg gives U1, U2
_STORED = {"L": "L", "nx": "nx", "rd": "rd", "delta": "delta", "beta": "beta", "dt": "dt", "rek": "rek",
           "filterfac": "filterfac"}
_INTS = ("nx",)


def _check_model(m) -> None:
    import pyqg

    if not isinstance(m, pyqg.QGModel):
        raise TypeError(f"saving runs for `roteq coarsen` supports pyqg's two-layer QGModel, got {type(m).__name__} "
                        "(for LayeredModel configurations generate the data with `roteq generate --config layered3`)")


def _settings_of(m) -> dict[str, float]:
    """Every QGModel keyword `coarsen` needs, from a live model (SI units)."""
    return {"L": float(m.L), "nx": int(m.nx), "rd": float(m.rd), "delta": float(m.delta), "beta": float(m.beta),
            "dt": float(m.dt), "rek": float(m.rek), "filterfac": float(m.filterfac), "H1": float(m.Hi[0]),
            "U1": float(m.Ubg[0]), "U2": float(m.Ubg[1])}


class SnapshotWriter:
    """Collect PV snapshots of one running pyqg ``QGModel`` and write them as one file for ``roteq coarsen``.

    Use it from pyqg's own loop::

        writer = SnapshotWriter(m)
        for _ in m.run_with_snapshots(tsnapstart=5 * 360 * 86400, tsnapint=10 * 86400):
            writer.add(m)
        writer.write("run_0.nc")

    The file is ``m.to_dataset()``'s layout (``q`` as ``time, lev, y, x`` in s^-1, ``Ubg``, the ``pyqg:*``
    attributes) without the complex variables, plus ``roteq:H1`` [m] and every other setting ``coarsen``
    needs as ``roteq:<name>``, so nothing has to be given again. One file holds one run; several runs
    are several files (``roteq coarsen run_0.nc run_1.nc ...``).
    """

    def __init__(self, m):
        _check_model(m)
        self._settings = _settings_of(m)
        self._template = m.to_dataset()[["Ubg"]]  # pyqg's attributes and its background velocity
        self._grid = (np.array(m.y[:, 0]), np.array(m.x[0, :]))  # cell centres, m
        self._times: list[float] = []
        self._q: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._q)

    def add(self, m) -> None:
        """Record the model's current PV ``m.q`` at model time ``m.t`` [s]."""
        _check_model(m)
        if _settings_of(m) != self._settings:
            raise ValueError("SnapshotWriter.add: this model's settings differ from the one the writer was made "
                             "for; use one writer per run")
        if self._times and m.t <= self._times[-1]:
            raise ValueError(f"SnapshotWriter.add: model time {m.t:g} s is not after the last snapshot "
                             f"({self._times[-1]:g} s)")
        q = np.array(m.q, dtype=np.float64)
        if not np.all(np.isfinite(q)):
            raise FloatingPointError(f"SnapshotWriter.add: the model's PV holds NaN or inf at t = {m.t:g} s "
                                     "(the run blew up); a smaller dt may hold it")
        self._times.append(float(m.t))
        self._q.append(q)

    def dataset(self):
        """The snapshots as an xarray Dataset (what :meth:`write` stores)."""
        import xarray as xr

        if not self._q:
            raise ValueError("SnapshotWriter: no snapshots recorded; call add(m) in the model's loop first")
        ds = self._template.copy()
        ds["q"] = (("time", "lev", "y", "x"), np.stack(self._q),
                   {"units": "s^-1", "long_name": "potential vorticity in real space"})
        y, x = self._grid
        ds = ds.assign_coords(time=("time", np.asarray(self._times), {"units": "s", "long_name": "model time"}),
                              lev=np.arange(1, 3), y=("y", y, {"units": "m", "long_name": "cell centre, y"}),
                              x=("x", x, {"units": "m", "long_name": "cell centre, x"}))
        ds.attrs.update({f"roteq:{k}": v for k, v in self._settings.items()})
        ds.attrs["roteq:format"] = RAW_FORMAT
        return ds

    def write(self, path: str | os.PathLike) -> str:
        """Write the snapshots to ``path`` (netCDF4, atomically: a killed write leaves no partial file)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_to_netcdf(self.dataset(), path)
        return path


def save_run(m, path: str | os.PathLike) -> str:
    """Write the current state of the pyqg ``QGModel`` ``m`` (one snapshot) for ``roteq coarsen``.

    The same file as a :class:`SnapshotWriter` with one snapshot; for many snapshots of one run use
    the writer (or several ``save_run`` files given to ``roteq coarsen --one-run``).
    """
    writer = SnapshotWriter(m)
    writer.add(m)
    return writer.write(path)


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class PyqgRuns:
    """High-resolution runs read by :func:`read_runs`: the QGModel settings (SI units, the keywords of
    :func:`~solver_coupling.pyqg.config.get_config`), the shared snapshot times [s] and each run's PV
    ``(time, lev, y, x)`` [s^-1]; ``sources[r]`` the files run ``r`` came from."""

    settings: dict[str, Any]
    times: np.ndarray
    q: list[np.ndarray]
    sources: list[list[str]]


def _file_settings(ds, path: str) -> dict[str, Any]:
    """What ``path`` records of the QGModel settings (pyqg's attributes, ``Ubg``, and ``roteq:*``)."""
    a = ds.attrs
    if int(a.get("pyqg:nz", 2)) != 2 or ("lev" in ds.sizes and ds.sizes["lev"] != 2):
        raise ValueError(f"{path}: `roteq coarsen` reads two-layer QGModel output; this file has "
                         f"{a.get('pyqg:nz', ds.sizes.get('lev'))} layers (for LayeredModel data use "
                         "`roteq generate --config layered3`)")
    missing = [f"pyqg:{k}" for k in _STORED if f"pyqg:{k}" not in a and f"roteq:{k}" not in a]
    missing += [v for v in ("q", "Ubg") if v not in ds.variables]
    if missing:
        raise ValueError(f"{path} is not pyqg QGModel output: missing {', '.join(missing)} (write it with "
                         "solver_coupling.pyqg.SnapshotWriter, or m.to_dataset() without its complex variables)")
    out: dict[str, Any] = {}
    for attr, key in _STORED.items():
        value = a.get(f"roteq:{attr}", a.get(f"pyqg:{attr}"))
        out[key] = int(value) if key in _INTS else float(value)
    ubg = np.asarray(ds["Ubg"].transpose(..., "lev").values, dtype=np.float64).reshape(-1, 2)
    # concatenating to_dataset() output over time gives Ubg a time axis; it must not change
    if not np.all(ubg == ubg[0]):
        raise ValueError(f"{path}: the background velocity Ubg changes between snapshots ({ubg.min(0)} to "
                         f"{ubg.max(0)} m/s): one file must hold one configuration")
    out["U1"], out["U2"] = float(ubg[0, 0]), float(ubg[0, 1])
    for name in UNSTORED_SETTINGS:
        if f"roteq:{name}" in a:
            out[name] = float(a[f"roteq:{name}"])
    return out


def _file_pv(ds, path: str) -> tuple[np.ndarray, np.ndarray]:
    q = ds["q"]
    if q.dims[-3:] != ("lev", "y", "x"):
        raise ValueError(f"{path}: q must have dims (..., lev, y, x); got {q.dims}")
    if "time" not in q.dims:
        q = q.expand_dims("time")
    extra = [d for d in q.dims if d not in ("time", "lev", "y", "x")]
    if extra:
        raise ValueError(f"{path}: q has dims {q.dims}; expected (time, lev, y, x) (one run per file)")
    times = np.asarray(q["time"].values if "time" in q.coords else np.arange(q.sizes["time"]), dtype=np.float64)
    values = np.asarray(q.transpose("time", "lev", "y", "x").values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: q contains NaN or infinite values (the run blew up?)")
    return times, values


def _settle(found: dict[str, Any], given: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The file's settings with ``given`` (``--set``) filling what it lacks; a contradiction is an error."""
    out = dict(found)
    for name, value in given.items():
        if name in found and not np.isclose(float(found[name]), float(value), rtol=1e-12, atol=0.0):
            raise ValueError(f"{path} records {name}={found[name]:g}, but --set {name}={value} was given; drop the "
                             "--set (the file knows it) or give the file that matches")
        out[name] = value
    missing = [n for n in UNSTORED_SETTINGS if n not in out]
    if missing:
        what = "; ".join(f"{n}: {UNSTORED_SETTINGS[n]}" for n in missing)
        raise ValueError(
            f"{path} does not record {', '.join(missing)} ({what}); pyqg's to_dataset() does not store it, and a "
            f"model trained with a wrong value is refused by the solver that made the data. Give the value the run "
            f"used: " + " ".join(f"--set {n}=VALUE" for n in missing)
            + " (or save runs with solver_coupling.pyqg.SnapshotWriter, which records it)")
    return out


def read_runs(inputs: Sequence[str], settings: Mapping[str, Any] | None = None,
              one_run: bool = False) -> PyqgRuns:
    """Read high-resolution pyqg QGModel runs for coarse-graining.

    Parameters
    ----------
    inputs:
        netCDF files written by :class:`SnapshotWriter` / :func:`save_run`, or ``m.to_dataset()`` without
        its complex variables (any number of snapshots each, also concatenated over ``time``).
    settings:
        QGModel keywords (SI units) the files do not record, e.g. ``{"H1": 750.0}``; one a file does
        record must agree with it.
    one_run:
        ``False``: each file is one run, and all runs share their snapshot times. ``True``: the files
        are pieces of one run, joined in time order (a time given twice is an error).

    Raises ``ValueError`` naming the file and what to do: missing variables or settings, NaN, files
    of other configurations, grids or times.
    """
    import xarray as xr

    if not inputs:
        raise ValueError("no input files")
    settings = dict(settings or {})
    runs: list[tuple[dict, np.ndarray, np.ndarray, str]] = []
    for path in inputs:
        if not os.path.isfile(path):
            raise ValueError(f"input {path} does not exist")
        with xr.open_dataset(path) as ds:
            found = _settle(_file_settings(ds, path), settings, path)
            times, q = _file_pv(ds, path)
        if runs and found != runs[0][0]:
            diff = sorted(k for k in found if found[k] != runs[0][0].get(k))
            raise ValueError(f"{path} has other settings than {inputs[0]} ({', '.join(diff)}); one dataset holds "
                             "one configuration: coarsen each configuration on its own")
        runs.append((found, times, q, path))
    found = runs[0][0]
    if one_run:
        times = np.concatenate([r[1] for r in runs])
        order = np.argsort(times, kind="stable")
        if np.any(np.diff(times[order]) == 0):
            raise ValueError("--one-run: the files share a snapshot time; give each snapshot once")
        q = np.concatenate([r[2] for r in runs])[order]
        return PyqgRuns(found, times[order], [q], [list(inputs)])
    for _, times, _, path in runs[1:]:
        if not np.array_equal(times, runs[0][1]):
            raise ValueError(f"{path} has other snapshot times than {inputs[0]} ({len(times)} against "
                             f"{len(runs[0][1])}); runs of one dataset share their times. If the files are pieces "
                             "of one run, pass --one-run")
    return PyqgRuns(found, runs[0][1], [r[2] for r in runs], [[r[3]] for r in runs])
