#!/usr/bin/env bash
# The main job: the paper's whole protocol at toy scale on 16x16 MNIST digits (CPU, offline):
#   Tables 1-2 (Table 2 across the lambda family) and Figures 2 and 4, every claim judged by the
#   statistical rule of progcode_ext/experiments/verdicts.py, then DIR/report.md.
# Usage: scripts/demo.sh [--full | --quick] [--out DIR] [--jobs N]
#   default: one seed, 700 steps per model, lambda family 0.1024, 0.0512, 0.0128 (about 9
#            minutes on 2 cores)
#   --full:  three seeds for Tables 1 and 2, 1,200 steps per model (2,000 for the probe and the
#            gamma-optimal decoder), a five-point family, then the progressive codec
#            (progcode_ext/experiments/codec.py: DIR/codec/report.md)
#            (about 50 minutes on 2 cores)
#   --quick: a one-minute smoke test of the pipeline (proves nothing, and says so)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m progcode_ext.experiments.demo "$@"
