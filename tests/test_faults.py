"""The faults of a shared cluster, each injected into a real training run (CPU, gloo, mnist16 at a
tiny width): pre-emption by SIGTERM / SIGINT on one process and on every rank of two, a rank
killed under torchrun and under mpiexec, a rank that hangs, a full disk during a save, training
images removed or truncated mid-run, and SIGTERM in upstream's loop through the plug-in.

Each test measures how long every process took to exit after the fault and prints it (`pytest -s
tests/test_faults.py`); docs/training.md ("Faults") tabulates those numbers.
"""
import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch

# the plug-in's checkouts (the fake, and the vdvae_upstream submodule where it can run)
from test_upstream import (ENV as UPSTREAM_ENV, TINY as UPSTREAM_TINY, each_checkout,  # noqa: F401
                           each_runnable_checkout, records as upstream_records,  # noqa: F401
                           stop_at)
from progcode_ext.experiments.runs import free_port
from vdvae import checkpoint, train
from vdvae.logger import read_jsonl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ['--hps', 'mnist16', '--width', '8', '--zdim', '2', '--num_mixtures', '2',
        '--enc_blocks', '16x1,16d2,8x1,8d2,4x1,4d4,1x1',
        '--dec_blocks', '1x1,4m1,4x1,8m4,8x1,16m8,16x1', '--n_batch', '8',
        '--iters_per_print', '1', '--iters_per_images', '100000', '--num_images_visualize', '2',
        '--num_variables_visualize', '1', '--num_temperatures_visualize', '1', '--quiet']
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO), PYTHONWARNINGS='ignore')
MPIEXEC = Path(sys.executable).with_name('mpiexec')
STEPS = 40             # every run's length; faults come from step FAULT_AFTER on
FAULT_AFTER = 12
EXIT_WITHIN = 60       # seconds from a fault until every process has exited (docs/training.md)
CHECKPOINT_FILES = ('latest-model.th', 'latest-model-ema.th', 'latest-opt.th', 'latest-state.th')

# train.py, pausing after every step from FAULT_AFTER on, so that a fault sent from outside reaches
# the run mid-way however slowly this machine polls its log (the pause changes no number); with
# SIGNAL_DURING_SAVES=N it also sends itself signal N before each file of a checkpoint set.
PACED = f'''import os, sys, time
from vdvae import checkpoint, train
after_step = train.after_step
def paced(H, run, st, *args):
    after_step(H, run, st, *args)
    if st.progress['step'] >= {FAULT_AFTER}:
        time.sleep(0.1)
train.after_step = paced
if os.environ.get('SIGNAL_DURING_SAVES'):
    atomic_save = checkpoint.atomic_save
    def signalled(obj, path):
        os.kill(os.getpid(), int(os.environ['SIGNAL_DURING_SAVES']))
        atomic_save(obj, path)
    checkpoint.atomic_save = signalled
sys.exit(train.main(sys.argv[1:]))
'''


# ------------------------------------------------------------------------------------------------
# Running jobs

STARTED = []           # every process a test started, killed at its end if still there


@pytest.fixture(autouse=True)
def _nothing_left_running():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)     # the launcher and the ranks it started
            proc.wait()


def start(args, launcher, out, script=None, env=()):
    """train.py (or `script`) with `args`: launcher 'one' (one process), 'torchrun' (its agent,
    two ranks), 'mpiexec' (two ranks) or 'env' (two processes given torchrun's variables, no
    agent). -> the Popen objects, output to files `out`-N.txt."""
    script = str(script or REPO / 'train.py')
    port = str(free_port())
    if launcher == 'one':
        commands = [([sys.executable, script, *args], {})]
    elif launcher == 'torchrun':
        commands = [([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                      '--master_port', port, script, *args], {})]
    elif launcher == 'mpiexec':
        if not MPIEXEC.exists():
            pytest.skip('mpiexec not installed (pip install mpi4py mpich, as .ci/run does)')
        commands = [([str(MPIEXEC), '-n', '2', sys.executable, script, *args, '--port', port],
                     {})]
    else:
        commands = [([sys.executable, script, *args],
                     dict(RANK=str(r), WORLD_SIZE='2', LOCAL_RANK=str(r),
                          MASTER_ADDR='127.0.0.1', MASTER_PORT=port)) for r in range(2)]
    procs = []
    for i, (command, variables) in enumerate(commands):
        with open(f'{out}-{i}.txt', 'w') as f:
            procs.append(subprocess.Popen(command, env=dict(ENV, **variables, **dict(env)),
                                          stdout=f,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    STARTED.extend(procs)
    return procs


def finish(procs, timeout=300):
    """Wait for every process; their exit statuses."""
    return [p.wait(timeout=timeout) for p in procs]


def output(out):
    return ''.join(Path(p).read_text() for p in sorted(Path(out).parent.glob(
        Path(out).name + '-*.txt')))


def run_args(save_dir, desc, *extra):
    return [*TINY, '--num_iters', str(STEPS), '--save_dir', str(save_dir), '--desc', desc, *extra]


def paced_script(tmp_path):
    path = tmp_path / 'paced_train.py'
    path.write_text(PACED)
    return path


def wait_for_step(run_dir, step, procs, timeout=120):
    """Until the run has logged `step` (its log is rank 0's)."""
    log = Path(run_dir) / 'log.jsonl'
    start_time = time.time()
    while time.time() - start_time < timeout:
        if log.exists() and any(r.get('step', 0) >= step for r in read_jsonl(log)
                                if r.get('type') == 'train_loss'):
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError('the run ended before the fault')
        time.sleep(0.02)
    raise AssertionError(f'the run did not reach step {step} in {timeout} s')


def rank_pids(run_dir):
    """{rank: pid} from the line rank 0 logs at the start of a multi-process run."""
    for r in read_jsonl(Path(run_dir) / 'log.jsonl'):
        if r.get('message', '').startswith('ranks (pid@host)'):
            return {int(rank): int(pid) for rank, pid in re.findall(r'(\d+): (\d+)@', r['message'])}
    raise AssertionError('no ranks line in the log')


def _running(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'     # a zombie has exited
    except FileNotFoundError:
        return False


def seconds_until_all_exited(procs, pids, since, timeout=EXIT_WITHIN + 60):
    """Seconds from `since` until the launched processes and the ranks `pids` have all exited."""
    while time.time() - since < timeout:
        if all(p.poll() is not None for p in procs) and not any(map(_running, pids)):
            return time.time() - since
        time.sleep(0.01)
    raise AssertionError(f'processes still running {timeout} s after the fault')


def report(fault, seconds):
    print(f'\n[fault] {fault}: every process exited {seconds:.2f} s after it')


# ------------------------------------------------------------------------------------------------
# What is kept

def load(path):
    return torch.load(path, weights_only=True)


def assert_same_weights(a, b):
    """The model, EMA and optimizer of two runs' latest sets: equal bit for bit."""
    for name in ('latest-model.th', 'latest-model-ema.th'):
        x, y = load(Path(a) / name), load(Path(b) / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    x, y = load(Path(a) / 'latest-opt.th')['state'], load(Path(b) / 'latest-opt.th')['state']
    assert all(torch.equal(x[i][k], y[i][k]) for i in x for k in ('exp_avg', 'exp_avg_sq'))


def assert_intact(run_dir):
    """The committed set loads (weights only), no pending or temporary file is left, and its step
    is returned."""
    leftovers = [n for n in os.listdir(run_dir)
                 if n.endswith(('.pending', '.tmp')) or n == '.checkpoint-commit.json']
    assert not leftovers, leftovers
    for name in CHECKPOINT_FILES:
        load(Path(run_dir) / name)
    return load(Path(run_dir) / 'latest-state.th')['step']


def train_steps(run_dir):
    return [r['step'] for r in read_jsonl(Path(run_dir) / 'log.jsonl')
            if r.get('type') == 'train_loss']


@pytest.fixture(scope='module')
def straight_one(tmp_path_factory):
    """An uninterrupted one-process run of STEPS steps (in this process)."""
    save_dir = tmp_path_factory.mktemp('straight')
    assert train.main(run_args(save_dir, 'one')) == 0
    return save_dir / 'one'


@pytest.fixture(scope='module')
def straight_two(tmp_path_factory):
    """An uninterrupted two-process run of STEPS steps (gloo)."""
    save_dir = tmp_path_factory.mktemp('straight')
    assert finish(start(run_args(save_dir, 'two'), 'env', save_dir / 'out')) == [0, 0], \
        output(save_dir / 'out')
    return save_dir / 'two'


def resume_two(save_dir, desc):
    out = Path(save_dir) / f'resume-{desc}'
    assert finish(start(run_args(save_dir, desc, '--resume'), 'env', out)) == [0, 0], output(out)


# ------------------------------------------------------------------------------------------------
# 1. SIGTERM / SIGINT

@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_stop_signal_saves_its_step_and_resume_is_exact(tmp_path, straight_one, signum):
    """The run finishes its step, saves it, says so in one line and exits with 128 + signum; the
    same signal again before each file of the save changes nothing; --resume then ends where an
    uninterrupted run ends, bit for bit."""
    run_dir = tmp_path / 'run'
    out = tmp_path / 'out'
    procs = start(run_args(tmp_path, 'run', '--iters_per_save', '100000'), 'one', out,
                  paced_script(tmp_path), env={'SIGNAL_DURING_SAVES': str(int(signum))})
    wait_for_step(run_dir, FAULT_AFTER, procs)
    since = time.time()
    procs[0].send_signal(signum)
    report(f'{signum.name}, one process', seconds_until_all_exited(procs, [], since))
    assert procs[0].returncode == 128 + signum
    step = assert_intact(run_dir)
    assert FAULT_AFTER <= step < STEPS
    assert output(out).splitlines() == [
        f'pre-empted by {signum.name} at step {step}: saved the latest checkpoint in {run_dir}; '
        'continue with --resume']
    assert train_steps(run_dir) == list(range(1, step + 1))

    assert train.main(run_args(tmp_path, 'run', '--iters_per_save', '100000', '--resume')) == 0
    assert_same_weights(run_dir, straight_one)
    assert train_steps(run_dir) == list(range(1, STEPS + 1))


@pytest.mark.parametrize('launcher', ['torchrun', 'mpiexec'])
def test_a_stop_signal_to_a_two_process_run(tmp_path, straight_two, launcher):
    """SIGTERM to the launcher (torchrun's agent and mpiexec pass it to every rank): both ranks
    stop at the same step, rank 0 saves it, and the two-process resume is exact."""
    run_dir = tmp_path / 'run'
    procs = start(run_args(tmp_path, 'run', '--iters_per_save', '100000'), launcher,
                  tmp_path / 'out', paced_script(tmp_path))
    wait_for_step(run_dir, FAULT_AFTER, procs)
    pids = list(rank_pids(run_dir).values())
    since = time.time()
    procs[0].send_signal(signal.SIGTERM)
    report(f'SIGTERM, 2 ranks under {launcher}', seconds_until_all_exited(procs, pids, since))
    text = output(tmp_path / 'out')
    # torchrun itself ends with status 1 and names each rank's status: 143 where it exited itself
    assert procs[0].returncode == (143 if launcher == 'mpiexec' else 1), text
    step = assert_intact(run_dir)
    assert f'pre-empted by SIGTERM at step {step}: saved' in text
    resume_two(tmp_path, 'run')
    assert_same_weights(run_dir, straight_two)
    assert train_steps(run_dir) == list(range(1, STEPS + 1))


def test_one_rank_signalled_stops_both_at_the_same_step(tmp_path):
    """SIGINT to rank 1 only: the ranks agree, both exit with 130 and rank 0 saves."""
    run_dir = tmp_path / 'run'
    procs = start(run_args(tmp_path, 'run', '--iters_per_save', '100000'), 'env',
                  tmp_path / 'out', paced_script(tmp_path))
    wait_for_step(run_dir, FAULT_AFTER, procs)
    since = time.time()
    procs[1].send_signal(signal.SIGINT)
    report('SIGINT to rank 1 of 2', seconds_until_all_exited(procs, [], since))
    assert [p.returncode for p in procs] == [130, 130], output(tmp_path / 'out')
    step = assert_intact(run_dir)
    assert train_steps(run_dir) == list(range(1, step + 1))


# ------------------------------------------------------------------------------------------------
# 2. A rank dies, or hangs

@pytest.mark.parametrize('launcher', ['torchrun', 'mpiexec'])
def test_a_killed_rank_ends_the_run_and_the_checkpoint_resumes_exactly(tmp_path, straight_two,
                                                                       launcher):
    """kill -9 of rank 1: no rank waits on a collective; the lost rank is named (torchrun: by the
    survivor and the agent; mpiexec ends the survivor at once and names the dead process's pid,
    which the run's log maps to its rank); the last periodic checkpoint resumes exactly."""
    run_dir = tmp_path / 'run'
    procs = start(run_args(tmp_path, 'run', '--iters_per_save', '5'), launcher, tmp_path / 'out',
                  paced_script(tmp_path))
    wait_for_step(run_dir, FAULT_AFTER, procs)
    pids = rank_pids(run_dir)
    since = time.time()
    os.kill(pids[1], signal.SIGKILL)
    report(f'kill -9 of rank 1 of 2 under {launcher}',
           seconds_until_all_exited(procs, list(pids.values()), since))
    text = output(tmp_path / 'out')
    if launcher == 'torchrun':
        assert 'stopped: rank 0 of 2 lost contact with rank 1' in text, text
        assert re.search(r'rank\s*: 1 \(local_rank: 1\)\s+exitcode\s*: -9', text), text
    else:
        # mpiexec names the first of the job's processes it sees end by signal 9: the killed
        # rank, or the survivor it has just ended itself (seen once in CI): a pid of this run
        assert any(f'PID {pid} RUNNING AT' in text for pid in pids.values()), text
        assert 'Killed (signal 9)' in text, text
    assert 'vdvae/train.py' not in text             # no traceback of the survivor

    checkpoint.recover_checkpoint_set(run_dir)      # what --resume does first
    step = assert_intact(run_dir)
    assert step % 5 == 0 and FAULT_AFTER - 5 <= step < STEPS
    resume_two(tmp_path, 'run')
    assert_same_weights(run_dir, straight_two)
    assert train_steps(run_dir) == list(range(1, STEPS + 1))


def test_a_hung_rank_is_given_up_after_the_collective_timeout(tmp_path):
    """Rank 1 stops answering (SIGSTOP: a dead node closes no connection): rank 0 gives up after
    --collective_timeout, names rank 1 and exits with status 4; mpiexec then ends rank 1."""
    run_dir = tmp_path / 'run'
    procs = start(run_args(tmp_path, 'run', '--iters_per_save', '5', '--collective_timeout', '5'),
                  'mpiexec', tmp_path / 'out', paced_script(tmp_path))
    wait_for_step(run_dir, FAULT_AFTER, procs)
    pids = rank_pids(run_dir)
    since = time.time()
    os.kill(pids[1], signal.SIGSTOP)
    seconds = seconds_until_all_exited(procs, list(pids.values()), since)
    report('SIGSTOP of rank 1 of 2 under mpiexec, --collective_timeout 5', seconds)
    text = output(tmp_path / 'out')
    assert 4.5 < seconds < EXIT_WITHIN      # the timeout (counted from rank 0's collective)
    assert procs[0].returncode == 4, text
    assert 'stopped: rank 0 of 2 lost contact with rank 1 (Timed out' in text, text
    assert f'--collective_timeout 5 s. The last checkpoint in {run_dir} is intact' in text
    assert assert_intact(run_dir) % 5 == 0


# ------------------------------------------------------------------------------------------------
# 3. The disk fills during a save

def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, straight_one,
                                                                 monkeypatch, capsys):
    """ENOSPC in the middle of writing the second save's optimizer file: one error line naming the
    folder, status 2, nothing of the failed save left, and the save before it resumes exactly."""
    real_atomic_write = checkpoint.atomic_write
    writes = {'latest-opt.th.pending': 0}

    def atomic_write(path, write):
        name = os.path.basename(path)
        if name in writes:
            writes[name] += 1
            if writes[name] == 2:                  # the save at step 20
                def write_until_full(f):
                    f.write(b'x' * 1000)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_atomic_write(path, write_until_full)
        return real_atomic_write(path, write)
    monkeypatch.setattr(checkpoint, 'atomic_write', atomic_write)
    run_dir = tmp_path / 'run'
    since = time.time()
    assert train.main(run_args(tmp_path, 'run', '--iters_per_save', '10')) == 2
    report('ENOSPC during a save (the whole run, in-process)', time.time() - since)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: cannot save checkpoint latest-* in {str(run_dir)!r}: no space left on the "
        'device. Nothing of it was kept and the previous checkpoint there is intact: free space '
        'there (or copy the run to another --save_dir), then continue with --resume']
    assert assert_intact(run_dir) == 10

    monkeypatch.setattr(checkpoint, 'atomic_write', real_atomic_write)
    assert train.main(run_args(tmp_path, 'run', '--iters_per_save', '10', '--resume')) == 0
    assert_same_weights(run_dir, straight_one)


def test_a_full_disk_elsewhere_is_one_error(tmp_path, monkeypatch, capsys):
    """ENOSPC outside a checkpoint (here the sample grid): one error line, status 2."""
    def full(H, model, x, x_in, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    monkeypatch.setattr(train, 'write_images', full)
    assert train.main(run_args(tmp_path, 'run')) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"error: no space left on the device to write {str(tmp_path / 'run' / 'samples-1.png')!r}:"
        ' free space (or choose another --save_dir) and start again; --resume continues from the '
        'last checkpoint, which is intact']


# ------------------------------------------------------------------------------------------------
# 4. The data disappear or are damaged mid-run

@pytest.fixture
def image_folder(tmp_path):
    """16x16 grayscale PNGs: 24 to train on (3 steps of 8 per epoch), 8 to validate on."""
    rng = np.random.RandomState(0)
    for split, n in (('train', 24), ('valid', 8)):
        (tmp_path / 'images' / split).mkdir(parents=True)
        for i in range(n):
            imageio.imwrite(tmp_path / 'images' / split / f'{i}.png',
                            rng.randint(0, 256, (16, 16), dtype=np.uint8))
    return tmp_path / 'images'


@pytest.mark.parametrize('damage', ['removed', 'truncated'])
def test_training_images_damaged_mid_run(tmp_path, image_folder, monkeypatch, capsys, damage):
    """After step 3 (saved), one training image is removed or cut in half: the epoch that reads it
    ends the run with one error naming the file, status 2; the checkpoint of step 3 is intact
    and, the file restored, resumes."""
    victim = image_folder / 'train' / '5.png'
    original = victim.read_bytes()
    after_step = train.after_step

    def damaging(H, run, st, *args):
        after_step(H, run, st, *args)
        if st.progress['step'] == 3:
            if damage == 'removed':
                victim.unlink()
            else:
                victim.write_bytes(original[:len(original) // 2])
    monkeypatch.setattr(train, 'after_step', damaging)
    args = run_args(tmp_path, 'run', '--dataset', 'imagefolder', '--data_root', str(image_folder),
                    '--iters_per_save', '3', '--num_iters', '12')
    assert train.main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('error: the training data changed during the run '
                                               '(step '), err
    assert str(victim) in err[0] and ('image not found' if damage == 'removed' else
                                      'cannot decode image') in err[0]
    assert err[0].endswith(f'The last checkpoint in {tmp_path / "run"} is intact: restore the '
                           'data, then continue with --resume')
    assert assert_intact(tmp_path / 'run') == 3

    monkeypatch.setattr(train, 'after_step', after_step)
    victim.write_bytes(original)
    assert train.main(args + ['--resume']) == 0
    assert train_steps(tmp_path / 'run') == list(range(1, 13))


# ------------------------------------------------------------------------------------------------
# 5. SIGTERM in upstream's loop, through the plug-in

def test_sigterm_in_upstreams_loop_through_the_plugin(each_runnable_checkout):
    """Upstream's loop has no signal handler; the plug-in's stops it after the current iteration,
    saves `latest` through its save_model, and exits with 143; upstream's restore flags resume."""
    checkout = each_runnable_checkout
    run_dir = checkout / 'runs' / 'pre'
    common = ['-m', 'progcode_ext.upstream', '--vdvae_root', 'vdvae', '--port', str(free_port()),
              '--hps', 'svhn_stage1',
              *UPSTREAM_TINY, '--dataset', 'imagefolder', '--data_root', str(checkout / 'images'),
              '--save_dir', str(checkout / 'runs')]
    with open(checkout / 'out.txt', 'w') as f:
        proc = subprocess.Popen([sys.executable, *common, '--num_iters', '1000',
                                 '--iters_per_save', '1000', '--iters_per_images', '100000',
                                 '--desc', 'pre'], cwd=checkout, env=UPSTREAM_ENV, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    STARTED.append(proc)
    wait_for_step(run_dir, 5, [proc])
    since = time.time()
    proc.send_signal(signal.SIGTERM)
    report('SIGTERM, upstream\'s loop through the plug-in', seconds_until_all_exited([proc], [],
                                                                                      since))
    text = (checkout / 'out.txt').read_text()
    assert proc.returncode == 143, text
    done = load(run_dir / 'latest-state.th')['step']
    lines = [line for line in text.splitlines() if 'pre-empted' in line]
    assert len(lines) == 1 and f'pre-empted by SIGTERM after {done} iterations: saved ' in lines[0]
    assert assert_intact(run_dir) == done and done > 5
    logged = max(r['step'] for r in upstream_records(run_dir, repeats=True))

    resumed = subprocess.run(
        [sys.executable, *common, *stop_at(1), '--desc', 'resumed',
         '--restore_path', str(run_dir / 'latest-model.th'),
         '--restore_ema_path', str(run_dir / 'latest-model-ema.th'),
         '--restore_optimizer_path', str(run_dir / 'latest-opt.th'),
         '--restore_log_path', str(run_dir / 'latest-log.jsonl')],
        cwd=checkout, env=UPSTREAM_ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # upstream's load_opt goes on from the last step its log holds
    assert [r['step'] for r in upstream_records(checkout / 'runs' / 'resumed')] == [logged]
