import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('PROGCODE_SHARED', REPO.parent / 'shared'))
REFERENCE = SHARED / 'reference'

# Test tensors are tiny: one thread avoids OpenMP spin-waits when the cores are shared.
torch.set_num_threads(1)


@pytest.fixture(scope='session')
def reference_dir():
    """Upstream's recorded outputs. CI sets PROGCODE_REQUIRE_REFERENCE=1 so they can never be
    skipped silently there; a user's clone without ../shared skips these tests with a reason."""
    if not REFERENCE.is_dir():
        message = f'upstream reference outputs not found at {REFERENCE} (set PROGCODE_SHARED)'
        if os.environ.get('PROGCODE_REQUIRE_REFERENCE'):
            pytest.fail(message)
        pytest.skip(message)
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
    model.eval()
    ref = torch.load(folder / 'reference.pt', weights_only=True)
    return H, model, ref, summary


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual).double(), torch.as_tensor(expected).double(),
                               rtol=rtol, atol=atol)
