#!/usr/bin/env bash
# SVHN, cropped digits (format 2), the official MATLAB files: DATA_ROOT/{train,test}_32x32.mat.
# Source: http://ufldl.stanford.edu/housenumbers/ (the extra_32x32.mat set is not used).
set -euo pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT   (download SVHN's train_32x32.mat and test_32x32.mat)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
mkdir -p "$ROOT"
for split in train test; do
    fetch "http://ufldl.stanford.edu/housenumbers/${split}_32x32.mat" "$ROOT/${split}_32x32.mat"
done
"$PY" -m vdvae.prepare_data check svhn --data_root "$ROOT"
