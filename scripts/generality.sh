#!/usr/bin/env bash
# One shipped closure across flows and grids (issue "one closure for the flows users run"): the data,
# fits, rollouts and one `roteq evaluate` table per flow/grid. Resumable: finished files are skipped,
# interrupted generations resume from their .parts, interrupted rollouts from their checkpoints.
#
# The held-out configuration was fixed before any closure of this issue was fitted: "mid", the
# geometric midpoint of eddy and jet in every setting they differ in (beta 1.22e-11 m-1 s-1, rek
# 2.0e-7 s-1, delta 0.16; rd, H1, U1, U2, L as both). No training run is drawn from it.
#
# Data: 256^2 high-res runs of 10 years (`--years` is the whole run), spectral coarse-graining, a snapshot
# every 250 h over years 5-10 (173 per run):
#   eddy48_fit / eddy96_fit     seed 0, 2 runs, coarse 48^2 / 96^2: operator fits (run 1 held out); as
#                               independent high-res runs they are also the tables' noise ceiling
#   eddy48_truth / eddy96_truth seed 1, 2 runs: the truth
#   mid_truth / mid_ceil        seed 1 / seed 2, 2 runs each, coarse 64^2
# Stages: STAGE=data (default all) | fit | screen48 | screen96 | rot180 | roll | jet | stability | evaluate.   Q=1 or Q=2 picks one data queue (run both at once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
R=.venv/bin/roteq
OUT=${OUT:-runs/gen}
MID="--set beta=1.22e-11 --set rek=2e-7 --set delta=0.16"
mkdir -p "$OUT" data
gen() {  # FILE MEMBERS SEED YEARS ARGS... (YEARS: the whole run, spin-up included)
  [ -f "$1" ] || $R generate --members "$2" --seed "$3" --years "$4" --spinup-years 5 --snapshot-hours 250 \
    --serial "${@:5}" --out-file "$1" > "$OUT/gen_$(basename "$1" .nc).log" 2>&1
}
STAGE=${STAGE:-all}
if [ "$STAGE" = data ] || [ "$STAGE" = all ]; then
  if [ "${Q:-1}" = 1 ]; then
    gen data/eddy48_fit.nc 2 0 10 --coarse-nx 48
    gen data/eddy96_fit.nc 2 0 10 --coarse-nx 96
    gen data/eddy48_truth.nc 2 1 10 --coarse-nx 48
    gen data/eddy96_truth.nc 2 1 10 --coarse-nx 96
  fi
  if [ "${Q:-2}" = 2 ]; then
    gen data/mid_truth.nc 2 1 10 $MID
    gen data/mid_ceil.nc 2 2 10 $MID
  fi
fi

# Rollouts: 8 members of seed 3 per closure, 10 years (scored over years 5-10, as the truth), jet 15 years
# (scored over the last 4, as scripts/jet_operator.sh). ROLL picks a subset, e.g. ROLL="48 96" (default: all).
resumable() {  # DIR ARGS...: `roteq rollout ARGS` into DIR (log DIR.log); skipped once finished, resumed if cut off
  [ -f "$1/rollout.nc" ] && grep -q "^wrote" "$1.log" 2>/dev/null && return
  mkdir -p "$(dirname "$1")"
  $R rollout --no-progress --out "$1" "${@:2}" \
    $([ -f "$1/checkpoint.npz" ] && echo --resume || echo --overwrite) > "$1.log" 2>&1
}
roll() { resumable "$1" --model "$2" --members 8 --seed 3 "${@:3}"; }  # DIR MODEL ARGS...: a table's rollout
fit() {  # NAME DATA ARGS...: an operator closure fitted to DATA's transfer spectra (run 1 held out); NAME is
  # saved as trained_models/NAME, or as the path itself when it holds a /
  local dir=$1; [[ $1 == */* ]] || dir=trained_models/$1
  [ -f "$dir/operator.pt" ] || $R train-operator --data "$2" --holdout 1 --out "$OUT/fit-$(basename "$1")" --name "$1" "${@:3}"
}
# 48^2: the default radius (8 cells) ran away online (KE 8x no closure's); four variants were screened on 4
# members of seed 21 (4 years, years 2-4 scored, used for nothing else) and radius 4 kept (0.783 / 0.230;
# per-layer -5.4, per-layer energy -0.84, upper layer alone -7.4, all with min below -17).
if [ "$STAGE" = fit ] || [ "$STAGE" = all ]; then
  fit eddy-operator-48 data/eddy48_fit.nc --radius-cells 4 --n-basis 9
  fit eddy-operator-96 data/eddy96_fit.nc --radius-cells 12 --n-basis 25   # chosen by STAGE=screen96
fi
if [ "$STAGE" = screen48 ] || [ "$STAGE" = all ]; then
  S=runs/screen48
  fit48() { fit "$OUT/op48-$1" data/eddy48_fit.nc "${@:2}"; }
  fit48 r8; fit48 sep --layers separate; fit48 sepE --layers separate --budgets energy
  fit48 r4 --radius-cells 4 --n-basis 9; fit48 upE --layers upper --budgets energy
  for v in none r8 sep sepE r4 upE; do m=$OUT/op48-$v; [ $v = none ] && m=none
    resumable $S/$v --model $m --nx 48 --members 4 --years 4 --seed 21
  done
  $R evaluate --truth data/eddy48_truth.nc --baseline $S/none/rollout.nc --run sep=$S/sep/rollout.nc \
    --run sepE=$S/sepE/rollout.nc --run r4=$S/r4/rollout.nc --run upE=$S/upE/rollout.nc --last-years 2 --out $S/evaluate
  # the radius-8 fit (the first eddy-operator-48) in the 48^2 table
  roll $OUT/48-r8 $OUT/op48-r8 --years 10 --nx 48
fi
# 96^2: the first fit (8-cell kernels, the default radius) trailed backscatter's mean in a first table. Four variants screened
# against it on 4 members of seed 21 (used for nothing else): 4- and 12-cell kernels, per layer, per layer on
# energy only. At 96^2 a run from rest takes about 1000 days to equilibrate, so the screening runs 8 years and
# scores years 5-8 (a first 4-year screening, years 2-4 scored, was inside the spin-up and ranked 4-cell
# kernels first). 12 cells ranked first and is shipped (the default's row of the table); the 8- and 4-cell fits
# go into the 8-member table beside it. (As measured, the 8-cell rows were the first eddy-operator-96, fitted
# by the same command to an earlier realisation of data/eddy96_fit.nc: commit c5a1766.)
if [ "$STAGE" = screen96 ] || [ "$STAGE" = all ]; then
  S=runs/screen96-8y
  fit96() { fit "$OUT/op96-$1" data/eddy96_fit.nc "${@:2}"; }
  fit96 r8; fit96 r4 --radius-cells 4 --n-basis 9; fit96 r12 --radius-cells 12 --n-basis 25
  fit96 sep --layers separate; fit96 sepE --layers separate --budgets energy
  for v in none r8 r4 r12 sep sepE; do m=$OUT/op96-$v; [ $v = none ] && m=none
    resumable $S/$v --model $m --nx 96 --members 4 --years 8 --seed 21
  done
  $R evaluate --truth data/eddy96_truth.nc --baseline $S/none/rollout.nc --run r8=$S/r8/rollout.nc --run r4=$S/r4/rollout.nc \
    --run r12=$S/r12/rollout.nc --run sep=$S/sep/rollout.nc --run sepE=$S/sepE/rollout.nc --last-years 3 --out $S/evaluate
  for v in r8 r4; do roll $OUT/96-$v $OUT/op96-$v --years 10 --nx 96; done
fi

# Eddy turned through 180 degrees (beta and U1 negated): the default runs the network in the turned frame;
# its table against the eddy reference, mapped back (--frame rot180), beside the unturned default on the
# same members (4 of seed 3, 10 years, years 5-10 scored).
if [ "$STAGE" = rot180 ] || [ "$STAGE" = all ]; then
  for c in none auto; do resumable $OUT/eddy-$c --model $c --members 4 --years 10 --seed 3; done
  resumable $OUT/eddy-rot180 --members 4 --years 10 --seed 3 --set beta=-1.5e-11 --set U1=-0.025
  $R evaluate --reference trained_models/eddy-c4-dilated-apost2/reference.nc --baseline $OUT/eddy-none/rollout.nc \
    --run eddy=$OUT/eddy-auto/rollout.nc --run rot180=$OUT/eddy-rot180/rollout.nc --frame rot180=rot180 \
    --last-years 5 --out $OUT/evaluate-rot180
fi

if [ "$STAGE" = roll ] || [ "$STAGE" = all ]; then
  for grid in ${ROLL:-48 96 mid}; do
    case $grid in
      # Smagorinsky is left out of the mid table (it was stopped at 2 of 10 years for time; -0.86 in Ross et
      # al. on eddy, -0.91 on jet in an earlier table here)
      mid) args="--years 10 $MID"; closures="auto none backscatter" ;;
      48) args="--years 10 --nx 48"; closures="none backscatter smagorinsky auto" ;;
      96) args="--years 10 --nx 96"; closures="none backscatter auto smagorinsky" ;;
    esac
    for c in $closures; do roll "$OUT/$grid-$c" "$c" $args; done
  done
fi

# Jet attempts beyond scripts/jet_operator.sh's three (same data, seed and length; its none, backscatter
# and operator rollouts are reused): energy spectra with the layers coupled, and per layer with radius-4
# kernels. (The upper layer's own operator alone, --layers upper, was stopped at 2 of 15 years for time.)
if [ "$STAGE" = jet ] || [ "$STAGE" = all ]; then
  J=runs/jetop
  jfit() { fit "$J/jet-operator-$1" data/jet_fit_seed0.nc "${@:2}"; }
  jfit Ecoupled --budgets energy
  jfit Er4 --layers separate --budgets energy --radius-cells 4 --n-basis 9
  for v in Ecoupled Er4; do roll "$J/op-$v" "$J/jet-operator-$v" --config jet --years 15; done
fi

# Stability: 5 members x 20 years of the default's choice on jet (seeds 1 and 2, as the eddy runs)
if [ "$STAGE" = stability ] || [ "$STAGE" = all ]; then
  for s in 1 2; do resumable $OUT/jet-stab20-s$s --config jet --members $((s == 1 ? 3 : 2)) --years 20 --seed $s; done
fi

# One `roteq evaluate` table per flow and grid, each with the noise ceiling (independent high-res runs)
if [ "$STAGE" = evaluate ] || [ "$STAGE" = all ]; then
  for grid in 48 96; do
    $R evaluate --truth data/eddy${grid}_truth.nc --truth-b data/eddy${grid}_fit.nc --baseline $OUT/$grid-none/rollout.nc \
      --run eddy-operator-$grid=$OUT/$grid-auto/rollout.nc --run backscatter=$OUT/$grid-backscatter/rollout.nc \
      --run smagorinsky=$OUT/$grid-smagorinsky/rollout.nc $([ $grid = 48 ] && echo --run radius8=$OUT/48-r8/rollout.nc) \
      $([ $grid = 96 ] && echo --run radius8=$OUT/96-r8/rollout.nc --run radius4=$OUT/96-r4/rollout.nc) \
      --last-years 5 --out $OUT/evaluate-$grid
  done
  $R evaluate --truth data/mid_truth.nc --truth-b data/mid_ceil.nc --baseline $OUT/mid-none/rollout.nc \
    --run operators-64=$OUT/mid-auto/rollout.nc --run backscatter=$OUT/mid-backscatter/rollout.nc \
    --last-years 5 --out $OUT/evaluate-mid
  J=runs/jetop
  # the jet truth: the stored reference of 16 high-res runs (references/jet16.nc, scripts/jet_transfer.sh);
  # ceiling: the 2 independent seed-0 runs the jet operator was fitted to
  $R evaluate --reference references/jet16.nc --truth-b data/jet_fit_seed0.nc --baseline $J/none/rollout.nc \
    --run operators-64=$J/op-energy/rollout.nc --run energy-coupled=$J/op-Ecoupled/rollout.nc \
    --run energy-radius4=$J/op-Er4/rollout.nc --run coupled=$J/op-coupled/rollout.nc \
    --run separate=$J/op-separate/rollout.nc --run backscatter=$J/backscatter/rollout.nc \
    --last-years 4 --out $OUT/evaluate-jet
fi
