"""FFTW plans pinned to a file, so a pyqg run picks the same FFT algorithms in every process.

pyqg plans its transforms with FFTW_MEASURE: FFTW times the candidate algorithms and keeps the
fastest, so two processes on a loaded machine can pick different ones (three processes building
the same 64^2 model here exported three different wisdoms). The algorithms round differently, and
a chaotic flow turns a last-bit difference into another trajectory within weeks. Planning once,
keeping the wisdom in a file, and importing it before every model is built makes a run repeat bit
for bit: in another process, after a resume, or on any number of workers (on one machine type).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable

from roteq_param.atomic import atomic_write_bytes
from roteq_param.integrity import verify_file

__all__ = ["WISDOM_FILE", "use_wisdom", "load_or_measure"]

WISDOM_FILE = "fftw_wisdom.pkl"
"""Name of the wisdom file a job keeps in its own folder."""


def use_wisdom(wisdom: tuple | None) -> None:
    """Replace this process's FFTW wisdom by exactly ``wisdom`` (``None``: leave it as it is), so the
    models built next plan from it instead of measuring."""
    if wisdom is None:
        return
    import pyfftw

    pyfftw.forget_wisdom()
    pyfftw.import_wisdom(wisdom)


def load_or_measure(folder: str | os.PathLike, make_model: Callable[[], object]) -> tuple:
    """The wisdom a job keeps in ``folder`` (:data:`WISDOM_FILE`); if there is none, plan by building
    ``make_model()`` with a fresh planner and store what it measured (atomically). Import it with
    :func:`use_wisdom`."""
    import pyfftw

    path = Path(folder) / WISDOM_FILE
    if path.exists():
        verify_file(path, "FFTW wisdom", "delete it and its .sha256 (it is measured again; the run then repeats "
                    "bit for bit only from there)")
        with open(path, "rb") as fh:
            return pickle.load(fh)
    pyfftw.forget_wisdom()
    make_model()  # building the model plans its transforms, which accumulates the wisdom
    wisdom = pyfftw.export_wisdom()
    atomic_write_bytes(path, pickle.dumps(wisdom), checksum=True)
    return wisdom
