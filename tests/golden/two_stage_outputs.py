"""What tests/golden/ records of a two-stage model and how (shared by the recorder and the test)."""
import os

import numpy as np
import torch

from vdvae.checkpoint import restore_params
from vdvae.hps import get_hparams
from vdvae.models import build_model

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'two_stage')
TINY = dict(width=8, zdim=2, num_mixtures=2, enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1')
TINY_FLAGS = [a for k, v in TINY.items() for a in (f'--{k}', str(v))]
RUN = {'progressive': 'stage2', 'conventional': 'conventional'}


def two_stage_hparams(training):
    if training == 'progressive':
        return get_hparams('mnist16_stage2', stage1_path=os.path.join(OUT, 'stage1'), **TINY)
    return get_hparams('mnist16_conventional', **TINY)


def batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 16, 16, 1), generator=g).float()
    return (x - 127.5) / 64, (x - 127.5) / 127.5


def tensors(value):
    """NumPy arrays as tensors, so that the file loads with weights_only=True."""
    if isinstance(value, dict):
        return {k: tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tensors(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def outputs(H, training):
    """The model of the run RUN[training], loaded from its checkpoint as `vdvae sample` does, and
    what it computes under fixed seeds."""
    model = build_model(H)
    restore_params(model, os.path.join(OUT, RUN[training], 'latest-model-ema.th'))
    x, y = batch()
    model.train()
    torch.manual_seed(3)
    stats = model(x, y)
    model.zero_grad()
    stats['loss'].backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    model.eval()
    torch.manual_seed(4)
    out = dict(stats=stats, grads=grads, recon=model.reconstruct(x),
               latents=[s['z'] for s in model.forward_get_latents(x)])
    torch.manual_seed(5)
    out['sample'] = model.sample(2, t=0.9)
    torch.manual_seed(6)
    out['sample_t1'] = model.sample(2, t=1.0)
    torch.manual_seed(7)
    out['grid'] = model.sample_grid(torch.zeros(2, 16, 16, 1, dtype=torch.uint8), x[:2], H)
    torch.manual_seed(8)
    out['fixed_latents'] = model.sample(2, t=0.5, latents=[z[:2] for z in out['latents'][:3]])
    return tensors(out)
