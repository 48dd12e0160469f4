#!/usr/bin/env bash
# FFHQ at 256x256 as one array: DATA_ROOT/ffhq-256.npy (70000 images, uint8 NHWC, file order).
# Upstream downloaded a pre-made ffhq-256.npy; here it is made from the official FFHQ images
# (https://github.com/NVlabs/ffhq-dataset: `python download_ffhq.py --images` gives
# images1024x1024/, hosted on Google Drive), resized 1024 -> 256 (antialiased bilinear).
set -euo pipefail
if [ $# -ne 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT FFHQ_IMAGES_DIR   (FFHQ_IMAGES_DIR: the official images1024x1024)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
SRC=$2
[ -d "$SRC" ] || die "$SRC is not a folder; download FFHQ's images1024x1024 first (see $0)"
mkdir -p "$ROOT"
"$PY" -m vdvae.prepare_data ffhq256 --src "$SRC" --out "$ROOT"
"$PY" -m vdvae.prepare_data check ffhq_256 --data_root "$ROOT"
