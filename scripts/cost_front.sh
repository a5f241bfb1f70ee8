#!/usr/bin/env bash
# The cost front: 16-member online skill (MEMBERS members for each seed in SEEDS, 10 years, scored over
# years 5-10) of every closure in CLOSURES, in ONE `roteq evaluate` table with no closure and the noise
# ceiling, against the default's stored truth reference. Costs: benchmarks/bench_cost_front.py (same entries).
# CLOSURES (and EXTRA, added to them) entries are LABEL=MODEL or LABEL=MODEL:K, K the call interval (network every K steps);
# MODEL is a shipped name, a model folder, 'backscatter' or 'smagorinsky'.
#   bash scripts/cost_front.sh                                   # 16 members of the default's closures
#   EXTRA="op=eddy-operator k8trained=runs/cadence_k8_long/model:8" SEEDS="3 4 5 6 7 8" \
#       bash scripts/cost_front.sh     # the Results page's table (12 members); finished rollouts are reused
# Every rollout resumes (or is skipped when finished) if re-run; JOBS rollouts run at once, one thread each.
# The noise ceiling needs 4 independent high-res runs (seed 2, 0.41 core-hours), generated when absent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=".venv/bin/python -m solver_coupling.cli"
DEFAULT=eddy-c4-dilated-apost2
CLOSURES="${CLOSURES:-backscatter=backscatter default=$DEFAULT default-k8=$DEFAULT:8} ${EXTRA:-}"
SEEDS=${SEEDS:-3 4 5 6 7 8 9 10}
MEMBERS=${MEMBERS:-2}
JOBS=${JOBS:-2}
OUT=${OUT:-runs/cost_front}
REFERENCE=${REFERENCE:-trained_models/$DEFAULT/reference.nc}
CEILING=${CEILING:-data/eddy_truth4_seed2.nc}

mkdir -p "$OUT" "$(dirname "$CEILING")"
wait_slot() { while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done; }
roll() {  # DIR MODEL K SEED (a finished rollout is skipped; an interrupted one resumes)
  [ -f "$1/rollout.nc" ] && grep -q "^wrote" "$1.log" 2>/dev/null && return
  $R rollout --model "$2" --call-interval "$3" --members "$MEMBERS" --years 10 --seed "$4" --no-progress \
    --out "$1" $([ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite) > "$1.log" 2>&1
}
# (not twice: an interrupted script re-run while the first generation still runs)
[ -f "$CEILING" ] || pgrep -f -- "--out-file $CEILING" > /dev/null || { wait_slot; $R generate --members 4 --years 10 --spinup-years 5 --snapshot-hours 250 \
  --seed 2 --workers 1 --out-file "$CEILING" > "$OUT/ceiling.log" 2>&1 & }
ENTRIES=(none=none $CLOSURES)
for s in $SEEDS; do  # seed-major, so a partial front already has every closure on the first seeds
  for e in "${ENTRIES[@]}"; do
    spec=${e#*=}; model=${spec%%:*}; k=1; [ "$model" = "$spec" ] || k=${spec##*:}
    wait_slot; roll "$OUT/${e%%=*}-s$s" "$model" "$k" "$s" &
  done
done
wait
files() { local f=(); for s in $SEEDS; do f+=("$OUT/$1-s$s/rollout.nc"); done; (IFS=,; echo "${f[*]}"); }
RUNS=()
for e in $CLOSURES; do RUNS+=(--run "${e%%=*}=$(files "${e%%=*}")"); done
$R evaluate --reference "$REFERENCE" --baseline $(files none | tr , ' ') "${RUNS[@]}" --last-years 5 \
  --truth-b "$CEILING" --out "$OUT/evaluate"
