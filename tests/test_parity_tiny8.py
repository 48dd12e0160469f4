"""The core against upstream's recorded outputs for the tiny8 model (tests/reference)."""
import json

import numpy as np
import pytest
import torch

from conftest import assert_close
from vdvae import VAE, Hyperparams


def test_init_is_bit_identical_to_upstream(reference_dir):
    folder = reference_dir / 'upstream_tiny8'
    H = Hyperparams(json.loads((folder / 'summary.json').read_text())['tiny8']['hparams'])
    torch.manual_seed(0)
    ours = VAE(H).state_dict()
    theirs = torch.load(folder / 'init_model.th', weights_only=True)
    assert list(ours) == list(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_keys_shapes_and_counts(tiny8, reference_dir):
    H, model, _, summary = tiny8
    listed = [line.split('\t') for line in
              (reference_dir / 'upstream_tiny8' / 'keys.txt').read_text().splitlines() if line]
    ours = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    assert ours == [(k, s) for k, s in listed]
    assert sum(p.numel() for p in model.parameters()) == summary['tiny8']['n_params']
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == summary['tiny8']['n_conv2d']
    assert model.decoder.resolutions == summary['tiny8']['resolutions']


def test_init_conventions(reference_dir):
    init = torch.load(reference_dir / 'upstream_tiny8' / 'init_model.th', weights_only=True)
    for key, value in init.items():
        if key.endswith('.bias') or 'bias_xs' in key or key == 'decoder.bias':
            assert not value.any(), key
        if 'prior.c4.weight' in key:
            assert not value.any(), key
    assert torch.equal(init['decoder.gain'], torch.ones_like(init['decoder.gain']))


def test_forward_stats(tiny8):
    H, model, ref, _ = tiny8
    torch.manual_seed(1)
    with torch.no_grad():
        stats = model(ref['inp'], ref['target'])
    assert set(stats) == {'elbo', 'distortion', 'rate'}
    for key in stats:
        assert_close(stats[key], ref['stats'][key])


def test_posterior_internals(tiny8):
    H, model, ref, _ = tiny8
    torch.manual_seed(1)
    with torch.no_grad():
        activations = model.encoder(ref['inp'])
        px_z, stats = model.decoder(activations, get_latents=True)
        dmol = model.decoder.out_net(px_z)
        nll = model.decoder.out_net.nll(px_z, ref['target'])
    assert set(activations) == {int(k) for k in ref['encoder_activations']}
    for res, act in ref['encoder_activations'].items():
        assert_close(activations[int(res)], act)
    assert_close(px_z, ref['px_z'])
    assert_close(dmol, ref['dmol_params'])
    assert_close(nll, ref['distortion_per_example'])
    for i, block in enumerate(stats):
        assert_close(block['kl'], ref['kl_per_block'][i])
        assert_close(block['z'], ref['z_per_block'][i])
    kl_sums = torch.stack([b['kl'].sum(dim=(1, 2, 3)) for b in stats], dim=1)
    assert_close(kl_sums, ref['kl_sum_per_block'])


def test_forward_get_latents(tiny8):
    H, model, ref, _ = tiny8
    torch.manual_seed(1)
    with torch.no_grad():
        stats = model.forward_get_latents(ref['inp'])
    assert len(stats) == len(ref['latents_from_forward_get_latents'])
    for block, z in zip(stats, ref['latents_from_forward_get_latents']):
        assert_close(block['z'], z)


def assert_uint8_close(ours, theirs, max_pixels=3):
    theirs = np.asarray(theirs)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff > 0).sum() <= max_pixels, (diff.max(), (diff > 0).sum())


@pytest.mark.parametrize('key', ['t_none', 't_1.0', 't_0.5', 't_0.0', 't_list'])
def test_unconditional(tiny8, key):
    H, model, ref, _ = tiny8
    case = ref['uncond'][key]
    with torch.no_grad():
        torch.manual_seed(7)
        px_z = model.decoder.forward_uncond(4, case['t'])
        torch.manual_seed(7)
        samples = model.forward_uncond_samples(4, case['t'])
    assert_close(px_z.sum(), case['px_z_sum'])
    assert_close(px_z.abs().sum(), case['px_z_abs_sum'])
    if 'px_z' in case:
        assert_close(px_z, case['px_z'])
    assert_uint8_close(samples, case['samples_uint8'])


def test_unconditional_per_block_tensor_temperature(tiny8):
    H, model, ref, _ = tiny8
    case = ref['uncond']['t_list']
    with torch.no_grad():
        torch.manual_seed(7)
        px_z = model.decoder.forward_uncond(4, torch.tensor(case['t']))
    assert_close(px_z, case['px_z'])


@pytest.mark.parametrize('key', ['k0', 'k1', 'k3'])
def test_manual_latents(tiny8, key):
    H, model, ref, _ = tiny8
    case = ref['manual_latents'][key]
    latents = ref['latents_from_forward_get_latents'][:case['k']]
    with torch.no_grad():
        torch.manual_seed(11)
        px_z = model.decoder.forward_manual_latents(4, latents, t=case['t'])
        torch.manual_seed(11)
        samples = model.forward_samples_set_latents(4, latents, t=case['t'])
    assert_close(px_z.sum(), case['px_z_sum'])
    assert_close(px_z.abs().sum(), case['px_z_abs_sum'])
    if 'px_z' in case:
        assert_close(px_z, case['px_z'])
    assert_uint8_close(samples, case['samples_uint8'])


def test_all_latents_fixed_reproduces_posterior_px_z(tiny8):
    H, model, ref, _ = tiny8
    with torch.no_grad():
        torch.manual_seed(1)
        px_z, stats = model.decoder(model.encoder(ref['inp']), get_latents=True)
        zs = [b['z'] for b in stats]
        a = model.decoder.forward_manual_latents(4, zs, t=0.3)
        torch.manual_seed(123)
        b = model.decoder.forward_manual_latents(4, zs, t=[0.9] * len(zs))
    assert torch.equal(a, px_z) and torch.equal(b, px_z)


def test_manual_latents_per_block_temperature_list(tiny8):
    H, model, ref, _ = tiny8
    latents = ref['latents_from_forward_get_latents'][:1]
    with torch.no_grad():
        torch.manual_seed(11)
        scalar = model.decoder.forward_manual_latents(4, latents, t=0.1)
        torch.manual_seed(11)
        per_block = model.decoder.forward_manual_latents(4, latents, t=[0.7, 0.1, 0.1])
        torch.manual_seed(11)
        other = model.decoder.forward_manual_latents(4, latents, t=[0.7, 0.1, 0.9])
    assert torch.equal(scalar, per_block)          # block 0 is fixed, so its t is ignored
    assert not torch.allclose(scalar, other)


def test_bad_temperature_and_too_many_latents(tiny8):
    H, model, ref, _ = tiny8
    with pytest.raises(ValueError, match='temperature'):
        model.decoder.forward_uncond(2, -1.0)
    with pytest.raises(ValueError, match='latents'):
        model.decoder.forward_manual_latents(4, ref['latents_from_forward_get_latents'] * 2)


def test_backward_matches_finite_differences_in_float64(tiny8):
    H, model, ref, _ = tiny8
    model64 = VAE(H).double()
    model64.load_state_dict(model.state_dict())
    x, y = ref['inp'][:2].double(), ref['target'][:2].double()
    param = model64.decoder.dec_blocks[1].prior.c4.weight

    def loss():
        torch.manual_seed(1)
        return model64(x, y)['elbo']
    loss().backward()
    grad = param.grad.flatten()[:3].clone()
    eps = 1e-6
    for i in range(3):
        with torch.no_grad():
            param.view(-1)[i] += eps
            up = loss().item()
            param.view(-1)[i] -= 2 * eps
            down = loss().item()
            param.view(-1)[i] += eps
        assert abs((up - down) / (2 * eps) - grad[i].item()) < 1e-6 + 1e-4 * abs(grad[i].item())
