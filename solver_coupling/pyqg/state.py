"""What a trained model sees of a live pyqg model: velocity, the interface variable and the constants.

Everything is derived from the spectral streamfunction with pyqg's own wavenumbers and FFT,
because some of pyqg's spectral buffers (``m.uh``...) are scratch space at hook time.
"""

from __future__ import annotations

import numpy as np

from roteq_param import fields

__all__ = ["velocity", "constants", "state_from_model"]


def velocity(m, ph: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Perturbation velocity (u, v) = (-d psi/dy, d psi/dx), each (nz, ny, nx) in m/s.

    ``ph`` is a spectral streamfunction in pyqg's layout (default: the model's ``m.ph``).
    """
    ph = m.ph if ph is None else ph
    return m.ifft(-1j * m.l * ph), m.ifft(1j * m.k * ph)


def constants(m) -> tuple[np.ndarray, np.ndarray]:
    """beta = (0, beta) [1/(m s)] (pyqg's beta points along y) and U_i = (U_i, 0) [m/s] per layer."""
    return np.array([0.0, float(m.beta)]), np.array([[float(m.Ubg[i]), 0.0] for i in range(m.nz)])


def state_from_model(m) -> dict[str, np.ndarray]:
    """The schema's named inputs from the current pyqg state (float64 numpy arrays)."""
    u, v = velocity(m)
    b = m.ifft((m.ph[0] - m.ph[1])[None])[0]  # pyqg's FFT wants (nz, ny, nk) arrays
    return fields.qg_inputs(u, v, b, *constants(m))
