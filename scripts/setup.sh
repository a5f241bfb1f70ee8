#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with pinned, working versions.
#
# Safe to run again: it does nothing when the environment already matches the pins.
# Handles the install traps measured on this kind of machine (see docs/design.md §8):
#   * escnn -> py3nj compiles Fortran: gfortran must exist first;
#   * pyqg 0.7.2 builds only with numpy<2 and cython<3, without build isolation, and
#     decides at build time whether to use FFTW, so pyfftw goes in before pyqg;
#   * torch is pinned to the 2.13.0 CPU wheel that lies on disk (an unpinned torch
#     would download a multi-GB CUDA build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROTEQ_VENV:-$ROOT/.venv}"
PY="${ROTEQ_PYTHON:-python3.11}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"

fingerprint="$(cat "$CONSTRAINTS" "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16)"
stamp="$VENV/.roteq-setup-$fingerprint"
if [[ -f "$stamp" ]]; then
  exit 0
fi

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "[setup] error: $PY not found; roteq-param needs CPython 3.11 (set ROTEQ_PYTHON to another interpreter)" >&2
  exit 1
fi

if ! command -v gfortran >/dev/null 2>&1; then
  say "installing gfortran (needed to build py3nj, an escnn dependency)"
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gfortran >/dev/null
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
pip() {
  # Quiet pip; drop the harmless warnings about this machine's optional local indexes.
  local log rc=0
  log="$("$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1)" || rc=$?
  printf '%s\n' "$log" | grep -v -e '^WARNING: Location' -e '^$' || true
  return "$rc"
}

say "build tools and pyqg's build dependencies (numpy<2, cython<3, pyfftw before pyqg)"
pip install -c "$CONSTRAINTS" pip setuptools wheel setuptools_scm numpy Cython pyFFTW
say "building pyqg 0.7.2 against FFTW (no build isolation)"
pip install -c "$CONSTRAINTS" --no-build-isolation pyqg
say "torch 2.13.0 (CPU wheel)"
pip install -c "$CONSTRAINTS" torch==2.13.0
say "roteq-param and its pinned dependencies (escnn, xarray, numba, dask, ...; Sphinx for the docs)"
pip install -c "$CONSTRAINTS" -e "$ROOT[dev,docs]"

say "checking the environment"
"$VENV/bin/python" -m solver_coupling.pyqg.envcheck

rm -f "$VENV"/.roteq-setup-*
touch "$stamp"
say "ready: $VENV"
