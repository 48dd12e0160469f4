#!/usr/bin/env bash
# The main job: the paper's whole protocol at toy scale on 16x16 MNIST digits (CPU, offline):
#   Tables 1-2 and Figures 2 and 4, every model checked for convergence, then DIR/report.md.
# Usage: scripts/demo.sh [--full | --quick] [--out DIR] [--jobs N]
#   default: one seed, 700 steps per model (about 8 minutes on 2 cores)
#   --full:  three seeds for Tables 1 and 2, 1,500 steps per model (about 45 minutes on 2 cores)
#   --quick: a one-minute smoke test of the pipeline (proves nothing, and says so)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m progcode_ext.experiments.demo "$@"
