"""progcode inside a checkout of openai/vdvae (progcode_ext/upstream, patches/).

Each test that needs a checkout runs on each one present: the FAKE in tests/fake_upstream
(upstream's module names, entry points and dependencies (CUDA, NCCL, MPI, apex) written from
../shared/spec/vdvae_upstream.md, not upstream code) always, and the vdvae_upstream submodule when
it is populated. The checkout is copied into a folder named `vdvae`, as `git clone` names it.
Installing the plugin changes torch for its process (the CPU substitutes), so every run is a
subprocess. Runs stop as they would in the real upstream: by the plugin's --num_iters.
"""
import ast
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_cifar
from progcode_ext.experiments.runs import free_port
from progcode_ext.upstream import CheckoutError, recognise
from vdvae.data import set_up_data
from vdvae.hps import read_hparams
from vdvae.models import build_model
from progcode_ext.upstream.patcher import BEGIN, PatchError, patch
from progcode_ext.upstream.patcher import main as patcher_main

FAKE = Path(__file__).parent / 'fake_upstream'
PATCHER = Path(__file__).parents[1] / 'patches' / 'upstream_hook.py'
TINY = ['--width', '16', '--zdim', '4', '--n_batch', '4', '--num_mixtures', '2',
        '--dec_blocks', '1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1',
        '--enc_blocks', '32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
        '--iters_per_print', '1', '--num_images_visualize', '2',
        '--num_variables_visualize', '1', '--num_temperatures_visualize', '1']
# every checkout is stopped as the real upstream is, by the plug-in's --num_iters
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')


SUBMODULE = Path(__file__).resolve().parents[1] / 'vdvae_upstream'
POPULATED = (SUBMODULE / 'train.py').is_file()
CHECKOUTS = [pytest.param(FAKE, id='fake'),
             pytest.param(SUBMODULE, id='vdvae_upstream', marks=pytest.mark.skipif(
                 not POPULATED, reason='the vdvae_upstream submodule is empty here (git '
                                       'submodule update --init vdvae_upstream; this machine has '
                                       'no network)'))]
# what upstream's data.py imports besides torch and NumPy (the fake's imports scikit-learn only)
UPSTREAM_IMPORTS = ('sklearn', 'torchvision')


def stop_at(num_iters):
    """Flags that stop a run of upstream's loop (it runs for num_epochs otherwise): the plugin's
    --num_iters, with --iters_per_save the same. A fresh run logs train_loss at steps
    0..num_iters-1 and saves `latest` after num_iters updates (logging that step's repeat record);
    every rank then exits with status 0 in the next iteration, after its update, before it logs or
    saves anything."""
    return ['--num_iters', str(num_iters), '--iters_per_save', str(num_iters)]


@pytest.fixture(params=CHECKOUTS)
def each_checkout(tmp_path, request):
    """tmp/vdvae (a copy of a checkout) and tmp/images (RGB 32x32 PNGs: 24 train, 8 valid), for
    each checkout present: the fake, and the submodule when populated."""
    return make_checkout(tmp_path, request.param)


@pytest.fixture
def each_runnable_checkout(each_checkout, request):
    """`each_checkout`, for tests that import the checkout's modules: the submodule's data.py
    also imports torchvision, which the fake does not."""
    if request.node.callspec.params['each_checkout'] == SUBMODULE:
        missing = [m for m in UPSTREAM_IMPORTS if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f'upstream\'s data.py imports {", ".join(missing)}, not installed here '
                        '(pip install scikit-learn torchvision)')
    return each_checkout


def make_checkout(tmp_path, source):
    import imageio
    shutil.copytree(source, tmp_path / 'vdvae', ignore=shutil.ignore_patterns('.git'))
    rng = np.random.RandomState(0)
    for split, n in (('train', 24), ('valid', 8)):
        (tmp_path / 'images' / split).mkdir(parents=True)
        for i in range(n):
            imageio.imwrite(tmp_path / 'images' / split / f'{i}.png',
                            rng.randint(0, 256, (32, 32, 3), dtype=np.uint8))
    return tmp_path


def run(args, cwd, check=True, launcher=()):
    """A subprocess (`args` after the interpreter). A run of upstream's loop needs `stop_at`."""
    proc = subprocess.run([*launcher, sys.executable, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=ENV)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def plugin(*args, **kwargs):
    """The plug-in's command. Upstream's loop starts torch.distributed on --port (default 29500)
    even for one process: each command gets a free port, so that tests in parallel workers
    (pytest -n) do not collide."""
    return run(['-m', 'progcode_ext.upstream', '--vdvae_root', 'vdvae', '--port', str(free_port()),
                *args], **kwargs)


def records(run_dir, kind='train_loss', repeats=False):
    """The log's records of `kind`. Upstream's loop (and so the fake) logs a second train_loss
    record at each save step, after the step count went up and before the next update: the same
    statistics again under the next step number. Those repeats are left out (unless `repeats`)."""
    with open(Path(run_dir) / 'log.jsonl') as f:
        found = [r for r in map(json.loads, f) if r.get('type') == kind]
    if repeats:
        return found
    out = []
    for r in found:
        if not (out and _without_step(r) == _without_step(out[-1])):
            out.append(r)
    return out


def _without_step(record):
    """The record's statistics: not its step or time, nor lr (the spec does not say whether the
    save step's record has one)."""
    return {k: v for k, v in record.items() if k not in ('step', 'time', 'lr')}


def load(path):
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------------------------------------
# Recognising a checkout

def test_recognise(each_checkout, tmp_path):
    checkout = each_checkout
    assert recognise(checkout / 'vdvae') == str(checkout / 'vdvae')
    assert recognise(checkout / 'vdvae' / 'train.py') == str(checkout / 'vdvae')
    with pytest.raises(CheckoutError, match=r'has no hps\.py.*--vdvae_root'):
        recognise(tmp_path / 'images')
    if POPULATED:                                    # then it is the default checkout
        assert recognise(None) == str(SUBMODULE)
    else:
        with pytest.raises(CheckoutError, match='no upstream checkout given'):
            recognise(None)
    vae_py = checkout / 'vdvae' / 'vae.py'
    vae_py.write_text(vae_py.read_text().replace('class VAE(', 'class Model('))
    with pytest.raises(CheckoutError, match=r'vae\.py defines no VAE'):
        recognise(checkout / 'vdvae')


@pytest.mark.slow
def test_plugin_refuses_what_it_does_not_recognise(each_checkout):
    checkout = each_checkout
    proc = plugin('--hps', 'svhn_stage1', cwd=checkout / 'images', check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: ') and 'vdvae is not a folder' in proc.stderr
    if not POPULATED:                                # (else the submodule is the default)
        env_root = run(['-m', 'progcode_ext.upstream', '--hps', 'svhn_stage1'], cwd=checkout,
                       check=False)
        assert env_root.returncode == 2 and 'no upstream checkout given' in env_root.stderr
    data_py = checkout / 'vdvae' / 'data.py'
    data_py.write_text('import progcode_absent_module\n' + data_py.read_text())
    proc = plugin('--hps', 'svhn_stage1', cwd=checkout, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith('error: ')
    assert "data.py cannot be imported (No module named 'progcode_absent_module')" in proc.stderr


# ------------------------------------------------------------------------------------------------
# Registration, the model swap, the substitutes and the fixes (in one process)

REGISTRATION = textwrap.dedent('''
    import argparse, sys, torch
    from progcode_ext.stage1 import Stage1VAE
    from progcode_ext.upstream import install, plugin
    from progcode_ext.upstream.interface import UpstreamInterface

    m = install('vdvae')
    assert install('vdvae') is m                                    # idempotent
    hps, helpers, train, vae = m['hps'], m['train_helpers'], m['train'], m['vae']
    cifar10 = hps.HPARAMS_REGISTRY['cifar10']

    # progcode's presets in upstream's registry (upstream's own kept), its flags in its parser
    assert isinstance(hps.HPARAMS_REGISTRY['svhn_stage1'], hps.Hyperparams)
    assert hps.HPARAMS_REGISTRY['cifar10'] is cifar10

    def parse(*argv):
        H = hps.Hyperparams()
        parser = hps.add_vae_arguments(argparse.ArgumentParser())
        hps.parse_args_and_update_hparams(H, parser, list(argv))
        return H
    H = parse('--hps', 'svhn_stage1', '--distortion_target', '0.01', *sys.argv[1:])
    assert (H.model, H.distortion_target, H.dataset, H.warmup_iters) == ('stage1', 0.01, 'svhn', 0)
    assert parse().model == 'vdvae'                                 # --hps is optional now
    try:
        parse('--hps', 'svhn_stage9')
        raise AssertionError('an unknown preset was accepted')
    except SystemExit as e:
        assert e.code == 2

    # the model swap, in every module that bound upstream's VAE
    assert helpers.VAE is vae.VAE and vae.VAE.upstream_vae.__module__ == 'vae'
    H.image_size, H.image_channels = 32, 3
    model = helpers.VAE(H)
    assert isinstance(model, Stage1VAE) and isinstance(model, UpstreamInterface)
    assert list(model.state_dict()) == list(Stage1VAE(H).state_dict())    # no wrapper prefix
    H.model = 'vdvae'
    assert type(helpers.VAE(H)) is vae.VAE.upstream_vae

    # upstream's contract: scalar stats; 'elbo' carries the objective
    x = torch.randn(2, 32, 32, 3)
    stats = model(x, x.clamp(-1, 1))
    assert all(v.dim() == 0 for v in stats.values()) and 'loss' not in stats
    assert {'elbo', 'rate', 'distortion', 'eta'} <= set(stats)

    # train_helpers' replacements, also where train.py imported them
    for name in ('update_ema', 'save_model', 'linear_warmup'):
        assert getattr(helpers, name) is getattr(plugin, name), name
    assert train.update_ema is helpers.update_ema and train.save_model is helpers.save_model
    assert helpers.linear_warmup(0)(0) == 1.0 and helpers.linear_warmup(10)(0) == 0.0
    assert helpers.linear_warmup(10)(5) == 0.5 and helpers.linear_warmup(10)(11) == 1.0
    assert helpers.AdamW.__module__ == 'progcode_ext.upstream.substitutes'      # no apex here
    assert helpers.DistributedDataParallel.__module__ == 'progcode_ext.upstream.substitutes'
    assert torch.zeros(1).cuda().device.type == 'cpu'                           # no CUDA here

    # data: progcode's datasets through upstream's set_up_data, items as upstream's
    D = parse('--hps', 'svhn', '--dataset', 'imagefolder', '--data_root', 'images')
    D.local_rank = 0
    D, train_data, valid_data, preprocess = m['data'].set_up_data(D)
    assert (len(train_data), len(valid_data), D.image_size) == (24, 8, 32)
    assert isinstance(train_data[0], tuple) and train_data[0][0].shape == (32, 32, 3)
    inp, target = preprocess([torch.stack([train_data[i][0] for i in range(2)])])
    assert inp.shape == (2, 32, 32, 3) and float(target.abs().max()) <= 1
    try:
        m['data'].set_up_data(parse('--hps', 'mnist5k'))
        raise AssertionError('1-channel data was accepted')
    except ValueError as e:
        assert 'RGB only' in str(e)
    print('ok')
''')


@pytest.mark.slow
def test_registration_model_swap_and_fixes(each_runnable_checkout):
    checkout = each_runnable_checkout
    script = checkout / 'check_registration.py'
    script.write_text(REGISTRATION)
    proc = run([str(script)], cwd=checkout)
    assert proc.stdout.strip().endswith('ok')
    assert 'progcode: substitutes for apex' in proc.stderr


def test_sample_grid_gives_stage2_the_unclamped_x_hat_of_training():
    """The grid's "first k latents fixed" rows (forward_samples_set_latents, in process: no
    checkout needed) hand stage 2 the x_hat it gets in training, unclamped."""
    from vdvae import get_hparams
    from vdvae.models import build_model
    from progcode_ext.upstream.interface import with_upstream_interface
    arch = dict(width=16, zdim=4, num_mixtures=2,
                enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
                dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1')
    torch.manual_seed(0)
    model = with_upstream_interface(build_model(get_hparams('mnist5k_conventional', **arch)))
    with torch.no_grad():                   # x_hat mostly outside [-1, 1], as conventional's is
        for p in model.stage1.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.stage1.decoder.out_net.out_conv.weight.mul_(20)
    seen = []
    model.stage2.cond_encoder.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.randn(3, 32, 32, 1)
    torch.manual_seed(5)
    model(x, x.clamp(-1, 1))
    torch.manual_seed(5)                    # the same draws: the z stage 1 used in training
    latents = [s['z'] for s in model.forward_get_latents(x)]
    samples = model.forward_samples_set_latents(3, latents, t=0.1)
    trained, sampled = seen
    assert trained.abs().max() > 5
    # equal up to float32 rounding (the posterior pass runs in another memory layout)
    torch.testing.assert_close(sampled, trained, rtol=1e-6, atol=1e-6 * float(trained.abs().max()))
    assert isinstance(samples, np.ndarray) and samples.dtype == np.uint8
    assert samples.shape == (3, 32, 32, 1)


# ------------------------------------------------------------------------------------------------
# Training through upstream's loop

@pytest.mark.slow
def test_progressive_coding_under_upstreams_loop(each_runnable_checkout):
    """Stage 1 by the plugin's command (2 steps), resumed by upstream's restore flags, then stage 2
    by the patched train.py; the multiplier survives the checkpoint, stage 1 stays bit-identical."""
    checkout = each_runnable_checkout
    runs = checkout / 'runs'
    common = [*TINY, '--dataset', 'imagefolder', '--data_root', str(checkout / 'images'),
              '--save_dir', str(runs)]
    # D (about 0.45) is below this target, so eta falls, and fast at this multiplier learning rate
    eta_flags = ['--distortion_target', '2.0', '--eta_lr', '0.05', '--eta_ema_rate', '0.5']
    plugin('--hps', 'svhn_stage1', *eta_flags, *common, *stop_at(2), '--desc', 'stage1',
           cwd=checkout)
    s1 = runs / 'stage1'
    log = records(s1)
    assert [r['step'] for r in log] == [0, 1]
    # the save at step 2 logged step 1's statistics again, under step 2
    assert [r['step'] for r in records(s1, repeats=True)] == [0, 1, 2]
    assert all(r['skipped_updates'] == 0 and r['lr'] == 2e-4 for r in log)   # warmup_iters 0
    etas = [r['eta'] for r in log]
    assert etas[0] == pytest.approx(0.9999) and etas[0] > etas[1]
    assert log[0]['elbo'] == pytest.approx(
        (1 - etas[0]) * log[0]['rate'] + etas[0] * log[0]['distortion'], rel=1e-4)
    model, ema = load(s1 / 'latest-model.th'), load(s1 / 'latest-model-ema.th')
    eta_saved = float(model['module.objective.multiplier.eta'])       # after 2 updates
    assert eta_saved < etas[1]                  # saved after the second update, not the first
    assert float(ema['objective.multiplier.eta']) == eta_saved       # buffers copied to the EMA
    assert load(s1 / 'latest-state.th') == {'step': 2}
    assert sorted(p.name for p in s1.glob('*.png')) == ['samples-0.png', 'samples-1.png']

    plugin('--hps', 'svhn_stage1', *eta_flags, *common, *stop_at(1), '--desc', 'resumed',
           '--restore_path', str(s1 / 'latest-model.th'),
           '--restore_ema_path', str(s1 / 'latest-model-ema.th'),
           '--restore_optimizer_path', str(s1 / 'latest-opt.th'),
           '--restore_log_path', str(s1 / 'latest-log.jsonl'), cwd=checkout)
    resumed = records(runs / 'resumed')
    # upstream's load_opt resumes at the largest step in the log: the save record's, 2, the number
    # of updates made; the multiplier there is the one saved
    assert [r['step'] for r in resumed] == [2]
    assert resumed[0]['eta'] == pytest.approx(eta_saved, rel=1e-6)

    assert patcher_main(['apply', str(checkout / 'vdvae')]) == 0
    run(['train.py', '--hps', 'svhn_stage2', '--stage1_path', str(s1), *common, *stop_at(2),
         '--desc', 'stage2'], cwd=checkout / 'vdvae')
    s2 = runs / 'stage2'
    log = records(s2)
    assert [r['step'] for r in log] == [0, 1]
    for r in log:       # 'elbo' is the joint -ELBO of the two stages
        assert r['elbo'] == pytest.approx(r['distortion'] + r['rate_stage1'] + r['rate_stage2'],
                                          rel=1e-4)
    stage1 = load(s1 / 'latest-model-ema.th')
    for name, weights in (('latest-model.th', 'module.stage1.'),
                          ('latest-model-ema.th', 'stage1.')):
        saved = load(s2 / name)
        assert saved.keys() >= {weights + k for k in stage1}
        for k, v in stage1.items():
            assert torch.equal(saved[weights + k], v), (name, k)
        changed = [k for k in saved if k.startswith(weights.replace('stage1', 'stage2'))]
        assert changed                                              # and stage 2 is there


@pytest.mark.slow
def test_three_stages_under_upstreams_loop(each_runnable_checkout):
    """The N-stage model in upstream's loop: stage 1 and then the middle stage of a three-stage
    chain (its own multiplier steps), each on the frozen runs before it."""
    checkout = each_runnable_checkout
    runs = checkout / 'runs'
    common = [*TINY, '--hps', 'svhn_stage3', '--dataset', 'imagefolder', '--data_root',
              str(checkout / 'images'), '--save_dir', str(runs), '--distortion_targets', '4,2',
              '--eta_lr', '0.05', '--eta_ema_rate', '0.5', *stop_at(2)]
    plugin(*common, '--desc', 's1', cwd=checkout)
    plugin(*common, '--desc', 's2', '--stage_paths', str(runs / 's1'), cwd=checkout)
    log = records(runs / 's2')
    assert [r['step'] for r in log] == [0, 1] and log[1]['eta'] < log[0]['eta']
    assert {'rate_stage1', 'rate_stage2', 'mse_stage2', 'psnr'} <= set(log[0])
    s1, s2 = load(runs / 's1' / 'latest-model-ema.th'), load(runs / 's2' / 'latest-model-ema.th')
    assert s1.keys() and all(torch.equal(s2[k], v) for k, v in s1.items())   # stage 1 frozen
    assert int(s2['stage2.objective.multiplier.steps']) == 2             # one step per update
    assert 'stage1.objective.multiplier.steps' in s2 and not any(k.startswith('stage3') for k in s2)


@pytest.mark.slow
def test_upstreams_own_vae_and_data_with_the_fixes(each_runnable_checkout):
    """--model vdvae keeps the checkout's VAE and its cifar10 loader (the np.vstack fix), with
    warmup_iters 0 (the division fix); checkpoints are upstream's files, written as one set."""
    checkout = each_runnable_checkout
    # upstream holds out 5000 training images for validation (the fake a fifth, at most 5000):
    # 5060 leave it 60, 15 iterations an epoch, so no evaluation in these runs; labels 0..9
    write_cifar(checkout / 'cifar', n_per_batch=1012)
    for batch in (checkout / 'cifar' / 'cifar-10-batches-py').iterdir():
        content = pickle.loads(batch.read_bytes())
        content[b'labels'] = [i % 10 for i in range(len(content[b'labels']))]
        batch.write_bytes(pickle.dumps(content, protocol=2))
    patch(checkout / 'vdvae', 'apply')          # the command also works on a hooked checkout
    proc = plugin('--hps', 'cifar10', *TINY, *stop_at(2), '--warmup_iters', '0',
                  '--data_root', str(checkout / 'cifar'), '--save_dir', str(checkout / 'runs'),
                  '--desc', 'vdvae', cwd=checkout)
    assert proc.stderr.count('progcode: substitutes for') == 1
    run_dir = checkout / 'runs' / 'vdvae'
    log = records(run_dir)
    assert [r['step'] for r in log] == [0, 1] and log[0]['lr'] == 2e-4
    assert {'elbo', 'distortion', 'rate'} <= set(log[0]) and 'eta' not in log[0]
    model = load(run_dir / 'latest-model.th')
    assert all(k.startswith('module.') for k in model) and 'module.decoder.gain' in model
    assert {p.name for p in run_dir.iterdir()} >= {'latest-model.th', 'latest-model-ema.th',
                                                  'latest-opt.th', 'latest-log.jsonl',
                                                  'latest-state.th', 'hparams.json'}
    assert load(run_dir / 'latest-state.th') == {'step': 2}
    assert not [p for p in run_dir.iterdir() if p.name.endswith('.pending')]

    # the D_K probe of Table 1 on that upstream-format file (DDP keys), in upstream's loop (DDP
    # over a model with unused parameters)
    plugin('--hps', 'cifar10_masked', '--encoder_path', str(run_dir / 'latest-model.th'), *TINY,
           *stop_at(2), '--data_root', str(checkout / 'cifar'),
           '--save_dir', str(checkout / 'runs'), '--desc', 'probe', cwd=checkout)
    probe = records(checkout / 'runs' / 'probe')
    assert [r['step'] for r in probe] == [0, 1] and all(r['elbo'] == r['distortion'] for r in probe)
    saved = load(checkout / 'runs' / 'probe' / 'latest-model-ema.th')
    encoder = {k[len('module.'):]: v for k, v in model.items() if k.startswith('module.encoder.')}
    assert encoder and all(torch.equal(saved[k], v) for k, v in encoder.items())   # the frozen q

    # Table 1's gamma-optimal decoder without --rate_target: upstream's loop, too, measures
    # gamma = R_K of the trained VDVAE first (progcode's loader, the validation split)
    proc = plugin('--hps', 'cifar10_masked', '--mode', 'gamma_optimal', '--encoder_path',
                  str(run_dir / 'latest-model.th'), *TINY, *stop_at(2),
                  '--data_root', str(checkout / 'cifar'), '--save_dir', str(checkout / 'runs'),
                  '--desc', 'gamma', cwd=checkout)
    gamma = load(checkout / 'runs' / 'gamma' / 'latest-model.th')[
        'module.objective.multiplier.target_value']
    H = read_hparams(checkout / 'runs' / 'gamma' / 'hparams.json')
    expected = build_model(H)
    _, _, valid, preprocess = set_up_data(H)
    torch.manual_seed(H.seed)
    expected.calibrate(valid, preprocess, 'cpu', lambda line: None)
    assert float(gamma) == pytest.approx(float(expected.objective.multiplier.target), rel=1e-6)
    assert float(gamma) != 1.0 and f'gamma = R_K of the trained model = {float(gamma):.6f}' in (
        (checkout / 'runs' / 'gamma' / 'log.txt').read_text())


@pytest.mark.slow
def test_mpiexec_two_ranks(each_runnable_checkout):
    """Upstream's launcher: two MPI ranks (gloo on the CPU) keep one multiplier, and both stop at
    --num_iters."""
    checkout = each_runnable_checkout
    mpiexec = Path(sys.executable).with_name('mpiexec')
    if not mpiexec.exists():
        pytest.skip('mpiexec not installed (pip install mpi4py mpich, as .ci/run does)')
    # --iters_per_ckpt 1: the checkpoint after the first update, whose multiplier step 1 logged
    plugin('--hps', 'svhn_stage1', *TINY, *stop_at(2), '--iters_per_ckpt', '1',
           '--distortion_target', '2.0', '--eta_lr', '0.05',
           '--dataset', 'imagefolder', '--data_root', str(checkout / 'images'),
           '--save_dir', str(checkout / 'runs'), '--desc', 'mpi',
           cwd=checkout, launcher=(str(mpiexec), '-n', '2'))
    run_dir = checkout / 'runs' / 'mpi'
    assert {r['key']: r['value'] for r in records(run_dir, 'hparam')}['mpi_size'] == 2
    log = records(run_dir)
    assert [r['step'] for r in log] == [0, 1] and log[1]['eta'] < log[0]['eta']
    # the logged eta is the mean over the ranks; rank 0's own equals it
    ema = load(run_dir / 'iter-1-model-ema.th')
    assert float(ema['objective.multiplier.eta']) == pytest.approx(log[1]['eta'], rel=1e-6)
    assert load(run_dir / 'latest-state.th') == {'step': 2}
    assert sorted(p.name for p in run_dir.glob('iter-*-model.th')) == ['iter-1-model.th',
                                                                       'iter-2-model.th']


# ------------------------------------------------------------------------------------------------
# The patcher

def test_patcher_apply_dry_run_revert(each_checkout, capsys):
    checkout = each_checkout
    train_py = checkout / 'vdvae' / 'train.py'
    original = train_py.read_bytes()
    diff = patch(checkout / 'vdvae', 'apply', dry_run=True)
    assert train_py.read_bytes() == original                        # dry run: nothing written
    added = [line[1:] for line in diff.splitlines()
             if line.startswith('+') and not line.startswith('+++')]
    assert added[0] == BEGIN and '_progcode_install(__file__)' in added
    assert patch(checkout / 'vdvae', 'apply') == diff
    lines = train_py.read_text().splitlines()
    first_import = next(i for i, line in enumerate(lines) if line.startswith(('import ', 'from ')))
    assert lines[first_import - 1] == BEGIN                         # before upstream's first import
    patched = train_py.read_bytes()
    assert patch(checkout / 'vdvae', 'apply') == '' and train_py.read_bytes() == patched
    assert 'already applied' in capsys.readouterr().out
    assert patch(checkout / 'vdvae', 'revert', dry_run=True).count('\n-') == len(added)
    assert train_py.read_bytes() == patched
    patch(checkout / 'vdvae', 'revert')
    assert train_py.read_bytes() == original                        # byte for byte
    assert patch(checkout / 'vdvae', 'revert') == ''


def test_patcher_keeps_line_endings_and_future_imports(each_checkout):
    checkout = each_checkout
    train_py = checkout / 'vdvae' / 'train.py'
    # a future import must open the module: right after its docstring, if it has one
    lines = train_py.read_text().split('\n')
    first = ast.parse('\n'.join(lines)).body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    at = first.end_lineno if docstring else 0
    text = '\n'.join(lines[:at] + ['from __future__ import annotations'] + lines[at:])
    original = text.replace('\n', '\r\n').encode()
    train_py.write_bytes(original)
    patch(checkout / 'vdvae', 'apply')
    patched = train_py.read_bytes()
    compile(patched, str(train_py), 'exec')                         # still a valid module
    lines = patched.split(b'\r\n')
    assert b'\n' not in b''.join(lines)                              # still CRLF throughout
    at = lines.index(BEGIN.encode())
    assert lines[at - 1] == b'from __future__ import annotations'
    patch(checkout / 'vdvae', 'revert')
    assert train_py.read_bytes() == original


@pytest.mark.slow
def test_patcher_refuses(each_checkout, capsys):
    checkout = each_checkout
    assert patcher_main(['apply', str(checkout / 'images')]) == 2
    assert 'error:' in capsys.readouterr().err
    train_py = checkout / 'vdvae' / 'train.py'
    patch(checkout / 'vdvae', 'apply')
    edited = train_py.read_text().replace('_progcode_install(__file__)', '_progcode_install("x")')
    train_py.write_text(edited)
    for action in ('apply', 'revert'):
        with pytest.raises(PatchError, match='edited or partial progcode hook.*git checkout'):
            patch(checkout / 'vdvae', action)
    assert train_py.read_text() == edited                           # left as it was
    proc = subprocess.run([sys.executable, str(PATCHER), 'revert', str(checkout / 'vdvae')],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stderr.startswith('error:')


@pytest.mark.slow
def test_an_experiment_through_upstreams_loop_writes_the_same_run_folders(each_runnable_checkout,
                                                                          monkeypatch):
    """`--loop upstream`: the stage trains in upstream's loop (--num_iters stops it), and the
    experiment reads its run as one of train.py's."""
    from progcode_ext.experiments import rd_curve
    checkout = each_runnable_checkout
    monkeypatch.chdir(checkout)
    out = checkout / 'exp'
    argv = ['--hps', 'svhn', '--out', str(out), '--steps', '5', '--targets', '0.05',
            '--loop', 'upstream', '--vdvae_root', str(checkout / 'vdvae'),
            '--train_flags', ' '.join(TINY + ['--dataset', 'imagefolder',     # it sets the stop
                                              '--data_root', str(checkout / 'images')])]
    assert rd_curve.main(argv) == 0
    run_dir = out / 'runs' / 'stage1-0.05-seed0'
    assert load(run_dir / 'latest-state.th')['step'] == 5                 # stopped at --num_iters
    assert load(run_dir / 'iter-4-state.th')['step'] == 4                 # and kept its 4/5 point
    saved = json.loads((run_dir / 'hparams.json').read_text())
    assert saved['model'] == 'stage1' and saved['num_iters'] == 5 and saved['image_size'] == 32
    assert [r['step'] for r in records(run_dir)] == [0, 1, 2, 3, 4]       # upstream's count, from 0
    result = json.loads((out / 'rd_curve' / 'results.json').read_text())
    assert result['rows'][0]['target'] == 0.05 and result['rows'][0]['rate'] > 0
    # finished: a second command re-runs nothing (a run would append to the log)
    log = (run_dir / 'log.jsonl').read_bytes()
    assert rd_curve.main(argv) == 0
    assert (run_dir / 'log.jsonl').read_bytes() == log
    assert load(run_dir / 'latest-state.th')['step'] == 5


def test_upstreams_warm_up_factor_also_decays_when_asked(monkeypatch):
    from progcode_ext.upstream import plugin as installed      # (importing it installs nothing)
    from vdvae.hps import Hyperparams
    monkeypatch.setitem(installed.RUN, 'H', Hyperparams(lr_decay_iters=30, num_iters=None))
    factor = installed.linear_warmup(10)
    assert factor(5) == 0.5 and factor(10) == 1.0          # warm-up as upstream's, then the decay
    assert factor(20) == pytest.approx(0.5) and factor(30) == 0.0
    monkeypatch.setitem(installed.RUN, 'H', Hyperparams(lr_decay_iters=0, num_iters=None))
    assert installed.linear_warmup(10)(20) == 1.0           # none asked: upstream's constant lr
