"""Ensembles (vdvae/ensemble.py): K same-shaped models trained in one process as one batched
computation, `train.py --ensemble K` and `python -m vdvae.ensemble ARGV ...`, on the mnist16 toy
data (CPU).

What is checked: each member ends as the same run trained alone, to float rounding, for every kind
of model (VDVAE, stage 1, progressive stage 2, conventional with and without the stage-1 rate
warm-up, the masked decoder's probe and gamma-optimal modes), Lagrange multipliers included; an
ensemble stopped by SIGKILL or SIGTERM, or left with its members at different steps (a crash
between two members' saves), resumes bit for bit; a member's folder is an ordinary run that
`train.py --resume` continues alone; a member that diverges stops alone while the others finish;
bad ensembles are one `error:` line that writes nothing; `--ensemble K` names and seeds its runs.
"""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vdvae import ensemble, train
from vdvae.hps import read_hparams
from vdvae.logger import read_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO), PYTHONWARNINGS='ignore')
# Flags every run here shares: the mnist16 presets at half their width, small batches, no sample
# grids beyond the first step's.
COMMON = ['--width', '16', '--n_batch', '8', '--quiet', '--iters_per_print', '1',
          '--iters_per_images', '100000', '--num_images_visualize', '2',
          '--num_variables_visualize', '1', '--num_temperatures_visualize', '1']
STEPS = 3               # the equality runs' length
EQUALITY = ['--num_iters', str(STEPS)]
# A parameter differs by about 1e-7 (at most about 1e-5: Adam amplifies rounding) between an
# ensemble's member and its run alone after a few steps; over all parameters, by less than a
# thousandth of what training moved them.
ATOL = 1e-4
RELATIVE = 1e-3
CHECKPOINT_FILES = ('latest-model.th', 'latest-model-ema.th', 'latest-opt.th')
TARGETS = ('0.0064', '0.0128')          # stage 1's members' distortion targets
# The kinds of model whose state holds a Lagrange multiplier (own or stage 1's).
WITH_MULTIPLIER = {'stage1', 'stage2', 'conventional', 'conventional_warmup', 'gamma_optimal'}
KINDS = ['vdvae', 'stage1', 'stage2', 'conventional', 'conventional_warmup', 'masked_probe',
         'gamma_optimal']


def load(path):
    return torch.load(path, weights_only=True)


def desc(k):
    return f'm-seed{k}'


def member_flags(kind, k, alone):
    """Member k's flags (k = 0, 1) for a kind of model; `alone(kind, k)` gives the run folders
    that it builds on (stage 1 runs for stage 2, a VDVAE for the masked decoder)."""
    own = ['--seed', str(k), '--desc', desc(k)]
    if kind == 'vdvae':
        return ['--hps', 'mnist16', *own]
    if kind == 'stage1':
        return ['--hps', 'mnist16_stage1', '--distortion_target', TARGETS[k], *own]
    if kind == 'stage2':
        return ['--hps', 'mnist16_stage2', '--stage1_path', str(alone('stage1', k)), *own]
    if kind == 'conventional':
        return ['--hps', 'mnist16_conventional', *own]
    if kind == 'conventional_warmup':
        return ['--hps', 'mnist16_conventional', '--stage1_rate_warmup', '2', *own]
    # the masked decoder: each member on another trained VDVAE (seed 0's weights, and its EMA)
    encoder = alone('vdvae', 0) / ('latest-model.th', 'latest-model-ema.th')[k]
    mode = 'gamma_optimal' if kind == 'gamma_optimal' else 'probe'
    return ['--hps', 'mnist16_masked', '--mode', mode, '--encoder_path', str(encoder), *own]


@pytest.fixture(scope='module')
def alone(tmp_path_factory):
    """`alone(kind, k)`: the folder of member k of `kind` trained alone by `train.main` (each
    trained once per module, on first use)."""
    root = tmp_path_factory.mktemp('alone')
    done = {}

    def get(kind, k):
        if (kind, k) not in done:
            flags = member_flags(kind, k, get)
            assert train.main(COMMON + EQUALITY + flags + ['--save_dir', str(root / kind)]) == 0
            done[kind, k] = root / kind / desc(k)
        return done[kind, k]
    return get


def weights(state):
    """The float tensors of a state dict but the Lagrange multiplier's (float64 scalars)."""
    return {k: v.double() for k, v in state.items()
            if v.is_floating_point() and 'multiplier' not in k}


def distance(a, b):
    """The L2 distance of two models' weights (all tensors as one vector)."""
    a, b = weights(a), weights(b)
    return sum(((a[k] - b[k]) ** 2).sum() for k in a).item() ** 0.5


def max_difference(a, b):
    a, b = weights(a), weights(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_member_equals_alone(member, solo, kind):
    models = {}
    for name in ('latest-model.th', 'latest-model-ema.th'):
        a, b = models[name] = load(member / name), load(solo / name)
        assert a.keys() == b.keys(), name
        for key in a:
            if not a[key].is_floating_point():
                assert torch.equal(a[key], b[key]), (name, key)
            elif 'multiplier' in key:    # float64 scalars; relative, since some are tiny
                torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-12,
                                           msg=lambda m: f'{name} {key}: {m}')
            else:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=ATOL,
                                           msg=lambda m: f'{name} {key}: {m}')
        multiplier = [key for key in a if key.endswith('multiplier.eta')]
        assert len(multiplier) == (kind in WITH_MULTIPLIER), (name, multiplier)
    # the comparison can fail: training moved the weights (the model from its EMA, which stays
    # near the start at ema_rate 0.99) by far more than the member differs from its run alone
    model, ema = models['latest-model.th'][0], models['latest-model-ema.th'][0]
    moved = distance(model, ema)
    assert moved > 1e-2
    assert distance(model, models['latest-model.th'][1]) < RELATIVE * moved
    assert load(member / 'latest-state.th')['step'] == load(solo / 'latest-state.th')['step'] \
        == STEPS
    ours, theirs = records(member), records(solo)
    assert [r['step'] for r in ours] == [r['step'] for r in theirs] == list(range(1, STEPS + 1))
    for x, y in zip(ours, theirs):
        assert x['skipped_updates'] == 0
        # the gradient norm catches a gradient mixed with another member's (Adam's first steps
        # hardly change then); the rate, a difference of close numbers, rounds the most
        for key, rel in (('elbo', 1e-4), ('loss', 1e-4), ('distortion', 1e-4), ('rate', 1e-3),
                         ('grad_norm', 1e-4)):
            if key in y:
                assert x[key] == pytest.approx(y[key], rel=rel, abs=1e-7), (x['step'], key)


def records(run_dir, kind='train_loss'):
    return [r for r in read_jsonl(Path(run_dir) / 'log.jsonl') if r.get('type') == kind]


# ------------------------------------------------------------------------------------------------
# 1. A member is its run alone

@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_each_member_equals_its_run_alone(tmp_path, alone, kind):
    save_dir = tmp_path / 'ensemble'
    if kind == 'vdvae':          # train.py --ensemble 2: seeds 0, 1 in m-seed0, m-seed1
        assert train.main(COMMON + EQUALITY + ['--hps', 'mnist16', '--desc', 'm', '--ensemble',
                                               '2', '--save_dir', str(save_dir)]) == 0
    else:
        argv = [shlex.join(COMMON + EQUALITY + member_flags(kind, k, alone)
                           + ['--save_dir', str(save_dir)]) for k in (0, 1)]
        assert ensemble.main(argv) == 0
    assert sorted(os.listdir(save_dir)) == [desc(0), desc(1)]
    members = [save_dir / desc(k) for k in (0, 1)]
    for k, member in enumerate(members):
        assert {'latest-model.th', 'latest-model-ema.th', 'latest-opt.th', 'latest-state.th',
                'latest-log.jsonl', 'log.jsonl', 'log.txt', 'hparams.json'} \
            <= set(os.listdir(member))
        assert read_hparams(member / 'hparams.json')['seed'] == k
        assert_member_equals_alone(member, alone(kind, k), kind)
    # the members are not one model twice
    assert max_difference(*(load(m / 'latest-model.th') for m in members)) > 100 * ATOL
    if kind == 'stage1':         # each member keeps its own target
        assert [load(m / 'latest-model.th')['objective.multiplier.target_value'].item()
                for m in members] == [float(t) for t in TARGETS]


# ------------------------------------------------------------------------------------------------
# 2. Exact resume

RESUME_STEPS = 5
RESUME = ['--hps', 'mnist16', '--desc', 'r', '--ensemble', '2', '--iters_per_ckpt', '2', *COMMON]
RUNS = ('r-seed0', 'r-seed1')
NO_CKPT = ['--iters_per_ckpt', '1000']       # the runs compared with `straight` need no iter-N


def resume_args(save_dir, *extra):
    return RESUME + ['--num_iters', str(RESUME_STEPS), '--save_dir', str(save_dir), *extra]


# train.py, pausing after each member's step from step 3 on, so that a signal sent from outside
# lands mid-run however slowly this machine polls the log (the pause changes no number).
PACED = '''import sys, time
from vdvae import train
after_step = train.after_step
def paced(H, run, st, *args):
    after_step(H, run, st, *args)
    if st.progress['step'] >= 3:
        time.sleep(0.3)
train.after_step = paced
sys.exit(train.main(sys.argv[1:]))
'''


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """The 2-member ensemble run straight through RESUME_STEPS steps (in this process), with
    checkpoint sets iter-2 and iter-4."""
    save_dir = tmp_path_factory.mktemp('straight')
    assert train.main(resume_args(save_dir)) == 0
    return save_dir


def assert_bit_identical(a, b):
    """Both members' latest model, EMA and optimizer state in save dirs `a` and `b`: equal bit for
    bit, and each step logged once."""
    for run in RUNS:
        for name in CHECKPOINT_FILES:
            x, y = load(a / run / name), load(b / run / name)
            if name.endswith('-opt.th'):
                x, y = x['state'], y['state']
                assert x.keys() == y.keys() and x
                assert all(torch.equal(x[i][k], y[i][k]) for i in x
                           for k in ('exp_avg', 'exp_avg_sq', 'step')), (run, name)
            else:
                assert x.keys() == y.keys()
                assert all(torch.equal(x[k], y[k]) for k in x), (run, name)
        assert load(b / run / 'latest-state.th')['step'] == RESUME_STEPS
        # the log is rolled back to the checkpoint: each step is logged once
        assert [r['step'] for r in records(b / run)] == list(range(1, RESUME_STEPS + 1)), run
    # and the members are two models
    assert not torch.equal(*(load(b / run / 'latest-model.th')['decoder.out_net.out_conv.weight']
                             for run in RUNS))


@pytest.fixture
def start_paced(tmp_path):
    """start_paced(save_dir, *flags): the straight run's ensemble, paced, in another process
    (its output in tmp_path/out.txt); killed at the test's end if still running."""
    started = []

    def start(save_dir, *flags):
        with open(tmp_path / 'out.txt', 'w') as out:
            proc = subprocess.Popen([sys.executable, '-c', PACED, *resume_args(save_dir, *flags),
                                     *NO_CKPT],
                                    cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_step(run_dir, step, proc, timeout=120):
    """Until the run in `run_dir` has logged `step`."""
    start = time.time()
    while time.time() - start < timeout:
        if (run_dir / 'log.jsonl').exists() and any(r['step'] >= step for r in records(run_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError('the ensemble ended before the signal')
        time.sleep(0.02)
    raise AssertionError(f'the ensemble did not reach step {step} in {timeout} s')


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, straight, start_paced):
    save_dir = tmp_path / 'killed'
    proc = start_paced(save_dir, '--iters_per_save', '2')
    wait_for_step(save_dir / RUNS[1], 3, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    steps = [load(save_dir / run / 'latest-state.th')['step'] for run in RUNS]
    assert all(2 <= s < RESUME_STEPS for s in steps), steps
    assert train.main(resume_args(save_dir, '--resume', *NO_CKPT)) == 0
    assert_bit_identical(straight, save_dir)


@pytest.mark.slow
def test_sigterm_saves_every_member_and_resume_is_bit_identical(tmp_path, straight, start_paced):
    save_dir = tmp_path / 'stopped'
    proc = start_paced(save_dir)
    wait_for_step(save_dir / RUNS[1], 3, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, (tmp_path / 'out.txt').read_text()
    steps = [load(save_dir / run / 'latest-state.th')['step'] for run in RUNS]
    assert steps[0] == steps[1] and 3 <= steps[0] < RESUME_STEPS, steps
    assert (tmp_path / 'out.txt').read_text().splitlines() == [
        f'pre-empted by SIGTERM at step {steps[0]}: saved the latest checkpoint in '
        f'{save_dir / run}; continue with --resume' for run in RUNS]
    assert train.main(resume_args(save_dir, '--resume', *NO_CKPT)) == 0
    assert_bit_identical(straight, save_dir)


@pytest.mark.slow
@pytest.mark.parametrize('behind,steps', [(1, (RESUME_STEPS, 2)), (0, (2, 4))],
                         ids=['the-other-finished', 'both-behind'])
def test_members_at_different_steps_resume_bit_identical(tmp_path, straight, behind, steps):
    """A crash between two members' saves (`steps`: each member's latest checkpoint): the
    member behind catches up while the other waits (or has finished), and both end as in the
    straight run."""
    save_dir = tmp_path / 'crashed'
    shutil.copytree(straight, save_dir)
    for run, step in zip(RUNS, steps):
        if step == RESUME_STEPS:
            continue
        for suffix in ('-model.th', '-model-ema.th', '-opt.th', '-state.th', '-log.jsonl'):
            shutil.copyfile(save_dir / run / f'iter-{step}{suffix}',
                            save_dir / run / f'latest{suffix}')
    assert [load(save_dir / run / 'latest-state.th')['step'] for run in RUNS] == list(steps)
    assert train.main(resume_args(save_dir, '--resume', *NO_CKPT)) == 0
    assert_bit_identical(straight, save_dir)


# ------------------------------------------------------------------------------------------------
# 3. A member's folder is an ordinary run

@pytest.mark.slow
def test_a_member_continues_alone(tmp_path, straight):
    shutil.copytree(straight / RUNS[1], tmp_path / RUNS[1])
    more = RESUME_STEPS + 2
    assert train.main(['--hps', 'mnist16', *COMMON, '--desc', RUNS[1], '--seed', '1', '--resume',
                       '--num_iters', str(more), '--save_dir', str(tmp_path)]) == 0
    assert load(tmp_path / RUNS[1] / 'latest-state.th')['step'] == more
    assert [r['step'] for r in records(tmp_path / RUNS[1])] == list(range(1, more + 1))
    assert max_difference(load(tmp_path / RUNS[1] / 'latest-model.th'),
                          load(straight / RUNS[1] / 'latest-model.th')) > 0


# ------------------------------------------------------------------------------------------------
# 4. A diverging member stops alone

@pytest.mark.slow
def test_a_diverging_member_does_not_stop_the_others(tmp_path, straight, monkeypatch, capsys):
    forward = ensemble.Ensemble.forward

    def member_1_diverges(self, xs_in, xs_target):
        stats = forward(self, xs_in, xs_target)
        at_1 = torch.arange(len(self.vaes)) == 1
        return {key: v.masked_fill(at_1, float('nan'))
                if key in ('loss', 'elbo', 'distortion', 'rate') else v
                for key, v in stats.items()}
    # `Ensemble.__call__` is the class's `forward` as it was defined: replace both
    monkeypatch.setattr(ensemble.Ensemble, 'forward', member_1_diverges)
    monkeypatch.setattr(ensemble.Ensemble, '__call__', member_1_diverges)
    rc = train.main(resume_args(tmp_path, '--max_consecutive_skips', '3', *NO_CKPT))
    err = capsys.readouterr().err
    assert rc == 3, err
    assert f'stopped: {RUNS[1]}: 3 updates in a row were skipped' in err
    assert 'the other members go on' in err
    log = (tmp_path / RUNS[1] / 'log.txt').read_text()
    assert 'stopped: 3 updates in a row were skipped' in log
    assert [(r['step'], r['skipped_updates']) for r in records(tmp_path / RUNS[1])] == [
        (1, 1), (2, 1), (3, 1)]
    # member 0 trained on to the end, as in an ensemble where no member diverges
    assert load(tmp_path / RUNS[0] / 'latest-state.th')['step'] == RESUME_STEPS
    assert [r['step'] for r in records(tmp_path / RUNS[0])] == list(range(1, RESUME_STEPS + 1))
    for name in ('latest-model.th', 'latest-model-ema.th'):
        a, b = load(tmp_path / RUNS[0] / name), load(straight / RUNS[0] / name)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=ATOL)
    a = load(tmp_path / RUNS[0] / 'latest-model.th')
    assert distance(a, load(straight / RUNS[0] / 'latest-model.th')) \
        < RELATIVE * distance(a, load(straight / RUNS[0] / 'iter-2-model.th'))


# ------------------------------------------------------------------------------------------------
# 5. Bad ensembles

def members(save_dir, *extras):
    return [shlex.join(['--hps', 'mnist16', *COMMON, '--num_iters', '1', '--save_dir',
                        str(save_dir), *extra]) for extra in extras]


@pytest.mark.parametrize('case,message', [
    ('lr', 'differ in lr'),
    ('same_desc', 'give each its own --desc'),
    ('compile', '--compile'),
    ('fp16', '--amp fp16'),
    ('zero', '--ensemble must be an integer >= 1, got 0'),
    ('negative', '--ensemble must be an integer >= 1, got -1'),
])
def test_bad_ensemble_gives_one_clear_error(tmp_path, capsys, case, message):
    save_dir = tmp_path / 'runs'
    solo = ['--hps', 'mnist16', *COMMON, '--num_iters', '1', '--save_dir', str(save_dir)]
    if case == 'lr':
        rc = ensemble.main(members(save_dir, ['--desc', 'a'],
                                   ['--desc', 'b', '--seed', '1', '--lr', '1e-3']))
    elif case == 'same_desc':
        rc = ensemble.main(members(save_dir, ['--desc', 'a'], ['--desc', 'a', '--seed', '1']))
    elif case == 'compile':
        rc = train.main(solo + ['--ensemble', '2', '--compile'])
    elif case == 'fp16':
        rc = train.main(solo + ['--ensemble', '2', '--amp', 'fp16'])
    elif case == 'zero':
        rc = train.main(solo + ['--ensemble', '0'])
    else:
        rc = train.main(solo + ['--ensemble', '-1'])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith('error: ') and len(err.strip().splitlines()) == 1 and message in err, err
    assert not save_dir.exists() or not os.listdir(save_dir)


# ------------------------------------------------------------------------------------------------
# 6. --ensemble K names and seeds its members

def test_ensemble_k_seeds_and_names_its_members(tmp_path):
    assert train.main(['--hps', 'mnist16', *COMMON, '--num_iters', '1', '--ensemble', '3',
                       '--seed', '5', '--desc', 'r', '--save_dir', str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ['r-seed5', 'r-seed6', 'r-seed7']
    for seed in (5, 6, 7):
        H = read_hparams(tmp_path / f'r-seed{seed}' / 'hparams.json')
        assert (H['seed'], H['desc']) == (seed, f'r-seed{seed}')
        assert load(tmp_path / f'r-seed{seed}' / 'latest-state.th')['step'] == 1
    # three seeds, three models
    models = [load(tmp_path / f'r-seed{seed}' / 'latest-model.th') for seed in (5, 6, 7)]
    assert all(max_difference(a, b) > 100 * ATOL for i, a in enumerate(models)
               for b in models[i + 1:])
