"""Likelihood and KL helpers against upstream's unit vectors, plus their mathematical properties."""
import math

import pytest
import torch

from conftest import assert_close
from vdvae.vae_helpers import (discretized_mix_logistic_loss, dmol_channels,
                               draw_gaussian_diag_samples, gaussian_analytical_kl,
                               mean_of_discretized_mix_logistic,
                               sample_from_discretized_mix_logistic, to_uint8)


@pytest.fixture(scope='module')
def unit(reference_dir):
    return torch.load(reference_dir / 'unit_vectors.pt', weights_only=True)


def test_kl_matches_upstream(unit):
    assert_close(gaussian_analytical_kl(*unit['kl_inputs']), unit['kl'])


def test_gaussian_sample_matches_upstream(unit):
    mu, _, logsigma, _ = unit['kl_inputs']
    torch.manual_seed(unit['gauss_sample_seed'])
    assert_close(draw_gaussian_diag_samples(mu, logsigma), unit['gauss_sample'])


@pytest.mark.parametrize('x,logits,low_bit,expected', [
    ('dmol_x8', 'dmol_logits', False, 'dmol_loss8'),
    ('dmol_x5', 'dmol_logits', True, 'dmol_loss5_lowbit'),
    ('dmol_x8', 'dmol_logits_sharp', False, 'dmol_loss8_sharp'),
])
def test_dmol_loss_matches_upstream(unit, x, logits, low_bit, expected):
    assert_close(discretized_mix_logistic_loss(unit[x], unit[logits], low_bit=low_bit), unit[expected])


def test_dmol_sample_matches_upstream(unit):
    torch.manual_seed(unit['dmol_sample_seed'])
    sample = sample_from_discretized_mix_logistic(unit['dmol_logits'], unit['dmol_nr_mix'])
    assert_close(sample, unit['dmol_sample'])


def test_kl_is_zero_for_equal_and_closed_form_otherwise():
    mu, ls = torch.randn(10), torch.randn(10)
    assert torch.allclose(gaussian_analytical_kl(mu, mu, ls, ls), torch.zeros(10), atol=1e-6)
    kl = gaussian_analytical_kl(torch.tensor([1.0]), torch.tensor([0.0]),
                                torch.tensor([math.log(2.0)]), torch.tensor([0.0]))
    assert kl.item() == pytest.approx(0.5 * (4 + 1 - 1 - math.log(4)), rel=1e-6)


def test_dmol_one_channel_probabilities_sum_to_one():
    """For one pixel, exp(-nll) summed over all 256 values is 1."""
    torch.manual_seed(0)
    l = torch.randn(1, 1, 1, dmol_channels(3, 1)) * 0.5
    v = (torch.arange(256.0) - 127.5) / 127.5
    nll = discretized_mix_logistic_loss(v.view(-1, 1, 1, 1), l.expand(256, 1, 1, -1))
    assert torch.exp(-nll.double()).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_dmol_rgb_factorises_into_autoregressive_one_channel_terms():
    """With one component, p(r,g,b) = p(r) p(g | r) p(b | r, g), each a one-channel logistic whose
    mean is shifted by the tanh colour coefficients times the true earlier colours."""
    torch.manual_seed(0)
    l = torch.randn(64, 1, 1, dmol_channels(1, 3)) * 0.5
    x = (torch.randint(0, 256, (64, 1, 1, 3)).float() - 127.5) / 127.5
    mean, log_scale, coeff = l[..., 1::3], l[..., 2::3], torch.tanh(l[..., 3::3])
    shifted = torch.stack([mean[..., 0], mean[..., 1] + coeff[..., 0] * x[..., 0],
                           mean[..., 2] + coeff[..., 1] * x[..., 0] + coeff[..., 2] * x[..., 1]], -1)
    joint = -3 * discretized_mix_logistic_loss(x, l)
    parts = sum(-discretized_mix_logistic_loss(
        x[..., c:c + 1], torch.stack([l[..., 0], shifted[..., c], log_scale[..., c]], -1))
        for c in range(3))
    assert_close(joint, parts, rtol=1e-5, atol=1e-5)


def test_dmol_one_channel_sample_and_uint8():
    torch.manual_seed(0)
    l = torch.randn(2, 4, 4, dmol_channels(2, 1))
    x = sample_from_discretized_mix_logistic(l, 2, image_channels=1)
    assert x.shape == (2, 4, 4, 1) and x.abs().max() <= 1
    u8 = to_uint8(torch.tensor([[-1.0, 0.0, 1.0, 0.999]]))
    assert u8.tolist() == [[0, 127, 255, 254]]


@pytest.mark.parametrize('channels', [1, 3])
def test_dmol_mean_is_the_mean_of_its_samples(channels):
    """Away from the edges (locations in [-0.2, 0.2], small scales) the clamping moves no mass,
    so the mean must match the average of many samples, colour coefficients included."""
    torch.manual_seed(0)
    m = 3
    l = torch.randn(2, 3, 3, dmol_channels(m, channels))
    rest = l[..., m:].reshape(2, 3, 3, channels, -1)
    rest[..., :m] = 0.2 * torch.tanh(rest[..., :m])              # locations
    rest[..., m:2 * m] = -4.0 + 0.2 * rest[..., m:2 * m]         # log-scales
    rest[..., 2 * m:] = 0.3 * rest[..., 2 * m:]                  # colour coefficients (RGB)
    l = torch.cat([l[..., :m], rest.flatten(-2)], dim=-1)
    mean = mean_of_discretized_mix_logistic(l, m, channels)
    n = 20000
    samples = sample_from_discretized_mix_logistic(l.repeat(n, 1, 1, 1), m, channels)
    samples = samples.reshape(n, *mean.shape)
    assert samples.abs().max() < 1                                # no clamping happened
    assert mean.shape == (2, 3, 3, channels)
    assert torch.allclose(samples.mean(0), mean, atol=0.01)
    assert not torch.allclose(samples[0], mean, atol=0.01)     # a sample is not the mean


def test_dmol_rejects_two_channels():
    with pytest.raises(ValueError, match='1 or 3 image channels'):
        dmol_channels(10, 2)
