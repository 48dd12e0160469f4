"""train.py end to end on mnist5k (CPU): learning, exact resume after SIGKILL, skip guard,
DDP equivalence with gloo, and every bad input."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vdvae import train
from vdvae.logger import read_jsonl

REPO = Path(__file__).resolve().parents[1]
TINY = ['--hps', 'mnist5k', '--width', '16', '--zdim', '4', '--num_mixtures', '3',
        '--enc_blocks', '32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
        '--dec_blocks', '1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1',
        '--iters_per_images', '100000', '--num_variables_visualize', '1',
        '--num_temperatures_visualize', '1', '--num_images_visualize', '2']
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))


def run(args, tmp_path, desc='run'):
    return train.main(TINY + ['--save_dir', str(tmp_path), '--desc', desc] + list(args))


def records(tmp_path, kind, desc='run'):
    return [r for r in read_jsonl(tmp_path / desc / 'log.jsonl') if r.get('type') == kind]


@pytest.mark.slow
def test_short_run_lowers_validation_elbo(tmp_path):
    # 4000 training digits at batch 50: one epoch is 80 steps, evaluated at its end
    assert run(['--n_batch', '50', '--num_iters', '80', '--lr', '3e-3', '--ema_rate', '0.9',
                '--iters_per_print', '20'], tmp_path) == 0
    assert run(['--n_batch', '50', '--test_eval'], tmp_path, desc='init') == 0
    initial = records(tmp_path, 'test_loss', 'init')[0]
    final = records(tmp_path, 'eval_loss')[-1]
    assert final['n_examples'] == 500 and final['step'] == 80
    assert final['elbo'] < initial['elbo'] - 0.5, (initial['elbo'], final['elbo'])
    files = set(os.listdir(tmp_path / 'run'))
    assert {'latest-model.th', 'latest-model-ema.th', 'latest-opt.th', 'latest-state.th',
            'latest-log.jsonl', 'log.txt', 'hparams.json', 'samples-1.png'} <= files
    assert json.loads((tmp_path / 'run' / 'hparams.json').read_text())['dataset'] == 'mnist5k'
    types = {r['type'] for r in read_jsonl(tmp_path / 'run' / 'log.jsonl') if 'type' in r}
    assert {'hparam', 'train_loss', 'eval_loss'} <= types


def _train_cmd(tmp_path, desc, extra=()):
    return [sys.executable, str(REPO / 'train.py'), *TINY, '--save_dir', str(tmp_path), '--desc',
            desc, '--n_batch', '8', '--num_iters', '24', '--iters_per_save', '3',
            '--iters_per_print', '1', '--iters_per_ckpt', '12', *extra]


def _wait_for_step(path, step, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout:
        if path.exists() and any(r.get('step', 0) >= step for r in read_jsonl(path)
                                 if r.get('type') == 'train_loss'):
            return
        if proc.poll() is not None:
            raise AssertionError('training ended before it could be killed')
        time.sleep(0.02)
    raise AssertionError('training did not reach the step in time')


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    subprocess.run(_train_cmd(tmp_path, 'straight'), env=ENV, check=True, capture_output=True)
    for kill_at in (4, 13):
        proc = subprocess.Popen(_train_cmd(tmp_path, 'killed'), env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_step(tmp_path / 'killed' / 'log.jsonl', kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = subprocess.run(_train_cmd(tmp_path, 'killed', ['--resume', '--num_iters', '24']),
                                 env=ENV, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        for name in ('latest-model.th', 'latest-model-ema.th', 'iter-12-model.th'):
            a = torch.load(tmp_path / 'straight' / name, weights_only=True)
            b = torch.load(tmp_path / 'killed' / name, weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a), (kill_at, name)
        a = torch.load(tmp_path / 'straight' / 'latest-opt.th', weights_only=True)['state']
        b = torch.load(tmp_path / 'killed' / 'latest-opt.th', weights_only=True)['state']
        assert all(torch.equal(a[i]['exp_avg_sq'], b[i]['exp_avg_sq']) for i in a)
        # the log is rolled back to the checkpoint, so each step is logged once
        steps = [r['step'] for r in records(tmp_path, 'train_loss', 'killed')]
        assert steps == list(range(1, 25))
        # run the second kill from a fresh start
        for name in os.listdir(tmp_path / 'killed'):
            os.unlink(tmp_path / 'killed' / name)


def test_skip_guard_stops_a_dead_locked_run(tmp_path, capsys):
    rc = run(['--n_batch', '8', '--skip_threshold', '1e-12', '--max_consecutive_skips', '5',
              '--num_iters', '50'], tmp_path)
    assert rc == 3
    err = capsys.readouterr().err
    assert '5 updates in a row were skipped' in err and 'Raise --skip_threshold' in err
    assert records(tmp_path, 'train_loss')[-1]['skipped_updates'] >= 1


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# Posterior noise off (z = posterior mean), so that one process with batch 2B and two processes
# with batch B each compute the same thing; everything else is the real train.py.
_NO_NOISE = ('import sys, vdvae.vae; from vdvae import train; '
             'vdvae.vae.draw_gaussian_diag_samples = lambda mu, logsigma: mu; '
             'sys.exit(train.main(sys.argv[1:]))')


@pytest.mark.parametrize('launcher', ['torchrun', 'mpiexec'])
@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_twice_the_batch(tmp_path, launcher):
    common = [*TINY, '--save_dir', str(tmp_path), '--num_iters', '3', '--iters_per_print', '1',
              '--lr', '1e-4', '--warmup_iters', '0']
    subprocess.run([sys.executable, '-c', _NO_NOISE, *common, '--desc', 'one', '--n_batch', '16'],
                   env=ENV, check=True, capture_output=True)
    two = [sys.executable, '-c', _NO_NOISE, *common, '--desc', 'two', '--n_batch', '8']
    if launcher == 'torchrun':            # the variables torchrun sets, without its agent
        port = str(_free_port())
        procs = [subprocess.Popen(two, env=dict(ENV, RANK=str(r), WORLD_SIZE='2', LOCAL_RANK=str(r),
                                                MASTER_ADDR='127.0.0.1', MASTER_PORT=port),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    else:
        mpiexec = Path(sys.executable).with_name('mpiexec')
        if not mpiexec.exists():
            pytest.skip('mpiexec not installed (pip install mpi4py mpich, as .ci/run does)')
        procs = [subprocess.Popen([str(mpiexec), '-n', '2', *two, '--port', str(_free_port())],
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    one = records(tmp_path, 'train_loss', 'one')
    two = records(tmp_path, 'train_loss', 'two')
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        for key in ('elbo', 'distortion', 'rate', 'grad_norm'):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    a = torch.load(tmp_path / 'one' / 'latest-model.th', weights_only=True)
    b = torch.load(tmp_path / 'two' / 'latest-model.th', weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('args,message', [
    (['--hps', 'nope'], "unknown preset 'nope'"),
    (['--dataset', 'nope'], "unknown dataset 'nope'"),
    (['--dataset', 'cifar10', '--image_size', '32', '--image_channels', '3', '--data_root', '/nonexistent'],
     'setup_cifar10.sh'),
    (['--image_size', '64'], 'the mnist5k images are 32x32'),
    (['--resume'], 'no checkpoint to resume'),
    (['--warmup_iters', '-3'], 'warmup_iters must be >= 0'),
])
def test_bad_input_gives_one_clear_error(tmp_path, capsys, args, message):
    assert run(list(args) + ['--num_iters', '1'], tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err, err


def test_unwritable_save_dir(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    assert train.main(TINY + ['--save_dir', str(blocker), '--num_iters', '1']) == 2
    assert 'cannot write to save dir' in capsys.readouterr().err


def test_existing_run_is_not_overwritten_unless_asked(tmp_path, capsys):
    assert run(['--n_batch', '8', '--num_iters', '2'], tmp_path) == 0
    before = (tmp_path / 'run' / 'latest-model.th').read_bytes()
    assert run(['--n_batch', '8', '--num_iters', '2', '--width', '8'], tmp_path) == 2
    assert 'already holds a run' in capsys.readouterr().err
    assert (tmp_path / 'run' / 'latest-model.th').read_bytes() == before
    assert run(['--n_batch', '8', '--num_iters', '3', '--resume', '--width', '8'], tmp_path) == 2
    assert 'width=16' in capsys.readouterr().err
    assert run(['--n_batch', '8', '--num_iters', '2', '--overwrite'], tmp_path) == 0


@pytest.mark.slow
def test_restore_path_from_another_preset(tmp_path, capsys):
    assert run(['--n_batch', '8', '--num_iters', '1'], tmp_path) == 0
    ckpt = tmp_path / 'run' / 'latest-model.th'
    assert run(['--restore_path', str(ckpt), '--width', '8', '--num_iters', '1'], tmp_path,
               desc='other') == 2
    assert 'does not fit this model' in capsys.readouterr().err


@pytest.mark.parametrize('flags', [['--amp', 'bf16'], ['--amp', 'fp16'], ['--channels_last']])
def test_precision_and_layout_switches_train(tmp_path, flags):
    assert run(['--n_batch', '8', '--num_iters', '3', '--iters_per_print', '1'] + flags,
               tmp_path) == 0
    stats = records(tmp_path, 'train_loss')
    assert len(stats) == 3 and all(0 < r['elbo'] < 10 for r in stats)
