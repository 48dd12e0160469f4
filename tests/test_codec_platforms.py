"""The codec's bytes and images across the CPU's code paths (issue 28): a file compressed here
with the default paths is compressed to the same bytes, and decompressed to the same pictures, in
fresh processes that take other instruction sets: torch's ATen kernels at AVX2 and at their
baseline (`ATEN_CPU_CAPABILITY`), numpy without its dispatched SIMD targets above its baseline
(`NPY_DISABLE_CPU_FEATURES`: AVX-512 and AVX2 where the CPU has them), MKL and oneDNN limited to
SSE4 (`MKL_ENABLE_INSTRUCTIONS`, `ONEDNN_MAX_CPU_ISA`), and 1 or 2 threads. The model is the small
trained two-stage chain of tests/golden, on random images (every pixel value, the mixture's
tails included), every latent channel coded."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, 'tests', 'golden', 'two_stage', 'conventional')

# In the child: compress the images, and decompress the parent's file; print the digests.
CHILD = r'''
import hashlib, json, sys
import numpy as np, torch
from numpy._core._multiarray_umath import __cpu_features__
from progcode_ext.codec.files import FileCodec
from progcode_ext.codec.model import load_model
run, path = sys.argv[1], sys.argv[2]
_, model = load_model(run)
codec = FileCodec(model, active_kl=0.0)
images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 1), dtype=np.uint8)
data, _ = codec.compress(images)
out = codec.decompress(open(path, 'rb').read())
digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
print(json.dumps(dict(bytes=hashlib.sha256(data).hexdigest(), images=digest(out['images']),
                      x_hat=digest(out['x_hats'][0]), threads=torch.get_num_threads(),
                      aten=torch.backends.cpu.get_cpu_capability(),
                      numpy_targets=sorted(k for k in ('X86_V3', 'X86_V4', 'AVX512_ICL',
                                                       'AVX512_SPR') if __cpu_features__.get(k)))))
'''


def dispatched_targets():
    """numpy's SIMD targets above its baseline that this CPU runs."""
    from numpy._core._multiarray_umath import __cpu_features__
    return [k for k in ('X86_V3', 'X86_V4', 'AVX512_ICL', 'AVX512_SPR') if __cpu_features__.get(k)]


VARIANTS = {
    'aten-avx2': {'ATEN_CPU_CAPABILITY': 'avx2'},
    'aten-baseline': {'ATEN_CPU_CAPABILITY': 'default'},
    'numpy-no-simd-targets': {'NPY_DISABLE_CPU_FEATURES': ' '.join(dispatched_targets())},
    'mkl-onednn-sse4': {'MKL_ENABLE_INSTRUCTIONS': 'SSE4_2', 'ONEDNN_MAX_CPU_ISA': 'SSE41'},
    'one-thread': {'OMP_NUM_THREADS': '1'},
    'two-threads': {'OMP_NUM_THREADS': '2'},
}


@pytest.mark.slow
def test_the_same_bytes_and_images_on_every_cpu_code_path(tmp_path):
    from progcode_ext.codec.files import FileCodec
    from progcode_ext.codec.model import load_model
    _, model = load_model(RUN)
    codec = FileCodec(model, active_kl=0.0)
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 1), dtype=np.uint8)
    data, info = codec.compress(images)
    path = tmp_path / 'file.pgc'
    path.write_bytes(data)
    ours = dict(bytes=hashlib.sha256(data).hexdigest(),
                images=hashlib.sha256(images.tobytes()).hexdigest(),
                x_hat=hashlib.sha256(np.ascontiguousarray(info['x_hats'][0]).tobytes())
                .hexdigest())
    seen = {}
    for name, env in VARIANTS.items():
        child = subprocess.run(
            [sys.executable, '-c', CHILD, RUN, str(path)], capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS='ignore', **env))
        assert child.returncode == 0, (name, child.stderr[-2000:])
        got = seen[name] = json.loads(child.stdout.strip().splitlines()[-1])
        for key in ('bytes', 'images', 'x_hat'):
            assert got[key] == ours[key], (name, key)
    # the variants took effect
    assert seen['aten-baseline']['aten'] == 'DEFAULT'
    assert seen['one-thread']['threads'] == 1
    assert seen['numpy-no-simd-targets']['numpy_targets'] == []


def test_the_same_bytes_and_images_on_the_test_device():
    """CPU -> DEVICE and DEVICE -> CPU (tests/conftest.py: PROGCODE_DEVICE; bench/gpu_check.sh
    sets cuda): the networks run in fixed point on either (fixed_point.py), so a file compressed
    on one decodes on the other, and both compress to the same bytes. Without a GPU this checks
    the device plumbing on the CPU."""
    from conftest import DEVICE
    from progcode_ext.codec.files import FileCodec
    from progcode_ext.codec.model import load_model
    _, model = load_model(RUN)
    images = np.random.default_rng(1).integers(0, 256, (5, 16, 16, 1), dtype=np.uint8)
    cpu, other = (FileCodec(model, active_kl=0.0, device=d) for d in ('cpu', DEVICE))
    data, info = cpu.compress(images)
    data_other, _ = other.compress(images)
    assert data_other == data
    for codec, file in ((other, data), (cpu, data_other)):
        out = codec.decompress(file)
        assert np.array_equal(out['images'], images)
        assert np.array_equal(out['x_hats'][0], info['x_hats'][0])
