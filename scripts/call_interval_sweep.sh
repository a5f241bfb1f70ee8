#!/usr/bin/env bash
# Skill against cost of reusing the forcing for k steps (call_interval k = 1, 2, 4, 8): 4 members x 10
# years each at 64^2 with the shipped model, scored over years 5-10 against its stored high-res
# reference (the noise ceiling stored with it), next to the unparameterized baseline.
# About 30 min of one core; each rollout resumes if re-run after an interruption.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=".venv/bin/python -m solver_coupling.cli"
MODEL=${MODEL:-eddy-c4}
OUT=runs/call_interval
resume() { [ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite; }
$R rollout --model none --members 4 --years 10 --seed 3 --out $OUT/none $(resume $OUT/none)
RUNS=()
for k in 1 2 4 8; do
  $R rollout --model "$MODEL" --call-interval $k --members 4 --years 10 --seed 3 --out $OUT/k$k $(resume $OUT/k$k)
  RUNS+=(--run "k$k=$OUT/k$k/rollout.nc")
done
$R evaluate --reference trained_models/$MODEL/reference.nc --baseline $OUT/none/rollout.nc "${RUNS[@]}" \
  --last-years 5 --out $OUT/evaluate
