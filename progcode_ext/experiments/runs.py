"""The training runs of the experiments: each one `train.py` run in `OUT/runs/NAME`, trained once.

A run is finished when its `latest-state.th` has reached the run's step count; an unfinished one
is resumed exactly; a finished one is reused only when it was trained with the same settings.
Every run also keeps a checkpoint at every tenth of its steps (`iter-N-*`): the verdicts judge
whether a difference has settled from those at 6/10, 8/10 and the end (`window`, verdicts.py), and
the reports say how much each model still moved over its last fifth (`convergence.py`).

`run_all(cfg, runs)` trains a plan of runs, each after the runs it depends on (e.g. the run of a
chain's stage 2 after the run of its stage 1):
* `cfg.jobs` = 1: one after the other, in this process, or as `$LAUNCH train.py ...` when the
  environment variable LAUNCH is set (e.g. `LAUNCH="torchrun --nproc_per_node 8"`);
* `cfg.jobs` = N > 1: up to N runs at once, each a `train.py` process with cores / N threads.
  Small models train faster this way: one such model does not keep two cores busy
  (BENCHMARKS.md has the figures). The longest chain of work starts first.
* `cfg.ensemble` = K > 1: runs that are ready at the same time and differ only in what an
  ensemble's members may differ in (seed, targets, the runs they build on: `vdvae.ensemble`)
  train up to K at a time as one ensemble, one job (`python -m vdvae.ensemble`). Where that
  pays depends on the device: on 2 CPU cores it does not (BENCHMARKS.md, "Ensembles").
"""
import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from vdvae.checkpoint import load_file
from vdvae.errors import UserError
from vdvae.hps import add_vae_arguments, parse_flags, read_hparams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Flags that say where, how long and with which checkpoints a run trains, not what it computes (a
# finished run can be extended by asking for more steps).
RUN_CONTROL = {'save_dir', 'desc', 'num_iters', 'num_epochs', 'resume', 'overwrite', 'quiet',
               'device', 'compile', 'port', 'iters_per_ckpt', 'iters_per_save'}


# Each kind of run's time per step relative to a plain VDVAE's (to start the longest work first)
COST = dict(vdvae=1.0, stage1=0.9, stage2=1.8, later_stage=2.0, conventional=2.5, probe=0.5,
            gamma_optimal=0.6)


class ExperimentError(UserError, RuntimeError):
    pass


def say(*args):
    print(f'[{time.strftime("%H:%M:%S")}]', *args, flush=True)


@dataclass(frozen=True)
class Run:
    """One training run: `preset` with `flags` for `steps` steps, after the runs named in `after`.
    `cost`: its time per step relative to a plain VDVAE's (`COST`); `ckpt_every`: the steps
    between its kept checkpoints."""
    name: str
    preset: str
    steps: int
    flags: tuple = ()
    after: tuple = ()
    cost: float = COST['vdvae']
    ckpt_every: int = 0           # 0: every tenth of the run (`tenth`)


def seeded(name, seed):
    """The name of the run `name` trained with `seed`."""
    return f'{name}-seed{seed}'


def run_dir(cfg, name):
    return os.path.join(cfg.out, 'runs', name)


def tenth(steps):
    """The steps between a run's kept checkpoints: a tenth of the run (at least 1)."""
    return max(1, steps // 10)


def last_fifth_step(steps):
    """The step of the checkpoint that opens a run's last fifth (a run of a few steps: its first
    checkpoint)."""
    return max(steps - 2 * tenth(steps), tenth(steps))


def window(steps, tenths=(6, 8, 10)):
    """(tenth, step) of a run's kept checkpoints at the given tenths (10: its end; a run too short
    to have one at some tenth leaves it out)."""
    return [(k, steps - tenth(steps) * (10 - k)) for k in tenths
            if steps - tenth(steps) * (10 - k) > 0]


def window_steps(steps, tenths=(6, 8, 10)):
    """The steps of `window`."""
    return [step for _, step in window(steps, tenths)]


def run_argv(cfg, run):
    """train.py's argv for a run. Its own flags come after `--train_flags`, so they win (e.g. a
    probe's --progressive_res). With `cfg.lr_decay` the lr decays to 0 at the run's last step.
    Through upstream's loop (`--loop upstream`) the run is saved once, at its end, besides the
    checkpoint at 4/5."""
    control = (['--iters_per_save', str(run.steps)] if upstream_loop(cfg) else ['--quiet'])
    decay = ['--lr_decay_iters', str(run.steps)] if getattr(cfg, 'lr_decay', False) else []
    return ['--hps', run.preset, *shlex.split(cfg.train_flags), *decay, *run.flags,
            '--iters_per_ckpt', str(run.ckpt_every or tenth(run.steps)), '--num_epochs', '100000000',
            '--save_dir', os.path.join(cfg.out, 'runs'), '--desc', run.name,
            '--num_iters', str(run.steps), *control]


def upstream_loop(cfg):
    return getattr(cfg, 'loop', 'progcode') == 'upstream'


def launch_command(cfg, run, done, launcher):
    """The command that trains a run in a process of its own: progcode's train.py (continuing
    exactly with --resume), or upstream's loop in the checkout (`--loop upstream`; a run it left
    unfinished starts again: upstream's loop cannot continue a run exactly)."""
    if upstream_loop(cfg):
        root = ['--vdvae_root', cfg.vdvae_root] if cfg.vdvae_root else []
        # upstream's loop always starts torch.distributed on --port (default 29500): runs trained
        # at once (--jobs) each need their own
        return launcher + ['-m', 'progcode_ext.upstream', *root, *run_argv(cfg, run),
                           '--port', str(free_port())]
    return launcher + [os.path.join(REPO, 'train.py'), *_command(cfg, run, done)]


def free_port():
    """A TCP port no process listens on now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def changed_settings(folder, argv):
    """'key: then -> now' for each flag of `argv` whose value differs from the one the run in
    `folder` was started with ('' when none does)."""
    saved = read_hparams(os.path.join(folder, 'hparams.json'))
    H = parse_flags(add_vae_arguments(argparse.ArgumentParser()), argv)
    return ', '.join(f'{k}: {saved[k]!r} -> {v!r}' for k, v in sorted(H.items())
                     if k not in RUN_CONTROL and v is not None and k in saved and saved[k] != v)


def steps_done(cfg, run):
    """Steps the run has already trained (0: none), after checking that the run found in its folder
    was trained with this run's settings."""
    folder = run_dir(cfg, run.name)
    state_path = os.path.join(folder, 'latest-state.th')
    if not os.path.exists(state_path):
        return 0
    changed = changed_settings(folder, run_argv(cfg, run))
    if changed:
        raise ExperimentError(f'{folder} was trained with other settings ({changed}); its results '
                              'do not belong to this command: use another --out')
    return load_file(state_path)['step']


def check_plan(runs):
    """The plan without repeats (a run named twice must be the same run), in order; every
    dependency must be in the plan."""
    plan = {}
    for run in runs:
        if run.name in plan and plan[run.name] != run:
            raise ExperimentError(f'two different runs are named {run.name!r}: '
                                  f'{plan[run.name]} and {run}')
        plan[run.name] = run
    for run in plan.values():
        for name in run.after:
            if name not in plan:
                raise ExperimentError(f'run {run.name} needs run {name}, which is not planned')
    return list(plan.values())


def critical_path(runs):
    """name -> the work (steps x cost) of the run and of the longest chain of runs that waits for
    it."""
    children = {s.name: [c for c in runs if s.name in c.after] for s in runs}
    memo = {}

    def length(run):
        if run.name not in memo:
            memo[run.name] = run.steps * run.cost + max(
                (length(c) for c in children[run.name]), default=0)
        return memo[run.name]
    return {s.name: length(s) for s in runs}


def run_all(cfg, runs, then=None):
    """Train every run of the plan that is not finished; returns {name: run folder}.
    `then`: (names, more): once the runs named have finished, `more()` gives further runs (e.g.
    those that depend on a choice made from the first ones), trained in the same pass, so that no
    core waits for a run the choice did not need."""
    plan = check_plan(runs)
    queue = Queue(cfg, plan, then)
    if queue.waiting or queue.then:
        jobs = max(1, getattr(cfg, 'jobs', 1) or 1)
        if jobs > 1 and os.environ.get('LAUNCH'):
            raise ExperimentError(
                f'LAUNCH={os.environ["LAUNCH"]!r} trains each run on all the GPUs the launcher '
                f'starts, but {jobs} jobs would train {jobs} runs at once (and without it): set '
                'JOBS=1 (--jobs 1) with NGPU > 1')
        (_run_sequentially if jobs == 1 else _run_in_parallel)(cfg, queue, jobs)
    return {s.name: run_dir(cfg, s.name) for s in queue.plan}


class Queue:
    """The runs still to train (`waiting`: (run, steps done), the longest chain of work first),
    those `finished`, and the plan's extension `then` not yet made."""

    def __init__(self, cfg, plan, then):
        self.cfg, self.plan, self.then = cfg, [], then
        self.waiting, self.finished, self.known = [], set(), set()
        self.add(plan)

    def add(self, runs):
        self.plan = check_plan(self.plan + list(runs))
        for run in runs:
            if run.name in self.known:          # waiting, training or finished already
                continue
            self.known.add(run.name)
            done = steps_done(self.cfg, run)
            if done >= run.steps:
                say(f'{run.name}: finished earlier ({done} steps), not re-run')
                self.finished.add(run.name)
            else:
                self.waiting.append((run, done))
        priority = critical_path(self.plan)
        self.waiting.sort(key=lambda item: -priority[item[0].name])

    def ready(self):
        """The waiting runs whose dependencies have finished, extending the plan first when its
        extension's runs have."""
        if self.then and set(self.then[0]) <= self.finished:
            more, self.then = self.then[1], None
            self.add(more())
        return [item for item in self.waiting if set(item[0].after) <= self.finished]


def _announce(run, done, note=''):
    say(f'{run.name}: training {run.preset} for {run.steps} steps'
        + (f' (resuming at {done})' if done else '') + note)


def _command(cfg, run, done):
    return run_argv(cfg, run) + (['--resume'] if done else [])


def ensemble_key(cfg, run, done):
    """What the runs of one ensemble share: everything but `vdvae.ensemble.PER_MEMBER`, and
    whether they resume."""
    from vdvae.ensemble import PER_MEMBER
    H = parse_flags(add_vae_arguments(argparse.ArgumentParser()), _command(cfg, run, done))
    return (bool(done), repr(sorted((k, v) for k, v in H.items() if k not in PER_MEMBER)))


def take_group(cfg, queue, ready):
    """The first ready run and, with `cfg.ensemble` = K > 1, up to K - 1 more ready runs that can
    train with it as one ensemble; taken off the queue."""
    size = 1 if upstream_loop(cfg) else max(1, getattr(cfg, 'ensemble', 1) or 1)
    group = [ready[0]]
    if size > 1:
        key = ensemble_key(cfg, *ready[0])
        group += [item for item in ready[1:] if ensemble_key(cfg, *item) == key][:size - 1]
    for item in group:
        queue.waiting.remove(item)
        ready.remove(item)
    return group


def group_name(group):
    return group[0][0].name if len(group) == 1 else '+'.join(run.name for run, _ in group)


def _run_sequentially(cfg, queue, jobs):
    while queue.waiting or queue.then:
        ready = queue.ready()
        if not ready:
            break
        group = take_group(cfg, queue, ready)
        for run, done in group:
            _announce(run, done, f' (an ensemble of {len(group)})' * (len(group) > 1))
        start = time.time()
        if len(group) > 1:
            from vdvae.ensemble import main
            rc = main([shlex.join(_command(cfg, run, done)) for run, done in group])
        elif os.environ.get('LAUNCH') or upstream_loop(cfg):
            launcher = shlex.split(os.environ.get('LAUNCH', '')) or [sys.executable]
            rc = subprocess.call(launch_command(cfg, *group[0], launcher))
        else:
            from vdvae.train import main
            rc = main(_command(cfg, *group[0]))
        if rc != 0:
            raise ExperimentError(f'run {group_name(group)} failed (exit {rc}); see '
                                  f'{run_dir(cfg, group[0][0].name)}/log.txt')
        say(f'{group_name(group)}: done in {time.time() - start:.0f} s')
        queue.finished.update(run.name for run, _ in group)
    _check_all_ran(queue)


def _check_all_ran(queue):
    if queue.waiting or queue.then:
        names = ', '.join([item[0].name for item in queue.waiting] + list(
            queue.then[0] if queue.then else []))
        raise ExperimentError(f'runs {names} wait for runs that cannot finish')


def _run_in_parallel(cfg, queue, jobs):
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.makedirs(os.path.join(cfg.out, 'runs'), exist_ok=True)
    running = {}                       # name -> (run, process, output file, start time)
    try:
        while queue.waiting or running or queue.then:
            ready = queue.ready()
            while ready and len(running) < jobs:
                group = take_group(cfg, queue, ready)
                for run, done in group:
                    _announce(run, done, f' ({threads} thread{"s" * (threads > 1)}'
                              + (f', an ensemble of {len(group)})' if len(group) > 1 else ')'))
                name = group_name(group)
                output = open(os.path.join(cfg.out, 'runs', f'{group[0][0].name}.out'), 'w')
                command = (launch_command(cfg, *group[0], [sys.executable]) if len(group) == 1
                           else [sys.executable, '-m', 'vdvae.ensemble',
                                 *[shlex.join(_command(cfg, *item)) for item in group]])
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                           env=env)
                running[name] = ([run for run, _ in group], process, output, time.time())
            if not running:
                _check_all_ran(queue)
            time.sleep(0.2)
            for name, (group, process, output, start) in list(running.items()):
                if process.poll() is None:
                    continue
                output.close()
                del running[name]
                if process.returncode != 0:
                    raise ExperimentError(
                        f'run {name} failed (exit {process.returncode}): '
                        + _tail(output.name) + f' (whole output: {output.name})')
                say(f'{name}: done in {time.time() - start:.0f} s')
                queue.finished.update(run.name for run in group)
    finally:
        for _, process, output, _ in running.values():
            process.terminate()
            process.wait()
            output.close()


def _tail(path, lines=3):
    with open(path) as f:
        return ' | '.join(line.strip() for line in f.read().strip().splitlines()[-lines:])
