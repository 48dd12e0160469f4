"""Hyperparams, presets and flags."""
import argparse

import pytest
import torch

from vdvae import HPARAMS_REGISTRY, VAE, Hyperparams, get_hparams, register_arguments, register_preset
from vdvae.hps import (add_vae_arguments, parse_args_and_update_hparams, setup_hparams,
                       with_defaults)
from vdvae.train_helpers import build_optimizer, cosine_decay_factor, warmup_factor


def test_missing_key_raises_with_suggestion():
    H = Hyperparams(width=4, zdim=2)
    assert H.width == 4
    H.depth = 3
    assert H['depth'] == 3
    with pytest.raises(AttributeError, match="unknown hyperparameter 'widht'.*'width'"):
        H.widht
    assert not hasattr(H, 'nope')


def test_hps_may_be_omitted_and_gives_defaults():
    H = setup_hparams([])
    assert H.width == 512 and H.hparam_sets is None and H.image_size == 32


def test_cli_flags_win_over_presets_and_later_presets_win():
    register_preset('_test_a', dict(width=7, zdim=3))
    register_preset('_test_b', dict(zdim=5))
    try:
        H = setup_hparams(['--hps', 'cifar10,_test_a,_test_b', '--lr', '0.1'])
        assert (H.width, H.zdim, H.lr, H.n_batch) == (7, 5, 0.1, 16)
        H = setup_hparams(['--hps', 'cifar10', '--width', '8'])
        assert H.width == 8
    finally:
        del HPARAMS_REGISTRY['_test_a'], HPARAMS_REGISTRY['_test_b']


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'cifar11'.*'cifar10'.*Valid: .*ffhq1024"):
        setup_hparams(['--hps', 'cifar11'])


def test_preset_with_unknown_key_is_rejected():
    register_preset('_test_bad', dict(widht=3))
    try:
        with pytest.raises(ValueError, match="preset '_test_bad' sets 'widht'.*'width'"):
            setup_hparams(['--hps', '_test_bad'])
    finally:
        del HPARAMS_REGISTRY['_test_bad']


def test_register_preset_inherits_from_parent():
    child = register_preset('_test_child', dict(n_batch=2), parent='cifar10')
    try:
        assert child.width == 384 and child.n_batch == 2
        assert HPARAMS_REGISTRY['cifar10'].n_batch == 16
    finally:
        del HPARAMS_REGISTRY['_test_child']
    with pytest.raises(ValueError, match='unknown parent preset'):
        register_preset('_x', {}, parent='nope')


def test_register_arguments_adds_flags_for_extensions():
    def add(parser):
        parser.add_argument('--_test_target', type=float, default=0.5)
    register_arguments(add)
    try:
        assert setup_hparams(['--_test_target', '0.25'])._test_target == 0.25
        register_preset('_test_ext', dict(_test_target=0.125))
        assert setup_hparams(['--hps', '_test_ext'])._test_target == 0.125
    finally:
        from vdvae.hps import EXTRA_ARGUMENTS
        EXTRA_ARGUMENTS.remove(add)
        HPARAMS_REGISTRY.pop('_test_ext', None)


def test_upstream_style_parse_entry_point():
    parser = argparse.ArgumentParser()
    add_vae_arguments(parser)
    H = Hyperparams()
    parse_args_and_update_hparams(H, parser, ['--hps', 'imagenet64'])
    assert (H.image_size, H.image_channels, H.width, H.n_batch) == (64, 3, 512, 4)


def test_image_geometry_from_dataset_or_flags():
    assert get_hparams('ffhq256').image_size == 256
    H = get_hparams('cifar10', image_size=16, image_channels=1)
    assert (H.image_size, H.image_channels) == (16, 1)
    with pytest.raises(ValueError, match="unknown dataset 'mystery'. Valid: .*mnist5k"):
        get_hparams(dataset='mystery')
    with pytest.raises(ValueError, match="unknown hyperparameter 'zdmi'"):
        get_hparams('cifar10', zdmi=3)


def test_upstream_H_without_project_keys_builds_a_model():
    """Code written for upstream passes an H with upstream's keys only."""
    H = {k: v for k, v in get_hparams('cifar10').items() if k not in ('image_size', 'image_channels')}
    H.update(width=16, zdim=2, enc_blocks='32x1,32d2,16x1', dec_blocks='16x1,32m16')
    H['image_size'], H['image_channels'] = 32, 3      # upstream's data.py sets these two
    model = VAE(Hyperparams(H))
    assert model.H.image_size == 32
    assert with_defaults(argparse.Namespace(**H)).width == 16


def test_warmup_zero_means_none_and_first_step_is_not_zero():
    assert warmup_factor(0, 0) == 1.0
    assert warmup_factor(0, 100) == pytest.approx(0.01)
    assert warmup_factor(99, 100) == 1.0 and warmup_factor(1000, 100) == 1.0
    H = get_hparams('cifar10', width=8, zdim=2, enc_blocks='32x1', dec_blocks='32x1',
                    warmup_iters=0)
    optimizer, scheduler = build_optimizer(H, VAE(H))
    assert optimizer.param_groups[0]['lr'] == H.lr
    H.warmup_iters = -1
    with pytest.raises(ValueError, match='warmup_iters'):
        build_optimizer(H, VAE(H))


def test_plugin_presets_of_the_paper_are_registered():
    """hps_overrides registers A.1's presets through the vdvae.plugins entry point."""
    H = get_hparams('svhn')
    assert (H.dataset, H.image_size, H.n_batch, H.skip_threshold) == ('svhn', 32, 12, 500.0)
    assert (H.width, H.zdim, H.lr, H.ema_rate, H.warmup_iters) == (384, 16, 2e-4, 0.9999, 0)
    H = get_hparams('celeba64')
    assert (H.image_size, H.n_batch) == (64, 6) and H.dec_blocks.endswith('64m32,64x5')
    assert get_hparams('lsun64').dataset == 'lsun_bedroom64'


A1 = dict(width=384, zdim=16, lr=2e-4, skip_threshold=500.0, ema_rate=0.9999, adam_beta1=0.9,
          adam_beta2=0.9, warmup_iters=0)
A1_DEC64 = '1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21,64m32,64x5'
A1_ENC64 = '64x5,64d2,32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3'
A1_PRESETS = {
    'svhn': dict(dataset='svhn', n_batch=12, dec_blocks='1x1,4m1,4x2,8m4,8x5,16m8,16x10,32m16,32x21',
                 enc_blocks='32x11,32d2,16x6,16d2,8x6,8d2,4x3,4d4,1x3'),
    'celeba64': dict(dataset='celeba64', n_batch=6, dec_blocks=A1_DEC64, enc_blocks=A1_ENC64),
    'lsun64': dict(dataset='lsun_bedroom64', n_batch=6, dec_blocks=A1_DEC64, enc_blocks=A1_ENC64),
}


@pytest.mark.parametrize('name', sorted(A1_PRESETS))
def test_paper_presets_are_A1_over_upstreams_argparse_defaults(name):
    """A.1's presets are fresh presets over upstream's argparse defaults as A.1 changes them
    (hps_overrides/paper.py): no weight decay, no warm-up, A.1's values; every other key is the
    argparse default. Read as cifar10 plus A.1 instead, only wd would differ (cifar10's 0.01)."""
    H = get_hparams(name)
    assert H.wd == 0.0 and H.warmup_iters == 0
    for key, value in {**A1, **A1_PRESETS[name]}.items():
        assert H[key] == value, (key, H[key], value)
    assert (H.image_size, H.image_channels) == ((32, 3) if name == 'svhn' else (64, 3))
    defaults = get_hparams()
    own = {*A1, *A1_PRESETS[name], 'hparam_sets', 'image_size', 'image_channels'}
    for key in H.keys() - own:
        assert H[key] == defaults[key], (key, H[key], defaults[key])
    assert (H.grad_clip, H.num_mixtures, H.epochs_per_eval) == (200.0, 10, 10)
    on_cifar10 = get_hparams('cifar10', **A1, **A1_PRESETS[name])
    assert {k for k in H if H[k] != on_cifar10[k]} == {'wd', 'hparam_sets'}
    assert on_cifar10.wd == 0.01
    for derived in ('_stage1', '_stage2', '_conventional', '_masked'):
        assert (get_hparams(name + derived).wd, get_hparams(name + derived).warmup_iters) == (0.0, 0)


def test_cosine_decay_from_the_end_of_warm_up_to_zero_at_its_last_step():
    assert cosine_decay_factor(123, 0) == 1.0                      # none: upstream's constant lr
    assert [cosine_decay_factor(i, 100) for i in (0, 50, 100, 150)] == pytest.approx(
        [1.0, 0.5, 0.0, 0.0])
    assert cosine_decay_factor(10, 110, warmup_iters=10) == 1.0
    assert cosine_decay_factor(60, 110, warmup_iters=10) == pytest.approx(0.5)


def test_the_optimizer_follows_warm_up_then_the_decay():
    from vdvae import get_hparams
    H = get_hparams('mnist16', lr=1e-3, warmup_iters=4, lr_decay_iters=24)
    opt, sched = build_optimizer(H, torch.nn.Linear(2, 2))
    lrs = []
    for _ in range(25):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.5e-4) and lrs[3] == pytest.approx(1e-3)
    assert lrs[14] == pytest.approx(5e-4) and lrs[24] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
