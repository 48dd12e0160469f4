"""Train K same-shaped models in one process as one batched computation: an ensemble.

    python train.py --hps mnist16 --desc run --ensemble 3      # seeds 0, 1, 2 -> run-seed0, ...
    python -m vdvae.ensemble "--hps mnist16_stage1 --desc a --distortion_target 0.0128" \\
                             "--hps mnist16_stage1 --desc b --distortion_target 0.0064 --seed 1"

The members may differ in their seed, run folder, constraint targets and the trained runs they
start from or build on (`PER_MEMBER`); everything else, and so the shapes of every parameter, is
the same. Each member keeps what a run trained alone keeps: its own weights, data order (its
seed's), optimizer state, EMA, gradient clipping and skip decision, Lagrange multiplier, random
draws (a generator of its own, seeded as the run alone seeds torch's), log, sample grids and
checkpoints, in an ordinary run folder that every tool reads and that `train.py --resume`
continues alone. What is shared is the arithmetic: the K forwards and backwards run as one (the
members' parameters stacked, the model's forward vectorised over them by `torch.func.vmap`), so
that models too small to fill a device train K at a time for about the time of one.

A member ends as the same run trained alone, to float rounding (a batched convolution adds in
another order); tests/test_ensemble.py checks it for every kind of model. A member whose updates
stop (too many skipped in a row: `train.py`'s status 3) stops alone; the others go on, and the
ensemble exits with 3 at the end. Whether an ensemble is faster than separate processes depends
on the device: see BENCHMARKS.md ("Ensembles").
"""
import argparse
import copy
import os
import shlex
import sys
import time
from collections import deque
from contextlib import contextmanager

import torch
from torch.func import functional_call, vmap
from tqdm import tqdm

from vdvae.contract import training_loss
from vdvae.data import set_up_data
from vdvae.errors import ConfigError, UserError
from vdvae.evaluation import evaluate, load_batch
from vdvae.hps import Hyperparams, add_vae_arguments, parse_args_and_update_hparams
from vdvae.preemption import stop_on_signals
from vdvae.train_helpers import apply_update, copy_buffers, keep_freed_memory
from vdvae.vae_helpers import noise_from

# The hyperparameters in which the members of one ensemble may differ.
PER_MEMBER = {'seed', 'desc', 'distortion_target', 'distortion_targets', 'rate_target',
              'stage1_path', 'stage_paths', 'init_from', 'encoder_path', 'restore_path',
              'restore_ema_path', 'restore_optimizer_path', 'restore_log_path', 'logdir'}


def seed_members(H, k):
    """The hyperparameters of `train.py --ensemble k`: seeds H.seed .. H.seed + k - 1, each run in
    `save_dir/desc-seedS`."""
    return [Hyperparams(H, seed=H.seed + i, desc=f'{H.desc}-seed{H.seed + i}', ensemble=1)
            for i in range(k)]


def check_members(Hs):
    """ConfigError unless the members may train as one ensemble: the same hyperparameters but
    for `PER_MEMBER`, distinct run folders, one process, no torch.compile and no fp16 scaling."""
    first = Hs[0]
    for H in Hs[1:]:
        differ = sorted(k for k in set(first) | set(H)
                        if k not in PER_MEMBER and first.get(k) != H.get(k))
        if differ:
            raise ConfigError(f'the ensemble\'s members {first.desc!r} and {H.desc!r} differ in '
                              f'{", ".join(differ)}; an ensemble\'s members may differ only in '
                              f'{", ".join(sorted(PER_MEMBER - {"logdir"}))}: train the others '
                              'apart')
    folders = [os.path.join(H.save_dir, H.desc) for H in Hs]
    if len(set(folders)) < len(folders):
        raise ConfigError(f'two members of the ensemble would write the same run folder '
                          f'({folders}): give each its own --desc')
    if first.compile:
        raise ConfigError('--compile cannot compile an ensemble (vmap over the members): drop '
                          '--compile or --ensemble')
    if first.amp == 'fp16':
        raise ConfigError('--amp fp16 scales each loss by its own factor, which an ensemble '
                          'cannot: use --amp bf16 (or none) with --ensemble')


@contextmanager
def member_rng(generator):
    """Within the block, torch's global generator (of the generator's device) is the member's:
    whatever draws from the global one (sample grids, evaluation, a checkpoint's saved RNG state)
    sees what it sees in the member's run alone."""
    device = generator.device
    if device.type == 'cuda':
        def get():
            return torch.cuda.get_rng_state(device)

        def put(state):
            torch.cuda.set_rng_state(state, device)
    else:
        get, put = torch.get_rng_state, torch.set_rng_state
    outside = get()
    put(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(get())
        put(outside)


class Ensemble:
    """The members' forward as one: `forward(xs_in, xs_target)` takes a batch per member (a
    leading dimension K) and returns the model's dict of stats, each of shape (K,). Gradients
    flow into each member's own parameters (they are stacked anew at every call, so each member
    stays an ordinary module with its own optimizer)."""

    def __init__(self, vaes, generators):
        self.vaes, self.generators = vaes, generators
        self.shape = copy.deepcopy(vaes[0]).to('meta')        # the modules' code, no weights
        self.param_names = [n for n, _ in vaes[0].named_parameters()]
        self.buffer_names = [n for n, _ in vaes[0].named_buffers()]
        for vae in vaes[1:]:
            shapes = [(n, p.shape) for n, p in vae.named_parameters()]
            if shapes != [(n, p.shape) for n, p in vaes[0].named_parameters()]:
                raise ConfigError('the ensemble\'s members build networks of different shapes; '
                                  'train them apart')

    def stacked(self):
        params = {n: torch.stack(ps) for n, ps in
                  zip(self.param_names, zip(*[list(m.parameters()) for m in self.vaes]))}
        buffers = {n: torch.stack(bs) for n, bs in
                   zip(self.buffer_names, zip(*[list(m.buffers()) for m in self.vaes]))}
        return params, buffers

    def _member(self, params, buffers, x_in, x_target, index):
        def noise(like):
            # each member's eps from its own generator, as its run alone draws it
            eps = torch.stack([torch.empty(like.shape, dtype=like.dtype, device=like.device)
                               .normal_(0.0, 1.0, generator=g) for g in self.generators])
            return eps.index_select(0, index.reshape(1)).squeeze(0)
        with noise_from(noise):
            return functional_call(self.shape, (params, buffers), (x_in, x_target))

    def forward(self, xs_in, xs_target):
        params, buffers = self.stacked()
        index = torch.arange(len(self.vaes), device=xs_in.device)
        # 'same': the only random draws are the members' eps above, from their own generators
        return vmap(self._member, randomness='same')(params, buffers, xs_in, xs_target, index)

    def __call__(self, xs_in, xs_target):
        return self.forward(xs_in, xs_target)


# ------------------------------------------------------------------------------------------------
# Training: train.py's loop, over the members

def train_ensemble(Hs):
    """Train the members (a list of resolved hyperparameters, `check_members`) as one ensemble,
    each into its own run folder. Returns the exit status: 0, 3 if any member stopped, or
    128 + N after signal N (every member's latest checkpoint saved)."""
    from vdvae import train as T                # train.py's pieces (it imports this module)
    check_members(Hs)
    d = T.setup_distributed(Hs[0].port, Hs[0].device, Hs[0].collective_timeout)
    if d.world_size > 1:
        raise ConfigError('an ensemble trains in one process; launch it without mpiexec or '
                          'torchrun (or train the members apart, each on its ranks)')
    if d.device.type == 'cpu':
        keep_freed_memory()
    run_dirs = [os.path.join(H.save_dir, H.desc) for H in Hs]
    for H, run_dir in zip(Hs, run_dirs):
        T.check_run_dir(H, run_dir)
    data = None
    members = []
    for H, run_dir in zip(Hs, run_dirs):
        H, *got = set_up_data(H)
        data = data or got
        state, rngs = T.build_or_resume(H, d, run_dir)
        members.append(Member(H, state, rngs, rng_after_build=T.rng_state()))
    # every input has been read and checked: only now is anything written
    for m in members:
        m.run = T.start_run(m.H, d, os.path.join(m.H.save_dir, m.H.desc), *data)
        T.set_rng_state(m.rng_after_build)         # as the run alone, between build and start
        m.st = T.ready_to_train(m.H, m.run, m.st, m.rngs)
        m.generator = torch.Generator(d.device)
        m.generator.set_state(torch.get_rng_state() if d.device.type == 'cpu'
                              else torch.cuda.get_rng_state(d.device))
    members[0].run.logprint(f'ensemble of {len(members)}: ' + ', '.join(m.H.desc for m in members))
    with stop_on_signals() as stop:
        return ensemble_loop(T, members, stop)


class Member:
    """One member's hyperparameters, training state, run, generator and log window."""

    def __init__(self, H, st, rngs, rng_after_build):
        self.H, self.st, self.rngs, self.rng_after_build = H, st, rngs, rng_after_build
        self.run = self.generator = None
        self.window = deque(maxlen=H.iters_per_print)
        self.stopped = False


def ensemble_loop(T, members, stop):
    """train.py's `train_loop` for an ensemble: the same steps, logs, pictures, evaluations and
    checkpoints, per member, around one batched forward and backward. Each iteration takes one
    step, or ends an epoch, for the members whose turn it is: those at the fewest steps (after a
    crash between two members' saves, the others wait until the ones behind catch up)."""
    H, run0 = members[0].H, members[0].run
    device = run0.dist.device
    ensemble = Ensemble([m.st.vae for m in members], [m.generator for m in members])
    viz_items = load_batch(run0.data_eval, range(min(H.num_images_visualize, len(run0.data_eval))))
    viz = (viz_items, run0.preprocess_fn(viz_items, device)[0])
    starts = [m.st.progress['step'] for m in members]
    bar = tqdm(total=H.num_iters, initial=min(starts),
               disable=not sys.stdout.isatty() or H.quiet)
    while True:
        live = [m for m in members if not (m.stopped or T.finished(m.H, m.st.progress))]
        if not live:
            break
        progress = min((m.st.progress for m in live), key=lambda p: p['step'])
        turn = [m for m in live if m.st.progress['step'] == progress['step']]
        order = T.epoch_batches(len(run0.data_train), H.n_batch, 0, progress['epoch'], 0, 1)
        if progress['batch'] >= len(order):        # the epoch ran to its end
            end_epoch(T, turn, device)
            continue
        ensemble_step(T, members, turn, ensemble, viz, starts)
        bar.update(1)
        signum = (any(not (m.stopped or T.finished(m.H, m.st.progress)) for m in members)
                  and stop.agreed(device))
        if signum:
            bar.close()
            return preempt_all(T, members, signum)
    bar.close()
    for m in members:
        if not m.stopped:
            with member_rng(m.generator):
                T.save_run(m.run, m.st, ['latest'])
            m.run.logprint(f"finished at step {m.st.progress['step']}; checkpoints in "
                           f'{m.run.run_dir}')
        m.run.logprint.close()
    return T.STOPPED if any(m.stopped for m in members) else 0


def end_epoch(T, turn, device):
    """The members' next epoch, and their evaluation when one is due."""
    for m in turn:
        progress = m.st.progress
        progress.update(epoch=progress['epoch'] + 1, batch=0)
        if (progress['epoch'] - 1) % m.H.epochs_per_eval == 0:
            with member_rng(m.generator):
                stats = evaluate(m.H, m.st.ema_vae, m.run.data_eval, m.run.preprocess_fn, device,
                                 0, 1, m.st.autocast)
            m.run.logprint(type='eval_loss', epoch=progress['epoch'] - 1, step=progress['step'],
                           **stats)


def ensemble_step(T, members, turn, ensemble, viz, starts):
    """One step of the members in `turn`: one forward and backward of all (the others' results,
    and their random draws, are discarded: each member's arithmetic stays the same whichever
    members step), then each member's update, multiplier step, log, pictures and checkpoints as
    its run alone would do them."""
    t0 = time.time()
    device = members[0].run.dist.device
    waiting = [(m, m.generator.get_state()) for m in members if m not in turn]
    batches = []
    for m in members:
        progress = m.st.progress
        order = T.epoch_batches(len(m.run.data_train), m.H.n_batch, m.H.seed, progress['epoch'],
                                0, 1)
        indices = order[min(progress['batch'], len(order) - 1)]
        batches.append(m.run.preprocess_fn(T.load_training_batch(m.run, indices, progress),
                                           device))
        m.st.vae.zero_grad(set_to_none=True)
    xs_in = torch.stack([b[0] for b in batches])
    xs_target = torch.stack([b[1] for b in batches])
    with members[0].st.autocast():
        stats = ensemble(xs_in, xs_target)
    training_loss(stats).sum().backward()       # member k's gradient is its own loss's
    for m, state in waiting:
        m.generator.set_state(state)
    for k, m in enumerate(members):
        if m not in turn:
            continue
        st, progress = m.st, m.st.progress
        own = apply_update(m.H, {name: v[k] for name, v in stats.items()}, st.vae, st.ema_vae,
                           st.optimizer, t0=t0)
        st.scheduler.step()
        if not own['skipped_updates']:
            st.vae.after_update(own)
            copy_buffers(st.vae, st.ema_vae)
        m.window.append(own)
        progress.update(step=progress['step'] + 1, batch=progress['batch'] + 1,
                        consecutive_skips=(progress['consecutive_skips'] + 1
                                           if own['skipped_updates'] else 0))
        try:
            with member_rng(m.generator):
                T.after_step(m.H, m.run, st, own, m.window, progress['step'] - starts[k], viz)
        except T.TrainingStopped as e:
            m.stopped = True
            m.run.logprint(f'stopped: {e}')
            print(f'stopped: {m.H.desc}: {e}; the other members go on', file=sys.stderr)


def preempt_all(T, members, signum):
    """After a stop signal: every running member's latest checkpoint, as train.py saves one."""
    status = None
    for m in members:
        if m.stopped:
            m.run.logprint.close()
            continue
        with member_rng(m.generator):
            status = T.preempt(m.run, m.st, signum)
    return status


def main(argv=None):
    """python -m vdvae.ensemble ARGV ...: each ARGV one member's train.py flags, as one string."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__)
        return 0 if argv else 2
    try:
        Hs = []
        for member in argv:
            H = Hyperparams()
            parse_args_and_update_hparams(H, add_vae_arguments(argparse.ArgumentParser(
                prog='member')), shlex.split(member))
            Hs.append(H)
        return train_ensemble(Hs)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
