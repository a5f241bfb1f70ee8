#!/usr/bin/env bash
# Reproduce the shipped model and every figure in the README's "Results" section.
# Many hours on this 2-core machine (each step names its cost); each step resumes if re-run after an interruption.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PYTHONHASHSEED=0  # escnn's kernel bases depend on Python's string hashing
R=.venv/bin/roteq

# 1. training data: 7 high-res (256^2) eddy runs, 10 years, snapshots every 250 h after a 5-year spin-up
$R generate --members 7 --years 10 --spinup-years 5 --snapshot-hours 250 --seed 0 --workers 2 \
  --out-file data/eddy_spectral.nc

# 2. the shipped model (runs 0-3 train, 4-6 held out) and the offline comparisons
TRAIN="--data data/eddy_spectral.nc --holdout 3 --channels 32,32 --kernel-sizes 7,1 --lr 1e-2 --epochs 50 --patience 15 --seed 0 --no-progress"
train() {  # train OUT NAME [options]: resumes when OUT already holds a checkpoint
  local out=$1 name=$2; shift 2
  $R train $TRAIN --out "$out" --name "$name" $([ -f "$out/checkpoint.pt" ] && echo --resume) "$@"
}
train runs/eddy-c4 eddy-c4 --group C4
train runs/eddy-cnn runs/eddy-cnn/model --arch cnn
# data efficiency: a quarter of the training runs
train runs/eddy-c4-quarter runs/eddy-c4-quarter/model --group C4 --train-runs 0
train runs/eddy-cnn-quarter runs/eddy-cnn-quarter/model --arch cnn --train-runs 0

# 3. online: parameterized and unparameterized 10-year ensembles, 20-year stability runs
$R rollout --model eddy-c4 --members 3 --years 10 --out runs/online/eddy-c4 --resume
$R rollout --model none --members 3 --years 10 --out runs/online/unparameterized --resume
$R rollout --model eddy-c4 --members 5 --years 20 --seed 1 --out runs/online/eddy-c4-20y --resume

# 4. similarity against the held-out high-res runs (4-6); runs 0-2 give the sampling-noise ceiling
$R evaluate --truth data/eddy_spectral.nc@4-6 --truth-b data/eddy_spectral.nc@0-2 \
  --baseline runs/online/unparameterized/rollout.nc --run eddy-c4=runs/online/eddy-c4/rollout.nc \
  --last-years 5 --out runs/evaluate --save-reference trained_models/eddy-c4/reference.nc

# 5. cost
$R bench --model eddy-c4 --json runs/bench.json

# 6. the 25-run study (README "Skill on 25 runs"): data with trajectory windows (~3.2 core-hours),
#    the shipped architecture and eddy-c4-dilated on runs 0-20 (21-24 held out), the online table
PYTHONHASHSEED=0 $R generate --members 25 --years 10 --spinup-years 5 --snapshot-hours 250 --window-steps 32 \
  --window-every 4 --seed 0 --workers 2 --out-file data/eddy25.nc
T25="--data data/eddy25.nc --holdout 4 --lr 1e-2 --patience 1000 --seed 0 --no-progress"
train25() {  # OUT NAME [options]
  local out=$1 name=$2; shift 2
  $R train $T25 --out "$out" --name "$name" $([ -f "$out/checkpoint.pt" ] && echo --resume) "$@"
}
train25 runs/skill_train/c4-7x7 runs/skill_train/c4-7x7/model --channels 32,32 --kernel-sizes 7,1 --epochs 40
train25 runs/skill_train/c4-dil17 eddy-c4-dilated --channels 32,32,32 --kernel-sizes 5,3,3 --dilations 1,2,4 --epochs 30
DATA=data/eddy25.nc TRUTH_RUNS=21-24 CEILING_RUNS=17-20 SEEDS=3 MEMBERS=4 OUT=runs/skill25 \
  MODELS="eddy-c4 c4-7x7-25runs=runs/skill_train/c4-7x7/model eddy-c4-dilated" bash scripts/skill_eval.sh
$R bench --model eddy-c4-dilated --members 1 --json runs/bench_eddy-c4-dilated.json

# 7. this session's study (README "Online skill against an independent truth set" and "Fixed closure
#    terms"): 8 high-res runs of seed 1 (1.55 core-hours), the online table with ceiling and peers,
#    the closure-term sweep, the offline energy budget
$R generate --members 8 --years 10 --spinup-years 5 --snapshot-hours 250 --seed 1 --workers 2 \
  --out-file data/eddy_truth8_seed1.nc
BASE=eddy-c4 RATES="3e-6 1e-5" EXTRA="backscatter=backscatter" bash scripts/damping_sweep.sh
# the new default: eddy-c4-dilated with the grid damping its pilot chose (2 members, seed 3, against the
# eddy-c4 reference); its 5 x 20-year stability
BASE=eddy-c4-dilated RATES="1e-6" bash scripts/damping_sweep.sh
$R derive --model eddy-c4-dilated --grid-damping 1e-6 --name trained_models/eddy-c4-dilated-damped
$R rollout --model eddy-c4-dilated-damped --members 3 --years 20 --seed 1 --out runs/skill/stability20y-damped-seed1 --resume
$R rollout --model eddy-c4-dilated-damped --members 2 --years 20 --seed 2 --out runs/skill/stability20y-damped-seed2 --resume
bash scripts/skill_eval.sh   # eddy-c4, eddy-c4-dilated, eddy-c4-dilated-damped and the peers
.venv/bin/python benchmarks/energy_budget_offline.py data/eddy_truth8_seed1.nc 0 4
$R bench --model eddy-c4 --members 1

# 8. this wave's later session (README "Training through the solver; architectures, augmentation and
#    equivariance on the same data"): runs 0-6 of the seed-0 set with trajectory windows (1.44
#    core-hours), the architecture table, the a-posteriori model and the online table against the
#    default's stored truth reference
$R generate --members 7 --years 10 --spinup-years 5 --snapshot-hours 250 --window-steps 32 --window-every 4 \
  --seed 0 --workers 2 --out-file data/eddy7w.nc
DATA=data/eddy7w.nc VAL_RUNS=2 ARCHS="dilated-c4-17 dilated-cnn-17-aug dilated-cnn-17-aug-lr3e-3 unet-c4-3lev \
  dilated-c4-17-1run dilated-cnn-17-aug-1run dilated-cnn-17-aug-lr3e-3-1run" bash scripts/arch_pilot.sh
$R train-online --data data/eddy7w.nc --init eddy-c4-dilated-damped --unroll 4,8,16 --iterations 40 --batch 4 \
  --lr 1e-4 --holdout 2 --out runs/apost/w0 --name eddy-c4-dilated-apost
cp trained_models/eddy-c4-dilated-damped/reference.nc trained_models/eddy-c4-dilated-apost/
for m in dilated-c4-17 dilated-cnn-17-aug-lr3e-3; do
  $R derive --model runs/arch/$m/model --grid-damping 1e-6 --name runs/arch/$m-d1e-6
done
REFERENCE=trained_models/eddy-c4-dilated-damped/reference.nc OUT=runs/skill_tune \
  MODELS="eddy-c4-dilated-damped eddy-c4-dilated-apost dil17-5runs-d1e-6=runs/arch/dilated-c4-17-d1e-6 \
  cnn-aug-d1e-6=runs/arch/dilated-cnn-17-aug-lr3e-3-d1e-6" bash scripts/skill_eval.sh
# the new default's 5 x 20-year stability (started at the end of the session that made it)
$R rollout --model eddy-c4-dilated-apost --members 3 --years 20 --seed 1 --out runs/skill/stability20y-apost-seed1 --resume
$R rollout --model eddy-c4-dilated-apost --members 2 --years 20 --seed 2 --out runs/skill/stability20y-apost-seed2 --resume
# 9. the 2026-12-02 section (README "Re-run, 20-year stability, three tries on the worst score, the
#    call-interval curve and D4"): the default re-run, the tries, the call-interval sweep, the D4 stack and
#    the mirrored configuration, all in one table; the 20-year runs of step 8 are scored too
T=runs/skill_tune
roll() { $R rollout --members 2 --years 10 --out "$@" $( [ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite ); }
for s in 3 4; do
  for m in none backscatter smagorinsky; do roll $T/$m-s$s --model $m --seed $s; done
  roll $T/apost-s$s --model eddy-c4-dilated-apost --seed $s
done
for k in 4 8; do roll $T/apost-k$k-s3 --model eddy-c4-dilated-apost --call-interval $k --seed 3; done
$R train-online --data data/eddy7w.nc --init eddy-c4-dilated-apost --unroll 16,32 --iterations 40 --batch 4 \
  --lr 1e-4 --holdout 2 --out runs/apost/v1
roll $T/apost-v1-s3 --model runs/apost/v1/model --seed 3
$R derive --model eddy-c4-dilated-apost --grid-damping 5e-7 --name runs/apost/v3-d5e-7
roll $T/apost-v3-s3 --model runs/apost/v3-d5e-7 --seed 3
ARCHS=dilated-d4-17 DATA=data/eddy7w.nc VAL_RUNS=2 bash scripts/arch_pilot.sh
$R derive --model runs/arch/dilated-d4-17/model --grid-damping 1e-6 --name runs/d4/damped
roll $T/d4-s3 --model runs/d4/damped --seed 3
roll $T/d4-mirrored-s3 --model runs/d4/damped --set beta=-1.5e-11 --set U1=-0.025 --seed 3
S=runs/skill
$R evaluate --reference trained_models/eddy-c4-dilated-damped/reference.nc --baseline $T/none-s3/rollout.nc $T/none-s4/rollout.nc \
  --run backscatter=$T/backscatter-s3/rollout.nc,$T/backscatter-s4/rollout.nc \
  --run smagorinsky=$T/smagorinsky-s3/rollout.nc,$T/smagorinsky-s4/rollout.nc \
  --run default=$T/apost-s3/rollout.nc,$T/apost-s4/rollout.nc \
  --run default-s3=$T/apost-s3/rollout.nc --run default-s4=$T/apost-s4/rollout.nc \
  --run default-20y=$S/stability20y-apost-seed1/rollout.nc,$S/stability20y-apost-seed2/rollout.nc \
  --run default-k4-s3=$T/apost-k4-s3/rollout.nc --run default-k8-s3=$T/apost-k8-s3/rollout.nc \
  --run longer-unroll-s3=$T/apost-v1-s3/rollout.nc --run half-damping-s3=$T/apost-v3-s3/rollout.nc \
  --run d4-s3=$T/d4-s3/rollout.nc --run d4-mirrored-s3=$T/d4-mirrored-s3/rollout.nc \
  --run d4-turned-s3=$T/d4-mirrored-s3/rollout.nc --frame d4-mirrored-s3=rot0*flip --frame d4-turned-s3=rot180 \
  --last-years 5 --out $S/evaluate_all
$R bench --model eddy-c4-dilated-apost --members 1
# ... and 4 more members of the default and of backscatter (seeds 5, 6): the 8-member rows
for s in 5 6; do roll $T/apost-s$s --model eddy-c4-dilated-apost --seed $s; roll $T/backscatter-s$s --model backscatter --seed $s; done
$R evaluate --reference trained_models/eddy-c4-dilated-damped/reference.nc --baseline $T/none-s3/rollout.nc $T/none-s4/rollout.nc \
  --run backscatter-s3-6=$(echo $T/backscatter-s{3,4,5,6}/rollout.nc | tr ' ' ,) \
  --run default-s3-6=$(echo $T/apost-s{3,4,5,6}/rollout.nc | tr ' ' ,) \
  --run backscatter-s5-6=$T/backscatter-s5/rollout.nc,$T/backscatter-s6/rollout.nc \
  --run default-s5-6=$T/apost-s5/rollout.nc,$T/apost-s6/rollout.nc --last-years 5 --out $S/evaluate_8members

# 10. jet transfer (README "Transfer to jet"): truth, ceiling, peers and the default, then three tries
bash scripts/jet_transfer.sh
J=runs/jet; T=$J/tries
$R derive --model eddy-c4-dilated-apost --grid-damping 3e-6 --name $T/damp3e-6-model
jroll() { local out=$1; shift; $R rollout --config jet --members 2 --years 15 --seed 3 --allow-out-of-regime --out $out \
  $([ -f $out/checkpoint.npz ] && echo --resume || echo --overwrite) "$@"; }
jroll $T/offline-s3 --model eddy-c4-dilated-damped
jroll $T/damp3e-6-s3 --model $T/damp3e-6-model
jroll $T/plus-smag-s3 --model eddy-c4-dilated-apost --add-closure smagorinsky
$R evaluate --truth data/jet4_seed1.nc --truth-b data/jet4_seed2.nc --baseline $J/none-s3/rollout.nc $J/none-s4/rollout.nc \
  --run backscatter=$J/backscatter-s3/rollout.nc,$J/backscatter-s4/rollout.nc \
  --run smagorinsky=$J/smagorinsky-s3/rollout.nc,$J/smagorinsky-s4/rollout.nc \
  --run default=$J/default-s3/rollout.nc,$J/default-s4/rollout.nc --run default-s3=$J/default-s3/rollout.nc \
  --run offline-s3=$T/offline-s3/rollout.nc --run damp3e-6-s3=$T/damp3e-6-s3/rollout.nc \
  --run plus-smag-s3=$T/plus-smag-s3/rollout.nc --last-years 4 --out $J/evaluate --save-reference references/jet.nc
for n in 1:0 2:0-1 4:0-3; do $R evaluate --truth data/jet4_seed1.nc@${n#*:} --truth-b data/jet4_seed2.nc@${n#*:} \
  --baseline $J/none-s3/rollout.nc $J/none-s4/rollout.nc --last-years 4 --out $J/ceiling_${n%%:*}v${n%%:*}; done
# the jet noise ceiling with up to 8 high-res runs per side (README "Transfer to jet: the noise ceiling")
RUNS=8 bash scripts/jet_ceiling.sh
RUNS=8 MODELS="apost2=eddy-c4-dilated-apost2 offline=eddy-c4-dilated-damped" bash scripts/jet_transfer.sh

# 11. resolution transfer (README "Transfer to other grids"): data at 48^2, 64^2 and 96^2, the four
# named models, their scores and the online tables; then the three tries of the offline table
ONLINE=1 scripts/resolution_transfer.sh
for t in "sim-seed1 --dilations 1,2,4 --seed 1" "sim-local9 --seed 0"; do
  set -- $t; name=$1; shift; out=runs/res/$name
  [ -f $out/model/model.pt ] || $R train --data data/res64.nc --channels 32,32,32 --kernel-sizes 5,3,3 --similarity \
    --lr 1e-2 --epochs 60 --patience 1000 --holdout 1 --no-progress --out $out --name $out/model --resume "$@"
  for n in 48 64 96; do runs="--runs 1"; [ $n = 64 ] && runs="--runs 2"
    $R score --model $out/model --data data/res$n.nc $runs --json $out/score$n.json > /dev/null; done
done
# the third try (three grids, 9 cells) and what limits the 96^2 lower layer: 3 more 96^2 runs (seed 11),
# and at 48^2, and models trained on 96^2 alone, two seeds of the three-grid ones (README "Transfer to other
# grids: what limits 48² and 96²")
VARIANTS="similarity-3grids-9cell similarity-3grids-9cell-more96 similarity-3grids-more96 similarity-3grids-more \
  similarity-3grids-9cell-more native96-9cell native96" scripts/resolution_transfer.sh
SEED=1 VARIANTS="similarity-3grids-9cell similarity-3grids-more96 similarity-3grids-more similarity-3grids-9cell-more" \
  scripts/resolution_transfer.sh
# a middle view (13 cells), a view fixed in kilometres (--view-spacing), two seeds each, and models trained on
# 48^2 alone (README "Transfer to other grids: a view in kilometres, a middle view and each grid's own model")
VARIANTS="similarity-3grids-13cell-more similarity-3grids-view96-more native48 native48-9cell" scripts/resolution_transfer.sh
SEED=1 VARIANTS="similarity-3grids-13cell-more similarity-3grids-view96-more" scripts/resolution_transfer.sh
# jet against 16 high-res runs per side, and the eddy-trained similarity-scaled models of step 11 on jet, with
# a confirmation on seeds 5 and 6 (README "Transfer to jet: 16 high-res runs per side")
RUNS=16 bash scripts/jet_ceiling.sh
[ -f runs/jet/sim-model/model.pt ] || $R derive --model runs/res/similarity-3grids-more-seed1/model --grid-damping 1e-6 \
  --name runs/jet/sim-model --note "issue 13: jet transfer of the best resolution-transfer model, eddy only"
RUNS=16 MODELS="apost2=eddy-c4-dilated-apost2 offline=eddy-c4-dilated-damped dilated=eddy-c4-dilated sim=runs/jet/sim-model \
  simraw=runs/res/similarity-3grids-more-seed1/model simraw0=runs/res/similarity-3grids-more/model \
  sim13=runs/res/similarity-3grids-13cell-more-seed1/model sim9=runs/res/similarity-3grids-9cell-more-seed1/model" \
  bash scripts/jet_transfer.sh
OUT=runs/jet56 SEEDS="5 6" RUNS=16 MODELS="simraw=runs/res/similarity-3grids-more-seed1/model \
  sim13=runs/res/similarity-3grids-13cell-more-seed1/model" bash scripts/jet_transfer.sh
jets() { local f=(); for r in runs/jet/$1-s3 runs/jet/$1-s4 runs/jet56/$1-s5 runs/jet56/$1-s6; do f+=("$r/rollout.nc"); done
  (IFS=,; echo "${f[*]}"); }
$R evaluate --truth data/jet16_seed1.nc --truth-b data/jet16_seed2.nc --baseline $(jets none | tr , ' ') \
  --run backscatter=$(jets backscatter) --run smagorinsky=$(jets smagorinsky) --run simraw=$(jets simraw) --run sim13=$(jets sim13) \
  --last-years 4 --out runs/jet/evaluate16_8members

# 12. training through the solver, re-run and varied (README "Training through the solver, re-run and
# varied"): windows of 8 seed-0 runs (0.59 core-hours), six fine-tuned variants (~12 min each), their
# seed-3 table, then the default's recipe re-run against the default and backscatter on seeds 3-6, and
# on seeds 3-10 with the noise ceiling of 4 independent high-res runs (seed 2, 0.41 core-hours) in the table
bash scripts/apost_spectral.sh
VARIANTS="recipe-rerun" EXTRA="" SEEDS="3 4 5 6" bash scripts/apost_spectral.sh
VARIANTS="recipe-rerun" EXTRA="" SEEDS="3 4 5 6 7 8 9 10" CEILING=data/eddy_truth4_seed2.nc bash scripts/apost_spectral.sh
# the new default (the re-run, shipped as eddy-c4-dilated-apost2): its 5 x 20-year stability, scored over years 15-20
$R rollout --model eddy-c4-dilated-apost2 --members 3 --years 20 --seed 1 --out runs/stab20/seed1 --resume
$R rollout --model eddy-c4-dilated-apost2 --members 2 --years 20 --seed 2 --out runs/stab20/seed2 --resume
$R evaluate --reference trained_models/eddy-c4-dilated-damped/reference.nc --baseline runs/apost_spectral/none-s3/rollout.nc \
  runs/apost_spectral/none-s4/rollout.nc --run apost2-20y=runs/stab20/seed1/rollout.nc,runs/stab20/seed2/rollout.nc \
  --last-years 5 --out runs/stab20/evaluate
