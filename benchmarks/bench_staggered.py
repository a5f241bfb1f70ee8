"""Cost of the C-grid coupling kernels against a bare pyqg 64^2 step (all measured in this one process).

One "coupling" is what a C-grid solver pays per step besides the flux model
itself, for a 2-layer 64^2 state: u, v to centres, then tau_xy to corners,
Fb to faces and the flux-form divergence to (du, dv, db). It is timed for

* the numba kernels (unmasked, and with a land mask),
* the CGridAdapter around them (shape checks, allocation, finiteness checks),
* a plain numpy np.roll implementation of the same operations,
* xgcm (grid.interp / grid.diff on xarray DataArrays),

and compared with ``pyqg.QGModel(nx=64, ntd=1)._step_forward()``. Each time is
the best of several repeats of a mean over many calls, which filters out noise
from other jobs on a shared machine. Target: numba kernels <= 5% of a pyqg step.

Run: .venv/bin/python benchmarks/bench_staggered.py
"""

import time
import warnings

import numpy as np
import pyqg
import xarray as xr
import xgcm

from solver_coupling.cgrid import CGridAdapter
from solver_coupling.cgrid.staggered import CGridMasks, centred_fluxes_to_tendencies_kernel, cgrid_to_centres_kernel

NZ, N = 2, 64
REPEATS = 7


def best_mean_us(func, calls):
    func()  # warm-up (numba compilation, caches)
    best = np.inf
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main():
    rng = np.random.default_rng(0)
    dx = dy = 1e6 / N
    u, v, b = rng.standard_normal((3, NZ, N, N))
    tau = rng.standard_normal((NZ, 3, N, N))
    fb = rng.standard_normal((NZ, 2, N, N))
    mask = rng.random((N, N)) > 0.1
    out = {k: np.empty((NZ, N, N)) for k in ("uc", "vc", "du", "dv", "db")}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pyqg.QGModel(nx=N, ntd=1, log_level=0)
    for _ in range(100):
        model._step_forward()

    def kernels(masks):
        def run():
            cgrid_to_centres_kernel(u, v, masks.u, masks.v, masks.centre, out["uc"], out["vc"])
            centred_fluxes_to_tendencies_kernel(tau, fb, masks.centre, masks.u, masks.v, masks.corner,
                                                1 / dx, 1 / dy, out["du"], out["dv"], out["db"])
        return run

    def adapter(check_finite, with_mask):
        a = CGridAdapter(lambda uc, vc, bc: (tau, fb), dx, dy, mask if with_mask else None, check_finite=check_finite)
        return lambda: a(u, v, b[0])

    def numpy_roll():
        def r(a, shift, axis):
            return np.roll(a, shift, axis=axis)
        uc = 0.5 * (u + r(u, -1, -1))
        vc = 0.5 * (v + r(v, -1, -2))
        txy = 0.25 * (tau[:, 1] + r(tau[:, 1], 1, -1) + r(tau[:, 1], 1, -2) + r(tau[:, 1], (1, 1), (-2, -1)))
        du = -((tau[:, 0] - r(tau[:, 0], 1, -1)) / dx + (r(txy, -1, -2) - txy) / dy)
        dv = -((r(txy, -1, -1) - txy) / dx + (tau[:, 2] - r(tau[:, 2], 1, -2)) / dy)
        fx = 0.5 * (fb[:, 0] + r(fb[:, 0], 1, -1))
        fy = 0.5 * (fb[:, 1] + r(fb[:, 1], 1, -2))
        db = -((r(fx, -1, -1) - fx) / dx + (r(fy, -1, -2) - fy) / dy)
        return uc, vc, du, dv, db

    ds = xr.Dataset(coords={"xc": (np.arange(N) + 0.5) * dx, "xg": np.arange(N) * dx,
                            "yc": (np.arange(N) + 0.5) * dy, "yg": np.arange(N) * dy})
    grid = xgcm.Grid(ds, coords={"X": {"center": "xc", "left": "xg"}, "Y": {"center": "yc", "left": "yg"}},
                     padding="periodic", autoparse_metadata=False)

    def da(a, ydim, xdim):
        return xr.DataArray(a, dims=("lev", ydim, xdim), coords={ydim: ds[ydim], xdim: ds[xdim]})

    def xgcm_path():
        uc = grid.interp(da(u, "yc", "xg"), "X")
        vc = grid.interp(da(v, "yg", "xc"), "Y")
        txy = grid.interp(da(tau[:, 1], "yc", "xc"), ["X", "Y"])
        du = -(grid.diff(da(tau[:, 0], "yc", "xc"), "X") / dx + grid.diff(txy, "Y") / dy)
        dv = -(grid.diff(txy, "X") / dx + grid.diff(da(tau[:, 2], "yc", "xc"), "Y") / dy)
        fx = grid.interp(da(fb[:, 0], "yc", "xc"), "X")
        fy = grid.interp(da(fb[:, 1], "yc", "xc"), "Y")
        db = -(grid.diff(fx, "X") / dx + grid.diff(fy, "Y") / dy)
        return uc, vc, du, dv, db

    # The numpy path is the reference for the kernels' results.
    kernels(CGridMasks.from_centre(None, (N, N)))()
    ref = numpy_roll()
    err = max(np.abs(out[k] - r).max() / np.abs(r).max() for k, r in zip(("uc", "vc", "du", "dv", "db"), ref))

    t_step = best_mean_us(model._step_forward, 500)
    rows = [
        ("numba kernels, no mask", best_mean_us(kernels(CGridMasks.from_centre(None, (N, N))), 2000)),
        ("numba kernels, land mask", best_mean_us(kernels(CGridMasks.from_centre(mask, (N, N))), 2000)),
        ("CGridAdapter, no mask, check_finite=False", best_mean_us(adapter(False, False), 1000)),
        ("CGridAdapter, no mask, check_finite=True", best_mean_us(adapter(True, False), 1000)),
        ("CGridAdapter, land mask, check_finite=True", best_mean_us(adapter(True, True), 1000)),
        ("numpy np.roll", best_mean_us(numpy_roll, 300)),
        ("xgcm", best_mean_us(xgcm_path, 20)),
    ]
    t_kernels = rows[0][1]
    print(f"2-layer {N}x{N}: u, v -> centres; tau_xy -> corners, Fb -> faces; divergence -> du, dv, db")
    print(f"numba vs numpy max relative difference: {err:.1e}")
    print(f"{'pyqg QGModel(nx=64, ntd=1) step':45s} {t_step:9.1f} us")
    for name, t in rows:
        print(f"{name:45s} {t:9.1f} us  = {100 * t / t_step:7.1f}% of a pyqg step, {t / t_kernels:6.1f}x numba")
    verdict = "meets" if t_kernels <= 0.05 * t_step else "misses"
    print(f"target numba kernels <= 5% of a pyqg step: {verdict} ({100 * t_kernels / t_step:.1f}%)")


if __name__ == "__main__":
    main()
