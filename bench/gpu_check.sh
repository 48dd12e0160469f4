#!/usr/bin/env bash
# The GPU checks in one go, from the repository root of a machine with a CUDA GPU and a CUDA build
# of torch:   bash bench/gpu_check.sh        (results under $OUT, default ./out)
#   1. the tiny8 parity tests against upstream's recorded outputs, on the GPU (PROGCODE_DEVICE=cuda:
#      TF32 off, the model's random draws taken from the CPU generator; see tests/conftest.py), against
#      upstream's recorded outputs in tests/reference;
#   2. bench/bench.py, cifar10 preset, batch 16, on the GPU: fp32 (TF32 off), tf32, bf16, fp16;
#   3. torch.compile against eager, fp32 and bf16;
#   4. ensembles (vdvae/ensemble.py) against separate processes on the one GPU: the toy's VDVAE and
#      stage 2, K = 1, 2, 4, 8, and the cifar10 VDVAE at batch 16, K = 1, 2, 4;
#   5. the codec across devices (tests/test_codec_platforms.py with PROGCODE_DEVICE=cuda): a file
#      compressed on the CPU decodes on the GPU and back, and both compress to the same bytes;
#   6. bench/memory.py's estimate of a paper-scale step's memory against the GPU's real peak
#      (svhn, every kind of run, at the paper's batch, fp32 and bf16).
# Then copy the printed figures, with the GPU's name from $OUT/gpu.json, into BENCHMARKS.md.
# Exits non-zero if the parity or codec tests failed (after running the benchmarks anyway).
set -euo pipefail

export OUT="${OUT:-./out}"
PYTHON="${PYTHON:-python}"
STEPS="${STEPS:-20}"
RUNS="${RUNS:-3}"
mkdir -p "$OUT"

"$PYTHON" - <<'EOF'
import json, os, sys
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available())
if not torch.cuda.is_available():
    sys.exit('no CUDA device: bench/gpu_check.sh is for a GPU machine')
info = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda)
print(info)
with open(os.path.join(os.environ['OUT'], 'gpu.json'), 'w') as f:
    json.dump(info, f)
EOF

# The project and pytest, unless already importable (torch itself is taken as installed).
if ! "$PYTHON" -c 'import vdvae, pytest' 2>/dev/null; then
    "$PYTHON" -m pip install -e '.[test]'
fi

# 1. Parity on CUDA. The float64 finite-difference test builds its own CPU model and feeds it the
#    fixture's (here CUDA) inputs, so it stays with the CPU run.
parity=0
PROGCODE_DEVICE=cuda "$PYTHON" -m pytest -q \
    tests/test_parity_tiny8.py -k 'not finite_differences' 2>&1 | tee "$OUT/parity_cuda.txt" \
    || parity=$?

# 5 first (seconds; a failure must not wait for the benchmarks): the codec, CPU <-> GPU.
PROGCODE_DEVICE=cuda "$PYTHON" -m pytest -q tests/test_codec_platforms.py \
    tests/test_codec_fixed_point.py -k device 2>&1 \
    | tee "$OUT/codec_cuda.txt" || parity=$?

# 2. Benchmarks: each run a fresh process, baseline and ours interleaved.
for amp in fp32 tf32 bf16 fp16; do
    "$PYTHON" bench/bench.py --device cuda --hps cifar10 --n_batch 16 --amp "$amp" \
        --steps "$STEPS" --runs "$RUNS" --json "$OUT/bench_cuda_cifar10_b16_${amp}.json" \
        2>&1 | tee "$OUT/bench_cuda_cifar10_b16_${amp}.txt"
done

# 3. torch.compile (train.py --compile) against ours, fp32 and bf16; compilation is in the warm-up.
for amp in fp32 bf16; do
    "$PYTHON" bench/bench.py --device cuda --hps cifar10 --n_batch 16 --amp "$amp" --warmup 3 \
        --configs ours,ours-compile --steps "$STEPS" --runs 2 \
        --json "$OUT/bench_cuda_cifar10_b16_${amp}_compile.json" \
        2>&1 | tee "$OUT/bench_cuda_cifar10_b16_${amp}_compile.txt"
done

# 4. Ensembles: model-steps per second, K models as one batched step or K processes sharing the GPU.
"$PYTHON" bench/bench_ensemble.py --device cuda --kinds vdvae,stage2 --ks 1,2,4,8 --runs 2 \
    --json "$OUT/bench_ensemble_cuda_mnist16.json" 2>&1 | tee "$OUT/bench_ensemble_cuda_mnist16.txt"
"$PYTHON" bench/bench_ensemble.py --device cuda --hps cifar10 --n_batch 16 --kinds vdvae \
    --ks 1,2,4 --runs 2 --json "$OUT/bench_ensemble_cuda_cifar10.json" \
    2>&1 | tee "$OUT/bench_ensemble_cuda_cifar10.txt"

# 6. Memory of a paper-scale step: estimate against the real peak.
"$PYTHON" bench/memory.py --presets svhn --device cuda --measure fp32,bf16 \
    --json "$OUT/memory_cuda_svhn.json" 2>&1 | tee "$OUT/memory_cuda_svhn.txt"

if [ "$parity" -ne 0 ]; then
    echo "parity or codec tests on CUDA FAILED (see $OUT/parity_cuda.txt, $OUT/codec_cuda.txt)"
else
    echo "parity and codec tests on CUDA passed"
fi
echo "results in $OUT"
exit "$parity"
