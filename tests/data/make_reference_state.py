"""Write tests/data/eddy64_state.npz: a spun-up 64x64 pyqg eddy state (physical units) and the
shipped model's hook output on it (the behaviour fingerprint the refactors must keep).

Run once from the repository root: ``.venv/bin/python tests/data/make_reference_state.py``.
The state is stored, not re-simulated in the tests, so the fingerprint does not depend on
FFTW's plans on the test machine.
"""

from pathlib import Path

import numpy as np
import pyqg

HERE = Path(__file__).resolve().parent


def main() -> None:
    # eddy configuration at 64^2 (pyqg defaults, dt = 1 h), spun up for 3 model years from pyqg's
    # own random initial condition with a fixed numpy seed
    np.random.seed(0)
    m = pyqg.QGModel(nx=64, dt=3600.0, tmax=3 * 360 * 86400.0, ntd=1, log_level=0)
    m.run()
    from solver_coupling.pyqg.plugin import RotEqParameterization

    P = RotEqParameterization("eddy-c4")
    m._invert()
    dq = P(m)
    np.savez_compressed(HERE / "eddy64_state.npz", q=m.q, dq_eddy_c4=dq)
    print("q max", np.abs(m.q).max(), "dq max", np.abs(dq).max())


if __name__ == "__main__":
    main()
