"""Training stages of the experiments: each is one `train.py` run in `OUT/runs/NAME`, trained once.

A stage is finished when its `latest-state.th` has reached the stage's step count; an unfinished
one is resumed exactly; a finished one is reused only when it was trained with the same settings.
Every stage also keeps the checkpoint at 4/5 of its steps (`iter-N-*`), from which the convergence
checks measure how much the model still moved over its last fifth (`convergence.py`).

`run_stages(cfg, stages)` trains a plan of stages, each after the stages it depends on:
* `cfg.jobs` = 1: one after the other, in this process, or as `$LAUNCH train.py ...` when the
  environment variable LAUNCH is set (e.g. `LAUNCH="torchrun --nproc_per_node 8"`);
* `cfg.jobs` = N > 1: up to N stages at once, each a `train.py` process with cores / N threads.
  Small models train faster this way: on 2 CPU cores, two one-thread processes make about 1.6x
  the steps of one two-thread process (BENCHMARKS.md). The longest chain of work starts first.
"""
import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from vdvae.checkpoint import load_file
from vdvae.errors import UserError
from vdvae.hps import add_vae_arguments, parse_flags, read_hparams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Flags that say where, how long and with which checkpoints a stage runs, not what it computes (a
# finished stage can be extended by asking for more steps).
RUN_CONTROL = {'save_dir', 'desc', 'num_iters', 'num_epochs', 'resume', 'overwrite', 'quiet',
               'device', 'compile', 'port', 'iters_per_ckpt', 'iters_per_save'}


class ExperimentError(UserError, RuntimeError):
    pass


def say(*args):
    print(f'[{time.strftime("%H:%M:%S")}]', *args, flush=True)


@dataclass(frozen=True)
class Stage:
    """One training run: `preset` with `flags` for `steps` steps, after the stages in `after`.
    `cost` is its time per step relative to a plain VDVAE's (only to order the work)."""
    name: str
    preset: str
    steps: int
    flags: tuple = ()
    after: tuple = ()
    cost: float = 1.0


def run_dir(cfg, name):
    return os.path.join(cfg.out, 'runs', name)


def last_fifth_step(steps):
    """The step of the checkpoint that opens a run's last fifth."""
    return steps - steps // 5


def stage_argv(cfg, stage):
    """train.py's argv for a stage. Its own flags come after `--train_flags`, so they win (e.g. a
    probe's --progressive_res). With `cfg.lr_decay` the lr decays to 0 at the stage's last step.
    Through upstream's loop (`--loop upstream`) the run is saved once, at its end, besides the
    checkpoint at 4/5."""
    control = (['--iters_per_save', str(stage.steps)] if upstream_loop(cfg) else ['--quiet'])
    decay = ['--lr_decay_iters', str(stage.steps)] if getattr(cfg, 'lr_decay', False) else []
    return ['--hps', stage.preset, *shlex.split(cfg.train_flags), *decay, *stage.flags,
            '--iters_per_ckpt', str(last_fifth_step(stage.steps)), '--num_epochs', '100000000',
            '--save_dir', os.path.join(cfg.out, 'runs'), '--desc', stage.name,
            '--num_iters', str(stage.steps), *control]


def upstream_loop(cfg):
    return getattr(cfg, 'loop', 'progcode') == 'upstream'


def launch_command(cfg, stage, done, launcher):
    """The command that trains a stage in a process of its own: progcode's train.py (continuing
    exactly with --resume), or upstream's loop in the checkout (`--loop upstream`; a stage it left
    unfinished starts again: upstream's loop cannot continue a run exactly)."""
    if upstream_loop(cfg):
        root = ['--vdvae_root', cfg.vdvae_root] if cfg.vdvae_root else []
        return launcher + ['-m', 'progcode_ext.upstream', *root, *stage_argv(cfg, stage)]
    return launcher + [os.path.join(REPO, 'train.py'), *_command(cfg, stage, done)]


def changed_settings(folder, argv):
    """'key: then -> now' for each flag of `argv` whose value differs from the one the run in
    `folder` was started with ('' when none does)."""
    saved = read_hparams(os.path.join(folder, 'hparams.json'))
    H = parse_flags(add_vae_arguments(argparse.ArgumentParser()), argv)
    return ', '.join(f'{k}: {saved[k]!r} -> {v!r}' for k, v in sorted(H.items())
                     if k not in RUN_CONTROL and v is not None and k in saved and saved[k] != v)


def steps_done(cfg, stage):
    """Steps the stage has already trained (0: none), after checking that a run found in its folder
    was trained with the stage's settings."""
    folder = run_dir(cfg, stage.name)
    state_path = os.path.join(folder, 'latest-state.th')
    if not os.path.exists(state_path):
        return 0
    changed = changed_settings(folder, stage_argv(cfg, stage))
    if changed:
        raise ExperimentError(f'{folder} was trained with other settings ({changed}); its results '
                              'do not belong to this command: use another --out')
    return load_file(state_path)['step']


def check_plan(stages):
    """The plan without repeats (a stage named twice must be the same stage), in order; every
    dependency must be in the plan."""
    plan = {}
    for stage in stages:
        if stage.name in plan and plan[stage.name] != stage:
            raise ExperimentError(f'two different stages are named {stage.name!r}: '
                                  f'{plan[stage.name]} and {stage}')
        plan[stage.name] = stage
    for stage in plan.values():
        for name in stage.after:
            if name not in plan:
                raise ExperimentError(f'stage {stage.name} needs stage {name}, which is not planned')
    return list(plan.values())


def critical_path(stages):
    """name -> the work (steps x cost) of the stage and of the longest chain that waits for it."""
    children = {s.name: [c for c in stages if s.name in c.after] for s in stages}
    memo = {}

    def length(stage):
        if stage.name not in memo:
            memo[stage.name] = stage.steps * stage.cost + max(
                (length(c) for c in children[stage.name]), default=0)
        return memo[stage.name]
    return {s.name: length(s) for s in stages}


def run_stages(cfg, stages):
    """Train every stage of the plan that is not finished; returns {name: run folder}."""
    plan = check_plan(stages)
    todo = {}
    for stage in plan:
        done = steps_done(cfg, stage)
        if done >= stage.steps:
            say(f'{stage.name}: finished earlier ({done} steps), not re-run')
        else:
            todo[stage.name] = (stage, done)
    if todo:
        jobs = max(1, getattr(cfg, 'jobs', 1) or 1)
        (_run_sequentially if jobs == 1 else _run_in_parallel)(cfg, plan, todo, jobs)
    return {s.name: run_dir(cfg, s.name) for s in plan}


def _announce(stage, done, note=''):
    say(f'{stage.name}: training {stage.preset} for {stage.steps} steps'
        + (f' (resuming at {done})' if done else '') + note)


def _command(cfg, stage, done):
    return stage_argv(cfg, stage) + (['--resume'] if done else [])


def _run_sequentially(cfg, plan, todo, jobs):
    priority = critical_path(plan)
    order = sorted(todo.values(), key=lambda item: -priority[item[0].name])
    finished = {s.name for s in plan if s.name not in todo}
    while order:
        stage, done = next(item for item in order if set(item[0].after) <= finished)
        order.remove((stage, done))
        _announce(stage, done)
        start = time.time()
        if os.environ.get('LAUNCH') or upstream_loop(cfg):
            launcher = shlex.split(os.environ.get('LAUNCH', '')) or [sys.executable]
            rc = subprocess.call(launch_command(cfg, stage, done, launcher))
        else:
            from vdvae.train import main
            rc = main(_command(cfg, stage, done))
        if rc != 0:
            raise ExperimentError(f'stage {stage.name} failed (exit {rc}); see '
                                  f'{run_dir(cfg, stage.name)}/log.txt')
        say(f'{stage.name}: done in {time.time() - start:.0f} s')
        finished.add(stage.name)


def _run_in_parallel(cfg, plan, todo, jobs):
    priority = critical_path(plan)
    waiting = sorted(todo.values(), key=lambda item: -priority[item[0].name])
    finished = {s.name for s in plan if s.name not in todo}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.makedirs(os.path.join(cfg.out, 'runs'), exist_ok=True)
    running = {}                       # name -> (stage, process, output file, start time)
    try:
        while waiting or running:
            ready = [item for item in waiting if set(item[0].after) <= finished]
            while ready and len(running) < jobs:
                stage, done = ready.pop(0)
                waiting.remove((stage, done))
                _announce(stage, done, f' ({threads} thread{"s" * (threads > 1)})')
                output = open(os.path.join(cfg.out, 'runs', f'{stage.name}.out'), 'w')
                process = subprocess.Popen(launch_command(cfg, stage, done, [sys.executable]),
                                           stdout=output, stderr=subprocess.STDOUT, env=env)
                running[stage.name] = (stage, process, output, time.time())
            if not running:
                names = ', '.join(item[0].name for item in waiting)
                raise ExperimentError(f'stages {names} wait for stages that cannot finish')
            time.sleep(0.2)
            for name, (stage, process, output, start) in list(running.items()):
                if process.poll() is None:
                    continue
                output.close()
                del running[name]
                if process.returncode != 0:
                    raise ExperimentError(
                        f'stage {name} failed (exit {process.returncode}): '
                        + _tail(output.name) + f' (whole output: {output.name})')
                say(f'{name}: done in {time.time() - start:.0f} s')
                finished.add(name)
    finally:
        for stage, process, output, _ in running.values():
            process.terminate()
            process.wait()
            output.close()


def _tail(path, lines=3):
    with open(path) as f:
        return ' | '.join(line.strip() for line in f.read().strip().splitlines()[-lines:])
