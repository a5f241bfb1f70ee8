#!/usr/bin/env bash
# The shipped operator closure trained_models/eddy-operator (docs/operators.md): coarse-grained truth of 2
# high-res eddy runs (seed 0, 256^2 coarse-grained to 64^2; 5 years spin-up, then a snapshot (and a 16-step
# window, for --method twin) every 500 h for 2 years; about 0.4 core-hours), then `roteq train-operator`:
# the closure whose subgrid energy and enstrophy transfer spectra match the truth's on run 0 (one
# least-squares solve, seconds), run 1 held out. Kernel radius 8 cells, 17 hat functions: chosen among
# radii 3, 6, 8 and 10 on 4 screening members (seed 21) before the 16-member table (docs/results.md).
# Seeds 1 (the stored truth reference), 2 (the noise ceiling), 3-10 (the online members) and 21 (the
# screening members) are not used. The data step resumes if re-run after an interruption.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=".venv/bin/python -m solver_coupling.cli"
DATA=${DATA:-data/eddy_op_windows.nc}
[ -f "$DATA" ] || $R generate --members 2 --years 7 --spinup-years 5 --snapshot-hours 500 --window-steps 16 \
  --seed 0 --workers 1 --out-file "$DATA"
$R train-operator --data "$DATA" --holdout 1 --radius-cells 8 --n-basis 17 \
  --out runs/train_operator --name "${NAME:-eddy-operator}"
