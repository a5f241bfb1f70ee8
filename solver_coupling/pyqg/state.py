"""What a trained model sees of a live pyqg model: velocity, the interface variable and the constants.

Everything is derived from the spectral streamfunction with pyqg's own wavenumbers and FFT,
because some of pyqg's spectral buffers (``m.uh``...) are scratch space at hook time.
"""

from __future__ import annotations

import numpy as np

from roteq_param import fields, fluxform

__all__ = ["velocity", "constants", "stratification", "state_from_model"]


def velocity(m, ph: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Perturbation velocity (u, v) = (-d psi/dy, d psi/dx), each (nz, ny, nx) in m/s.

    ``ph`` is a spectral streamfunction in pyqg's layout (default: the model's ``m.ph``).
    """
    ph = m.ph if ph is None else ph
    return m.ifft(-1j * m.l * ph), m.ifft(1j * m.k * ph)


def constants(m) -> tuple[np.ndarray, np.ndarray]:
    """beta = (0, beta) [1/(m s)] (pyqg's beta points along y) and the background velocity
    U_i = (U_i, V_i) [m/s] per layer (pyqg's ``Ubg``, ``Vbg``; QGModel's V is 0)."""
    return (np.array([0.0, float(m.beta)]),
            np.array([[float(m.Ubg[i]), float(m.Vbg[i])] for i in range(m.nz)]))


def stratification(m) -> fluxform.Stratification:
    """The layers' coupling of any pyqg layered model (QGModel, LayeredModel), from its ``m.S``."""
    return fluxform.Stratification.from_matrix(m.S)


def state_from_model(m, regime: bool = False) -> dict[str, np.ndarray]:
    """The schema's named inputs from the current pyqg state (float64 numpy arrays); with ``regime``
    also the solver's stretching couplings and drag (``qg_schema(N, regime=True)``)."""
    u, v = velocity(m)
    # b_j = psi_j - psi_{j+1}; pyqg's FFT wants (nz, ny, nk) arrays, so the last row is padding
    b = m.ifft(np.concatenate([m.ph[:-1] - m.ph[1:], np.zeros_like(m.ph[:1])]))[:-1]
    state = fields.qg_inputs(u, v, b, *constants(m))
    if regime:
        strat = stratification(m)
        state.update(fields.qg_regime_inputs(np.array(strat.upper), np.array(strat.lower), np.array(float(m.rek))))
    return state
