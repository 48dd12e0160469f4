#!/usr/bin/env bash
# Downsampled ImageNet (van den Oord et al. 2016), 32x32 or 64x64 PNGs, as upstream uses it:
# DATA_ROOT/imagenet{32,64}-train.npy and imagenet{32,64}-valid.npy (uint8 NHWC).
# Source: upstream's URLs http://image-net.org/small/{train,valid}_{32x32,64x64}.tar, which
# image-net.org no longer serves openly; obtain the tars from image-net.org (account needed) and
# put them in DATA_ROOT: tars (or their extracted folders train_SxS/, valid_SxS/) there are used.
set -euo pipefail
if [ $# -ne 2 ] || { [ "$1" != 32 ] && [ "$1" != 64 ]; }; then
    echo "usage: $0 32|64 DATA_ROOT   (download/convert downsampled ImageNet)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
S=$1
ROOT=$2
mkdir -p "$ROOT"
for split in train valid; do
    if [ ! -d "$ROOT/${split}_${S}x${S}" ]; then
        fetch "http://image-net.org/small/${split}_${S}x${S}.tar" "$ROOT/${split}_${S}x${S}.tar" \
            || die "could not download ${split}_${S}x${S}.tar; put it in $ROOT and rerun"
        tar -xf "$ROOT/${split}_${S}x${S}.tar" -C "$ROOT"
    fi
done
"$PY" -m vdvae.prepare_data imagenet --size "$S" --train "$ROOT/train_${S}x${S}" \
    --valid "$ROOT/valid_${S}x${S}" --out "$ROOT"
"$PY" -m vdvae.prepare_data check "imagenet$S" --data_root "$ROOT"
