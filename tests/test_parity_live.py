"""The core against upstream VDVAE's code itself, run live from the vdvae_upstream submodule.

Two checks that need upstream's code (skipped, with the reason, when the submodule is empty; the
recorded outputs in tests/reference check the core everywhere):
* tests/reference/regenerate.py, run on the submodule, reproduces the committed reference files;
* over small architectures drawn at random from fixed seeds (block strings with down-sampling,
  mix-ins and repeats, 8x8 and 16x16 images, widths with and without per-resolution overrides,
  zdim, bottleneck, mixtures, missing bias_xs, 8-bit cifar10 and 5-bit ffhq_256 likelihoods),
  upstream's VAE and the core's, holding the same weights, compute the same initial weights,
  forward statistics, gradients, latents, unconditional samples and samples with fixed latents.
"""
import importlib.util
import random
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REFERENCE, assert_close
from vdvae import VAE, Hyperparams

UPSTREAM = Path(__file__).resolve().parents[1] / 'vdvae_upstream'
pytestmark = pytest.mark.skipif(
    not (UPSTREAM / 'vae.py').is_file(),
    reason='the vdvae_upstream submodule is empty (git submodule update --init vdvae_upstream), '
           'so upstream cannot run live; tests/reference checks the core against its outputs')

_spec = importlib.util.spec_from_file_location('reference_regenerate', REFERENCE / 'regenerate.py')
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

ARCHITECTURE_SEEDS = [0, 1, 2, 3, 4, 5]
BATCH = 3


@lru_cache(maxsize=None)
def upstream():
    return regenerate.load_upstream(UPSTREAM)


def test_regeneration_reproduces_the_committed_reference(tmp_path):
    """In a subprocess: it installs the CPU substitutes (a process-wide change to torch)."""
    run = subprocess.run([sys.executable, str(REFERENCE / 'regenerate.py'), '--vdvae_root',
                          str(UPSTREAM), '--out', str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = regenerate.compare(tmp_path, REFERENCE, rtol=regenerate.RTOL, atol=regenerate.ATOL)
    # the versions of torch and NumPy that made the files are a record, not a result
    found = {name: [d for d in diffs if not d.startswith("['produced_with']['")]
             for name, diffs in found.items()}
    assert found == {name: [] for name in regenerate.REFERENCE_FILES}


# ----------------------------------------------------------------------------------------------
# Random architectures

def draw_architecture(seed):
    """Upstream flags of a small valid VAE, drawn from `seed`; odd seeds use 5-bit ffhq_256."""
    rng = random.Random(seed)
    size = rng.choice([8, 16])
    path = [size]                                       # the encoder's resolutions, downwards
    while path[-1] > 1 and (len(path) == 1 or rng.random() < 0.75):
        res = path[-1]
        path.append(res // rng.choice([d for d in (2, 2, 4, res) if d > 1 and res % d == 0]))
    enc = []
    for i, res in enumerate(path):
        n = rng.randint(0, 2)
        enc += [f'{res}x{n}'] if n > 1 else [f'{res}'] if n else []
        if i + 1 < len(path):
            enc.append(f'{res}d{res // path[i + 1]}')
    # the decoder starts at the lowest resolution and ends at the image size, mixing in from the
    # previous resolution it visited (possibly skipping some of the encoder's)
    visited = [path[-1]] + [r for r in reversed(path[:-1]) if r == size or rng.random() < 0.7]
    dec = [rng.choice([f'{visited[0]}', f'{visited[0]}x2'])]
    for prev, res in zip(visited, visited[1:]):
        dec.append(f'{res}m{prev}')
        n = rng.randint(0, 2)
        dec += [f'{res}x{n}'] if n > 1 else [f'{res}'] if n else []
    width = rng.choice([8, 16, 24])
    flags = {'dataset': 'ffhq_256' if seed % 2 else 'cifar10',
             'enc_blocks': ','.join(enc), 'dec_blocks': ','.join(dec), 'width': width,
             'zdim': rng.choice([1, 2, 4, 6]), 'bottleneck_multiple': rng.choice([0.25, 0.5, 1.0]),
             'num_mixtures': rng.choice([1, 2, 3, 5]),
             'no_bias_above': rng.choice([64, path[-1]])}
    if rng.random() < 0.5:      # wider at lower resolutions (upstream pads/slices channels)
        widths, w = [], width
        for res in path[1:]:
            w += rng.choice([0, 8, 8])
            widths.append(f'{res}:{w}')
        flags['custom_width_str'] = ','.join([f'{size}:{width}'] + widths)
    return size, flags


def hparams(seed):
    """Upstream's Hyperparams for the drawn flags, by its own parser (image geometry as its
    data.set_up_data would give for an image of this size)."""
    size, flags = draw_architecture(seed)
    argv = ['--hps', '']
    for key, value in flags.items():
        argv += [f'--{key}', str(value)]
    H = regenerate.upstream_hparams(upstream(), argv)
    H.image_size, H.image_channels = size, 3
    return H


def test_the_drawn_architectures_cover_what_they_should():
    drawn = [draw_architecture(s) for s in ARCHITECTURE_SEEDS]
    assert {size for size, _ in drawn} == {8, 16}
    assert {f['dataset'] for _, f in drawn} == {'cifar10', 'ffhq_256'}
    assert all('d' in f['enc_blocks'] and 'm' in f['dec_blocks'] for _, f in drawn)
    assert any('x' in f['enc_blocks'] for _, f in drawn) and \
        any('x' in f['dec_blocks'] for _, f in drawn)
    widths = [{w.split(':')[1] for w in f['custom_width_str'].split(',')}
              for _, f in drawn if 'custom_width_str' in f]
    assert any(len(w) > 1 for w in widths) and len(widths) < len(drawn)
    assert len({f['num_mixtures'] for _, f in drawn}) > 1
    assert len({f['bottleneck_multiple'] for _, f in drawn}) > 1
    assert any(f['no_bias_above'] < 64 for _, f in drawn)


@lru_cache(maxsize=None)
def pair(seed):
    """(H, upstream's VAE, ours, inp, target): both with the same perturbed weights, in eval."""
    H = hparams(seed)
    torch.manual_seed(seed)
    theirs = upstream().vae.VAE(H)
    regenerate.perturb(theirs, seed=1000 + seed)
    ours = VAE(Hyperparams(dict(H)))
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(2000 + seed)
    pixels = torch.randint(0, 256, (BATCH, H.image_size, H.image_size, 3), generator=g).float()
    inp = (pixels - 120.0) / 64.0
    levels = torch.floor(pixels / 8) * 8 if H.dataset == 'ffhq_256' else pixels
    return H, theirs.eval(), ours.eval(), inp, levels / 127.5 - 1


def assert_uint8_close(ours, theirs, max_fraction=0.002):
    """Samples are continuous values cut to uint8: a rounding apart may cross a boundary."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.dtype == theirs.dtype == np.uint8 and ours.shape == theirs.shape
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() <= max_fraction, (diff.max(), (diff > 0).sum())


@pytest.mark.parametrize('seed', ARCHITECTURE_SEEDS)
def test_same_initial_weights(seed):
    H = hparams(seed)
    torch.manual_seed(seed)
    theirs = upstream().vae.VAE(H).state_dict()
    torch.manual_seed(seed)
    ours = VAE(Hyperparams(dict(H))).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize('seed', ARCHITECTURE_SEEDS)
def test_forward_statistics_and_gradients(seed):
    H, theirs, ours, inp, target = pair(seed)
    for model in (theirs, ours):
        model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    expected = theirs(inp, target)
    torch.manual_seed(1)
    actual = ours(inp, target)
    assert set(actual) == set(expected) == {'elbo', 'distortion', 'rate'}
    for key in expected:
        assert_close(actual[key], expected[key])
    expected['elbo'].backward()
    actual['elbo'].backward()
    # The backward passes add the same terms in different orders (the core composes some ops
    # differently), so gradients agree to float32 rounding relative to each tensor's scale
    # (measured: at most 2e-5 of its largest entry), not bit for bit as the forward pass does.
    mine = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        assert (p.grad is None) == (mine[name].grad is None), name
        if p.grad is not None:
            scale = p.grad.abs().max().item()
            assert_close(mine[name].grad, p.grad, rtol=0, atol=1e-4 * scale + 1e-12)


@pytest.mark.parametrize('seed', ARCHITECTURE_SEEDS)
def test_latents_and_samples(seed):
    H, theirs, ours, inp, target = pair(seed)
    n = len(theirs.decoder.dec_blocks)
    with torch.no_grad(), np.errstate(divide='ignore'):
        torch.manual_seed(3)
        expected = theirs.forward_get_latents(inp)
        torch.manual_seed(3)
        actual = ours.forward_get_latents(inp)
        assert len(actual) == len(expected) == n
        for a, e in zip(actual, expected):
            assert_close(a['z'], e['z'])
            assert_close(a['kl'], e['kl'])
        latents = [e['z'] for e in expected]

        per_block = [0.2 + 0.6 * i / max(n - 1, 1) for i in range(n)]
        for t in (None, 0.8, 0.0, per_block):
            outputs = []
            for model in (theirs, ours):
                torch.manual_seed(7)
                px_z = model.decoder.forward_uncond(BATCH, t)
                torch.manual_seed(7)
                outputs.append((px_z, model.forward_uncond_samples(BATCH, t)))
            (e_px, e_samples), (a_px, a_samples) = outputs
            assert_close(a_px, e_px)
            assert_uint8_close(a_samples, e_samples)

        for k in sorted({0, 1, n // 2, n}):
            outputs = []
            for model in (theirs, ours):
                torch.manual_seed(11)
                px_z = model.decoder.forward_manual_latents(BATCH, latents[:k], t=0.3)
                torch.manual_seed(11)
                outputs.append((px_z, model.forward_samples_set_latents(BATCH, latents[:k],
                                                                       t=0.3)))
            (e_px, e_samples), (a_px, a_samples) = outputs
            assert_close(a_px, e_px)
            assert_uint8_close(a_samples, e_samples)
