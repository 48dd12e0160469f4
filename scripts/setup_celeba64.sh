#!/usr/bin/env bash
# CelebA 64x64: DATA_ROOT/celeba64-{train,valid,test}.npy (uint8 NHWC), official partition.
# Each aligned 178x218 image (img_align_celeba) is cropped to the centred 140x140 box
# (left, top, right, bottom) = (19, 39, 159, 179) and resized to 64x64 (antialiased bilinear).
# Source: the official page https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html links
# img_align_celeba.zip and list_eval_partition.txt (Google Drive / Baidu; no direct URL): put
# them in DATA_ROOT, or pass the extracted img_align_celeba folder as SRC.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT [SRC]   (SRC: img_align_celeba folder or zip; default DATA_ROOT/img_align_celeba.zip)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
SRC=${2:-$ROOT/img_align_celeba.zip}
mkdir -p "$ROOT"
if [ -f "$SRC" ]; then
    if [ ! -d "$ROOT/img_align_celeba" ]; then
        command -v unzip >/dev/null 2>&1 || die "unzip is needed to extract $SRC"
        unzip -q "$SRC" -d "$ROOT"
    fi
    SRC=$ROOT/img_align_celeba
fi
[ -d "$SRC" ] || die "no CelebA images: download img_align_celeba.zip from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into $ROOT"
PARTITION=()
if [ -f "$ROOT/list_eval_partition.txt" ]; then
    PARTITION=(--partition "$ROOT/list_eval_partition.txt")
fi
"$PY" -m vdvae.prepare_data celeba64 --src "$SRC" --out "$ROOT" ${PARTITION[@]+"${PARTITION[@]}"}
"$PY" -m vdvae.prepare_data check celeba64 --data_root "$ROOT"
