#!/usr/bin/env bash
# The jet noise ceiling against the number of high-res runs per side (issue #13 asks for a ceiling of
# at least 0.8 and how many runs it takes). RUNS high-res (256^2) jet runs of seed 1 are the truth and
# RUNS of seed 2 the independent set (10 years each, snapshots from year 5; runs 0-3 are those of
# scripts/jet_transfer.sh, whose runs come from numpy.random.default_rng([seed, run])). The baseline is
# scripts/jet_transfer.sh's: 2 unparameterized 64^2 members for each of the seeds 3 and 4, 15 years.
# Every table is scored over the last 4 years, with n = 1, 2, 4, 8, ... runs on each side (runs 0..n-1).
# Resumable: finished runs, rollouts and tables are kept.
#
# Usage: [RUNS=16] scripts/jet_ceiling.sh   (from the repository root, after `make setup`; 5-9 min
# per high-res run on one core, the two seeds side by side)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
R=.venv/bin/roteq
RUNS=${RUNS:-16}  # measured: 0.710 with 16 runs per side, short of 0.8 (README)
OUT=${OUT:-runs/jet}
mkdir -p "$OUT" data
for s in 1 2; do
  [ -f data/jet${RUNS}_seed$s.nc ] || $R generate --config jet --members "$RUNS" --years 10 --spinup-years 5 \
    --snapshot-hours 250 --seed $s --workers 1 --out-file data/jet${RUNS}_seed$s.nc > "$OUT/gen${RUNS}_seed$s.log" 2>&1 &
done
for s in 3 4; do
  d=$OUT/none-s$s
  [ -f "$d/rollout.nc" ] || $R rollout --model none --members 2 --years 15 --seed $s --config jet --allow-out-of-regime \
    --out "$d" $([ -f "$d/checkpoint.npz" ] && echo --resume || echo --overwrite) > "$d.log" 2>&1
done
wait
n=1
while [ "$n" -le "$RUNS" ]; do
  d=$OUT/ceiling${RUNS}_$n
  [ -f "$d/evaluate.json" ] || $R evaluate --truth "data/jet${RUNS}_seed1.nc@0-$((n - 1))" \
    --truth-b "data/jet${RUNS}_seed2.nc@0-$((n - 1))" --baseline $OUT/none-s3/rollout.nc $OUT/none-s4/rollout.nc \
    --last-years 4 --out "$d" > "$d.log" 2>&1
  [ "$n" -lt "$RUNS" ] && [ $((2 * n)) -gt "$RUNS" ] && n=$RUNS || n=$((2 * n))
done
RUNS=$RUNS OUT=$OUT .venv/bin/python - <<'EOF'
import glob, json, os, re
print("| high-res runs per side | noise ceiling mean | min |")
print("|---|---|---|")
out, runs = os.environ["OUT"], os.environ["RUNS"]
rows = []
for path in glob.glob(f"{out}/ceiling{runs}_*/evaluate.json"):
    n = int(re.search(r"_(\d+)/evaluate.json$", path).group(1))
    table = json.load(open(path))
    ceiling = table["runs"][table["ceiling"]]
    rows.append((n, ceiling["mean"], ceiling["min"]))
for n, mean, low in sorted(rows):
    print(f"| {n} | {mean:.3f} | {low:.3f} |")
EOF
