#!/usr/bin/env bash
# Jet attempts for the "one closure across flows" issue: operator closures fitted to the jet's subgrid
# transfer spectra (roteq train-operator --method transfer), scored online against no closure and
# backscatter in one `roteq evaluate` table. Data: 2 high-res jet runs of seed 0 for the fits (run 1 held
# out) and 3 of seed 1 as the truth (runs 0-2 of scripts/jet_ceiling.sh's seed-1 truth); about 18 min per
# high-res run on one core. Rollouts: 8 members of seed 3, 15 years, scored over the last 4. Variants:
# coupled (energy and enstrophy, cross-layer operators), per-layer (--layers separate) and per-layer
# energy only (--budgets energy). Everything resumes or is skipped when finished.
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
gen data/jet3_seed1.nc 3 1 &
roll none none &
roll backscatter backscatter &
wait
fit() { $R train-operator --data data/jet_fit_seed0.nc --holdout 1 --out "$OUT/fit-$1" --name "$OUT/jet-operator-$1" "${@:2}"; }
fit coupled
fit separate --layers separate
fit energy --layers separate --budgets energy
roll op-coupled "$OUT/jet-operator-coupled" &
roll op-separate "$OUT/jet-operator-separate" &
wait
roll op-energy "$OUT/jet-operator-energy"
$R evaluate --truth data/jet3_seed1.nc --baseline "$OUT/none/rollout.nc" --run coupled="$OUT/op-coupled/rollout.nc" \
  --run separate="$OUT/op-separate/rollout.nc" --run energy="$OUT/op-energy/rollout.nc" \
  --run backscatter="$OUT/backscatter/rollout.nc" --last-years 4 --out "$OUT/evaluate"
