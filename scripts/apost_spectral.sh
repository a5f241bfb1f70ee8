#!/usr/bin/env bash
# Training through the solver, variants: the phase-blind spectral term (`roteq train-online
# --spectral-weight`), longer training, the default's recipe re-run on new windows, and the same recipe
# on the cheaper `eddy-c4` network. Windows of 8 seed-0 runs (runs 0-5 train, 6-7 held out), variants
# named in VARIANTS, then one online table against the default's stored truth reference with the
# default, pyqg's backscatter, no closure and the models in EXTRA beside them (MEMBERS members per
# seed in SEEDS, 10 years, scored over years 5-10).
# Every step resumes or is skipped when its output exists; JOBS processes run at once, one thread each.
#   bash scripts/apost_spectral.sh                               # the variants of the README table
#   VARIANTS="w10" SEEDS="3 4 5 6" bash scripts/apost_spectral.sh  # more members for one variant
# CEILING=FILE adds the noise ceiling to the table: FILE holds independent high-res runs (4 of seed 2,
# generated here when absent), scored against the same reference as a candidate.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=".venv/bin/python -m solver_coupling.cli"
DATA=${DATA:-data/eddy8w.nc}
OUT=${OUT:-runs/apost_spectral}
SEEDS=${SEEDS:-3}
MEMBERS=${MEMBERS:-2}
JOBS=${JOBS:-2}
# the default when these tables were measured (labelled "default" in them; the README calls it the previous default)
DEFAULT=${DEFAULT:-eddy-c4-dilated-apost}
REFERENCE=${REFERENCE:-trained_models/eddy-c4-dilated-damped/reference.nc}
declare -A SPEC=(  # train-online options of each variant
  [w0-long]="--init eddy-c4-dilated-apost --unroll 16,32 --iterations 100 --batch 8 --lr 1e-4"
  [w1]="--init eddy-c4-dilated-apost --unroll 16,32 --iterations 100 --batch 8 --lr 1e-4 --spectral-weight 1"
  [w10]="--init eddy-c4-dilated-apost --unroll 16,32 --iterations 100 --batch 8 --lr 1e-4 --spectral-weight 10"
  [w100]="--init eddy-c4-dilated-apost --unroll 16,32 --iterations 100 --batch 8 --lr 1e-4 --spectral-weight 100"
  [w10-from-offline]="--init eddy-c4-dilated-damped --unroll 4,8,16,32 --iterations 100 --batch 8 --lr 1e-4 --spectral-weight 10"
  # the default's own recipe (README "Training through the solver"), on these windows
  [recipe-rerun]="--init eddy-c4-dilated-damped --unroll 4,8,16 --iterations 40 --batch 4 --lr 1e-4"
  [c4-apost]="--init $OUT/c4-d1e-6 --unroll 4,8,16 --iterations 40 --batch 4 --lr 1e-4"
)
VARIANTS=${VARIANTS:-w0-long w1 w10 w100 w10-from-offline recipe-rerun c4-apost}
EXTRA=${EXTRA-eddy-c4=eddy-c4 c4-d1e-6=$OUT/c4-d1e-6}
CEILING=${CEILING:-}

[ -f "$DATA" ] || $R generate --members 8 --years 10 --spinup-years 5 --snapshot-hours 250 --window-steps 32 \
  --window-every 2 --seed 0 --workers "$JOBS" --out-file "$DATA"
[ -z "$CEILING" ] || [ -f "$CEILING" ] || $R generate --members 4 --years 10 --spinup-years 5 --snapshot-hours 250 \
  --seed 2 --workers "$JOBS" --out-file "$CEILING"
mkdir -p "$OUT"
# the cheaper network with the default's grid damping: the start of the c4-apost variant
[ -f "$OUT/c4-d1e-6/model.pt" ] || $R derive --model eddy-c4 --grid-damping 1e-6 --name "$OUT/c4-d1e-6"
wait_slot() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done; }
for v in $VARIANTS; do
  [ -n "${SPEC[$v]+x}" ] || { echo "unknown variant $v (known: ${!SPEC[*]})" >&2; exit 2; }
  [ -f "$OUT/$v/model/model.pt" ] && continue
  wait_slot
  $R train-online --data "$DATA" ${SPEC[$v]} --holdout 2 --no-progress --out "$OUT/$v" > "$OUT/$v.log" 2>&1 &
done
wait
roll() {  # DIR MODEL SEED (a finished rollout resumes as a no-op)
  $R rollout --model "$2" --members "$MEMBERS" --years 10 --seed "$3" --no-progress --out "$1" \
    $([ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite) > "$1.log" 2>&1
}
NAMES=(none=none backscatter=backscatter default=$DEFAULT)
for v in $VARIANTS; do NAMES+=("$v=$OUT/$v/model"); done
NAMES+=($EXTRA)
for spec in "${NAMES[@]}"; do
  for s in $SEEDS; do wait_slot; roll "$OUT/${spec%%=*}-s$s" "${spec#*=}" "$s" & done
done
wait
files() { local f=(); for s in $SEEDS; do f+=("$OUT/$1-s$s/rollout.nc"); done; (IFS=,; echo "${f[*]}"); }
RUNS=()
for spec in "${NAMES[@]:1}"; do RUNS+=(--run "${spec%%=*}=$(files "${spec%%=*}")"); done
$R evaluate --reference "$REFERENCE" --baseline $(files none | tr , ' ') "${RUNS[@]}" --last-years 5 \
  ${CEILING:+--truth-b "$CEILING"} --out "$OUT/evaluate-s${SEEDS// /-}${CEILING:+-ceiling}"
