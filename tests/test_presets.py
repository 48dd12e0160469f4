"""Upstream's five presets: resolved hyperparameters, parameter counts, keys and shapes."""
import json
from collections import Counter

import pytest
import torch

from vdvae import HPARAMS_REGISTRY, VAE, get_hparams

UPSTREAM = ['cifar10', 'imagenet32', 'imagenet64', 'ffhq256', 'ffhq1024']


@pytest.fixture(scope='module')
def presets(reference_dir):
    return json.loads((reference_dir / 'presets.json').read_text())


def meta_model(H):
    """Shapes and counts without allocating memory or spending time on init."""
    with torch.device('meta'):
        return VAE(H)


def test_registry_holds_upstreams_presets():
    assert set(UPSTREAM) <= set(HPARAMS_REGISTRY)


@pytest.mark.parametrize('name', UPSTREAM)
def test_resolved_hparams_equal_upstream(presets, name):
    H = get_hparams(name)
    expected = presets['presets'][name]['hparams_effective']
    for key, value in expected.items():
        assert H[key] == value, (key, H[key], value)


def test_argparse_defaults_equal_upstream(presets):
    H = get_hparams()
    for key, value in presets['argparse_defaults'].items():
        if key == 'hparam_sets':
            continue                            # upstream needs --hps; we default to none
        assert H[key] == value, (key, H[key], value)


@pytest.mark.parametrize('name', UPSTREAM)
def test_parameter_and_block_counts(presets, name):
    info = presets['presets'][name]
    model = meta_model(get_hparams(name))
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(model) == info['n_params']
    assert count(model.encoder) == info['n_params_encoder']
    assert count(model.decoder) == info['n_params_decoder']
    assert len(model.encoder.enc_blocks) == info['n_enc_blocks']
    assert len(model.decoder.dec_blocks) == info['n_dec_blocks(stochastic layers)']
    assert len(model.state_dict()) == info['n_state_dict_tensors']
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == info['n_conv2d']
    assert sum(c.kernel_size == (3, 3) for c in convs) == info['n_conv3x3']
    assert [b.shape[2] for b in model.decoder.bias_xs] == info['bias_xs_resolutions']
    per_res = Counter(b.base for b in model.decoder.dec_blocks)
    assert {str(k): v for k, v in per_res.items()} == info['dec_blocks_per_res']
    latent_dims = sum(model.H.zdim * b.base ** 2 for b in model.decoder.dec_blocks)
    assert latent_dims == info['latent_dims_total']


def test_cifar10_state_dict_listing(reference_dir):
    listed = [tuple(line.split('\t')) for line in
              (reference_dir / 'cifar10_state_dict_keys.txt').read_text().splitlines() if line]
    model = meta_model(get_hparams('cifar10'))
    ours = [(k, str(tuple(v.shape))) for k, v in model.state_dict().items()]
    assert ours == listed
    assert sum(p.numel() for p in model.parameters()) == 39_145_700
    # optimizer states index parameters in this order, so it must equal the state_dict order
    assert [n for n, _ in model.named_parameters()] == [k for k, _ in listed]
