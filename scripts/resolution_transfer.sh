#!/bin/bash
# Resolution transfer (issue #13): one eddy model at 48^2, 64^2 and 96^2, with and without the
# resolution-aware similarity scaling (`roteq train --similarity`).
#
# The same 256^2 eddy runs (seed 10) are coarse-grained to each grid by spectral truncation: 4 runs
# at 64^2 (runs 0-2 train, run 3 held out), 2 runs at 48^2 and at 96^2 (grids the models never see).
# Each model trains at 64^2 only and is scored with `roteq score` on every grid. Resumable: finished
# datasets, models and scores are kept; a killed training resumes from its checkpoint.
#
# Usage: scripts/resolution_transfer.sh   (from the repository root, after `make setup`)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
R=.venv/bin/roteq
GEN="--years 6.5 --spinup-years 5 --snapshot-hours 250 --seed 10 --workers 1"

$R generate --runs 4 --coarse-nx 64 $GEN --out data/res64.nc
$R generate --runs 2 --coarse-nx 48 $GEN --out data/res48.nc
$R generate --runs 2 --coarse-nx 96 $GEN --out data/res96.nc

mkdir -p runs/res
# the shipped default's architecture (a 17-cell dilated C4 stack)
ARCH="--channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4"
TRAIN="--lr 1e-2 --epochs ${EPOCHS:-60} --patience 1000 --seed 0 --val-runs 1 --no-progress"
for variant in ${VARIANTS:-plain similarity}; do
    out=runs/res/$variant
    flag=""
    [ "$variant" = similarity ] && flag="--similarity"
    if [ ! -f "$out/model/model.pt" ]; then
        $R train --data data/res64.nc $ARCH $TRAIN $flag --out "$out" --name "$out/model" --resume > "$out.train.json"
    fi
    for n in 48 64 96; do
        runs=""
        [ "$n" = 64 ] && runs="--runs 3"   # the held-out run at the training grid
        [ -f "$out/score$n.json" ] || $R score --model "$out/model" --data "data/res$n.nc" $runs --out "$out/score$n.json" > /dev/null
    done
done

.venv/bin/python - <<'EOF'
import json, os
print("| model | grid | S R² upper | S R² lower | flux R² mean |")
print("|---|---|---|---|---|")
for variant in os.environ.get("VARIANTS", "plain similarity").split():
    for n in (48, 64, 96):
        path = f"runs/res/{variant}/score{n}.json"
        if os.path.isfile(path):
            r = json.load(open(path))["r2"]
            print(f"| {variant} | {n}² | {r['S_1']:.3f} | {r['S_2']:.3f} | {r['flux_mean']:.3f} |")
EOF
