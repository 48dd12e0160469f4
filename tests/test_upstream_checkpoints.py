"""profile and table1 on checkpoint files in upstream's own format: a tiny architecture over the
cifar10 preset, saved as upstream saves it (`X-model.th` from the DDP-wrapped model, every key
prefixed `module.`; `X-model-ema.th` without prefix; plain torch.save), on tiny cifar10-format data."""
import json
import os

import numpy as np
import pytest
import torch

from progcode_ext.experiments import profile, table1
from progcode_ext.experiments.demo import RUN_FLAGS
from vdvae import data, get_hparams
from vdvae.vae import VAE

from conftest import write_cifar

ARCH = dict(width=16, zdim=4, num_mixtures=2, n_batch=8,
            enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1')


def flags(**arch):
    return ' '.join(f'--{k} {v}' for k, v in arch.items())


def save_upstream(path, **arch):
    """`path-model.th` (DDP keys) and `path-model-ema.th` (plain keys), the same weights: a fresh
    VAE, perturbed so that its posteriors leave the prior (as a trained model's do)."""
    torch.manual_seed(0)
    sd = VAE(get_hparams('cifar10', **arch)).state_dict()
    sd = {k: v + 0.05 * torch.randn_like(v) for k, v in sd.items()}
    torch.save({'module.' + k: v for k, v in sd.items()}, f'{path}-model.th')
    torch.save(sd, f'{path}-model-ema.th')
    return f'{path}-model.th', f'{path}-model-ema.th'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('upstream'))
    write_cifar(root)
    mp = pytest.MonkeyPatch()
    mp.setitem(data.VALID_COUNT, 'cifar10', 10)     # 60 training images: 50 train, 10 valid
    files = save_upstream(os.path.join(root, 'cifar10-seed0-iter-900000'), **ARCH)
    train_flags = f'{flags(**ARCH)} --data_root {root} {RUN_FLAGS}'
    yield root, files, train_flags
    mp.undo()


def results(out, name):
    with open(os.path.join(out, name, 'results.json')) as f:
        return json.load(f)


@pytest.mark.slow
def test_profile_of_upstream_files(setup):
    root, (ddp, ema), train_flags = setup
    runs = {}
    # the DDP file at the default split (4x4 for 32x32 images); the EMA file with the split at 8x8
    for path, extra in ((ddp, ''), (ema, ' --progressive_res 8')):
        out = os.path.join(root, 'profile-' + os.path.basename(path))
        assert profile.main(['--hps', 'cifar10', '--checkpoint', path, '--probe_steps', '2',
                             '--out', out, '--device', 'cpu', '--n_eval', '8',
                             '--train_flags=' + train_flags + extra]) == 0
        runs[path] = results(out, 'profile'), open(os.path.join(out, 'profile', 'report.md')).read()
    (a, report_a), (b, report_b) = runs[ddp], runs[ema]
    rates = [r['rate'] for r in a['rows']]
    assert [r['res'] for r in a['rows']] == [1, 4, 8, 16, 32] and [r['k'] for r in a['rows']] == [1, 3, 5, 7, 9]
    assert all(np.isfinite(rates)) and all(x < y for x, y in zip(rates, rates[1:])) and rates[0] > 0
    # same weights, same seed: the same rates from the prefixed and the unprefixed file
    assert rates == [r['rate'] for r in b['rows']]
    # every probe is trained at its own resolution, whatever --progressive_res says
    assert [r['distortion'] for r in a['rows']] == [r['distortion'] for r in b['rows']]
    assert all(r['distortion'] > 0 for r in a['rows'][:-1]) and a['rows'][-1]['distortion'] is None
    assert [r['table1'] for r in a['rows']] == [False, True, False, False, False]
    assert [r['table1'] for r in b['rows']] == [False, False, True, False, False]
    assert a['table1'] == dict(res=4, K=3, R_K=rates[1], D_K=a['rows'][1]['distortion'])
    assert b['table1'] == dict(res=8, K=5, R_K=rates[2], D_K=b['rows'][2]['distortion'])
    assert '| 4 | 3 |' in report_a and 'resolution <= 4 (K = 3)' in report_a
    assert [line.split(' |')[0] for line in report_a.splitlines() if 'Table 1: (R_K, D_K)' in line] == ['| 4']
    assert 'resolution <= 8 (K = 5)' in report_b
    print('profile rows:', a['rows'])


@pytest.mark.slow
def test_table1_on_upstream_files(setup):
    root, (ddp, ema), train_flags = setup
    rows = []
    for path in (ddp, ema):
        out = os.path.join(root, 'table1-' + os.path.basename(path))
        assert table1.main(['--hps', 'cifar10', '--checkpoint', path, '--probe_steps', '2',
                            '--out', out, '--device', 'cpu', '--n_eval', '8',
                            '--train_flags=' + train_flags]) == 0
        rows.append(results(out, 'table1')['rows'][0])
        with open(os.path.join(out, 'runs', 'table1-probe-seed0', 'hparams.json')) as f:
            assert json.load(f)['model'] == 'masked'        # cifar10_masked
    a, b = rows
    assert a['K'] == 3 and a['R_K'] > 0 and a['D_K'] > 0 and np.isfinite(a['lambda_star_upper_bound'])
    assert (a['R_K'], a['D_K']) == (b['R_K'], b['D_K'])
    # R_K of the probe (frozen q of the first K blocks) = R_K of profile's Table 1 row (one batch,
    # seed 0: the same posterior samples)
    out = os.path.join(root, 'table1-profile')
    assert profile.main(['--hps', 'cifar10', '--checkpoint', ddp, '--out', out, '--device', 'cpu',
                         '--n_eval', '8', '--train_flags=' + train_flags]) == 0
    assert results(out, 'profile')['table1']['R_K'] == pytest.approx(a['R_K'], rel=1e-5)
    print('table1 rows:', rows)


@pytest.mark.parametrize('experiment', [profile, table1])
def test_a_file_of_another_architecture_is_one_clear_error(setup, experiment, capsys):
    root, _, train_flags = setup
    _, wrong = save_upstream(os.path.join(root, f'wide-{experiment.__name__}'), **dict(ARCH, width=24))
    out = os.path.join(root, 'wrong-' + experiment.__name__.rsplit('.', 1)[-1])
    capsys.readouterr()
    assert experiment.main(['--hps', 'cifar10', '--checkpoint', wrong, '--probe_steps', '2',
                            '--out', out, '--device', 'cpu', '--train_flags=' + train_flags]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith('error: ') and err.count('error: ') == 1 and 'Traceback' not in err
    assert wrong in err and 'does not fit this model' in err and 'mis-shaped' in err
    assert 'training' not in captured.out and not os.path.exists(os.path.join(out, 'runs'))
