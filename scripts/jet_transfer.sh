#!/usr/bin/env bash
# Jet transfer (README "Transfer"): models trained on eddy only, run on the jet configuration of
# Ross et al. (2023) (rek 7e-8 s-1, delta 0.1, beta 1e-11 m-1 s-1) with --allow-out-of-regime.
# Truth: 4 high-res (256^2) jet runs of seed 1; noise ceiling: 4 of seed 2 (10 years each, snapshots
# from year 5 on; about 16 min per run with three jobs on the 2 cores). Rollouts: MEMBERS members for
# each of SEEDS, YEARS years at 64^2. Both are scored over their last 4 years (truth: years 6-10,
# after the high-res run's adjustment in year 5; rollouts: years 11-15). Every step resumes if re-run.
# MODELS: models to transfer (a name under trained_models/, or LABEL=PATH). The rollouts and the
# table are scripts/skill_eval.sh's. RUNS=8 or 16 uses that many high-res runs per side (scripts/jet_ceiling.sh
# makes them; runs 0-3 are the 4-run sets'), writes the table to OUT/evaluate$RUNS and the truth to
# references/jet$RUNS.nc.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=.venv/bin/roteq
MODELS=${MODELS:-default=eddy-c4-dilated-apost}
SEEDS=${SEEDS:-3 4}
MEMBERS=${MEMBERS:-2}
YEARS=${YEARS:-15}
OUT=${OUT:-runs/jet}
JOBS=${JOBS:-2}
RUNS=${RUNS:-4}
mkdir -p "$OUT" data references
for s in 1 2; do
  [ -f data/jet${RUNS}_seed$s.nc ] || $R generate --config jet --members "$RUNS" --years 10 --spinup-years 5 \
    --snapshot-hours 250 --seed $s --workers 1 --out-file data/jet${RUNS}_seed$s.nc > "$OUT/gen${RUNS}_seed$s.log" 2>&1 &
done
wait
suffix=$([ "$RUNS" = 4 ] || echo "$RUNS")
MODELS=$MODELS SEEDS=$SEEDS MEMBERS=$MEMBERS JOBS=$JOBS OUT=$OUT YEARS=$YEARS LAST_YEARS=4 EVAL_OUT=$OUT/evaluate$suffix \
  ROLL_ARGS="--config jet --allow-out-of-regime" \
  TRUTH_ARGS="--truth data/jet${RUNS}_seed1.nc --truth-b data/jet${RUNS}_seed2.nc" \
  EVAL_ARGS="--save-reference references/jet$suffix.nc" bash scripts/skill_eval.sh
