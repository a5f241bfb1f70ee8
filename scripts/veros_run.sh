#!/usr/bin/env bash
# The measured Veros runs of docs/veros.md: the 32 x 32 beta-plane channel for 5 model years,
# without the closure, with the default closure, and with its buoyancy tendency only, in the
# background (one core each, low priority). Each writes runs/veros/<name>.json every 30 model days,
# and its status when it ends.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ROTEQ_PY:-$ROOT/.venv/bin/python}"
mkdir -p "$ROOT/runs/veros"
cd "$ROOT"
M=eddy-c4-dilated-apost2
for run in "none:none:momentum,buoyancy" "$M:$M:momentum,buoyancy" "$M-buoyancy:$M:buoyancy"; do
  IFS=: read -r name closure terms <<< "$run"
  PYTHONHASHSEED=0 OMP_NUM_THREADS=1 nohup nice -n 5 "$PY" -m solver_coupling.veros.run \
    --closure "$closure" --terms "$terms" --years 5 --sample-days 30 --set nx=32 --set ny=32 --set dt=1800 \
    --out "runs/veros/$name.json" > "runs/veros/$name.log" 2>&1 &
  echo "started $name (pid $!): runs/veros/$name.json"
done
