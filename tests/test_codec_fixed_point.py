"""The decoder's networks in fixed point (progcode_ext/codec/fixed_point.py): the GELU table is the
correctly rounded function, every layer's accumulator fits float64's exact integers, so any
summation order gives the same bits, the layers and a trained chain's whole top-down pass track
the float network to their rounding, and the latents' bins are bin_width * e^log_std."""
import copy
import decimal
import math
import os

import numpy as np
import pytest
import torch
from conftest import DEVICE
from torch import nn
from torch.nn import functional as F

import vdvae.vae
from progcode_ext.codec import fixed_point
from progcode_ext.codec.coder import ProgressiveCodec, chain_stages
from progcode_ext.codec.fixed_point import (FixedConv, FixedStage, bin_widths, fixed_gelu,
                                            gelu_table, quantize, to_fixed, to_float)
from progcode_ext.codec.model import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = 2 ** 16                   # activations are integers of 2^-16
LIMIT = 2 ** 28                  # ... clamped to +-2^12 = +-2^28 units where they enter a conv


@pytest.fixture(scope='module')
def chain():
    _, model = load_model(os.path.join(REPO, 'tests', 'golden', 'two_stage', 'conventional'))
    return model


# ------------------------------------------------------------------------------------------------
# GELU

def exact_gelu_units(j):
    """GELU(j / 256) * 2^16 in decimal arithmetic (60 digits), by another route than gelu_table's:
    Phi(t) = (1 + erf(t / sqrt 2)) / 2 with erf(x) = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) /
    (1 * 3 * ... * (2n+1)) (terms of one sign), and pi from Machin's formula (not the module's
    digits)."""
    D = decimal.Decimal
    with decimal.localcontext(prec=60):
        def atan_inv(n):                               # atan(1/n)
            total, power, k = D(0), D(1) / n, 0
            while power > D(10) ** -70:
                total += (-1) ** k * power / (2 * k + 1)
                power, k = power / (n * n), k + 1
            return total
        pi = 4 * (4 * atan_inv(5) - atan_inv(239))
        t = D(j) / 256
        x = t / D(2).sqrt()
        term, total, n = x, D(0), 0
        while abs(term) > D(10) ** -70:
            total += term
            term, n = term * 2 * x * x / (2 * n + 3), n + 1
        erf = 2 / pi.sqrt() * (-x * x).exp() * total
        return t * (1 + erf) / 2 * UNIT


def test_gelu_table_is_correctly_rounded():
    """Each entry is GELU(j / 256) in 2^-16 rounded half up, against an independent decimal
    computation (every 23rd j of -2048 .. 2048, both ends, 0 and +-1); the extra entry past the
    end repeats GELU(8) (only ever interpolated with weight 0)."""
    table = gelu_table()
    assert table.dtype == torch.float64 and len(table) == 4098
    assert torch.equal(table, torch.round(table))
    js = sorted(set(range(-2048, 2049, 23)) | {-2048, -1, 0, 1, 2048})
    for j in js:
        exact = exact_gelu_units(j)
        assert abs(float(table[j + 2048]) - float(exact)) <= 0.5, j
        assert table[j + 2048] == math.floor(exact + decimal.Decimal('0.5')), j
    assert table[4097] == table[4096] == 8 * UNIT and table[0] == 0


def test_fixed_gelu_is_gelu_to_its_rounding():
    """Every integer of 2^-16 in [-9, 9]: within 1.1 units of float64 GELU (0.5 from the table's
    rounding, 0.5 from the interpolation's, and at most 2^-16 / 8 * max |GELU''| = 0.0998 from
    interpolating linearly between steps of 2^-8: measured 1.047, and 1.5 where the
    interpolation floors instead), exactly 0 below -8, the input itself above 8, and the table's
    own entry on its steps."""
    u = torch.arange(-9 * UNIT, 9 * UNIT + 1, dtype=torch.float64)
    out = fixed_gelu(u)
    assert torch.equal(out, torch.round(out))
    reference = F.gelu(u / UNIT) * UNIT
    assert (out - reference).abs().max() <= 1.1
    assert torch.all(out[u < -8 * UNIT] == 0)
    assert torch.equal(out[u > 8 * UNIT], u[u > 8 * UNIT])
    steps = torch.arange(-8 * UNIT, 8 * UNIT + 1, 256, dtype=torch.float64)
    assert torch.equal(fixed_gelu(steps), gelu_table()[:4097])
    # the same on any tensor shape
    grid = u[:6 * 7 * 5].reshape(6, 7, 5)
    assert torch.equal(fixed_gelu(grid), out[:6 * 7 * 5].reshape(6, 7, 5))


# ------------------------------------------------------------------------------------------------
# Quantisation: every accumulator below 2^53

def spread_conv(in_channels, out_channels, k, seed, scale=None):
    """A float64 conv whose weights span 1e-6 .. 1e3 (log-uniform, random signs), or all of one
    magnitude `scale`; biases of magnitude 1."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(in_channels, out_channels, k, padding=k // 2).double()
    with torch.no_grad():
        sign = torch.randn(conv.weight.shape, generator=g, dtype=torch.float64).sign()
        if scale is None:
            exponent = torch.rand(conv.weight.shape, generator=g, dtype=torch.float64) * 9 - 6
            conv.weight.copy_(sign * 10 ** exponent)
        else:
            conv.weight.copy_(sign * scale)
        conv.bias.copy_(torch.randn(out_channels, generator=g, dtype=torch.float64))
    return conv


@pytest.mark.parametrize('in_channels,k', [(1, 1), (8, 3), (96, 3), (4000, 1)])
def test_every_accumulator_fits_float64s_exact_integers(in_channels, k):
    """Fan-ins 1, 72, 864 and 4000, weights spread over nine decades or all of one magnitude
    (1e-6, 1, 1e3, and just under a power of two, where rounding reaches 2^bits): the worst case
    stays below 2^52; the weights are integers with the precision the budget allows, bits = the
    largest b <= 15 with fan_in * 2^b * 2^28 <= 2^51 (the largest uses b bits, not fewer: no
    precision wasted) unless the bias needs a smaller shift to stay within 2^51, and they are the
    float weights to half a step of 2^-shift."""
    fan_in = in_channels * k * k
    bits = max(b for b in range(16) if fan_in * 2 ** b * LIMIT <= 2 ** 51)
    for seed, scale in enumerate([None, None, 1e-6, 1.0, 1e3, 1 - 2 ** -20]):
        conv = spread_conv(in_channels, 3, k, seed, scale)
        fixed = FixedConv(conv)
        assert fixed.worst_case() < 2 ** 52
        w = fixed.weight
        assert torch.equal(w, torch.round(w)) and torch.equal(fixed.bias, torch.round(fixed.bias))
        e_w = math.frexp(float(conv.weight.detach().abs().max()))[1]
        e_b = math.frexp(float(conv.bias.detach().abs().max()))[1]
        assert fixed.shift == min(bits - e_w, 51 - 16 - e_b)
        assert w.abs().max() <= 2 ** bits and fixed.bias.abs().max() <= 2 ** 51
        if bits - e_w <= 51 - 16 - e_b:
            assert 2 ** (bits - 1) <= w.abs().max(), (seed, scale)
        step = 2.0 ** -fixed.shift
        assert torch.all((w * step - conv.weight.detach()).abs() <= step / 2)
        assert torch.all((fixed.bias * step / UNIT - conv.bias.detach()).abs() <= step / UNIT / 2)
        if scale == 1 - 2 ** -20 and fan_in * 2 ** 15 * LIMIT > 2 ** 51:
            # where the budget, not the 15-bit cap, sets the bits, the worst case uses it
            assert fixed.worst_case() > 2 ** 50


def test_too_wide_a_layer_is_refused_and_zero_weights_work():
    """A fan-in above 2^19 leaves fewer than 4 weight bits: ValueError (2^19 itself still has 4);
    all-zero weights (a zero-initialised last layer) quantise to zeros and give the bias."""
    with pytest.raises(ValueError, match='too wide'):
        quantize(torch.ones(1, 1), None, 2 ** 19 + 1)
    weight, bias, shift = quantize(torch.ones(1, 1), None, 2 ** 19)     # 1 = 0.5 * 2^1: 8 / 2^3
    assert weight.item() == 8 and bias.item() == 0 and shift == 3
    with pytest.raises(ValueError, match='too wide'):
        FixedConv(nn.Conv2d(2 ** 19 + 1, 1, 1))
    conv = nn.Conv2d(8, 4, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.0, 1.0, -2.5, 1e-3]))
    fixed = FixedConv(conv)
    assert torch.all(fixed.weight == 0) and fixed.worst_case() < 2 ** 52
    x = to_fixed(torch.randn(2, 8, 5, 5, dtype=torch.float64))
    out = to_float(fixed(x))
    expected = torch.round(conv.bias.detach() * UNIT) / UNIT
    assert torch.equal(out, expected[None, :, None, None].expand_as(out))
    conv.bias.data.zero_()
    assert torch.equal(FixedConv(conv)(x), torch.zeros(2, 4, 5, 5, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# Exact in any summation order

def chunks_reversed(a, b, size=7):
    """a @ b with the inner dimension cut into chunks of `size`, summed last chunk first."""
    out = 0
    for start in reversed(range(0, a.shape[-1], size)):
        out = out + a[:, start:start + size] @ b[..., start:start + size, :]
    return out


def permuted(a, b):
    """a @ b over a random permutation of the inner dimension (of both operands)."""
    perm = torch.randperm(a.shape[-1], generator=torch.Generator().manual_seed(5))
    return a[:, perm] @ b[..., perm, :]


def one_by_one_backwards(a, b):
    """a @ b summed strictly one product at a time, from the last inner index to the first."""
    products = a[None, :, :, None] * b[:, None, :, :]               # (B, out, K, L)
    return products.flip(2).cumsum(2)[:, :, -1, :]


ORDERS = [chunks_reversed, permuted, one_by_one_backwards]


@pytest.mark.parametrize('reorder', ORDERS)
def test_fixed_conv_is_the_same_in_any_summation_order(monkeypatch, reorder):
    """A 3x3 conv of fan-in 864 with all-positive weights at full precision on inputs at and
    beyond the clamp (+-2^12 = 2^28 units) reaches accumulators above 2^50; with inputs random
    near the clamp and odd (so the low bits matter): the output is bit-identical when
    integer_matmul sums in another order, and integer_matmul's sums are int64 arithmetic's.
    The test has teeth: the same reorderings change bits of a float64 product of random reals,
    and of integers too large for the budget (products near 2^60)."""
    conv = spread_conv(96, 16, 3, seed=3)
    with torch.no_grad():                  # output 0: every weight the layer's largest, 2^14
        top = 2.0 ** math.ceil(math.log2(conv.weight.abs().max()))
        conv.weight[0] = top * (1 - 2 ** -20)
    fixed = FixedConv(conv)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-LIMIT - 4096, LIMIT + 4096, (3, 96, 6, 6), generator=g).double()
    x = 2 * torch.div(x, 2, rounding_mode='floor') + 1            # odd
    x[0] = LIMIT                                                  # at the clamp ...
    x[1, :48] = 4.0 * LIMIT                                       # ... and far beyond it
    x[1, 48:] = LIMIT - 1
    seen = []

    def checked(a, b, reorder=None):
        out = reorder(a, b) if reorder else a @ b
        seen.append(float(out.abs().max()))
        assert torch.equal(out, (a.long() @ b.long()).double())
        return out

    monkeypatch.setattr(fixed_point, 'integer_matmul', checked)
    base = fixed(x)
    assert max(seen) > 2 ** 50                  # the largest accumulator: near the budget's end
    monkeypatch.setattr(fixed_point, 'integer_matmul', lambda a, b: checked(a, b, reorder))
    assert torch.equal(fixed(x), base)
    # teeth: reals, and integers past the budget, are not summed alike in the other order
    a = torch.randn(16, 864, generator=g, dtype=torch.float64)
    b = torch.randn(3, 864, 36, generator=g, dtype=torch.float64)
    assert not torch.equal(reorder(a, b), a @ b)
    a = torch.randint(-2 ** 20, 2 ** 20, (16, 864), generator=g).double()
    b = torch.randint(-2 ** 40, 2 ** 40, (3, 864, 36), generator=g).double()
    assert not torch.equal(reorder(a, b), a @ b)


# ------------------------------------------------------------------------------------------------
# The layers track the float network

@pytest.mark.parametrize('k', [1, 3])
def test_fixed_conv_tracks_the_float_conv(k):
    """Default-initialised convs on inputs of magnitude ~1: every output within the rounding's own
    bound (output and bias rounded to 2^-17, inputs to 2^-17 times sum |w|, weights to
    2^-(shift+1) times sum |x|), which is below 1e-3 (measured errors 3.7e-5 and 4.6e-5, 28% and
    74% of the bound). Inputs beyond +-2^12 count as +-2^12: bit for bit as the clamped inputs, and
    close to the float conv of the clamped inputs."""
    torch.manual_seed(10 + k)
    conv = nn.Conv2d(8, 16, k, padding=k // 2).double()
    fixed = FixedConv(conv)
    x = torch.randn(2, 8, 8, 8, dtype=torch.float64)

    def bound(x):
        sum_w = conv.weight.abs().sum(dim=(1, 2, 3))[None, :, None, None]
        sum_x = F.conv2d(x.abs(), torch.ones_like(conv.weight), padding=k // 2)
        fan_in = conv.weight[0].numel()
        return (2.0 ** -17 * (1 + sum_w) + 2.0 ** -(fixed.shift + 1) * (sum_x + fan_in / UNIT)
                + 2.0 ** -(17 + fixed.shift))

    as_fixed = to_fixed(x)                # to the nearest 2^-16; and back, exactly
    assert torch.equal(as_fixed, torch.round(x * UNIT)) and as_fixed.dtype == torch.float64
    assert torch.equal(to_float(as_fixed) * UNIT, as_fixed)
    assert torch.all((to_float(as_fixed) - x).abs() <= 2.0 ** -17)
    with torch.no_grad():
        out = to_float(fixed(to_fixed(x)))
        assert torch.all((out - conv(x)).abs() <= bound(x))
        assert bound(x).max() < 1e-3
        assert (out - conv(x)).abs().max() > 0                   # it does round
        big = x * 3000                                            # up to ~1e4: past the clamp
        big[0, 0, 0, 0], big[1, 3, 2, 2] = 1e6, -1e6
        clamped = big.clamp(-2 ** 12, 2 ** 12)
        assert (big != clamped).sum() > 100
        out = fixed(to_fixed(big))
        assert torch.equal(out, fixed(to_fixed(clamped)))
        assert torch.all((to_float(out) - conv(clamped)).abs() <= bound(clamped))


def test_bin_widths_are_bin_width_times_the_prior_std():
    """Log-stds every 97 units over [-8, 8], bin widths 0.5, 1.5 and 3: bin_width * e^log_std
    in 2^-16 to 1e-4 relative on top of the 2^-16 grid's own rounding (0.5 units: 2% at
    e^-8 * 0.5; measured beyond it: at most 4e-5 relative), and to 1e-4 relative outright where
    the grid allows it (above 2^13 units: measured 5.8e-5, the grid's share up to 6.1e-5). At
    log-std -12 and below the bin is the smallest, 1 unit, never 0; a bin width off the 2^-16
    grid is rounded onto it; widths outside [2^-16, 16) are refused."""
    log_std = torch.arange(-8 * UNIT, 8 * UNIT + 1, 97, dtype=torch.float64)
    for width in (0.5, 1.5, 3.0):
        out = bin_widths(log_std, width)
        assert out.dtype == torch.float64 and torch.equal(out, torch.round(out))
        exact = width * torch.exp(log_std / UNIT) * UNIT
        error = (out - exact).abs()
        assert torch.all(error <= 0.5 + 1e-4 * exact), width
        assert torch.all(error[exact > 2 ** 13] <= 1e-4 * exact[exact > 2 ** 13]), width
    low = torch.tensor([-12.0, -12.5, -20.0, -1e4]) * UNIT
    for width in (0.5, 1.5, 3.0):
        assert torch.all(bin_widths(low, width) >= 1)
    assert torch.all(bin_widths(low, 0.5) == 1)
    assert torch.equal(bin_widths(log_std, 1.5 + 2 ** -18), bin_widths(log_std, 1.5))
    assert torch.all(bin_widths(log_std[:3], 2 ** -16) >= 1)
    assert torch.all(bin_widths(log_std[:3], 16 - 2 ** -16) >= 1)
    for width in (16.0, 2.0 ** -17):
        with pytest.raises(ValueError, match='bin width'):
            bin_widths(log_std[:3], width)


# ------------------------------------------------------------------------------------------------
# A trained chain's top-down pass

@pytest.mark.parametrize('t', [0.0, 1.0])
@pytest.mark.parametrize('perturbation,tol', [(0.0, 5e-4), (0.3, 2.5e-3)])
def test_fixed_stages_track_the_float_chain(chain, monkeypatch, t, perturbation, tol):
    """The golden two-stage chain (as trained, and with 0.3 N(0, 1) added to every weight, as in
    test_coder.py: the trained toy's stage 2 hardly reads x_hat, its heads move by 3e-5 when x_hat
    is zeroed, the perturbed one's by 0.6 .. 1.0), decoded top-down with every z = prior mean +
    t prior stds: the float64 stages (their own `decode`, its draws made deterministic: eps = 1)
    against the fixed-point ones driven as the codec drives them (ProgressiveCodec.run_stage,
    z = pm + t * bin_widths(pv, 1)). Stage 1's mean head, then stage 2's mixture parameters with
    both cond_encoders given stage 1's fixed-point x_hat. The heads agree within `tol`: measured
    3.4e-5 .. 7.2e-5 as trained (a few units of 2^-16 after ~40 layers; heads up to 0.38, spread
    0.0065 .. 0.17) and 1.4e-4 .. 2.8e-4 perturbed (heads up to 5, spread 0.96 .. 1.9): the
    tolerances are 7-15 and 9-18 times those, and at least 13 times below the heads' spread over
    pixels."""
    model = copy.deepcopy(chain).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(perturbation * torch.randn(p.shape, generator=g, dtype=p.dtype))
    stages = chain_stages(model)
    fixed = [FixedStage(stage) for stage in stages]
    codec = ProgressiveCodec(model)
    codec.fixed = fixed                               # the FixedStages under test
    monkeypatch.setattr(vdvae.vae, 'draw_gaussian_diag_samples',
                        lambda mu, logsigma: mu + torch.exp(logsigma))

    def latent(block, x, pm, pv):
        return pm + bin_widths(pv, t) if t else pm

    n, x_prev = 3, None
    with torch.no_grad():
        for s, stage in enumerate(stages):
            px_z = codec.run_stage(s, n, x_prev, latent)
            head = fixed[s].head_of(px_z)
            assert torch.equal(head, torch.round(head))
            reference = stage.decoder.out_net(stage.decode(
                n, None if x_prev is None else to_float(x_prev), t=t))
            assert head.shape == reference.shape
            assert (to_float(head) - reference).abs().max() < tol, s
            assert reference.std() > 10 * tol           # the comparison resolves the outputs
            x_prev = head


# ------------------------------------------------------------------------------------------------
# The device argument

@pytest.mark.parametrize('device', ['cpu', torch.device('cpu'), str(DEVICE)])
def test_the_device_changes_no_bit(chain, device):
    """The codec on an explicit device (the last: tests/conftest.py's PROGCODE_DEVICE, cuda in
    bench/gpu_check.sh) encodes the same chunks as the default one, and decodes the default's
    chunks to the same images."""
    x = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
    default = ProgressiveCodec(chain, active_kl=0.0)
    chunks, info = default.encode(x)
    assert info['latent_bits'][0] > 8                   # latents are coded, not only the mask
    explicit = ProgressiveCodec(chain, active_kl=0.0, device=device)
    assert explicit.encode(x)[0] == chunks
    out = explicit.decode(chunks, len(x))
    assert np.array_equal(out['images'], x) and all(out['ends_exactly'])


def test_a_bias_large_beside_tiny_weights_keeps_its_value():
    """Weights of 1e-9 would take a shift of 44; the bias 1.0 would then need 2^60 units. The
    shift is lowered instead (the weights keep fewer bits), so the layer still adds its bias."""
    conv = nn.Conv2d(4, 2, 1).double()
    with torch.no_grad():
        conv.weight.fill_(1e-9)
        conv.bias.copy_(torch.tensor([1.0, -3.0]))
    fixed = FixedConv(conv)
    assert fixed.bias.abs().max() <= 2 ** 51 and fixed.worst_case() < 2 ** 52
    out = to_float(fixed(to_fixed(torch.rand(1, 4, 3, 3, dtype=torch.float64))))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, -3.0], dtype=torch.float64),
                          atol=2 ** -16)


@pytest.mark.parametrize('conv', [nn.Conv2d(4, 4, 3, stride=2, padding=1),
                                  nn.Conv2d(4, 4, 3, padding=0), nn.Conv2d(4, 4, 3, padding=1,
                                                                           groups=2),
                                  nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                                  nn.Conv2d(4, 4, (1, 3), padding=(0, 1))])
def test_a_convolution_it_cannot_compute_is_refused(conv):
    with pytest.raises(ValueError, match="stride 1 with 'same' padding"):
        FixedConv(conv)
