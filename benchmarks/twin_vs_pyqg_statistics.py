"""Do the torch twin's long-run statistics agree with pyqg's within the run-to-run spread?

Reads two ``roteq rollout`` files (same configuration, M members each: one from ``--engine pyqg``,
one from ``--engine torch``) and, for every time-averaged diagnostic both hold, compares the
difference of the two ensemble means with the sampling spread: the standard error of that
difference from the member-to-member scatter, sqrt(s_a^2 / M_a + s_b^2 / M_b). For spectra
(``(lev,) l, k`` fields) the comparison is made on the domain total (the sum over wavenumbers,
what the budget says) and on each isotropic shell below 2/3 of the Nyquist wavenumber, reporting
the largest |z| over the shells. |z| <= 3 everywhere means "within the spread".

Run (about 2.5 min each on one idle core):
  roteq rollout --model none --engine pyqg --members 4 --years 5 --diag-start-years 1 --seed 11 --out runs/twin_check_pyqg
  roteq rollout --model none --engine torch --precision float32 --members 4 --years 5 --diag-start-years 1 --seed 11 \\
      --out runs/twin_check_torch
  .venv/bin/python benchmarks/twin_vs_pyqg_statistics.py runs/twin_check_pyqg/rollout.nc runs/twin_check_torch/rollout.nc
"""

import sys

import numpy as np
import xarray as xr

from roteq_param import diagnostics as dg

NAMES = ("EKE", "EKEdiss", "APEgen", "KEspec", "Ensspec", "KEflux", "APEflux", "APEgenspec", "KEfrictionspec")


def _z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(mean_b - mean_a) / standard error of the difference; arrays have members first."""
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    return (b.mean(0) - a.mean(0)) / np.where(se > 0, se, np.inf)


def main(path_a: str, path_b: str) -> None:
    a, b = xr.open_dataset(path_a), xr.open_dataset(path_b)
    print(f"{a.attrs.get('engine', '?')} ({a.sizes['run']} members) vs {b.attrs.get('engine', '?')} "
          f"({b.sizes['run']} members)")
    print(f"{'diagnostic':>16} {'rel. diff of means':>19} {'z (total)':>10} {'max |z| over shells':>20}")
    L = float(a["x"].values[-1] + a["x"].values[0])
    for name in NAMES:
        if name not in a or name not in b:
            continue
        va, vb = a[name].values, b[name].values
        spectral = a[name].dims[-2:] == ("l", "k")
        total_a = va.reshape(len(va), -1, *va.shape[-2:]).sum((-2, -1)) if spectral else va
        total_b = vb.reshape(len(vb), -1, *vb.shape[-2:]).sum((-2, -1)) if spectral else vb
        rel = float(np.abs(total_b.mean(0) - total_a.mean(0)).max() / np.abs(total_a.mean(0)).max())
        z_total = float(np.abs(_z(np.atleast_2d(total_a.T).T, np.atleast_2d(total_b.T).T)).max())
        shells = ""
        if spectral:
            kr, sa = dg.isotropic_spectrum(va, L)
            _, sb = dg.isotropic_spectrum(vb, L)
            keep = (kr > 0) & (kr < 2 / 3 * kr.max())
            shells = f"{float(np.abs(_z(sa[..., keep], sb[..., keep])).max()):20.2f}"
        print(f"{name:>16} {rel:19.3%} {z_total:10.2f} {shells}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
