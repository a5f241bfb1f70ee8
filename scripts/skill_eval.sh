#!/usr/bin/env bash
# Online skill table of the skill issue: 4 members x 10 years at 64^2 per closure (same seeds), scored
# over years 5-10 against 4 high-res runs of the 25-run dataset (runs 21-24, held out from training),
# with 4 other high-res runs (17-20) as the noise ceiling, all in one `roteq evaluate` table.
# Closures: pyqg's backscatter (Ross et al.'s tuning) and Smagorinsky, and each model in MODELS
# (a name under trained_models/, or LABEL=PATH).
# Each rollout resumes if re-run; JOBS rollouts run at once (default 2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=".venv/bin/python -m solver_coupling.cli"
DATA=${DATA:-data/eddy25.nc}
MODELS=${MODELS:-eddy-c4}
JOBS=${JOBS:-2}
OUT=runs/skill
resume() { [ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite; }
roll() {  # NAME MODEL
  $R rollout --model "$2" --members 4 --years 10 --seed 3 --out $OUT/$1 $(resume $OUT/$1) > $OUT/$1.log 2>&1
}
mkdir -p $OUT
NAMES=(none backscatter smagorinsky $MODELS)
for spec in "${NAMES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  roll "${spec%%=*}" "${spec#*=}" &
done
wait
RUNS=()
for spec in "${NAMES[@]:1}"; do RUNS+=(--run "${spec%%=*}=$OUT/${spec%%=*}/rollout.nc"); done
$R evaluate --truth "$DATA@21-24" --truth-b "$DATA@17-20" --baseline $OUT/none/rollout.nc "${RUNS[@]}" \
  --last-years 5 --out $OUT/evaluate
