#!/usr/bin/env bash
# A first jet attempt for the "one closure across flows" issue: an operator closure fitted to the jet's
# subgrid transfer spectra (roteq train-operator --method transfer), scored online against no closure and
# backscatter. Data: 2 high-res jet runs of seed 0 for the fit (run 1 held out) and 4 of seed 1 as the
# truth (runs 0-3 of scripts/jet_ceiling.sh's seed-1 truth); 5-9 min per high-res run on one core.
# Rollouts: 8 members of seed 3, 15 years, scored over the last 4. Everything resumes or is skipped when
# finished.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=.venv/bin/roteq
OUT=${OUT:-runs/jetop}
mkdir -p "$OUT" data
gen() {  # FILE MEMBERS SEED
  [ -f "$1" ] || $R generate --config jet --members "$2" --years 10 --spinup-years 5 --snapshot-hours 250 \
    --seed "$3" --workers 1 --out-file "$1" > "$OUT/gen_$(basename "$1" .nc).log" 2>&1
}
roll() {  # LABEL MODEL
  [ -f "$OUT/$1/rollout.nc" ] && grep -q "^wrote" "$OUT/$1.log" 2>/dev/null && return
  $R rollout --model "$2" --config jet --members 8 --years 15 --seed 3 --no-progress --out "$OUT/$1" \
    $([ -f "$OUT/$1/checkpoint.npz" ] && echo --resume || echo --overwrite) > "$OUT/$1.log" 2>&1
}
gen data/jet_fit_seed0.nc 2 0 &
gen data/jet4_seed1.nc 4 1 &
roll none none &
roll backscatter backscatter &
wait
$R train-operator --data data/jet_fit_seed0.nc --holdout 1 --out "$OUT/fit" --name "$OUT/jet-operator"
roll operator "$OUT/jet-operator"
$R evaluate --truth data/jet4_seed1.nc --baseline "$OUT/none/rollout.nc" --run operator="$OUT/operator/rollout.nc" \
  --run backscatter="$OUT/backscatter/rollout.nc" --last-years 4 --out "$OUT/evaluate"
