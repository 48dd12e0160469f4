"""Model contracts beyond tiny8: one channel, custom widths, no learned biases, 5-bit, training."""
import copy

import numpy as np
import pytest
import torch

from vdvae import VAE, get_hparams
from vdvae.train_helpers import build_optimizer, training_step, update_ema


def small(**overrides):
    base = dict(width=16, zdim=2, enc_blocks='8x1,8d2,4x1,4d4,1x1', dec_blocks='1x1,4m1,4x1,8m4',
                image_size=8, num_mixtures=2)
    base.update(overrides)
    return get_hparams('cifar10', **base)


def batch(H, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, H.image_size, H.image_size, H.image_channels), generator=g).float()
    return (x - 127.5) / 64.0, (x - 127.5) / 127.5


def test_elbo_is_distortion_plus_rate_and_posterior_dict():
    H = small()
    model = VAE(H)
    x, y = batch(H)
    stats = model(x, y)
    assert stats['elbo'].item() == pytest.approx(stats['distortion'].item() + stats['rate'].item(),
                                                 rel=1e-6)
    latents = model.forward_get_latents(x)
    assert [tuple(b['z'].shape) for b in latents] == [(3, 2, 1, 1), (3, 2, 4, 4), (3, 2, 4, 4),
                                                     (3, 2, 8, 8)]


def test_one_channel_images():
    H = small(image_channels=1)
    model = VAE(H)
    assert model.encoder.in_conv.in_channels == 1
    assert model.decoder.out_net.out_conv.out_channels == 3 * H.num_mixtures
    x, y = batch(H)
    assert torch.isfinite(model(x, y)['elbo'])
    samples = model.forward_uncond_samples(2, t=0.5)
    assert samples.shape == (2, 8, 8, 1) and samples.dtype == np.uint8


def test_three_channels_keep_upstream_head_size():
    assert VAE(small()).decoder.out_net.out_conv.out_channels == 10 * 2


def test_custom_widths_pad_encoder_channels_and_truncate_mixins():
    H = small(custom_width_str='4:24,1:32')
    model = VAE(H)
    x, _ = batch(H)
    acts = model.encoder(x)
    assert {r: a.shape[1] for r, a in acts.items()} == {8: 16, 4: 24, 1: 32}
    assert model.decoder.forward_uncond(2).shape == (2, 16, 8, 8)


def test_blocks_at_two_pixels_or_less_use_1x1_convs():
    model = VAE(small())
    assert model.encoder.enc_blocks[-1].c2.kernel_size == (1, 1)
    assert model.decoder.dec_blocks[0].resnet.c2.kernel_size == (1, 1)
    assert model.decoder.dec_blocks[1].resnet.c2.kernel_size == (3, 3)


def test_no_bias_above_limits_learned_initial_states():
    model = VAE(small(no_bias_above=4))
    assert [b.shape[2] for b in model.decoder.bias_xs] == [1, 4]
    model = VAE(small(no_bias_above=0))             # upstream cannot sample from this one
    assert len(model.decoder.bias_xs) == 0
    assert model.forward_uncond_samples(2).shape == (2, 8, 8, 3)
    x, y = batch(model.H)
    assert torch.isfinite(model(x, y)['elbo'])


def test_five_bit_likelihood_is_used_for_ffhq256():
    H8, H5 = small(), small(dataset='ffhq_256', image_size=8)
    m8, m5 = VAE(H8), VAE(H5)
    m5.load_state_dict(m8.state_dict())
    x, y = batch(H8)
    px_z = m8.decoder.forward_uncond(3)
    assert not torch.allclose(m8.decoder.out_net.nll(px_z, y), m5.decoder.out_net.nll(px_z, y))


def test_training_step_learns_and_skips_bad_steps():
    torch.manual_seed(0)
    H = small(lr=1e-3, warmup_iters=0, grad_clip=1e9, skip_threshold=-1)
    model, ema = VAE(H), VAE(H)
    ema.load_state_dict(model.state_dict())
    optimizer, _ = build_optimizer(H, model)
    x, y = batch(H, n=8)
    first = training_step(H, x, y, model, ema, optimizer)
    for _ in range(15):
        last = training_step(H, x, y, model, ema, optimizer)
    assert last['elbo'] < first['elbo'] and last['skipped_updates'] == 0
    assert not torch.equal(ema.decoder.gain, model.decoder.gain)

    before = copy.deepcopy(model.state_dict()), copy.deepcopy(ema.state_dict())
    nan = training_step(H, x, y * float('nan'), model, ema, optimizer)
    assert nan['skipped_updates'] == 1 and nan['distortion_nans'] == 1
    H.skip_threshold = 1e-12
    big = training_step(H, x, y, model, ema, optimizer)
    assert big['skipped_updates'] == 1 and big['grad_norm'] > 0
    for state, module in zip(before, (model, ema)):
        for key, value in module.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_update_ema_equals_upstream_formula():
    H = small()
    a, b = VAE(H), VAE(H)
    expected = {k: v * 0.9 + a.state_dict()[k] * (1 - 0.9) for k, v in b.state_dict().items()}
    update_ema(a, b, 0.9)
    for key, value in b.state_dict().items():
        assert torch.equal(value, expected[key]), key
