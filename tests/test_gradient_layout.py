"""vdvae.distributed.match_gradient_layout: after it, every gradient has its parameter's strides
(hence DDP's bucket views'), nothing computed changes, and DDP stops warning about grad strides."""
import json
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from vdvae.distributed import match_gradient_layout
from vdvae.hps import get_hparams
from vdvae.vae import VAE

FORMATS = {'nchw': torch.contiguous_format, 'channels_last': torch.channels_last}
STRIDE_WARNING = 'Grad strides do not match bucket view strides'


def tiny_hparams(n_batch):
    # n_batch matters: on the CPU it picks the convolution kernels (mkldnn from 16 images on one
    # thread), and they lay out the weight gradients differently
    return get_hparams('mnist5k', width=16, zdim=4, n_batch=n_batch,
                       dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1',
                       enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1')


def tiny_vae(n_batch=4, memory_format=torch.contiguous_format):
    torch.manual_seed(0)
    H = tiny_hparams(n_batch)
    return H, VAE(H).to(memory_format=memory_format)


def batch(H):
    x = torch.rand((H.n_batch, H.image_size, H.image_size, H.image_channels),
                   generator=torch.Generator().manual_seed(1))
    return x, x * 2 - 1


def train_step(model, H, seed=2):
    """Stats and gradients of one seeded forward/backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    stats = model(*batch(H))
    stats['elbo'].backward()
    return ({k: v.detach() for k, v in stats.items()},
            {name: p.grad for name, p in model.named_parameters()})


def stride_mismatches(model):
    return [name for name, p in model.named_parameters() if p.grad.stride() != p.stride()]


@pytest.mark.parametrize('n_batch', [4, 16])
@pytest.mark.parametrize('layout', FORMATS)
def test_gradients_get_their_parameters_strides(layout, n_batch):
    H, vae = tiny_vae(n_batch, FORMATS[layout])
    train_step(vae, H)
    before = stride_mismatches(vae)
    assert before, 'nothing to fix: the test no longer covers a mismatch'
    changed = match_gradient_layout(vae)
    assert set(before) <= set(changed)
    train_step(vae, H)
    assert stride_mismatches(vae) == []


def test_nothing_computed_changes():
    H, plain = tiny_vae(16)
    _, matched = tiny_vae(16)
    rng = torch.get_rng_state()
    # the parameter DDP names in its warning: the DMoL head's 1x1 conv, its output read as NHWC
    assert 'decoder.out_net.out_conv.weight' in match_gradient_layout(matched)
    assert torch.equal(torch.get_rng_state(), rng), 'the probe must not use up random draws'
    a, b = plain.state_dict(), matched.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    (stats_a, grads_a), (stats_b, grads_b) = train_step(plain, H), train_step(matched, H)
    for key in stats_a:
        assert torch.equal(stats_a[key], stats_b[key]), key
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_without_inputs_or_hparams_it_warns_and_changes_nothing():
    model = torch.nn.Conv2d(3, 4, 1)
    stride = model.weight.stride()
    with pytest.warns(UserWarning, match='no inputs'):
        assert match_gradient_layout(model) == []
    assert model.weight.stride() == stride


def _stride_warnings(H, match):
    """DDP (gloo, gradients as bucket views) trains a tiny VAE two steps; how many stride warnings
    came up."""
    _, vae = tiny_vae(H.n_batch)
    if match:
        match_gradient_layout(vae)
    model = DistributedDataParallel(vae, gradient_as_bucket_view=True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            train_step(model, H)
            optimizer.step()
    return sum(STRIDE_WARNING in str(w.message) for w in caught)


def _ddp_worker(rank, tmp_path):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=rank,
                            world_size=2)
    H = tiny_hparams(16)
    # matched first: the warning is issued once per process, so the control must come second
    counts = dict(matched=_stride_warnings(H, True), plain=_stride_warnings(H, False))
    (tmp_path / f'rank{rank}.json').write_text(json.dumps(counts))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_does_not_warn_about_grad_strides(tmp_path):
    mp.spawn(_ddp_worker, args=(tmp_path,), nprocs=2)
    for rank in range(2):
        counts = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert counts['plain'] > 0, 'the control run should warn: are warnings still captured?'
        assert counts['matched'] == 0
