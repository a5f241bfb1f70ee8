"""Check that the environment is the one roteq-param was built and measured with.

Run as ``python -m solver_coupling.pyqg.envcheck`` (``scripts/setup.sh`` does, after installing).
Exits non-zero with a message naming each problem; prints a one-line summary otherwise.
"""

from __future__ import annotations

import sys


def problems() -> list[str]:
    """Return a list of human-readable problems with the installed stack (empty if all is well)."""
    found: list[str] = []
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        found.append(f"numpy {numpy.__version__} is installed; pyqg 0.7.2 and lie-learn need numpy<2")
    try:
        import pyqg.kernel as kernel
    except Exception as exc:  # noqa: BLE001 - report any import failure verbatim
        found.append(f"pyqg does not import: {exc}")
    else:
        # pyqg decides at build time: built without pyfftw its kernel imports numpy.fft as `npfft`.
        if not hasattr(kernel, "pyfftw") or hasattr(kernel, "npfft"):
            found.append("pyqg was built without FFTW (it falls back to numpy.fft); "
                         "reinstall pyfftw first, then `pip install --no-build-isolation --force-reinstall pyqg`")
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        found.append(f"torch does not import: {exc}")
    else:
        if not torch.__version__.startswith("2.13.0"):
            found.append(f"torch {torch.__version__} is installed; roteq-param pins 2.13.0")
    try:
        import escnn  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        found.append(f"escnn does not import: {exc}")
    return found


def main() -> int:
    found = problems()
    if found:
        for p in found:
            print(f"[envcheck] problem: {p}", file=sys.stderr)
        return 1
    import numpy
    import pyqg
    import torch

    print(f"[envcheck] ok: python {sys.version.split()[0]}, numpy {numpy.__version__}, "
          f"pyqg {pyqg.__version__} (FFTW), torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
