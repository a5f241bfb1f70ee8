#!/usr/bin/env bash
# Online skill table of the skill issue: MEMBERS members x 10 years at 64^2 per closure and seed
# (default 2 members for each of the seeds 3 and 4: 4 members per closure), scored over years 5-10
# against the high-res runs TRUTH_RUNS of DATA, with the high-res runs CEILING_RUNS as the noise
# ceiling, all in one `roteq evaluate` table.
# Closures: pyqg's backscatter (Ross et al.'s tuning) and Smagorinsky, and each model in MODELS
# (a name under trained_models/, or LABEL=PATH).
# Default data: 8 high-res runs of seed 1 that no shipped model was trained or calibrated on
#   roteq generate --members 8 --years 10 --spinup-years 5 --snapshot-hours 250 --seed 1 --out-file data/eddy_truth8_seed1.nc
# runs 0-3 are the truth, 4-7 the ceiling. Each rollout resumes if re-run; JOBS rollouts run at once.
# REFERENCE=FILE scores against a stored truth reference instead (`roteq evaluate --save-reference`;
# trained_models/eddy-c4-dilated-damped/reference.nc holds runs 0-3 of that data), without a ceiling:
# for tuning when the high-res data is not on the machine.
# Another configuration (scripts/jet_transfer.sh): ROLL_ARGS go to every rollout (e.g. --config jet
# --allow-out-of-regime), YEARS sets their length (default 10) and LAST_YEARS the scored window
# (default 5); TRUTH_ARGS replaces the truth arguments of `roteq evaluate` (e.g. two files), and
# EVAL_ARGS adds to them (e.g. --save-reference FILE); EVAL_OUT is the table's folder (default OUT/evaluate).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=".venv/bin/python -m solver_coupling.cli"
DATA=${DATA:-data/eddy_truth8_seed1.nc}
TRUTH_RUNS=${TRUTH_RUNS:-0-3}
CEILING_RUNS=${CEILING_RUNS:-4-7}
MODELS=${MODELS:-eddy-c4 eddy-c4-dilated eddy-c4-dilated-damped}
SEEDS=${SEEDS:-3 4}
MEMBERS=${MEMBERS:-2}
JOBS=${JOBS:-2}
OUT=${OUT:-runs/skill}
REFERENCE=${REFERENCE:-}
YEARS=${YEARS:-10}
LAST_YEARS=${LAST_YEARS:-5}
ROLL_ARGS=${ROLL_ARGS:-}
TRUTH_ARGS=${TRUTH_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
resume() { [ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite; }
roll() {  # DIR MODEL SEED
  $R rollout --model "$2" --members "$MEMBERS" --years "$YEARS" --seed "$3" $ROLL_ARGS --out "$1" $(resume "$1") \
    > "$1.log" 2>&1
}
mkdir -p $OUT
NAMES=(none=none backscatter=backscatter smagorinsky=smagorinsky $MODELS)
for spec in "${NAMES[@]}"; do
  for seed in $SEEDS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
    roll "$OUT/${spec%%=*}-s$seed" "${spec#*=}" "$seed" &
  done
done
wait
files() { local f=(); for seed in $SEEDS; do f+=("$OUT/$1-s$seed/rollout.nc"); done; (IFS=,; echo "${f[*]}"); }
RUNS=()
for spec in "${NAMES[@]:1}"; do RUNS+=(--run "${spec%%=*}=$(files "${spec%%=*}")"); done
if [ -n "$TRUTH_ARGS" ]; then read -ra TRUTH <<< "$TRUTH_ARGS"
elif [ -n "$REFERENCE" ]; then TRUTH=(--reference "$REFERENCE")
else TRUTH=(--truth "$DATA@$TRUTH_RUNS" --truth-b "$DATA@$CEILING_RUNS"); fi
$R evaluate "${TRUTH[@]}" --baseline $(files none | tr , ' ') \
  "${RUNS[@]}" --last-years "$LAST_YEARS" --out "${EVAL_OUT:-$OUT/evaluate}" $EVAL_ARGS
