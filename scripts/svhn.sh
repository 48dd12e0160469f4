#!/usr/bin/env bash
# SVHN 32x32: per-GPU batch 12 (A.1), stage 1 and 2 at lambda 0.0032.
# Whole protocol (Tables 1-2, Figures 1-4) at paper scale; see scripts/paper_protocol.sh for the variables
# (--plan: what it will train, with memory and time estimates, training nothing).
#   DATA_ROOT=/data NGPU=8 scripts/svhn.sh            # torchrun on 8 GPUs (LAUNCHER=mpiexec for mpiexec)
# Expect weeks on one GPU: every stage is 800K steps (the probes 400K), as in the paper.
set -euo pipefail
exec "$(dirname "$0")/paper_protocol.sh" svhn "$@"
