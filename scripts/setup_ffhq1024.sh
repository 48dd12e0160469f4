#!/usr/bin/env bash
# FFHQ at 1024x1024 as image folders: DATA_ROOT/ffhq1024/train/ (00000-64999) and
# DATA_ROOT/ffhq1024/valid/ (65000-69999), where vdvae.data reads them (upstream's script and
# loader disagreed on this path). Source: https://github.com/NVlabs/ffhq-dataset
# (`python download_ffhq.py --images` gives images1024x1024/, hosted on Google Drive).
# HOW: symlink (default; leaves the source untouched), copy or move.
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT FFHQ_IMAGES_DIR [symlink|copy|move]" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
SRC=$2
HOW=${3:-symlink}
[ -d "$SRC" ] || die "$SRC is not a folder; download FFHQ's images1024x1024 first (see $0)"
mkdir -p "$ROOT"
"$PY" -m vdvae.prepare_data ffhq1024 --src "$SRC" --out "$ROOT" --link "$HOW"
"$PY" -m vdvae.prepare_data check ffhq_1024 --data_root "$ROOT"
