#!/usr/bin/env bash
# Tune a model's grid-scale damping online: derive BASE with each RATE (roteq derive), roll each out
# (MEMBERS x 10 years, seed 3, the seeds of skill_eval.sh), and score all of them in one
# `roteq evaluate` table against a stored truth reference (default: the one shipped with eddy-c4,
# high-res runs 4-6 of the seed-0 dataset, which are not the runs the final table is scored on).
# Usage: BASE=eddy-c4 RATES="3e-6 1e-5 3e-5" bash scripts/damping_sweep.sh
# Each rollout resumes if re-run; JOBS rollouts run at once (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=".venv/bin/python -m solver_coupling.cli"
BASE=${BASE:-eddy-c4}
RATES=${RATES:-3e-6 1e-5 3e-5}
MEMBERS=${MEMBERS:-2}
JOBS=${JOBS:-2}
REFERENCE=${REFERENCE:-trained_models/eddy-c4/reference.nc}
EXTRA=${EXTRA:-}  # more LABEL=MODEL rollouts to score in the same table (e.g. backscatter=backscatter)
OUT=runs/tune/$(basename "$BASE")
mkdir -p "$OUT"
resume() { [ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite; }
roll() {  # NAME MODEL
  $R rollout --model "$2" --members "$MEMBERS" --years 10 --seed 3 --out "$OUT/$1" $(resume "$OUT/$1") \
    > "$OUT/$1.log" 2>&1
}
SPECS=("none=none")
for r in $RATES; do
  [ -f "$OUT/model-d$r/model.pt" ] || $R derive --model "$BASE" --grid-damping "$r" --name "$OUT/model-d$r" \
    --note "scripts/damping_sweep.sh BASE=$BASE" > /dev/null
  SPECS+=("d$r=$OUT/model-d$r")
done
SPECS+=($EXTRA)
for spec in "${SPECS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  roll "${spec%%=*}" "${spec#*=}" &
done
wait
RUNS=()
for spec in "${SPECS[@]:1}"; do RUNS+=(--run "${spec%%=*}=$OUT/${spec%%=*}/rollout.nc"); done
$R evaluate --reference "$REFERENCE" --baseline "$OUT/none/rollout.nc" "${RUNS[@]}" --last-years 5 --out "$OUT/evaluate"
