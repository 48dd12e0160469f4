#!/usr/bin/env bash
# The main job: the paper's whole protocol at toy scale on mnist5k (CPU, offline):
#   table1, rd_curve, lpips_vs_mse, table2, then DEMO_OUT/report.md.
# Usage: scripts/demo.sh [--quick] [--out DIR]      (--quick: about 1 minute on 2 cores; else about 7)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m progcode_ext.experiments.demo "$@"
