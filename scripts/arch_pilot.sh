#!/usr/bin/env bash
# Architecture comparison of the skill issue: the same data, epochs and seed for each network; held-out
# S R^2 per layer and the receptive field from the card, cost per call measured at save time.
# DATA is a dataset in the QG_DATASET layout; its last VAL_RUNS runs are held out. ARCHS picks
# entries of the table below by name (default: all). JOBS trainings run at once, one thread each.
# Each training resumes if re-run. SNAPSHOT_EVERY=K trains and validates on every K-th snapshot.
#   DATA=data/eddy8w.nc VAL_RUNS=2 bash scripts/arch_pilot.sh
#   DATA=data/eddy8w.nc SNAPSHOT_EVERY=2 ARCHS="dilated-c4-17 dilated-c4-17-wide64 dilated-c4-31-deep6 dilated-c4-45-deep9" \
#     bash scripts/arch_pilot.sh    # capacity: how S R^2 grows with width and depth
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0
DATA=${DATA:-data/eddy25.nc}
VAL_RUNS=${VAL_RUNS:-2}
EPOCHS=${EPOCHS:-30}
SNAPSHOT_EVERY=${SNAPSHOT_EVERY:-1}
JOBS=${JOBS:-2}
OUT=${OUT:-runs/arch}
R=".venv/bin/python -m solver_coupling.cli"
declare -A SPEC=(  # options after the common ones override them (e.g. --lr)
  [shipped-c4-7x7]="--channels 32,32 --kernel-sizes 7,1"
  [dilated-c4-17]="--channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
  # capacity at the default's view: twice the width (4x the flops per call); twice and three times the depth (31 and 45 cells)
  [dilated-c4-17-wide64]="--channels 64,64,64 --kernel-sizes 5,3,3 --dilations 1,2,4"
  [dilated-c4-31-deep6]="--channels 32,32,32,32,32,32 --kernel-sizes 5,3,3,3,3,3 --dilations 1,2,4,1,2,4"
  [dilated-c4-45-deep9]="--channels 32,32,32,32,32,32,32,32,32 --kernel-sizes 5,3,3,3,3,3,3,3,3 --dilations 1,2,4,1,2,4,1,2,4"
  [dilated-c4-45-deep9-lr3e-3]="--channels 32,32,32,32,32,32,32,32,32 --kernel-sizes 5,3,3,3,3,3,3,3,3 --dilations 1,2,4,1,2,4,1,2,4 --lr 3e-3"
  [dilated-d4-17]="--group D4 --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
  [dilated-cnn-17-aug]="--arch cnn --group D4 --augment --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
  [dilated-cnn-17-aug-lr3e-3]="--arch cnn --group D4 --augment --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4 --lr 3e-3"
  [unet-c4-3lev]="--multiscale --channels 16,32,64 --kernel-sizes 3,3,3 --activation elu --lr 3e-3"
  [unet-c4-4lev-thin]="--multiscale --channels 8,16,32,64 --kernel-sizes 3,3,3,3 --activation elu --lr 3e-3"
  [unet-d4-3lev]="--group D4 --multiscale --channels 16,32,64 --kernel-sizes 3,3,3 --activation elu --lr 3e-3"
  # one training run only: equivariance against augmentation when data is scarce
  [dilated-c4-17-1run]="--train-runs 0 --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
  [dilated-cnn-17-aug-1run]="--train-runs 0 --arch cnn --group D4 --augment --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
  [dilated-cnn-17-aug-lr3e-3-1run]="--train-runs 0 --arch cnn --group D4 --augment --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4 --lr 3e-3"
)
ARCHS=${ARCHS:-"${!SPEC[*]}"}
train() {  # NAME
  local out=$OUT/$1
  $R train --data "$DATA" --holdout "$VAL_RUNS" --epochs "$EPOCHS" --patience 1000 --lr 1e-2 --seed 0 \
    --snapshot-every "$SNAPSHOT_EVERY" --no-progress --threads 1 --out "$out" --name "$out/model" $([ -f "$out/checkpoint.pt" ] && echo --resume) \
    ${SPEC[$1]} > "$out.log" 2>&1
}
mkdir -p "$OUT"
for name in $ARCHS; do
  [ -n "${SPEC[$name]+x}" ] || { echo "unknown architecture $name; known: ${!SPEC[*]}" >&2; exit 2; }
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
  train "$name" &
done
wait
for name in $ARCHS; do
  .venv/bin/python - "$OUT/$name/model" "$name" <<'PY'
import json, sys
from roteq_param.models import ModelConfig
card = json.load(open(sys.argv[1] + "/card.json"))
a, v = card["architecture"], card["metrics"]["val"]
rf = ModelConfig.from_dict(a).receptive_field
print(f"{sys.argv[2]:>20}  params {card['n_parameters']:6d}  receptive field {rf:3d}  S R2 {v['S_1']:.3f} / {v['S_2']:.3f}"
      f"  ms/call {card['inference_cost']['ms_per_call_64x64_1thread']:.3f}")
PY
done
