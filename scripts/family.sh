#!/bin/bash
# A family of two-layer configurations that covers eddy and jet (issue #13 item 2): 25 high-res 256^2
# runs, each drawing beta, the drag, delta, the deformation radius and the upper-layer velocity
# (log-uniform) from the ranges below; coarse-grained to 64^2. Resumable: re-running reuses finished
# runs (data/family.nc.parts) and only simulates the rest.
# Usage: scripts/family.sh   (from the repository root, after `make setup`; WORKERS=2 for two cores)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
.venv/bin/roteq generate --vary beta=1e-11:1.5e-11 --vary rek=7e-8:5.787e-7 --vary delta=0.1:0.25 \
  --vary rd=13e3:17e3 --vary U1=0.02:0.03 --runs 25 --years 10 --spinup-years 5 --snapshot-hours 250 --seed 30 \
  --workers ${WORKERS:-1} --out data/family.nc
