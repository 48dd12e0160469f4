#!/usr/bin/env bash
# The paper's whole protocol for one dataset at paper scale (Shu & Ermon 2022, Sections 4-6, Appendix A):
#   Table 1 (conventional VDVAE 800K steps; D_K probe and gamma-optimal masked decoder 400K steps each),
#   Figure 2 (stage-1 models for lambda = 0.0512 ... 0.0008, 800K steps each), Figure 4 (LPIPS vs MSE on
#   those models), Table 2 (progressive vs conventional two-stage HVAE, 800K steps per stage, FID on 50K samples,
#   progressive stage 2 on every stage 1 of the family; the headline lambda by the rule in docs/results.md).
# Called by scripts/{svhn,celeba64,lsun64}.sh. Re-running resumes: finished stages are never re-run.
#   scripts/paper_protocol.sh PRESET --plan   (or scripts/svhn.sh --plan) trains nothing: it prints
#   every run with its steps, batch, dependencies, what is done in OUT, and estimates of memory per
#   GPU and GPU hours (progcode_ext/experiments/plan.py; PLAN_GPU=V100, A100 or H100).
#
# Environment:
#   DATA_ROOT   where scripts/setup_<dataset>.sh put the data (required)
#   OUT         output folder (default experiments/<preset>)
#   NGPU        GPUs per stage (default 1); LAUNCHER torchrun (default) or mpiexec when NGPU > 1
#               (then JOBS=1: each run takes every GPU; --plan shows the first run's command)
#   FID_WEIGHTS, LPIPS_WEIGHTS   local weight files where the machine cannot download them
#   STEPS, PROBE_STEPS           override 800000 / 400000 (e.g. for a shorter trial)
#   N_SAMPLES   samples drawn for Table 2's FID (default 50000, the usual count; fewer for a trial)
#   LOOP        progcode (default: progcode's train.py) or upstream: every training stage runs in
#               upstream's own loop, in VDVAE_ROOT or the vdvae_upstream submodule (the same run
#               folders; a stage left unfinished starts again there)
#   SEEDS       training seeds for Tables 1 and 2, e.g. 0,1,2 (default 0; the claims are checked on each)
#   TABLE2_TARGETS  the lambdas Table 2 trains a stage 2 on (default: the whole family of Figure 2;
#               fewer, e.g. 0.0512,0.0128,0.0032, to save 800K-step runs)
#   TRAIN_FLAGS extra train.py flags for every run, after the preset's (e.g. "--width 16" for a
#               small trial; scripts/rehearse.sh uses it)
#   N_EVAL      evaluate on the first N validation images (default: all)
#   JOBS        runs trained at once (default 1; each a process with cores / JOBS threads)
#   ALLOW_STANDIN=1  where the FID / LPIPS weights are missing, use the labelled stand-ins
#               (FD-<dataset>, PD-<dataset>; docs/metrics.md) instead of stopping
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:?usage: scripts/paper_protocol.sh PRESET (svhn, celeba64 or lsun64) [--plan]}
PLAN=${2:-}
if [ -n "$PLAN" ] && [ "$PLAN" != --plan ]; then
  echo "usage: scripts/paper_protocol.sh PRESET [--plan]" >&2; exit 2
fi
[ -n "$PLAN" ] && DATA_ROOT=${DATA_ROOT:-./}
: "${DATA_ROOT:?set DATA_ROOT (run scripts/setup_<dataset>.sh DATA_ROOT first)}"
OUT=${OUT:-experiments/$PRESET}
NGPU=${NGPU:-1}
STEPS=${STEPS:-800000}
PROBE_STEPS=${PROBE_STEPS:-400000}
if [ "$NGPU" -gt 1 ]; then
  case "${LAUNCHER:-torchrun}" in
    torchrun) export LAUNCH="torchrun --standalone --nproc_per_node $NGPU" ;;
    mpiexec) export LAUNCH="mpiexec -n $NGPU ${PYTHON:-python}" ;;
    *) echo "LAUNCHER must be torchrun or mpiexec" >&2; exit 2 ;;
  esac
fi
common=(--hps "$PRESET" --out "$OUT" --steps "$STEPS" --seeds "${SEEDS:-0}"
        "--train_flags=--data_root $DATA_ROOT ${TRAIN_FLAGS:-}" --loop "${LOOP:-progcode}"
        --n_eval "${N_EVAL:-0}" --jobs "${JOBS:-1}")
fid=(); [ -n "${FID_WEIGHTS:-}" ] && fid=(--fid_weights "$FID_WEIGHTS")
lpips=(); [ -n "${LPIPS_WEIGHTS:-}" ] && lpips=(--lpips_weights "$LPIPS_WEIGHTS")
if [ "${ALLOW_STANDIN:-0}" = 1 ]; then fid+=(--allow_standin); lpips+=(--allow_standin); fi
targets=(); [ -n "${TABLE2_TARGETS:-}" ] && targets=(--targets "$TABLE2_TARGETS")
if [ -n "$PLAN" ]; then
  exec python -m progcode_ext.experiments.plan --gpu "${PLAN_GPU:-H100}" "${common[@]}" \
      --probe_steps "$PROBE_STEPS" "${targets[@]+"${targets[@]}"}"
fi

python -m progcode_ext.experiments.table1 "${common[@]}" --probe_steps "$PROBE_STEPS"
python -m progcode_ext.experiments.rd_curve "${common[@]}"
python -m progcode_ext.experiments.lpips_vs_mse "${common[@]}" "${lpips[@]}"
python -m progcode_ext.experiments.table2 "${common[@]}" --n_samples "${N_SAMPLES:-50000}" "${fid[@]}" "${targets[@]}"
echo "reports: $OUT/{table1,rd_curve,lpips_vs_mse,table2}/report.md"
