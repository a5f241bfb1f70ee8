#!/bin/bash
# N-layer pyqg (issue #13): a three-layer LayeredModel (configuration layered3, 128^2 runs coarsened to
# 32^2), a C4 model trained on runs 0-2 and scored offline on run 3, then online: 2 members x 5 years
# (seed 3) of no closure, pyqg's backscatter and the model, scored over the last 2 years against
# run 3's years 3-5 (the noise ceiling: run 2). The offline model is also scored with grid damping
# (`roteq derive --grid-damping`, the fix that lifted resolution transfer online) at 1e-6 and 1e-5,
# and a dilated stack (dilations 1-2-4, the default model's) with and without 1e-6.
# Resumable: finished steps are kept.
# Usage: scripts/layered3.sh   (from the repository root, after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
R=.venv/bin/roteq
$R generate --config layered3 --coarse-nx 32 --members 4 --years 5 --spinup-years 3 --snapshot-hours 250 --seed 20 \
  --workers ${WORKERS:-1} --out-file data/layered3.nc
mkdir -p runs/l3
if [ ! -f runs/l3/model/model.pt ]; then
  $R train --data data/layered3.nc --channels 32,32,32 --kernel-sizes 5,3,3 --lr 1e-2 --epochs ${EPOCHS:-60} \
    --patience 1000 --seed 0 --holdout 1 --no-progress --out runs/l3/train --name runs/l3/model --resume \
    > runs/l3/train.json
fi
[ -f runs/l3/score.json ] || $R score --model runs/l3/model --data data/layered3.nc --runs 3 --json runs/l3/score.json
if [ ! -f runs/l3/model-dilated/model.pt ]; then
  $R train --data data/layered3.nc --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4 --lr 1e-2 \
    --epochs ${EPOCHS:-60} --patience 1000 --seed 0 --holdout 1 --no-progress --out runs/l3/train-dilated \
    --name runs/l3/model-dilated --resume > runs/l3/train-dilated.json
fi
[ -f runs/l3/score-dilated.json ] || $R score --model runs/l3/model-dilated --data data/layered3.nc --runs 3 \
  --json runs/l3/score-dilated.json
for src in model model-dilated; do
  for g in 1e-6 1e-5; do
    d=runs/l3/$src-damp$g
    [ "$src" = model-dilated ] && [ $g = 1e-5 ] && continue
    [ -f $d/model.pt ] || $R derive --model runs/l3/$src --grid-damping $g --name $d \
      --note "roteq derive --model runs/l3/$src --grid-damping $g (issue 13: layered3 online)"
  done
done
for spec in none=none backscatter=backscatter model=runs/l3/model damp1e-6=runs/l3/model-damp1e-6 \
    damp1e-5=runs/l3/model-damp1e-5 dilated=runs/l3/model-dilated dilated-damp1e-6=runs/l3/model-dilated-damp1e-6; do
  out=runs/l3/${spec%%=*}
  flag=--overwrite; [ -f $out/checkpoint.npz ] && flag=--resume
  $R rollout --config layered3 --nx 32 --model ${spec#*=} --members 2 --years 5 --seed 3 --out $out $flag \
    > $out.log 2>&1
done
$R evaluate --truth data/layered3.nc@3 --truth-b data/layered3.nc@2 --baseline runs/l3/none/rollout.nc \
  --run backscatter=runs/l3/backscatter/rollout.nc --run model=runs/l3/model/rollout.nc \
  --run damp1e-6=runs/l3/damp1e-6/rollout.nc --run damp1e-5=runs/l3/damp1e-5/rollout.nc \
  --run dilated=runs/l3/dilated/rollout.nc --run dilated-damp1e-6=runs/l3/dilated-damp1e-6/rollout.nc --last-years 2 \
  --out runs/l3/evaluate-all
