#!/usr/bin/env bash
# One shipped closure across flows and grids (issue "one closure for the flows users run"): the data,
# fits, rollouts and one `roteq evaluate` table per flow/grid. Resumable: finished files are skipped,
# interrupted generations resume from their .parts, interrupted rollouts from their checkpoints.
#
# The held-out configuration was fixed before any closure of this issue was fitted: "mid", the
# geometric midpoint of eddy and jet in every setting they differ in (beta 1.22e-11 m-1 s-1, rek
# 2.0e-7 s-1, delta 0.16; rd, H1, U1, U2, L as both). No training run is drawn from it.
#
# Data (256^2 high-res runs, spectral coarse-graining, snapshots every 250 h after 5 years of spin-up):
#   eddy48_fit / eddy96_fit   seed 0, 2 runs x 5 years, coarse 48^2 / 96^2: operator fits (run 1 held out)
#   eddy48_truth / ..._ceil   seed 1 (truth) and seed 2 (noise ceiling), 2 runs x 5 years each
#   mid_truth / mid_ceil      seed 1 / seed 2, 2 runs x 10 years, coarse 64^2
# Stages: STAGE=data (default all) | fit | roll | evaluate.   Q=1 or Q=2 picks one data queue (run both at once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=.venv/bin/roteq
OUT=${OUT:-runs/gen}
MID="--set beta=1.22e-11 --set rek=2e-7 --set delta=0.16"
mkdir -p "$OUT" data
gen() {  # FILE MEMBERS SEED YEARS ARGS...
  [ -f "$1" ] || $R generate --members "$2" --seed "$3" --years "$4" --spinup-years 5 --snapshot-hours 250 \
    --serial "${@:5}" --out-file "$1" > "$OUT/gen_$(basename "$1" .nc).log" 2>&1
}
STAGE=${STAGE:-all}
if [ "$STAGE" = data ] || [ "$STAGE" = all ]; then
  if [ "${Q:-1}" = 1 ]; then
    gen data/eddy48_fit.nc 2 0 5 --coarse-nx 48
    gen data/eddy96_fit.nc 2 0 5 --coarse-nx 96
    gen data/eddy48_truth.nc 2 1 5 --coarse-nx 48
    gen data/eddy96_truth.nc 2 1 5 --coarse-nx 96
    gen data/eddy48_ceil.nc 2 2 5 --coarse-nx 48
    gen data/eddy96_ceil.nc 2 2 5 --coarse-nx 96
  fi
  if [ "${Q:-2}" = 2 ]; then
    gen data/mid_truth.nc 2 1 10 $MID
    gen data/mid_ceil.nc 2 2 10 $MID
  fi
fi
