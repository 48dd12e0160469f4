"""Building blocks of VDVAE: conv helpers, Gaussian KL and sampling, the discretized mixture of
logistics (DMoL) likelihood, its sampler and the `DmolNet` head.

All tensors given to the DMoL functions are NHWC; targets live in [-1, 1]. The arithmetic follows
upstream VDVAE operation by operation so that results agree to float rounding. Plain functions
(no `torch.jit.script`, which is deprecated).
"""
import math
from contextlib import contextmanager

import numpy as np

import torch
from torch import nn
from torch.nn import functional as F

from .errors import ConfigError

# ------------------------------------------------------------------------------------------------
# Convolutions

def get_conv(in_dim, out_dim, kernel_size, stride, padding, zero_bias=True, zero_weights=False):
    """A Conv2d with PyTorch's default init, bias zeroed (upstream's convention) and optionally
    zero weights. The default init runs anyway, so random draws match upstream's order."""
    conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding)
    if zero_bias:
        conv.bias.data *= 0.0
    if zero_weights:
        conv.weight.data *= 0.0
    return conv


def get_3x3(in_dim, out_dim, zero_bias=True, zero_weights=False):
    return get_conv(in_dim, out_dim, 3, 1, 1, zero_bias, zero_weights)


def get_1x1(in_dim, out_dim, zero_bias=True, zero_weights=False):
    return get_conv(in_dim, out_dim, 1, 1, 0, zero_bias, zero_weights)


def full_precision(t):
    """`t` as float32 if it is a 16-bit float (as convolutions return under autocast), else `t`
    itself (float32 and float64 pass through untouched)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def pad_channels(t, width):
    """Zero-pad the channel axis of an NCHW tensor up to `width`."""
    return F.pad(t, (0, 0, 0, 0, 0, width - t.shape[1]))


# ------------------------------------------------------------------------------------------------
# Diagonal Gaussians (parameterised by mean and log standard deviation)

def gaussian_analytical_kl(mu1, mu2, logsigma1, logsigma2):
    """KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) elementwise, in nats; q first, p second."""
    return -0.5 + logsigma2 - logsigma1 + 0.5 * (logsigma1.exp() ** 2 + (mu1 - mu2) ** 2) / (
        logsigma2.exp() ** 2)


def rate_per_block(block_stats, ndims):
    """Each latent layer's KL for each example, per data dimension: (B, n_blocks), nats/dim."""
    return torch.stack([s['kl'].sum(dim=(1, 2, 3)) for s in block_stats], dim=1) / ndims


def rate_per_example(block_stats, ndims):
    """The KL of all the latent layers in `block_stats` (per-block dicts with a 'kl' map
    (B, zdim, r, r)) for each example, per data dimension: (B,), nats/dim."""
    return sum(s['kl'].sum(dim=(1, 2, 3)) for s in block_stats) / ndims


# Where the posterior's and prior's eps come from: None, torch's global generator (upstream's
# draws); or a function `like -> eps` set by `noise_from` (an ensemble: each member its own).
_noise_source = None


@contextmanager
def noise_from(source):
    """Within the block, `standard_normal(like)` returns `source(like)`."""
    global _noise_source
    before, _noise_source = _noise_source, source
    try:
        yield
    finally:
        _noise_source = before


def standard_normal(like, generator=None):
    """A fresh N(0, 1) tensor of `like`'s shape, dtype and device, NCHW-contiguous (not
    empty_like, which copies a channels-last layout: normal_ fills memory in order, so this keeps
    the seeded draws the same for a channels-last model)."""
    if _noise_source is not None and generator is None:
        return _noise_source(like)
    return torch.empty(like.shape, dtype=like.dtype, device=like.device).normal_(
        0.0, 1.0, generator=generator)


def draw_gaussian_diag_samples(mu, logsigma):
    return torch.exp(logsigma) * standard_normal(mu) + mu


# ------------------------------------------------------------------------------------------------
# Discretized mixture of logistics

def dmol_channels(num_mixtures, image_channels):
    """Channels of the DMoL parameter tensor: logits, then per colour means, log-scales and (for
    RGB) the autoregressive colour coefficients."""
    return num_mixtures * (1 + image_channels * _per_colour(image_channels))


def _per_colour(image_channels):
    if image_channels == 3:
        return 3        # means, log-scales, coefficients
    if image_channels == 1:
        return 2        # means, log-scales
    raise ConfigError(f'the mixture-of-logistics head supports 1 or 3 image channels, not '
                      f'{image_channels}')


def _split_dmol_params(l, num_mixtures, image_channels):
    """NHWC params -> logits (B,H,W,M), means, log-scales (B,H,W,C,M), coeffs or None."""
    m = num_mixtures
    logits = l[..., :m]
    rest = l[..., m:].reshape(*l.shape[:-1], image_channels, _per_colour(image_channels) * m)
    means, log_scales = rest[..., :m], rest[..., m:2 * m]
    coeffs = torch.tanh(rest[..., 2 * m:3 * m]) if image_channels == 3 else None
    return logits, means, log_scales, coeffs


def _log_sum_exp(x):
    """Numerically stable log-sum-exp over the last axis (as upstream writes it)."""
    m, _ = torch.max(x, dim=-1)
    m2, _ = torch.max(x, dim=-1, keepdim=True)
    return m + torch.log(torch.sum(torch.exp(x - m2), dim=-1))


def _log_prob_from_logits(x):
    m, _ = torch.max(x, dim=-1, keepdim=True)
    return x - m - torch.log(torch.sum(torch.exp(x - m), dim=-1, keepdim=True))


def discretized_mix_logistic_loss(x, l, low_bit=False):
    """Negative log-likelihood per dimension, shape (B,), of NHWC targets `x` in [-1, 1] under the
    NHWC DMoL parameters `l`; 8-bit bins (half-width 1/255) or 5-bit (1/31) when `low_bit`."""
    channels = x.shape[-1]
    m = l.shape[-1] // (1 + channels * _per_colour(channels))
    logits, means, log_scales, coeffs = _split_dmol_params(l, m, channels)
    log_scales = torch.clamp(log_scales, min=-7.0)
    x = x.unsqueeze(-1) + torch.zeros(*x.shape, m, device=x.device, dtype=x.dtype)
    if channels == 3:
        # Colour autoregression of the means on the true values of earlier colours.
        m2 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
        m3 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
        means = torch.cat([means[..., 0:1, :], m2.unsqueeze(-2), m3.unsqueeze(-2)], dim=-2)
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    half_bin, log_bins = (1.0 / 31.0, math.log(15.5)) if low_bit else (1.0 / 255.0, math.log(127.5))
    plus_in = inv_stdv * (centered_x + half_bin)
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - half_bin)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)          # log prob of the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)           # log prob of the highest bin
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    # Interior bins use the CDF difference, falling back to the density when it underflows.
    log_probs = torch.where(
        x < -0.999, log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min,
                    torch.where(cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)),
                                log_pdf_mid - log_bins)))
    log_probs = torch.sum(log_probs, dim=-2) + _log_prob_from_logits(logits)
    mixture_probs = _log_sum_exp(log_probs)
    return -1.0 * mixture_probs.sum(dim=[1, 2]) / np.prod(x.shape[1:-1])


def sample_from_discretized_mix_logistic(l, num_mixtures, image_channels=3):
    """One NHWC sample in [-1, 1] (not rounded to the bins). Draws, in upstream's order: a uniform
    (B,H,W,M) for the Gumbel-max component choice, then a uniform (B,H,W,C) for the logistic."""
    logits, means, log_scales, coeffs = _split_dmol_params(l, num_mixtures, image_channels)
    eps = torch.empty(logits.shape, device=l.device, dtype=l.dtype).uniform_(1e-5, 1.0 - 1e-5)
    amax = torch.argmax(logits - torch.log(-torch.log(eps)), dim=-1)
    sel = F.one_hot(amax, num_classes=num_mixtures).to(l.dtype).unsqueeze(-2)   # (B,H,W,1,M)
    means = torch.sum(means * sel, dim=-1)
    log_scales = torch.clamp(torch.sum(log_scales * sel, dim=-1), min=-7.0)
    u = torch.empty(means.shape, device=l.device, dtype=l.dtype).uniform_(1e-5, 1.0 - 1e-5)
    x = means + torch.exp(log_scales) * (torch.log(u) - torch.log(1.0 - u))
    if image_channels == 1:
        return torch.clamp(x, -1.0, 1.0)
    coeffs = torch.sum(coeffs * sel, dim=-1)
    x0 = torch.clamp(x[..., 0], -1.0, 1.0)
    x1 = torch.clamp(x[..., 1] + coeffs[..., 0] * x0, -1.0, 1.0)
    x2 = torch.clamp(x[..., 2] + coeffs[..., 1] * x0 + coeffs[..., 2] * x1, -1.0, 1.0)
    return torch.stack([x0, x1, x2], dim=-1)


def mean_of_discretized_mix_logistic(l, num_mixtures, image_channels=3):
    """The mixture's mean, NHWC on [-1, 1]: the MSE-optimal reconstruction under the model. Each
    component's mean is its logistics' locations, with (RGB) the colour coefficients applied to
    the means of the channels before; the mass that the edge bins' clamping moves is ignored, and
    the result is clamped to [-1, 1]. Not upstream's: upstream only samples the mixture."""
    logits, means, _, coeffs = _split_dmol_params(l, num_mixtures, image_channels)
    if image_channels == 3:
        m0 = means[..., 0, :]
        m1 = means[..., 1, :] + coeffs[..., 0, :] * m0
        m2 = means[..., 2, :] + coeffs[..., 1, :] * m0 + coeffs[..., 2, :] * m1
        means = torch.stack([m0, m1, m2], dim=-2)
    weights = torch.softmax(logits, dim=-1).unsqueeze(-2)              # (B,H,W,1,M)
    return torch.clamp(torch.sum(means * weights, dim=-1), -1.0, 1.0)


def to_uint8(x):
    """[-1, 1] NHWC tensor -> NumPy uint8 NHWC, truncating like upstream (not rounding)."""
    xhat = (x + 1.0) * 127.5
    return np.minimum(np.maximum(0.0, xhat.detach().float().cpu().numpy()), 255.0).astype(np.uint8)


def uses_low_bit(H):
    """Upstream trains ffhq_256 with 5-bit targets (32 bins); everything else is 8-bit."""
    return H.dataset == 'ffhq_256'


class DmolNet(nn.Module):
    """Mixture-of-logistics head: a 1x1 conv from the decoder's width to the DMoL parameters."""

    def __init__(self, H):
        super().__init__()
        self.H = H
        self.width = H.width
        self.out_conv = get_1x1(H.width, dmol_channels(H.num_mixtures, H.image_channels))

    def forward(self, px_z):
        """(B, width, H, W) -> NHWC DMoL parameters."""
        return self.out_conv(px_z).permute(0, 2, 3, 1)

    def nll(self, px_z, x):
        """Negative log-likelihood of NHWC targets `x`, nats per dimension, shape (B,); in float32
        also under bf16/fp16 autocast."""
        return discretized_mix_logistic_loss(x, full_precision(self.forward(px_z)),
                                             low_bit=uses_low_bit(self.H))

    def sample(self, px_z):
        """A NumPy uint8 NHWC sample of p(x | px_z)."""
        return to_uint8(self.reconstruction(px_z))

    def mean(self, px_z):
        """The mean of p(x | px_z), NHWC on [-1, 1] (see `mean_of_discretized_mix_logistic`)."""
        return mean_of_discretized_mix_logistic(self.forward(px_z), self.H.num_mixtures,
                                                self.H.image_channels)

    def reconstruction(self, px_z):
        """A sample of p(x | px_z), NHWC on [-1, 1], before `to_uint8` (same draws as `sample`)."""
        return sample_from_discretized_mix_logistic(self.forward(px_z), self.H.num_mixtures,
                                                    self.H.image_channels)
