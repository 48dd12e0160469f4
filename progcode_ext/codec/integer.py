"""The coder's probability tables in integer arithmetic: the same integers on every machine.

What a range coder needs from the model, both sides must compute to the bit. Floating-point
`exp`, `tanh` and sums in whatever order a library's SIMD kernels choose can differ between
machines in the last bit, and a bit is enough to derail a decoder. So everything the coder does
with the model's outputs, integers of 2^-20 from the fixed-point head (fixed_point.py), is
integer arithmetic here, with lookup tables built from Python integers (`Tables`: one exact
decimal constant, e^(-1/1024), then integer multiplications and divisions, which every machine
computes alike):

* a pixel's probabilities under the discretized mixture of logistics (`pixel_counts`), channel
  by channel, the mixture reweighted by the channels already coded;
* a latent's probabilities under the prior's Gaussian, discretised to bins of `bin_width` prior
  stds (`gaussian_counts`).

Each is a table of counts, every count >= 1, summing to 2^COUNT_BITS, handed to constriction as
those exact numbers. The approximations (logits on a grid of 2^-10, log-scales and coefficients
interpolated between points 2^-10 apart, the logistic's argument on 2^-16, the logistic
interpolated between points 2^-8 apart) change
what a file costs by a small amount (docs/codec.md), never whether it decodes.
"""
import decimal
from functools import lru_cache

import numpy as np

COUNT_BITS = 24                      # each table sums to 2^24: constriction's default precision
PARAM_BITS = 20                      # the model's outputs arrive as integers of 2^-20
STEP_BITS = 10                       # tables every 2^-10 (logits rounded, the rest interpolated)
EXP_RANGE = 32                       # e^-x tabulated for x in [0, 32]
LOG_SCALE_RANGE = 7                  # log-scales clamped to [-7, 7] (the model's floor is -7)
COEFF_RANGE = 8                      # tanh tabulated on [-8, 8]
T_BITS = 16                          # the logistic's argument t in units of 2^-16
SIGMOID_STEP_BITS = 8                # the logistic tabulated every 2^-8 of t
SIGMOID_RANGE = 16                   # ... on [-16, 16]; beyond it is 0 or 1
SIGMOID_BITS = 30                    # a component's CDF in units of 2^-30
WEIGHT_BITS = 24                     # a component's weight in units of at most 2^24
EDGE_SHIFT = 9                       # pixel offsets in 2^-12 pixels (2^-21 >> 9)
OFFSET_LIMIT = 1 << 22               # ... clamped to +-1024 pixels
SCALE_BITS = 34                      # 1 / (127.5 sigma) in units of 2^-34
_ONE = 1 << 96                       # the tables' working precision


class Tables:
    """e^(-i/1024) for i = 0 .. 32 * 1024 as integers of 2^-96, and from them the coder's tables;
    all Python integers until the end, so every machine builds the same."""

    def __init__(self):
        with decimal.localcontext() as ctx:
            ctx.prec = 60
            ratio = int((decimal.Decimal(-1) / (1 << STEP_BITS)).exp() * _ONE)
        n = EXP_RANGE << STEP_BITS
        powers = [_ONE]
        for _ in range(n):
            powers.append(powers[-1] * ratio // _ONE)
        self.powers = powers

    def exp_neg(self, i):
        """e^(-i/1024) in units of 2^-96, for an integer i in [-32768, 32768]."""
        return self.powers[i] if i >= 0 else _ONE * _ONE // self.powers[-i]

    @property
    def weight(self):
        """e^(-i/1024) * 2^24 for i = 0 .. 32768 (a mixture weight from a logit difference)."""
        return np.array([p >> (96 - WEIGHT_BITS) for p in self.powers], dtype=np.int64)

    @property
    def inverse_scale(self):
        """e^(-L) / 127.5 * 2^34 for L = i/1024, i = -7168 .. 7168 (index i + 7168)."""
        r = LOG_SCALE_RANGE << STEP_BITS
        return np.array([(self.exp_neg(i) << (SCALE_BITS + 1)) // (255 * _ONE)
                         for i in range(-r, r + 1)], dtype=np.int64)

    @property
    def tanh(self):
        """tanh(c) * 2^20 for c = i/1024, i = -8192 .. 8192 (index i + 8192)."""
        r = COEFF_RANGE << STEP_BITS
        out = []
        for i in range(-r, r + 1):
            e = self.exp_neg(2 * abs(i))
            value = ((_ONE - e) << PARAM_BITS) // (_ONE + e)
            out.append(value if i >= 0 else -value)
        return np.array(out, dtype=np.int64)

    @property
    def sigmoid(self):
        """1 / (1 + e^-t) * 2^30 for t = j/256 - 16, j = 0 .. 8192, and one more entry (the
        interpolation's right end)."""
        n = SIGMOID_RANGE << (SIGMOID_STEP_BITS + 1)
        out = []
        for j in range(n + 2):
            x = (min(j, n) - (n >> 1)) << (STEP_BITS - SIGMOID_STEP_BITS)      # t in 2^-10
            out.append((_ONE << SIGMOID_BITS) // (_ONE + self.exp_neg(x)))
        return np.array(out, dtype=np.int64)


@lru_cache(maxsize=1)
def tables():
    """(weight, inverse_scale, tanh, sigmoid) as int64 arrays, built once."""
    t = Tables()
    return t.weight, t.inverse_scale, t.tanh, t.sigmoid


def on_step(params):
    """Integers of 2^-20 to the tables' grid of 2^-10 (rounding half up: an integer operation)."""
    return (params + (1 << (PARAM_BITS - STEP_BITS - 1))) >> (PARAM_BITS - STEP_BITS)


def interpolate(table, x, limit):
    """table(x) for x integers of 2^-20, clipped to [-limit, limit], from `table` sampled every
    2^-10 from -limit, interpolated linearly (the coefficients of G and B move a mean by up to
    127.5 pixels, so a step of 2^-10 alone would move it by up to 0.06 pixels; interpolated, by
    about 1e-5)."""
    step = PARAM_BITS - STEP_BITS
    u = np.clip(x, -limit << PARAM_BITS, limit << PARAM_BITS) + (limit << PARAM_BITS)
    i, frac = u >> step, u & ((1 << step) - 1)
    low = table[i]
    high = table[np.minimum(i + 1, len(table) - 1)]
    return low + (((high - low) * frac) >> step)


def to_counts(mass):
    """(P, V) non-negative int64 masses -> counts >= 1 summing to 2^24 per row, the remainder on
    each row's first largest count."""
    total = mass.sum(axis=1, keepdims=True)
    # shrink each row to below 2^32 in all, so that the scaling below stays within int64
    shift = np.maximum(0, _bit_length(total) - 32)
    mass = mass >> shift
    total = mass.sum(axis=1, keepdims=True)
    v = mass.shape[1]
    counts = 1 + mass * ((1 << COUNT_BITS) - v) // np.maximum(total, 1)
    rows = np.arange(len(counts))
    counts[rows, counts.argmax(axis=1)] += (1 << COUNT_BITS) - counts.sum(axis=1)
    return counts


def _bit_length(x):
    """Bits of each non-negative int64 (0 for 0), exactly."""
    out = np.zeros(x.shape, dtype=np.int64)
    x = x.copy()
    for bits in (32, 16, 8, 4, 2, 1):
        big = x >= (1 << bits)
        out[big] += bits
        x[big] >>= bits
    return out + (x > 0)


class PixelModel:
    """The mixture of logistics of a batch of pixels, from its parameters as integers of 2^-20:
    logits (P, M), means, log-scales (P, C, M), raw coefficients (P, 3, M) or None."""

    def __init__(self, logits, means, log_scales, coeffs):
        weight, inverse_scale, tanh, self.sigmoid = tables()
        top = logits.max(axis=1, keepdims=True)
        self.weights = weight[np.clip(on_step(top - logits), 0, len(weight) - 1)]
        self.inverse_scales = interpolate(inverse_scale, log_scales, LOG_SCALE_RANGE)
        # means in units of 2^-21 pixels: y in [-1, 1] is pixel (y + 1) * 127.5
        self.means = means * 255 + (255 << PARAM_BITS)
        self.coeffs = None if coeffs is None else interpolate(tanh, coeffs, COEFF_RANGE)
        # the upper edge of bin v, v = 0 .. 254, in 2^-21 pixels: v + 0.5
        self.edges = (2 * np.arange(255, dtype=np.int64) + 1) << (PARAM_BITS - EDGE_SHIFT)

    def counts(self, channel, previous):
        """Counts (P, 256) of `channel`'s value given the earlier channels' values `previous`
        (P, channel), the mixture weights reweighted by them; and each component's (P, M, 256)
        masses, which `update` needs."""
        mu = self.means[:, channel]
        if channel > 0:       # G's mean moves with R, B's with R and G: coefficient * (v - 127.5)
            mu = mu + self.coeffs[:, 0 if channel == 1 else 1] * (2 * previous[:, :1] - 255)
        if channel == 2:
            mu = mu + self.coeffs[:, 2] * (2 * previous[:, 1:2] - 255)
        offsets = np.clip((self.edges[None, None, :] - (mu[..., None] >> EDGE_SHIFT)),
                          -OFFSET_LIMIT, OFFSET_LIMIT)
        t = (offsets * self.inverse_scales[:, channel][..., None]) >> (SCALE_BITS - T_BITS + 12)
        cdf = self.logistic(t)                                             # (P, M, 255)
        full = 1 << SIGMOID_BITS
        masses = np.diff(cdf, prepend=0, append=full, axis=-1)             # (P, M, 256)
        mixed = (self.weights[..., None] * masses).sum(axis=1)
        return to_counts(mixed), masses

    def logistic(self, t):
        """1 / (1 + e^-t) * 2^30 of t in units of 2^-16 (`logistic_lookup`)."""
        span = SIGMOID_RANGE << T_BITS
        return logistic_lookup()[np.clip(t, -span, span) + span]

    def update(self, masses, values):
        """Reweigh the mixture by each component's mass of the values just coded (P,). A mass
        below the tables' resolution (2^-30) counts as 2^-30, so that a value improbable under
        every component keeps the weights it had instead of zeroing them all."""
        w = self.weights * np.maximum(masses[np.arange(len(values)), :, values], 1)   # < 2^54
        shift = np.maximum(0, _bit_length(w.max(axis=1, keepdims=True)) - WEIGHT_BITS)
        self.weights = w >> shift


@lru_cache(maxsize=1)
def logistic_lookup():
    """1 / (1 + e^-t) * 2^30 for every t in [-16, 16] in units of 2^-16: the table of `tables`
    (every 2^-8) interpolated linearly, in int64 (2^21 + 1 entries, built once; one lookup per
    value is several times faster than interpolating each time)."""
    sigmoid = tables()[3]
    step = T_BITS - SIGMOID_STEP_BITS
    u = np.arange((2 * SIGMOID_RANGE << T_BITS) + 1, dtype=np.int64)
    i, frac = u >> step, u & ((1 << step) - 1)
    low, high = sigmoid[i], sigmoid[i + 1]
    return low + (((high - low) * frac) >> step)


@lru_cache(maxsize=8)
def gaussian_counts(bin_width, symbol_range):
    """Counts (2 * symbol_range + 1,) of the offsets k = -range .. range of a latent from its
    prior mean, in bins of `bin_width` prior stds: N(0, 1) at the bin's centre, k * bin_width
    (the density times the bin; integer tables, like the pixels')."""
    weight = tables()[0]
    k = np.arange(-symbol_range, symbol_range + 1, dtype=np.float64)
    # x^2 / 2 in 2^-10, by IEEE multiplications and one rounding: the same on every machine
    exponent = np.rint(k * float(bin_width) * (k * float(bin_width)) * (1 << (STEP_BITS - 1)))
    index = np.minimum(exponent, len(weight) - 1).astype(np.int64)
    return to_counts(weight[index][None, :])[0]
