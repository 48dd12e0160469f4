"""The codec's integer probability tables (progcode_ext/codec/integer.py): built from integers
alone, close to the functions they stand for, counts that a range coder can use (every count >= 1,
2^24 in all), and a pixel model that tracks the float mixture of logistics."""
import math

import numpy as np
import pytest

from progcode_ext.codec import integer
from progcode_ext.codec.integer import (COUNT_BITS, PixelModel, Tables, gaussian_counts,
                                        on_step, tables, to_counts)


def test_tables_are_the_functions_they_stand_for():
    weight, inverse_scale, tanh, sigmoid = tables()
    assert weight[0] == 1 << 24 and weight[1024] == pytest.approx(math.exp(-1) * 2 ** 24, abs=1)
    i = np.arange(0, len(weight), 997)
    assert np.allclose(weight[i], np.exp(-i / 1024) * 2 ** 24, atol=1, rtol=1e-12)
    L = np.arange(-7168, 7169, 512)
    assert np.allclose(inverse_scale[L + 7168], np.exp(-L / 1024) / 127.5 * 2 ** 34, rtol=1e-12,
                       atol=1)
    c = np.arange(-8192, 8193, 256)
    assert np.allclose(tanh[c + 8192], np.tanh(c / 1024) * 2 ** 20, atol=1)
    j = np.arange(0, 8193, 64)
    assert np.allclose(sigmoid[j], 2 ** 30 / (1 + np.exp(-(j / 256 - 16))), atol=1, rtol=1e-12)
    assert sigmoid[4096] == 1 << 29 and np.all(np.diff(sigmoid) >= 0)


def test_tables_are_built_from_integers_alone():
    """Two builds agree bit for bit, and the working precision is exact integers (a float
    anywhere would show as a float)."""
    a, b = Tables(), Tables()
    assert a.powers == b.powers and all(isinstance(p, int) for p in a.powers[:100])
    assert a.exp_neg(-5) * a.exp_neg(5) // (1 << 96) in ((1 << 96) - 1, 1 << 96)


def test_counts_are_codable_and_proportional():
    g = np.random.default_rng(0)
    mass = g.integers(0, 1 << 50, (50, 256), dtype=np.int64)
    mass[0] = 0                                       # nothing at all: still codable
    mass[1] = 1
    mass[1, 7] = 1 << 55                              # one value holds nearly everything
    counts = to_counts(mass)
    assert np.all(counts >= 1) and np.all(counts.sum(axis=1) == 1 << COUNT_BITS)
    p = mass[2:] / mass[2:].sum(axis=1, keepdims=True)
    # to 2^-24, and the remainder of at most 256 counts on each row's largest
    assert np.allclose(counts[2:] / 2 ** COUNT_BITS, p, atol=256 / 2 ** COUNT_BITS)
    assert counts[1, 7] > (1 << COUNT_BITS) - 512
    assert np.array_equal(integer._bit_length(np.array([0, 1, 2, 255, 256, 1 << 40])),
                          [0, 1, 2, 8, 9, 41])


def test_on_step_rounds_half_up():
    assert list(on_step(np.array([0, 511, 512, 1024, -512, -513]))) == [0, 0, 1, 1, 0, -1]


def test_gaussian_counts_are_the_discretised_prior():
    counts = gaussian_counts(1.5, 4096)
    k = np.arange(-4096, 4097)
    assert counts.sum() == 1 << COUNT_BITS and np.array_equal(counts, counts[::-1])
    density = np.exp(-(1.5 * k) ** 2 / 2)
    # each of the 8193 offsets keeps a count of at least 1: 0.05% of the mass leaves the centre
    assert np.allclose(counts / 2 ** COUNT_BITS, density / density.sum(), atol=5e-4)
    assert counts[4096 + 20] == 1
    assert gaussian_counts(0.5, 4096)[4096] < counts[4096]          # narrower bins, less each


def test_pixel_model_tracks_the_float_mixture():
    """Grey and RGB pixels: the counts against the float mixture of logistics of the same
    (grid-rounded) parameters, and the RGB channels reweighted by the values before."""
    g = np.random.default_rng(1)
    m, p = 3, 400
    for c in (1, 3):
        logits = g.normal(size=(p, m))
        means = g.uniform(-1, 1, (p, c, m))
        log_scales = g.uniform(-4, 0, (p, c, m))
        raw = g.normal(size=(p, 3, m)) if c == 3 else None
        as_int = [None if a is None else np.rint(a * 2 ** 20).astype(np.int64)
                  for a in (logits, means, log_scales, raw)]
        model = PixelModel(*as_int)
        values = g.integers(0, 256, (p, c))
        fine = np.ones(p, dtype=bool)
        log_w = logits - logits.max(axis=1, keepdims=True)
        x = (values - 127.5) / 127.5
        for ch in range(c):
            counts, masses = model.counts(ch, values[:, :ch])
            mu = means[:, ch].copy()
            if ch == 1:
                mu += np.tanh(raw[:, 0]) * x[:, :1]
            if ch == 2:
                mu += np.tanh(raw[:, 1]) * x[:, :1] + np.tanh(raw[:, 2]) * x[:, 1:2]
            edges = (np.arange(255) - 127) / 127.5
            cdf = 1 / (1 + np.exp(-(edges - mu[..., None]) * np.exp(-log_scales[:, ch])[..., None]))
            pmf_k = np.diff(cdf, prepend=0, append=1, axis=-1)
            w = np.exp(log_w) / np.exp(log_w).sum(axis=1, keepdims=True)
            pmf = np.einsum('pm,pmv->pv', w, pmf_k)
            # to the tables' resolution, where every component gave the values before a mass
            # well above it (2^-30: below, the float mixture reweighs by ratios of tiny numbers)
            seen = pmf_k[np.arange(p), :, values[:, ch]].min(axis=1) > 2 ** -20
            assert np.allclose(counts[fine] / 2 ** COUNT_BITS, pmf[fine], atol=5e-4), (c, ch)
            assert fine.sum() >= 20, (c, ch)
            fine = fine & seen
            model.update(masses, values[:, ch])
            log_w = log_w + np.log(np.maximum(pmf_k[np.arange(p), :, values[:, ch]], 1e-300))
