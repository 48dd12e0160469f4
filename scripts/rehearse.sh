#!/usr/bin/env bash
# A rehearsal of the paper-scale protocol, end to end, before spending GPU weeks on it: for each
# dataset, made-up images in its download's own format (progcode_ext/experiments/rehearsal.py),
# its own setup script on them, then its own script (scripts/svhn.sh, celeba64.sh, lsun64.sh)
# unchanged, shrunk only through the knobs of scripts/paper_protocol.sh; then every report must
# exist, and a second run of the script must train nothing.
#   scripts/rehearse.sh [svhn|celeba64|lsun64|all]      (default: all; results under OUT)
# Environment (defaults in brackets): OUT [rehearsal], STEPS [5], PROBE_STEPS [5], SEEDS [0],
#   N_SAMPLES [64], N_EVAL [16], JOBS [2], TABLE2_TARGETS [0.0512,0.0032: two stage 2s, not seven],
#   TRAIN_FLAGS ["--width 16 --n_batch 4": the paper's blocks at a sixth of the width... of 384],
#   LOOP, NGPU, LAUNCHER (JOBS=1 with NGPU > 1), FID_WEIGHTS, LPIPS_WEIGHTS as for
#   scripts/paper_protocol.sh; METRICS [standin]: standin uses the labelled stand-ins
#   (ALLOW_STANDIN=1) where no FID/LPIPS weights are given, trained on the made-up images in OUT's
#   own metrics cache, never the user's; random runs the real pytorch-fid and lpips on weight files
#   of random values written into OUT (needs '.[eval]' and a torchvision that imports), and the
#   reports must then show FID and LPIPS, not a stand-in.
# A failure names the dataset and the stage it failed in, and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
case "$which" in
    svhn|celeba64|lsun64) datasets=("$which") ;;
    all) datasets=(svhn celeba64 lsun64) ;;
    *) echo "usage: $0 [svhn|celeba64|lsun64|all]" >&2; exit 2 ;;
esac
OUT=${OUT:-rehearsal}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PROGCODE_CACHE="$OUT/metrics-cache"
export STEPS=${STEPS:-5} PROBE_STEPS=${PROBE_STEPS:-5} SEEDS=${SEEDS:-0} N_SAMPLES=${N_SAMPLES:-64}
export N_EVAL=${N_EVAL:-16} JOBS=${JOBS:-2} TABLE2_TARGETS=${TABLE2_TARGETS:-0.0512,0.0032}
export TRAIN_FLAGS=${TRAIN_FLAGS:---width 16 --n_batch 4}
METRICS=${METRICS:-standin}
case "$METRICS" in
    standin) export ALLOW_STANDIN=1 ;;
    random)
        export ALLOW_STANDIN=0 FID_WEIGHTS="$OUT/weights/fid-random.pth"
        export LPIPS_WEIGHTS="$OUT/weights/alexnet-random.pth"
        if [ ! -s "$LPIPS_WEIGHTS" ]; then
            rm -rf "$OUT/weights"
            python -m progcode_ext.experiments.rehearsal weights "$OUT/weights"
        fi ;;
    *) echo "METRICS must be standin or random" >&2; exit 2 ;;
esac

stage=''
dataset=''
trap 'echo "rehearsal FAILED: $dataset, at: $stage" >&2' ERR

for dataset in "${datasets[@]}"; do
    start=$(date +%s)
    root="$OUT/$dataset"
    data="$root/data"
    case "$dataset" in
        svhn) check=svhn; setup=(scripts/setup_svhn.sh "$data") ;;
        celeba64) check=celeba64; setup=(scripts/setup_celeba64.sh "$data" "$root/source/img_align_celeba") ;;
        lsun64) check=lsun_bedroom64; setup=(scripts/setup_lsun_bedroom64.sh "$data" "$root/source/train" "$root/source/val") ;;
    esac
    if ! python -m vdvae.prepare_data check "$check" --data_root "$data" >/dev/null 2>&1; then
        stage="making the source files"
        rm -rf "$root/source" "$data"
        source_dir="$root/source"
        [ "$dataset" = svhn ] && source_dir="$data"       # setup_svhn.sh finds the .mat files there
        python -m progcode_ext.experiments.rehearsal "$dataset" "$source_dir"
        if [ "$dataset" = celeba64 ]; then
            mkdir -p "$data" && cp "$root/source/list_eval_partition.txt" "$data/"
        fi
        stage="${setup[0]}"
        PYTHON=python "${setup[@]}"
    fi
    stage="scripts/$dataset.sh"
    DATA_ROOT="$data" OUT="$root/experiments" "scripts/$dataset.sh" 2>&1 | tee "$root/protocol.log"
    stage="the reports"
    for report in table1 rd_curve lpips_vs_mse table2; do
        test -s "$root/experiments/$report/report.md" || { echo "no $report report" >&2; false; }
    done
    if [ "$METRICS" = random ]; then
        stage="the reports' metrics (the real FID and LPIPS, not a stand-in)"
        grep -q "Perceptual metric: \*\*LPIPS-alex\*\*" "$root/experiments/lpips_vs_mse/report.md"
        grep -q "Sample metric: \*\*FID\*\*" "$root/experiments/table2/report.md"
    fi
    stage="scripts/$dataset.sh again (resumed: nothing may train)"
    DATA_ROOT="$data" OUT="$root/experiments" "scripts/$dataset.sh" > "$root/resume.log" 2>&1
    if grep -q ": training " "$root/resume.log"; then
        grep ": training " "$root/resume.log" | head -5 >&2
        echo "the second run trained again" >&2
        false
    fi
    echo "rehearsal of $dataset passed in $(( $(date +%s) - start )) s: reports in $root/experiments"
done
