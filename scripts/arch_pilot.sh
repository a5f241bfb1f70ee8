#!/usr/bin/env bash
# Pilot of the architecture comparison (skill issue): the same data, epochs and seed for each network,
# held-out S R^2 per layer from the card, cost per call from the card. DATA is a dataset in the
# QG_DATASET layout with >= 3 runs (the last 2 are held out). Each run resumes if re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
DATA=${DATA:-data/eddy25.nc}
EPOCHS=${EPOCHS:-30}
R=".venv/bin/python -m solver_coupling.cli"
train() {  # NAME then architecture options
  local name=$1; shift
  local out=runs/arch/$name
  $R train --data "$DATA" --val-runs 2 --epochs "$EPOCHS" --patience 1000 --lr 1e-2 --seed 0 --no-progress \
    --out "$out" --name "$out/model" $([ -f "$out/checkpoint.pt" ] && echo --resume) "$@" > /dev/null
  .venv/bin/python - "$out/model" "$name" <<'PY'
import json, sys
card = json.load(open(sys.argv[1] + "/card.json"))
a, v = card["architecture"], card["metrics"]["val"]
rf = 1 + sum(d * (k - 1) for k, d in zip(a["kernel_sizes"], a.get("dilations") or [1] * len(a["kernel_sizes"])))
print(f"{sys.argv[2]:>22}  params {card['n_parameters']:6d}  receptive field {rf:3d}  S R2 {v['S_1']:.3f} / {v['S_2']:.3f}"
      f"  ms/call {card['inference_cost']['ms_per_call_64x64_1thread']:.3f}")
PY
}
train shipped-c4-7x7 --channels 32,32 --kernel-sizes 7,1
train dilated-c4-16x3 --channels 16,16,16 --kernel-sizes 3,3,3 --dilations 1,2,4
train dilated-c4-16x4 --channels 16,16,16,16 --kernel-sizes 3,3,3,3 --dilations 1,2,4,8
train plain-c4-16x3 --channels 16,16,16 --kernel-sizes 3,3,3
