#!/usr/bin/env bash
# The shipped operator closure trained_models/eddy-operator (docs/operators.md): trajectory windows of 2
# high-res eddy runs (seed 0, 256^2 coarse-grained to 64^2; 5 years spin-up, then 16-step windows every
# 500 h for 2 years; about 0.4 core-hours), then `roteq train-operator` on run 0 with run 1 held out.
# Seeds 1 (the stored truth reference), 2 (the noise ceiling) and 3-10 (the online members) are not used.
# The data step resumes if re-run after an interruption; training is minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=".venv/bin/python -m solver_coupling.cli"
DATA=${DATA:-data/eddy_op_windows.nc}
[ -f "$DATA" ] || $R generate --members 2 --years 7 --spinup-years 5 --snapshot-hours 500 --window-steps 16 \
  --seed 0 --workers 1 --out-file "$DATA"
$R train-operator --data "$DATA" --holdout 1 --unroll 4,8,16 --iterations 40 --batch 4 \
  --out runs/train_operator --name "${NAME:-eddy-operator}"
