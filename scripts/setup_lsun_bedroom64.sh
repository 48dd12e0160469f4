#!/usr/bin/env bash
# LSUN bedroom 64x64: DATA_ROOT/lsun_bedroom64-train.npy and lsun_bedroom64-test.npy (the
# official val set, 300 images), uint8 NHWC. Each image: the centred square of side
# min(height, width), resized to 64x64 (antialiased bilinear).
# Source: the official LMDB exports http://dl.yf.io/lsun/scenes/bedroom_{train,val}_lmdb.zip
# (see https://github.com/fyu/lsun; reading them needs `pip install lmdb`, the extra
# progcode[lsun]), or give two folders of images instead (TRAIN_SRC VAL_SRC).
# MAX_IMAGES=N (environment) converts only the first N training images (3,033,042 in all,
# about 37 GB at 64x64).
set -euo pipefail
if [ $# -ne 1 ] && [ $# -ne 3 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT [TRAIN_SRC VAL_SRC]   (sources: LMDB folders or image folders)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
mkdir -p "$ROOT"
if [ $# -eq 3 ]; then
    TRAIN=$2
    VAL=$3
else
    for split in train val; do
        if [ ! -d "$ROOT/bedroom_${split}_lmdb" ]; then
            fetch "http://dl.yf.io/lsun/scenes/bedroom_${split}_lmdb.zip" "$ROOT/bedroom_${split}_lmdb.zip"
            command -v unzip >/dev/null 2>&1 || die "unzip is needed to extract bedroom_${split}_lmdb.zip"
            unzip -q "$ROOT/bedroom_${split}_lmdb.zip" -d "$ROOT"
        fi
    done
    TRAIN=$ROOT/bedroom_train_lmdb
    VAL=$ROOT/bedroom_val_lmdb
fi
MAX=()
if [ -n "${MAX_IMAGES:-}" ]; then
    MAX=(--max_images "$MAX_IMAGES")
fi
"$PY" -m vdvae.prepare_data lsun_bedroom64 --train "$TRAIN" --val "$VAL" --out "$ROOT" ${MAX[@]+"${MAX[@]}"}
"$PY" -m vdvae.prepare_data check lsun_bedroom64 --data_root "$ROOT"
