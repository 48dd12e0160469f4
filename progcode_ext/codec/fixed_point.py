"""The decoder side of a trained stage in fixed-point arithmetic: the same integers on every
machine, whatever its kernels (integer networks, Balle et al. 2019, applied after training).

Everything the decoder computes before the entropy coder (the conditioning encoder over
x_hat_{k-1}, each block's prior mean, log-std and state update, the latent projection, the
resnets, the head) determines the probabilities a range decoder uses, so encoder and decoder must
compute it to the bit. A float network does not guarantee that across CPUs, libraries and GPUs:
another summation order changes the last bits. Here every activation is an integer of 2^-ACT_BITS,
held in a float64 tensor, and every operation keeps it an integer exactly:

* a convolution multiplies integer activations, clamped to +-2^LIMIT_BITS, by integer weights
  (the float weights times a power of two, rounded) and adds an integer bias. Every product and
  every partial sum is an integer below 2^52 (`FixedConv` sizes each layer's weight precision so
  that even the worst case fits), so float64 adds them exactly, in any order, with or without
  FMA: a BLAS, a GPU or a single thread all give the same sum. The sum is then rounded back to
  2^-ACT_BITS by a power-of-two division and a floor, both exact;
* GELU is a table of exact integers (`gelu_table`: the normal CDF from its Taylor series in Python
  integers), interpolated linearly in integer arithmetic; exp, for the latents' bins, likewise
  (`bin_widths`, from integer.py's tables);
* additions, nearest upsampling, padding, concatenation and average pooling over 2^k pixels are
  exact on integers.

The float network and this one differ by the rounding (about 2^-16 per activation): the encoder
runs this one too (closed loop), so a file decodes exactly; the difference costs a little
compression (docs/codec.md measures it). The encoder's posterior, which only the encoder needs,
stays float.
"""
import decimal
import math
from functools import lru_cache

import torch
from torch.nn import functional as F

from vdvae.vae import Block, Encoder
from vdvae.vae_helpers import pad_channels

from .integer import STEP_BITS, Tables

ACT_BITS = 16            # activations are integers of 2^-16
LIMIT_BITS = 12          # ... clamped to +-2^12 where they enter a convolution
MAX_WEIGHT_BITS = 15     # a weight is an integer of at most 2^15 in magnitude (less for wide layers)
GELU_STEP_BITS = 8       # GELU tabulated every 2^-8 ...
GELU_RANGE = 8           # ... on [-8, 8]; below -8 it is 0, above 8 the identity (to 2^-16)
LOG_STD_RANGE = 12       # the latents' bins: prior log-stds clamped to [-12, 12]
ONE = float(1 << ACT_BITS)
LIMIT = float(1 << (ACT_BITS + LIMIT_BITS))

# pi to 60 digits: the one constant the GELU table starts from (its integers follow exactly)
PI = '3.14159265358979323846264338327950288419716939937510582097494'


def to_fixed(x):
    """A float tensor as integers of 2^-ACT_BITS (float64 holding integers), rounding to nearest."""
    return torch.round(x.double() * ONE)


def to_float(x):
    """Integers of 2^-ACT_BITS as the values they stand for (exact)."""
    return x * (1.0 / ONE)


def shift_round(acc, bits):
    """acc / 2^bits rounded half up, exactly: a power-of-two division and a floor."""
    if bits <= 0:
        return acc * float(2 ** -bits)
    return torch.floor((acc + float(2 ** (bits - 1))) * float(2.0 ** -bits))


# ------------------------------------------------------------------------------------------------
# Convolutions

def integer_matmul(a, b):
    """a @ b of float64 tensors holding integers whose products and partial sums stay below 2^53:
    exact, so every library's summation order gives the same result."""
    return a @ b


def quantize(weight, bias, fan_in):
    """(integer weights, integer bias, shift) of a float layer with `fan_in` inputs per output:
    weights round(w * 2^shift), at most 2^bits in magnitude, bits = min(MAX_WEIGHT_BITS, what
    keeps fan_in * 2^bits * 2^(ACT_BITS + LIMIT_BITS) at most 2^51), and the bias in integers of
    2^-(ACT_BITS + shift), at most 2^51 (the shift is lowered, giving the weights fewer bits,
    where the bias would not fit). So an accumulator of inputs clamped to +-2^LIMIT_BITS stays
    below 2^52 whatever they are, and its rounding (`shift_round`) below 2^53. All exact
    operations on the float weights (frexp of the largest magnitude, a power of two, rounding):
    every machine quantises alike."""
    w = weight.detach().double().cpu()
    bits = min(MAX_WEIGHT_BITS, 51 - ACT_BITS - LIMIT_BITS - math.ceil(math.log2(fan_in)))
    if bits < 4:
        raise ValueError(f'a layer with {fan_in} inputs per output is too wide for exact '
                         'fixed-point arithmetic in float64')
    b = bias.detach().double().cpu() if bias is not None else torch.zeros(w.shape[0],
                                                                             dtype=torch.float64)
    shift = bits - _exponent(w)                      # |w| < 2^exponent, so |w| 2^shift < 2^bits
    if b.abs().max() > 0:
        shift = min(shift, 51 - ACT_BITS - _exponent(b))
    return torch.round(w * 2.0 ** shift), torch.round(b * 2.0 ** (shift + ACT_BITS)), shift


def _exponent(t):
    """The e with max |t| < 2^e (frexp of the largest magnitude: exact); 0 for all zeros."""
    largest = float(t.abs().max())
    return math.frexp(largest)[1] if largest > 0 else 0


class FixedConv:
    """A trained nn.Conv2d (stride 1, 'same' padding) on integer activations (`quantize`)."""

    def __init__(self, conv):
        self.out_channels, self.in_channels, self.k, k2 = conv.weight.shape
        if (self.k != k2 or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1)
                or conv.groups != 1 or tuple(conv.padding) != (self.k // 2,) * 2):
            raise ValueError(f'the fixed-point codec takes square convolutions of stride 1 with '
                             f"'same' padding (vdvae's get_1x1, get_3x3), not {conv}")
        self.padding = self.k // 2
        self.weight, self.bias, self.shift = quantize(
            conv.weight, conv.bias, self.in_channels * self.k * self.k)
        # (out, in * k * k) for the matrix product over unfolded patches
        self.matrix = self.weight.reshape(self.out_channels, -1)

    def worst_case(self):
        """The largest accumulator any input can produce: below 2^52 by construction."""
        return float(self.matrix.abs().sum(dim=1).max()) * LIMIT + float(self.bias.abs().max())

    def to(self, device):
        self.weight, self.bias, self.matrix = (t.to(device) for t in
                                               (self.weight, self.bias, self.matrix))
        return self

    def __call__(self, x):
        """(B, C, H, W) integers of 2^-ACT_BITS -> (B, out, H, W), the same units."""
        b, _, h, w = x.shape
        x = torch.clamp(x, -LIMIT, LIMIT)
        if self.k == 1:
            patches = x.reshape(b, self.in_channels, h * w)
        else:      # the patches themselves: data movement only, the sums in integer_matmul
            patches = F.unfold(x, self.k, padding=self.padding)
        acc = integer_matmul(self.matrix, patches) + self.bias[:, None]
        return shift_round(acc, self.shift).reshape(b, self.out_channels, h, w)


# ------------------------------------------------------------------------------------------------
# GELU and the latents' bins

@lru_cache(maxsize=1)
def gelu_table():
    """GELU(j / 2^8) = t Phi(t) as integers of 2^-ACT_BITS for j = -2^11 .. 2^11, and one more
    entry (the interpolation's right end), from Python integers: Phi(t) = 1/2 + (2 pi)^-1/2 *
    sum_n (-1)^n t^(2n+1) / (2^n n! (2n+1)) at a working precision of 2^-320."""
    scale_bits = 320
    p = 1 << scale_bits
    with decimal.localcontext() as ctx:
        ctx.prec = 120
        pi = int(decimal.Decimal(PI) * p)
    inv_sqrt_2pi = math.isqrt(p * p * p // (2 * pi))                 # p / sqrt(2 pi)
    step = 1 << GELU_STEP_BITS
    n_half = GELU_RANGE * step

    def phi(j):                                      # Phi(j / 256) * p for j >= 0
        term, total, n, sign = j * p // step, 0, 0, 1                 # |term|, rounded down
        while term:
            total += sign * (term // (2 * n + 1))
            term = term * j * j // (step * step * 2 * (n + 1))
            n, sign = n + 1, -sign
        return p // 2 + total * inv_sqrt_2pi // p

    half = [phi(j) for j in range(n_half + 1)]
    values = []
    for j in range(-n_half, n_half + 2):
        j_in = min(j, n_half)
        cdf = half[j_in] if j_in >= 0 else p - half[-j_in]
        # j/256 * Phi * 2^16, rounded half up
        values.append((j_in * cdf * (1 << ACT_BITS) // step + p // 2) // p)
    return torch.tensor(values, dtype=torch.float64)


@lru_cache(maxsize=4)
def gelu_lookup(device='cpu'):
    """GELU of every integer of 2^-ACT_BITS in [-8, 8]: `gelu_table` interpolated linearly
    (rounding half up), in exact integer arithmetic; a float64 tensor of 2^20 + 1 integers on
    `device` (one copy per device)."""
    if str(device) != 'cpu':
        return gelu_lookup('cpu').to(device)
    table = gelu_table()
    frac_bits = ACT_BITS - GELU_STEP_BITS
    u = torch.arange(2 * GELU_RANGE << ACT_BITS | 1, dtype=torch.int64)
    i, frac = u >> frac_bits, u & ((1 << frac_bits) - 1)
    low, high = table.long()[i], table.long()[i + 1]
    return (low + (((high - low) * frac + (1 << (frac_bits - 1))) >> frac_bits)).double()


def fixed_gelu(x):
    """GELU of integers of 2^-ACT_BITS (`gelu_lookup`; below -8: 0, above 8: the identity)."""
    lookup = gelu_lookup(str(x.device))
    span = float(GELU_RANGE << ACT_BITS)
    inside = lookup[(torch.clamp(x, -span, span) + span).long()]
    return torch.where(x > span, x, inside)


@lru_cache(maxsize=4)
def exp_table(device='cpu'):
    """e^(i / 1024) as integers of 2^-24 for i = -12 * 1024 .. 12 * 1024, and one more entry."""
    if str(device) != 'cpu':
        return exp_table('cpu').to(device)
    t = Tables()
    n = LOG_STD_RANGE << STEP_BITS
    values = [(t.exp_neg(-i) + (1 << 71)) >> 72 for i in range(-n, n + 1)]
    return torch.tensor(values + values[-1:], dtype=torch.int64)


def bin_widths(log_std, bin_width):
    """bin_width * e^log_std, as integers of 2^-ACT_BITS (at least 1), of log-stds in integers of
    2^-ACT_BITS: in int64, exactly. `bin_width` is rounded to 2^-16 first (encoder and decoder
    alike)."""
    table = exp_table(str(log_std.device))
    n = LOG_STD_RANGE << STEP_BITS
    frac_bits = ACT_BITS - STEP_BITS
    u = torch.clamp(log_std.long(), -(n << frac_bits), (n << frac_bits) - 1) + (n << frac_bits)
    i, frac = u >> frac_bits, u & ((1 << frac_bits) - 1)
    low, high = table[i], table[i + 1]
    e = low + (((high - low) * frac) >> frac_bits)                  # e^log_std in 2^-24, < 2^42
    width = round(bin_width * 2 ** 16)                              # bin_width in 2^-16, < 2^20
    if not 1 <= width < 2 ** 20:
        raise ValueError(f'bin width {bin_width} outside [2^-16, 16)')
    out = (e * width + (1 << 23)) >> 24                              # 2^-40 -> 2^-16
    return torch.clamp(out, min=1).double()


# ------------------------------------------------------------------------------------------------
# The networks

class FixedBlock:
    """vdvae.vae.Block: 1x1 -> 3x3 -> 3x3 -> 1x1 with GELUs, optional residual and pooling."""

    def __init__(self, block: Block):
        self.convs = [FixedConv(c) for c in (block.c1, block.c2, block.c3, block.c4)]
        self.residual, self.down_rate = block.residual, block.down_rate
        if self.down_rate is not None and self.down_rate & (self.down_rate - 1):
            raise ValueError(f'average pooling over {self.down_rate}^2 pixels is not exact; the '
                             'fixed-point codec pools over powers of two')

    def to(self, device):
        for c in self.convs:
            c.to(device)
        return self

    def __call__(self, x):
        h = x
        for conv in self.convs:
            h = conv(fixed_gelu(h))
        out = x + h if self.residual else h
        if self.down_rate is not None:     # a sum of 2^2k integers, then an exact division
            r = self.down_rate
            out = shift_round(F.avg_pool2d(out, r, r, divisor_override=1),
                              2 * int(math.log2(r)))
        return out


class FixedEncoder:
    """vdvae.vae.Encoder over NHWC integers of 2^-ACT_BITS: {resolution: activation}."""

    def __init__(self, encoder: Encoder):
        self.in_conv = FixedConv(encoder.in_conv)
        self.blocks = [FixedBlock(b) for b in encoder.enc_blocks]
        self.widths = encoder.widths

    def to(self, device):
        self.in_conv.to(device)
        for b in self.blocks:
            b.to(device)
        return self

    def __call__(self, x):
        x = self.in_conv(x.permute(0, 3, 1, 2).contiguous())
        activations = {x.shape[2]: x}
        for block in self.blocks:
            x = block(x)
            res = x.shape[2]
            if x.shape[1] != self.widths[res]:
                x = pad_channels(x, self.widths[res])
            activations[res] = x
        return activations


class FixedDecBlock:
    """The decoder side of vdvae.vae.DecBlock (and its conditional form): state, prior, update."""

    def __init__(self, block):
        self.block = block                 # the float block: its posterior `enc` is the encoder's
        self.base, self.mixin, self.zdim = block.base, block.mixin, block.zdim
        self.width = block.resnet.c1.in_channels
        self.prior = FixedBlock(block.prior)
        self.z_proj = FixedConv(block.z_proj)
        self.resnet = FixedBlock(block.resnet)

    def to(self, device):
        for part in (self.prior, self.z_proj, self.resnet):
            part.to(device)
        return self

    def state(self, xs, n, like):
        x = xs[self.base] if self.base in xs else torch.zeros_like(like)
        if x.shape[0] != n:
            x = x.repeat(n, 1, 1, 1)
        if self.mixin is not None:
            x = x + F.interpolate(xs[self.mixin][:, :x.shape[1], ...],
                                  scale_factor=self.base // self.mixin)
        return x

    def prior_of(self, x, cond=None):
        """(prior mean, prior log-std, the updated state), integers of 2^-ACT_BITS."""
        feats = self.prior(x if cond is None else torch.cat([x, cond[self.base]], dim=1))
        pm, pv, xpp = feats.split([self.zdim, self.zdim, feats.shape[1] - 2 * self.zdim], dim=1)
        return pm, pv, x + xpp

    def update(self, xs, x, z):
        xs[self.base] = self.resnet(x + self.z_proj(z))
        return xs


class FixedStage:
    """One stage's decoder side: `cond_encoder` (a stage after the first), the blocks, the final
    affine map and the head (mean head: x_hat; mixture of logistics: its parameters), all in
    integers of 2^-ACT_BITS. `stage` is a float stage (VAE, Stage1VAE, ConditionalVAE)."""

    def __init__(self, stage):
        dec = stage.decoder
        self.image_size = stage.H.image_size
        self.cond_encoder = FixedEncoder(stage.cond_encoder) if hasattr(stage, 'cond_encoder') \
            else None
        self.blocks = [FixedDecBlock(b) for b in dec.dec_blocks]
        self.bias_xs = {b.shape[2]: to_fixed(b.detach()) for b in dec.bias_xs}
        self.first = dec.resolutions[0], dec.widths[dec.resolutions[0]]
        self.device = torch.device('cpu')
        # final_fn, x * gain + bias: one input per output channel
        self.gain, self.bias, self.gain_shift = quantize(dec.gain.reshape(-1), dec.bias.reshape(-1),
                                                         1)
        self.head = FixedConv(dec.out_net.out_conv)

    def to(self, device):
        for part in ([self.cond_encoder] if self.cond_encoder else []) + self.blocks + [self.head]:
            part.to(device)
        self.gain, self.bias = self.gain.to(device), self.bias.to(device)
        self.bias_xs = {k: v.to(device) for k, v in self.bias_xs.items()}
        self.device = device
        return self

    def initial_states(self, n):
        xs = {res: b.repeat(n, 1, 1, 1) for res, b in self.bias_xs.items()}
        if not xs:                         # as vdvae's decoder: zeros at the first resolution
            res, width = self.first
            xs[res] = torch.zeros((n, width, res, res), dtype=torch.float64, device=self.device)
        return xs

    def final(self, x):
        """final_fn: the decoder's last state times `gain` plus `bias`, channel by channel."""
        acc = torch.clamp(x, -LIMIT, LIMIT) * self.gain[:, None, None] + self.bias[:, None, None]
        return shift_round(acc, self.gain_shift)

    def head_of(self, px_z):
        """The head's 1x1 convolution, NHWC: x_hat (a mean head) or the mixture's parameters."""
        return self.head(px_z).permute(0, 2, 3, 1)
