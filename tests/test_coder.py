"""The progressive codec's core (progcode_ext/codec/coder.py): lossless and prefix-exact on real
chains and a VDVAE, bits as the model counts them, pixels coded under the model's own mixture."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from golden.two_stage_outputs import OUT, two_stage_hparams
from progcode_ext.codec.coder import ProgressiveCodec
from progcode_ext.codec.fixed_point import to_fixed, to_float
from vdvae.checkpoint import restore_params
from vdvae.errors import ConfigError
from vdvae.hps import get_hparams
from vdvae.models import build_model
from vdvae.vae_helpers import discretized_mix_logistic_loss

TINY = dict(width=8, zdim=2, num_mixtures=2, enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1')


def images(n=12, seed=0):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 16, 16, 1), dtype=np.uint8)


def perturbed(model, seed=1, scale=0.3):
    """Away from init, so that posteriors differ from priors and every latent is coded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope='module')
def chain():
    model = build_model(two_stage_hparams('conventional'))
    restore_params(model, f'{OUT}/conventional/latest-model-ema.th')
    return perturbed(model)


@pytest.mark.parametrize('batch', [5, 100])
def test_lossless_and_every_prefix_gives_the_encoders_x_hat(chain, batch):
    codec = ProgressiveCodec(chain)
    codec.batch = batch
    x = images()
    chunks, info = codec.encode(x)
    assert len(chunks) == codec.n_chunks == 2 and all(len(c) > 0 for c in chunks)
    whole = codec.decode(chunks, len(x))
    assert np.array_equal(whole['images'], x)
    assert np.array_equal(whole['x_hats'][0], info['x_hats'][0])
    prefix = codec.decode(chunks[:1], len(x))
    assert prefix['images'] is None and np.array_equal(prefix['x_hats'][0], info['x_hats'][0])
    # the file costs what the model says, up to 1% and the range coder's last words per chunk
    for chunk, bits in zip(chunks, info['ideal_bits']):
        assert abs(8 * len(chunk) - bits) <= 0.01 * bits + 64
    assert info['latent_bits'][0] > 8 and info['pixel_bits'] > 0


def test_the_encoder_draws_nothing_at_random(chain):
    """Which channels are coded follows from the closed-loop pass's own KLs: the same images give
    the same bytes whatever the global random state (the mask once came from a posterior pass
    that sampled its latents)."""
    x = images()
    codec = ProgressiveCodec(chain)
    torch.manual_seed(0)
    first, _ = codec.encode(x)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    assert codec.encode(x)[0] == first
    assert torch.equal(torch.get_rng_state(), state)          # not one draw


def test_another_model_cannot_decode_it(chain):
    x = images()
    chunks, _ = ProgressiveCodec(chain).encode(x)
    other = perturbed(build_model(two_stage_hparams('conventional')), seed=7)
    try:
        out = ProgressiveCodec(other).decode(chunks, len(x))
    except Exception:                      # a range decoder may also run out of words
        return
    assert not np.array_equal(out['images'], x)


def test_a_vdvae_is_one_lossless_chunk():
    model = perturbed(build_model(get_hparams('mnist16', **TINY)))
    codec = ProgressiveCodec(model)
    x = images(7)
    chunks, info = codec.encode(x)
    out = codec.decode(chunks, len(x))
    assert len(chunks) == 1 and out['x_hats'] == [] and np.array_equal(out['images'], x)


def test_wider_bins_and_a_higher_threshold_code_fewer_latent_bits(chain):
    x = images()
    bits = {(b, kl): ProgressiveCodec(chain, bin_width=b, active_kl=kl).encode(x)[1]
            ['latent_bits'][0] for b in (0.5, 2.0) for kl in (0.0, 1e9)}
    assert bits[2.0, 0.0] < bits[0.5, 0.0]
    # with no channel active only the mask is sent: one bit per channel per block
    n_blocks = len(chain.stage1.decoder.dec_blocks)
    assert bits[0.5, 1e9] == bits[2.0, 1e9] == n_blocks * chain.stage1.decoder.dec_blocks[0].zdim


def test_bad_arguments(chain):
    with pytest.raises(ConfigError, match='bin width'):
        ProgressiveCodec(chain, bin_width=0)
    with pytest.raises(ConfigError, match=r'shape \(16, 16, 1\)'):
        ProgressiveCodec(chain).encode(np.zeros((2, 8, 8, 1), dtype=np.uint8))
    stage1 = build_model(get_hparams('mnist16_stage1', **TINY))
    with pytest.raises(ConfigError, match='chain'):
        ProgressiveCodec(stage1)


@pytest.mark.parametrize('channels', [1, 3])
def test_pixel_bits_are_the_mixtures_own_likelihood(chain, channels):
    """R under its marginal, G and B under the mixture reweighted by the channels before: their
    product is the model's joint probability, so the bits equal its -log2 p (upstream's loss,
    which falls back to the density only where a bin's mass underflows)."""
    m, n = 3, 4
    codec = ProgressiveCodec(chain)
    codec.H = SimpleNamespace(image_channels=channels, num_mixtures=m)
    codec.mixtures, codec.image_shape = m, (5, 5, channels)
    g = torch.Generator().manual_seed(channels)
    per = 1 + channels * (3 if channels == 3 else 2)
    params = torch.randn(n, 5, 5, m * per, generator=g, dtype=torch.float64)
    params[..., m:] *= 0.5                              # scales between e^-1.5 and e^1.5
    params = to_float(to_fixed(params))                 # what a fixed-point head hands on
    codec.fixed = [SimpleNamespace(head_of=lambda px_z: to_fixed(params))]
    x = torch.randint(0, 256, (n, 5, 5, channels), generator=g).to(torch.uint8).numpy()
    import constriction
    coder = constriction.stream.queue.RangeEncoder()
    bits = codec.code_pixels(0, None, coder, x)
    target = (torch.from_numpy(x).double() - 127.5) / 127.5
    nats = discretized_mix_logistic_loss(target, params).sum().item() * 25 * channels
    # to the integer tables' approximation (parameters on a grid of 2^-10, the logistic
    # interpolated; progcode_ext/codec/integer.py): 4e-6 here
    assert bits == pytest.approx(nats / math.log(2), rel=1e-4)
    decoder = constriction.stream.queue.RangeDecoder(coder.get_compressed())
    assert np.array_equal(codec.code_pixels(0, None, decoder, None, n), x)


def test_a_file_made_with_another_bin_width_decodes_with_it(chain):
    from progcode_ext.codec.files import FileCodec
    x = images()
    data, _ = FileCodec(chain, bin_width=0.7, active_kl=0.0).compress(x)
    out = FileCodec(chain).decompress(data)
    assert out['header']['bin_width'] == 0.7 and np.array_equal(out['images'], x)
