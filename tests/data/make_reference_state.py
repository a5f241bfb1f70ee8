"""Write tests/data/eddy64_state.npz: a spun-up 64x64 pyqg eddy state (physical units) and the
shipped model's float64 hook output on it (the behaviour fingerprint that refactors must keep).

Run from the repository root: ``.venv/bin/python tests/data/make_reference_state.py``. An existing
file keeps its state and only gets a new fingerprint: do that only for a deliberate change of the
model's outputs, and say so in the commit. The state is stored, not re-simulated in the tests, so
the fingerprint does not depend on FFTW's plans on the test machine.
"""

from pathlib import Path

import numpy as np
import pyqg
import torch

HERE = Path(__file__).resolve().parent
FILE = HERE / "eddy64_state.npz"


def main() -> None:
    from solver_coupling.pyqg.plugin import RotEqParameterization

    if FILE.exists():
        q = np.load(FILE)["q"]
        m = pyqg.QGModel(nx=64, dt=3600.0, ntd=1, log_level=0)
        m.q = q
    else:
        # eddy at 64^2 (pyqg defaults, dt = 1 h), spun up for 3 model years from pyqg's own random
        # initial condition with a fixed numpy seed
        np.random.seed(0)
        m = pyqg.QGModel(nx=64, dt=3600.0, tmax=3 * 360 * 86400.0, ntd=1, log_level=0)
        m.run()
    m._invert()
    dq = RotEqParameterization("eddy-c4", dtype=torch.float64)(m)  # float64: independent of threads
    np.savez_compressed(FILE, q=m.q, dq_eddy_c4=dq)
    print("q max", np.abs(m.q).max(), "dq max", np.abs(dq).max())


if __name__ == "__main__":
    main()
