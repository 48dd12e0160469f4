import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Upstream VDVAE's recorded outputs, part of the repository (tests/reference/README.md says what
# each file is; tests/reference/regenerate.py remakes them from an upstream checkout).
REFERENCE = REPO / 'tests' / 'reference'

# Test tensors are tiny: one thread avoids OpenMP spin-waits when the cores are shared.
torch.set_num_threads(1)

# PROGCODE_DEVICE=cuda puts the `tiny8` fixture's model and inputs, hence the tests of
# tests/test_parity_tiny8.py, on the GPU (bench/gpu_check.sh does); the default is the CPU.
DEVICE = torch.device(os.environ.get('PROGCODE_DEVICE', 'cpu'))
if DEVICE.type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = False          # full float32, as the references
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True


@pytest.fixture(autouse=True)
def _random_draws_on_cpu(monkeypatch):
    """On CUDA, take the model's random draws from the CPU generator (computed on the CPU, then
    moved), so that seeded draws are upstream's recorded ones; everything else runs on the GPU."""
    if DEVICE.type != 'cuda':
        return
    from vdvae import vae, vae_helpers

    def on_cpu(fn):
        def wrapped(*args, **kwargs):
            device = next(a.device for a in args if isinstance(a, torch.Tensor))
            out = fn(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
            return out.to(device)
        return wrapped
    monkeypatch.setattr(vae, 'draw_gaussian_diag_samples',
                        on_cpu(vae_helpers.draw_gaussian_diag_samples))
    monkeypatch.setattr(vae_helpers, 'sample_from_discretized_mix_logistic',
                        on_cpu(vae_helpers.sample_from_discretized_mix_logistic))


@pytest.fixture(scope='module')
def one_blas_thread():
    """One BLAS thread for a module's tests, as above for torch: scipy's sqrtm with OpenBLAS
    spin-waits and runs up to 100x slower on shared cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api='blas'):
        yield


@pytest.fixture(scope='session')
def reference_dir():
    """The folder of upstream's recorded outputs (tests/reference)."""
    return REFERENCE


@pytest.fixture(scope='session')
def tiny8(reference_dir):
    """(H, model with the perturbed reference weights, reference.pt dict, summary.json dict)."""
    from vdvae import VAE, Hyperparams
    folder = reference_dir / 'upstream_tiny8'
    summary = json.loads((folder / 'summary.json').read_text())
    H = Hyperparams(summary['tiny8']['hparams'])
    model = VAE(H)
    model.load_state_dict(torch.load(folder / 'model.th', weights_only=True))
    model.to(DEVICE).eval()
    ref = torch.load(folder / 'reference.pt', weights_only=True)
    if DEVICE.type != 'cpu':        # the model's inputs; expected values stay on the CPU
        for key in ('inp', 'target'):
            ref[key] = ref[key].to(DEVICE)
        ref['latents_from_forward_get_latents'] = [
            z.to(DEVICE) for z in ref['latents_from_forward_get_latents']]
    return H, model, ref, summary


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    def as_cpu_double(t):
        return torch.as_tensor(t).detach().cpu().double()
    torch.testing.assert_close(as_cpu_double(actual), as_cpu_double(expected), rtol=rtol, atol=atol)


def write_cifar(root, n_per_batch=12, n_test=7, numpy_core=False):
    """cifar-10-batches-py as the official archive has it (random pixels); returns the arrays."""
    root = Path(root)
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    arrays = []
    for i, name in enumerate([f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']):
        n = n_test if name == 'test_batch' else n_per_batch
        x = np.random.RandomState(i).randint(0, 256, (n, 3072)).astype(np.uint8)
        blob = pickle.dumps({b'batch_label': b'x', b'labels': list(range(n)), b'data': x,
                             b'filenames': [b'f.png'] * n}, protocol=2)
        if numpy_core:   # as the real files (pickled by Python 2 with NumPy 1) name the module
            blob = blob.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
        (folder / name).write_bytes(blob)
        arrays.append(x)
    return arrays
