#!/usr/bin/env bash
# CIFAR-10, python version (upstream's format): DATA_ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}.
# Source: https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (a copy already in DATA_ROOT is used).
set -euo pipefail
if [ $# -ne 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    echo "usage: $0 DATA_ROOT   (download CIFAR-10 into DATA_ROOT/cifar-10-batches-py)" >&2
    exit 2
fi
. "$(dirname "$0")/setup_common.sh"
ROOT=$1
mkdir -p "$ROOT"
if [ ! -d "$ROOT/cifar-10-batches-py" ]; then
    fetch https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz "$ROOT/cifar-10-python.tar.gz"
    tar -xzf "$ROOT/cifar-10-python.tar.gz" -C "$ROOT" cifar-10-batches-py
fi
"$PY" -m vdvae.prepare_data check cifar10 --data_root "$ROOT"
